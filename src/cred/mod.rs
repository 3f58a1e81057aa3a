//! Credentials brokered per intent: named secret sources (`credentials:` in the config) whose
//! current value the proxy adds to the requests a catalog rule's `inject` binds them to, so the
//! agent itself holds no keys. A value never reaches a log, `explain`, `/v1/policy` or the audit
//! log: `Secret` prints redacted, and records carry only `AuditCredential` (name, version,
//! expiry). Sources: `file` and `env` (src/cred/source.rs), OAuth 2.0 client credentials and
//! token exchange (src/cred/oauth2.rs; of the call's own intent token:
//! src/cred/oauth2/per_token.rs). The request step is src/cred/inject.rs.

mod inject;
mod oauth2;
mod source;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwapOption;

use crate::audit::AuditCredential;
use crate::config::{CredentialSpec, ExchangeScope};
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

/// The verified intent token a call carries: the RFC 8693 subject token of a credential with
/// `subject_token: intent_token`. Its `Debug` never shows it.
#[derive(Clone, Copy)]
pub struct IntentToken<'a> {
    /// The compact JWS, as it came (a header's bytes, the session's or `run`'s text).
    pub raw: &'a [u8],
    /// Its `exp` (Unix seconds): no access token exchanged for it is used past it.
    pub exp: u64,
}

impl std::fmt::Debug for IntentToken<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntentToken")
            .field("raw", &"<redacted>")
            .field("exp", &self.exp)
            .finish()
    }
}

/// Why a credential has no value for a call.
enum NoValue {
    /// Its source has none now (503 `credential_unavailable`).
    Unavailable(String),
    /// It exchanges the call's intent token, and the call carries none (nor is there a file to
    /// fall back on).
    NeedsIntentToken,
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

    /// The current value of `name` for a call under `scope` (a token exchange's rule scope)
    /// carrying the intent token `token`.
    async fn current(
        &self,
        name: &str,
        scope: &ExchangeScope,
        token: Option<IntentToken<'_>>,
    ) -> Result<Arc<Secret>, NoValue> {
        let unavailable = |why: &str| NoValue::Unavailable(why.to_string());
        match self.by_name.get(name) {
            None => Err(unavailable("no such credential is configured")),
            Some(Kind::Held(cell)) => cell
                .load_full()
                .ok_or_else(|| unavailable("its source has no value")),
            Some(Kind::Token(t)) => t.current(scope, token).await,
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
