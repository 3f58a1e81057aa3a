//! Verified intent tokens by the SHA-256 of their text, until their `exp`: a token is presented
//! on every call of its task, and a repeated one costs a hash and a lookup, not a signature check.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use aws_lc_rs::digest::{SHA256, digest};
use lru::LruCache;

use super::IntentClaims;

/// The key: the token's SHA-256 (the token itself is never kept).
pub type TokenHash = [u8; 32];

/// The hash a token is cached under.
pub fn token_hash(token: &str) -> TokenHash {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, token.as_bytes()).as_ref());
    out
}

/// A bounded LRU of verified claims.
pub struct TokenCache {
    entries: Mutex<LruCache<TokenHash, Arc<IntentClaims>>>,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache").finish_non_exhaustive()
    }
}

impl TokenCache {
    /// A cache holding at most `capacity` tokens (at least one).
    pub fn new(capacity: usize) -> Self {
        let cap = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        TokenCache {
            entries: Mutex::new(LruCache::new(cap)),
        }
    }

    /// The claims cached for `hash` if they have not expired at `now` (an expired entry is
    /// removed).
    pub fn get(&self, hash: &TokenHash, now: u64, skew: u64) -> Option<Arc<IntentClaims>> {
        let mut entries = self.entries.lock().ok()?;
        let claims = entries.get(hash)?;
        if now >= claims.exp.saturating_add(skew) {
            entries.pop(hash);
            return None;
        }
        Some(Arc::clone(claims))
    }

    pub fn put(&self, hash: TokenHash, claims: Arc<IntentClaims>) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.put(hash, claims);
        }
    }

    /// Forgets everything (the keys changed).
    pub fn clear(&self) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.clear();
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.lock().map_or(0, |e| e.len())
    }
}
