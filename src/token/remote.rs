//! An issuer's JWK Set over HTTPS (`jwks_url`), through the one-shot client of src/tls/fetch.rs.
//! Fetched in the background from start (the proxy starts without it: until a first set
//! arrives, that issuer's tokens are refused with `keys_unavailable`), then again every
//! `refresh_seconds`, or as the answer's `Cache-Control: max-age` says (raised to
//! `min_refresh_seconds`, capped at a day). A token naming a key the set lacks makes its request
//! fetch the set again and wait for it, at most once per `min_refresh_seconds` (a rotation the
//! issuer did not publish ahead). A failed fetch keeps the last good set, is logged and counted
//! (`intentgate_jwks_fetches_total{issuer,result}`), and is retried after `min_refresh_seconds`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode, header};

use crate::config::{MAX_REFRESH_SECONDS, TokenIssuer};
use crate::jws::Jwks;
use crate::metrics::Metrics;
use crate::tls::fetch::{Endpoint, Origin};

/// The largest JWK Set body read.
pub const MAX_JWKS_BYTES: usize = 256 * 1024;

/// How long one fetch may take.
const FETCH_DEADLINE: Duration = Duration::from_secs(5);

/// One issuer's fetched key set.
pub struct Remote {
    issuer: String,
    url: String,
    origin: Origin,
    path: String,
    /// The last good set; `None` until the first fetch succeeds.
    keys: ArcSwapOption<Jwks>,
    /// Set when a new set was taken; the verifier empties its cache.
    changed: AtomicBool,
    /// Set when a token named a key the set lacks (or came before any set).
    wanted: AtomicBool,
    refresh: Duration,
    min: Duration,
    /// One fetch at a time; when the last one started.
    last: tokio::sync::Mutex<Option<(Instant, Bytes)>>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote").field("url", &self.url).finish()
    }
}

impl Remote {
    /// The issuer `is` (with a `jwks_url`); its background refresh starts now when there is a
    /// runtime, and ends once the remote is dropped.
    pub fn start(is: &TokenIssuer, url: &str, metrics: &Arc<Metrics>) -> Result<Arc<Self>, String> {
        let endpoint = Endpoint {
            url: url.to_string(),
            ca_file: is.ca_file.clone(),
            token_file: None,
        };
        let (origin, uri) = endpoint.origin()?;
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
        let remote = Arc::new(Remote {
            issuer: is.issuer.clone(),
            url: url.to_string(),
            origin,
            path,
            keys: ArcSwapOption::empty(),
            changed: AtomicBool::new(false),
            wanted: AtomicBool::new(false),
            refresh: Duration::from_secs(is.refresh_seconds),
            min: Duration::from_secs(is.min_refresh_seconds),
            last: tokio::sync::Mutex::new(None),
            metrics: metrics.clone(),
        });
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(poll(Arc::downgrade(&remote)));
        }
        Ok(remote)
    }

    /// The last good set, if one has arrived.
    pub fn keys(&self) -> Option<Arc<Jwks>> {
        self.keys.load_full()
    }

    /// Notes that a token named a key the set lacks: the request may [`Remote::refetch`].
    pub fn want(&self) {
        self.wanted.store(true, Ordering::Relaxed);
    }

    /// Whether a new set was taken since the last call.
    pub fn take_changed(&self) -> bool {
        self.changed.swap(false, Ordering::AcqRel)
    }

    /// If a token asked for it, fetches the set now unless the last fetch started less than
    /// `min_refresh_seconds` ago (one at a time: a fetch under way is waited for); whether the
    /// caller should look at the keys again.
    pub async fn refetch(&self) -> bool {
        if !self.wanted.swap(false, Ordering::AcqRel) {
            return false;
        }
        let mut last = self.last.lock().await;
        if last.as_ref().is_none_or(|(at, _)| at.elapsed() >= self.min) {
            self.fetch(&mut last).await;
        }
        true
    }

    /// One fetch (the caller holds `last`); how long until the next.
    async fn fetch(&self, last: &mut Option<(Instant, Bytes)>) -> Duration {
        let started = Instant::now();
        let seen = last.take().map(|(_, body)| body);
        let fetched = self.get().await.and_then(|(body, max_age)| {
            if seen.as_ref() != Some(&body) {
                let keys = Jwks::parse(&body).map_err(|e| e.to_string())?;
                self.keys.store(Some(Arc::new(keys)));
                self.changed.store(true, Ordering::Release);
                tracing::info!(issuer = %self.issuer, url = %self.url,
                    "intent tokens: issuer key set fetched");
            }
            Ok((body, max_age))
        });
        let (result, next, body) = match fetched {
            Ok((body, max_age)) => {
                let next = max_age.map_or(self.refresh, |a| {
                    a.clamp(self.min, Duration::from_secs(MAX_REFRESH_SECONDS))
                });
                ("ok", next, body)
            }
            Err(error) => {
                tracing::warn!(issuer = %self.issuer, url = %self.url, %error,
                    kept = self.keys.load().is_some(),
                    "intent tokens: issuer key set not fetched; the last good set is kept");
                ("error", self.min, seen.unwrap_or_default())
            }
        };
        self.metrics
            .jwks_fetches
            .with_label_values(&[self.issuer.as_str(), result])
            .inc();
        *last = Some((started, body));
        next
    }

    /// GETs the set: the body of a 200 answer and its `max-age`.
    async fn get(&self) -> Result<(Bytes, Option<Duration>), String> {
        let accept: [(HeaderName, HeaderValue); 1] = [(
            header::ACCEPT,
            HeaderValue::from_static("application/jwk-set+json, application/json"),
        )];
        let answer = self
            .origin
            .get(&self.path, &accept, MAX_JWKS_BYTES, FETCH_DEADLINE)
            .await?;
        if answer.status != StatusCode::OK {
            return Err(format!("answered {}", answer.status));
        }
        let max_age = answer
            .headers
            .get(header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .and_then(max_age);
        Ok((answer.body, max_age))
    }
}

/// The `max-age` of a `Cache-Control` value (`no-cache`/`no-store` count as 0).
pub fn max_age(value: &str) -> Option<Duration> {
    value.split(',').map(str::trim).find_map(|d| {
        let d = d.to_ascii_lowercase();
        if d == "no-cache" || d == "no-store" {
            return Some(Duration::ZERO);
        }
        let secs = d.strip_prefix("max-age=")?.trim_matches('"').parse().ok()?;
        Some(Duration::from_secs(secs))
    })
}

/// The refresh loop: fetches, then sleeps as the answer says; ends once the remote is gone.
async fn poll(remote: Weak<Remote>) {
    loop {
        let next = {
            let Some(r) = remote.upgrade() else { return };
            let mut last = r.last.lock().await;
            r.fetch(&mut last).await
        };
        tokio::time::sleep(next).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_is_read_from_cache_control() {
        let s = Duration::from_secs;
        assert_eq!(max_age("public, max-age=600"), Some(s(600)));
        assert_eq!(max_age("Max-Age=\"60\", must-revalidate"), Some(s(60)));
        assert_eq!(max_age("no-store"), Some(Duration::ZERO));
        assert_eq!(max_age("public"), None);
        assert_eq!(max_age("max-age=soon"), None);
    }
}
