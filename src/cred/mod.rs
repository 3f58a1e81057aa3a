//! Credentials brokered per intent: named secret sources (`credentials:` in the config) whose
//! current value the proxy adds to the requests a catalog rule's `inject` binds them to, so the
//! agent itself holds no keys. A value never reaches a log, `explain`, `/v1/policy` or the audit
//! log: `Secret` prints redacted, and records carry only `AuditCredential` (name, version,
//! expiry). Sources: `file` and `env` (src/cred/source.rs), OAuth 2.0 client credentials and
//! token exchange (src/cred/oauth2.rs). The request step is src/cred/inject.rs.

mod inject;
mod oauth2;
mod source;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwapOption;

use crate::audit::AuditCredential;
use crate::config::{CredentialSpec, ExchangeScope};
use crate::error::ProxyError;
use crate::metrics::Metrics;

pub use inject::Injection;
pub(crate) use inject::refuse_spliced;

/// One value of a credential. Its `Debug` never shows the value.
pub(crate) struct Secret {
    value: Box<str>,
    /// What the audit record says of it.
    audit: Arc<AuditCredential>,
    /// When a token stops being usable (Unix ms); `u64::MAX` for a value that does not expire.
    expires_ms: u64,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secret")
            .field("credential", &self.audit)
            .field("value", &"<redacted>")
            .finish()
    }
}

impl Secret {
    fn new(name: &str, value: Box<str>, version: u64) -> Self {
        Secret {
            value,
            audit: Arc::new(AuditCredential {
                name: name.to_string(),
                version,
                expires: None,
            }),
            expires_ms: u64::MAX,
        }
    }

    /// A token that expires at `expires`.
    fn token(name: &str, value: Box<str>, version: u64, expires: SystemTime) -> Self {
        let mut s = Secret::new(name, value, version);
        s.expires_ms = oauth2::unix_ms(expires);
        s.audit = Arc::new(AuditCredential {
            expires: Some(humantime::format_rfc3339_seconds(expires).to_string()),
            ..(*s.audit).clone()
        });
        s
    }

    fn usable_at(&self, now_ms: u64) -> bool {
        now_ms < self.expires_ms
    }
}

/// How one credential gets its value.
enum Kind {
    /// A value kept current by its source (`file`: a poller; `env`: read once).
    Held(Arc<ArcSwapOption<Secret>>),
    /// A token fetched from an OAuth 2.0 endpoint, on first use and refreshed before expiry.
    Token(oauth2::Tokens),
}

/// Every configured credential, by name.
#[derive(Default)]
pub struct Store {
    by_name: HashMap<Box<str>, Kind>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.by_name.keys()).finish()
    }
}

impl Store {
    /// Loads every credential of the `credentials` section (a `file` or `env` that cannot be
    /// read is refused, naming the field); starts the file pollers on the current runtime.
    pub fn new(
        specs: &std::collections::BTreeMap<String, CredentialSpec>,
        tls: &crate::tls::Tls,
        metrics: &Arc<Metrics>,
    ) -> Result<Self, String> {
        let mut by_name = HashMap::new();
        for (name, spec) in specs {
            let kind = if let Some(path) = &spec.file {
                Kind::Held(source::file(name, path, spec.poll_ms, metrics)?)
            } else if let Some(var) = &spec.env {
                Kind::Held(source::env(name, var)?)
            } else {
                Kind::Token(oauth2::Tokens::new(name, spec, tls, metrics)?)
            };
            by_name.insert(Box::from(name.as_str()), kind);
        }
        Ok(Store { by_name })
    }

    /// The current value of `name` (for a token exchange, the token for `scope`).
    async fn current(&self, name: &str, scope: &ExchangeScope) -> Result<Arc<Secret>, ProxyError> {
        let unavailable = |why: &str| ProxyError::CredentialUnavailable {
            name: name.to_string(),
            why: why.to_string(),
        };
        match self.by_name.get(name) {
            None => Err(unavailable("no such credential is configured")),
            Some(Kind::Held(cell)) => cell
                .load_full()
                .ok_or_else(|| unavailable("its source has no value")),
            // The cached token needs no waiting; a fetch (boxed: its state would otherwise size
            // every request's future) only when there is none usable.
            Some(Kind::Token(t)) => match t.cached(scope) {
                Some(s) => Ok(s),
                None => Box::pin(t.fetch_now(scope))
                    .await
                    .map_err(|why| unavailable(&why)),
            },
        }
    }
}

/// The environment variables credential sources read: `intentgate run` never passes them on.
pub fn env_vars(specs: &std::collections::BTreeMap<String, CredentialSpec>) -> Vec<String> {
    let refs = specs.values().flat_map(|s| {
        let cc = s
            .oauth2_client_credentials
            .as_ref()
            .map(|o| &o.client_secret);
        let tx = s
            .oauth2_token_exchange
            .as_ref()
            .and_then(|x| x.client_secret.as_ref());
        s.env
            .iter()
            .chain(cc.into_iter().chain(tx).flat_map(|r| &r.env))
    });
    refs.cloned().collect()
}
