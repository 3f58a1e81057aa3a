//! Access tokens exchanged for the calls' own intent tokens (`subject_token: intent_token`): the
//! verified intent token of a call is the RFC 8693 subject, so each intent token gets its own
//! access token. One is kept per (rule scope, SHA-256 of the intent token) until shortly before
//! it expires or the intent token does, whichever comes first; at most `CAPACITY` of them (when
//! full, the expired ones go first, then the least recently used). Concurrent first uses of one
//! intent token wait for a single exchange. The intent token itself is never kept.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use aws_lc_rs::digest::{Context, SHA256};
use lru::LruCache;
use tracing::warn;

use super::{Inner, RETRY, unix_ms};
use crate::config::ExchangeScope;
use crate::cred::{IntentToken, Secret};

/// How many access tokens one credential keeps.
pub(super) const CAPACITY: usize = 1024;

/// SHA-256 of the rule scope and the intent token.
type Key = [u8; 32];

/// The access tokens of one credential, by `Key`.
pub(super) struct PerToken {
    entries: Mutex<LruCache<Key, Arc<Entry>>>,
    /// Counts the tokens exchanged (the audit record's `version`).
    version: AtomicU64,
}

impl Default for PerToken {
    fn default() -> Self {
        let cap = NonZeroUsize::new(CAPACITY).unwrap_or(NonZeroUsize::MIN);
        PerToken {
            entries: Mutex::new(LruCache::new(cap)),
            version: AtomicU64::new(0),
        }
    }
}

/// One intent token's access token under one scope.
#[derive(Default)]
pub(super) struct Entry {
    token: ArcSwapOption<Secret>,
    /// An exchange is under way (single flight).
    fetching: tokio::sync::Mutex<()>,
    /// No exchange before this (Unix ms): set after a failure.
    retry_at: AtomicU64,
}

impl Entry {
    fn usable(&self, now_ms: u64) -> Option<Arc<Secret>> {
        self.token.load_full().filter(|t| t.usable_at(now_ms))
    }

    /// Whether it holds a token that can no longer be used (none yet: an exchange is coming).
    fn expired(&self, now_ms: u64) -> bool {
        self.token
            .load()
            .as_ref()
            .is_some_and(|t| !t.usable_at(now_ms))
    }
}

fn key(scope: &ExchangeScope, token: IntentToken<'_>) -> Key {
    let mut h = Context::new(&SHA256);
    for part in [&scope.scopes, &scope.audience, &scope.resource] {
        match part {
            // Length-prefixed: no two scopes read alike.
            Some(p) => {
                h.update(&[1]);
                h.update(&(p.len() as u64).to_be_bytes());
                h.update(p.as_bytes());
            }
            None => h.update(&[0]),
        }
    }
    h.update(token.raw);
    let mut out = [0u8; 32];
    out.copy_from_slice(h.finish().as_ref());
    out
}

impl PerToken {
    /// The entry of `token` under `scope` (made if new), and its access token if usable.
    pub(super) fn cached(
        &self,
        scope: &ExchangeScope,
        token: IntentToken<'_>,
    ) -> (Arc<Entry>, Option<Arc<Secret>>) {
        let key = key(scope, token);
        let now = unix_ms(SystemTime::now());
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let entry = match entries.get(&key) {
            Some(e) => e.clone(),
            None => {
                if entries.len() == entries.cap().get() {
                    let expired: Vec<Key> = entries
                        .iter()
                        .filter(|(_, e)| e.expired(now))
                        .map(|(k, _)| *k)
                        .collect();
                    for k in &expired {
                        entries.pop(k);
                    }
                }
                let e = Arc::new(Entry::default());
                entries.put(key, e.clone());
                e
            }
        };
        drop(entries);
        let usable = entry.usable(now);
        (entry, usable)
    }

