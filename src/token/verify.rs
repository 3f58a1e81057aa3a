//! Verifying intent tokens: the issuer named by `iss` must be configured, its JWK Set must hold
//! the key the header names and of the header's algorithm, the signature must verify, `aud` must
//! name this agent, `exp`/`nbf`/`iat` must hold within the clock skew and the `jti` must not be
//! revoked. Verified claims are cached by the token's hash until `exp`.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::cache::{TokenCache, token_hash};
use super::claims::{check_times, from_jws, unix};
use super::keys::{Watched, parse_jwks, parse_revoked};
use super::remote::Remote;
use super::{IntentClaims, TokenError};
use crate::config::IntentTokensConfig;
use crate::jws::{Jwks, JwsError, MAX_TOKEN_BYTES};
use crate::metrics::Metrics;

/// Files are looked at for changes at most this often (seconds).
const REFRESH_EVERY: u64 = 1;

struct Issuer {
    name: String,
    keys: Keys,
    audiences: Vec<String>,
}

/// Where an issuer's keys come from.
enum Keys {
    File(Watched<Jwks>),
    Url(Arc<Remote>),
}

/// Checks intent tokens against the configured issuers.
pub struct Verifier {
    issuers: Vec<Issuer>,
    revoked: Option<Watched<HashSet<String>>>,
    skew: u64,
    cache: TokenCache,
    /// Unix second at or after which the files are looked at again.
    next_refresh: AtomicU64,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.issuers.iter().map(|i| i.name.as_str()).collect();
        f.debug_struct("Verifier").field("issuers", &names).finish()
    }
}

impl Verifier {
    /// Loads every issuer's keys and the revocation list. `agent` is this agent's identities
    /// (id, SPIFFE id): the audiences of an issuer that lists none.
    /// A `jwks_url` issuer's keys are fetched in the background (`metrics` counts the fetches).
    pub fn new(
        cfg: &IntentTokensConfig,
        agent: &[String],
        metrics: &Arc<Metrics>,
    ) -> Result<Self, String> {
        let mut issuers = Vec::with_capacity(cfg.issuers.len());
        for is in &cfg.issuers {
            let keys = match (&is.jwks_file, &is.jwks_url) {
                (Some(file), _) => Keys::File(Watched::load(file, parse_jwks)?),
                (None, Some(url)) => Keys::Url(
                    Remote::start(is, url, metrics)
                        .map_err(|e| format!("issuer '{}': jwks_url: {e}", is.issuer))?,
                ),
                (None, None) => {
                    return Err(format!("issuer '{}': no jwks_file nor jwks_url", is.issuer));
                }
            };
            let audiences = if is.audiences.is_empty() {
                agent.to_vec()
            } else {
                is.audiences.clone()
            };
            issuers.push(Issuer {
                name: is.issuer.clone(),
                keys,
                audiences,
            });
        }
        let revoked = match &cfg.revoked {
            Some(p) => Some(Watched::load(Path::new(p), parse_revoked)?),
            None => None,
        };
        Ok(Verifier {
            issuers,
            revoked,
            skew: cfg.clock_skew_seconds,
            cache: TokenCache::new(cfg.cache_entries),
            next_refresh: AtomicU64::new(0),
        })
    }

    /// The verified claims of `token` at `now`.
    pub fn verify(&self, token: &str, now: SystemTime) -> Result<Arc<IntentClaims>, TokenError> {
        let now = unix(now);
        self.refresh(now);
        let hash = token_hash(token);
        if let Some(claims) = self.cache.get(&hash, now, self.skew) {
            self.check_revoked(&claims)?;
            return Ok(claims);
        }
        let claims = Arc::new(self.verify_uncached(token, now)?);
        self.cache.put(hash, Arc::clone(&claims));
        Ok(claims)
    }

    /// Looks at the key and revocation files if the last look is a second old; a changed key
    /// set empties the cache.
    pub fn refresh(&self, now: u64) {
        let due = self.next_refresh.load(Ordering::Relaxed);
        if now < due
            || self
                .next_refresh
                .compare_exchange(
                    due,
                    now + REFRESH_EVERY,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_err()
        {
            return;
        }
        self.refresh_now();
    }

    /// Looks at the files now.
    pub fn refresh_now(&self) {
        let mut changed = false;
        for is in &self.issuers {
            changed |= match &is.keys {
                Keys::File(f) => f.refresh(),
                Keys::Url(r) => r.take_changed(),
            };
        }
        if changed {
            self.cache.clear();
        }
        if let Some(r) = &self.revoked {
            r.refresh();
        }
    }

    fn check_revoked(&self, claims: &IntentClaims) -> Result<(), TokenError> {
        match (&self.revoked, &claims.jti) {
            (Some(list), Some(jti)) if list.get().contains(jti) => Err(TokenError::Revoked),
            _ => Ok(()),
        }
    }

    fn verify_uncached(&self, token: &str, now: u64) -> Result<IntentClaims, TokenError> {
        let iss = unverified_issuer(token)?;
        let issuer = self
            .issuers
            .iter()
            .find(|i| i.name == iss)
            .ok_or(TokenError::UnknownIssuer)?;
        let verified = match &issuer.keys {
            Keys::File(f) => verify_signature(&f.get(), token),
            Keys::Url(r) => match r.keys() {
                Some(keys) => verify_signature(&keys, token),
                None => Err(TokenError::KeysUnavailable),
            }
            .inspect_err(|e| {
                if matches!(e, TokenError::UnknownKid | TokenError::KeysUnavailable) {
                    r.want();
                }
            }),
        }?;
        let claims = IntentClaims::from_json(verified.claims)?;
        check_times(claims.exp, claims.nbf, claims.iat, now, self.skew)?;
        if !claims.addressed_to(&issuer.audiences) {
            return Err(TokenError::WrongAudience);
        }
        self.check_revoked(&claims)?;
        Ok(claims)
    }

    /// Fetches again the key sets a token found lacking (rate limited; see src/token/remote.rs);
    /// whether a token refused for that is worth verifying again.
    pub async fn refetch_wanted(&self) -> bool {
        let mut again = false;
        for is in &self.issuers {
            if let Keys::Url(r) = &is.keys {
                again |= r.refetch().await;
            }
        }
        if again {
            self.refresh_now();
        }
        again
    }

    /// How many verified tokens are cached.
    #[cfg(test)]
    pub fn cached(&self) -> usize {
        self.cache.len()
    }
}

/// Verifies the signature of `token` with `keys`; a kid the set has for another algorithm is
/// told apart from a kid it does not have.
pub fn verify_signature(keys: &Jwks, token: &str) -> Result<crate::jws::Verified, TokenError> {
    keys.verify(token).map_err(|e| match &e {
        JwsError::NoKey(kid) if keys.has_kid(kid) => TokenError::AlgKeyMismatch,
        _ => from_jws(&e),
    })
}

/// The `iss` of a token, read before its signature is checked (to choose the issuer's keys).
fn unverified_issuer(token: &str) -> Result<String, TokenError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::Malformed);
    }
    let payload = token.split('.').nth(1).ok_or(TokenError::Malformed)?;
    let bytes = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| TokenError::Malformed)?;
    #[derive(serde::Deserialize)]
    struct Iss {
        iss: Option<String>,
    }
    let iss: Iss = serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)?;
    iss.iss.ok_or(TokenError::MissingClaim)
}

#[cfg(test)]
#[path = "verify_tests.rs"]
mod tests;