    /// Exchanges `token` for an access token into `entry`; concurrent callers wait for the first
    /// one's exchange and use its token.
    pub(super) async fn fetch(
        &self,
        inner: &Inner,
        entry: &Entry,
        scope: &ExchangeScope,
        token: IntentToken<'_>,
    ) -> Result<Arc<Secret>, String> {
        let _one = entry.fetching.lock().await;
        let now = unix_ms(SystemTime::now());
        if let Some(t) = entry.usable(now) {
            return Ok(t);
        }
        if now < entry.retry_at.load(Ordering::Relaxed) {
            return Err("its token exchange failed a moment ago".into());
        }
        let subject = std::str::from_utf8(token.raw).map_err(|_| "the intent token is not text")?;
        match inner.exchange(scope, Some(subject)).await {
            Ok(f) => {
                let version = self.version.fetch_add(1, Ordering::Relaxed) + 1;
                let mut t = Secret::token(&inner.name, f.value, version, f.expires);
                t.expires_ms = until(unix_ms(f.refresh_at), token.exp);
                let t = Arc::new(t);
                entry.token.store(Some(t.clone()));
                entry.retry_at.store(0, Ordering::Relaxed);
                Ok(t)
            }
            Err(why) => {
                let retry = SystemTime::now() + RETRY;
                entry.retry_at.store(unix_ms(retry), Ordering::Relaxed);
                warn!(credential = %inner.name, error = %why, "credential token exchange for an intent token failed");
                Err(format!("its token exchange failed: {why}"))
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.lock().map_or(0, |e| e.len())
    }
}

/// Until when (Unix ms) an access token is used: its refresh time, never past the intent
/// token's `exp` (Unix seconds).
fn until(refresh_at_ms: u64, exp: u64) -> u64 {
    let exp_ms = Duration::from_secs(exp).as_millis();
    refresh_at_ms.min(u64::try_from(exp_ms).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok(raw: &str) -> IntentToken<'_> {
        IntentToken {
            raw: raw.as_bytes(),
            exp: u64::MAX / 1000,
        }
    }

    #[test]
    fn keys_tell_scopes_and_tokens_apart() {
        let a = ExchangeScope {
            audience: Some("a".into()),
            ..ExchangeScope::default()
        };
        let ab = ExchangeScope {
            scopes: Some("a".into()),
            ..ExchangeScope::default()
        };
        let none = ExchangeScope::default();
        let k = key(&a, tok("t1"));
        assert_eq!(k, key(&a, tok("t1")));
        assert_ne!(k, key(&a, tok("t2")));
        assert_ne!(k, key(&ab, tok("t1")));
        assert_ne!(k, key(&none, tok("t1")));
    }

    #[test]
    fn an_access_token_ends_with_its_intent_token() {
        assert_eq!(until(5_000, 10), 5_000);
        assert_eq!(until(50_000, 10), 10_000);
        assert_eq!(until(50_000, u64::MAX), 50_000);
    }

    #[test]
    fn full_it_drops_the_expired_then_the_least_recently_used() {
        let per = PerToken::default();
        let scope = ExchangeScope::default();
        let names: Vec<String> = (0..CAPACITY).map(|i| format!("t{i}")).collect();
        for (i, n) in names.iter().enumerate() {
            let (e, usable) = per.cached(&scope, tok(n));
            assert!(usable.is_none());
            // Half of them hold a token that has expired.
            let expires_ms = if i % 2 == 0 { 1 } else { u64::MAX };
            let mut s = Secret::new("c", "v".into(), 1);
            s.expires_ms = expires_ms;
            e.token.store(Some(Arc::new(s)));
        }
        assert_eq!(per.len(), CAPACITY);
        // One more: every expired one goes.
        per.cached(&scope, tok("new"));
        assert_eq!(per.len(), CAPACITY / 2 + 1);
        assert!(per.cached(&scope, tok("t1")).1.is_some(), "kept");
        // Full of usable ones: the least recently used goes.
        for i in 0..CAPACITY / 2 - 1 {
            per.cached(&scope, tok(&format!("more{i}")));
        }
        assert_eq!(per.len(), CAPACITY);
        per.cached(&scope, tok("last"));
        assert_eq!(per.len(), CAPACITY);
        assert!(per.cached(&scope, tok("t1")).1.is_some(), "recently used");
        assert!(per.cached(&scope, tok("t3")).1.is_none(), "evicted");
    }
}
