//! Who may fetch which bundle. Sidecars present their projected service-account token (audience
//! `intentgate-bundles`, minutes of validity); the server verifies it against the cluster's
//! service-account issuer keys — a JWK Set file or URL, or the `jwks_uri` of the issuer's OpenID
//! discovery document — checks `iss`, `aud`, `exp` and `nbf`, and serves a token only the bundle
//! of its own namespace (the `kubernetes.io` claim's `namespace`).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwapOption;
use http::{HeaderValue, Uri};
use serde::Deserialize;
use tokio::sync::Notify;
use tracing::{info, warn};

use crate::jws::{Expect, Jwks, JwsError, unverified_kid};
use crate::tls::fetch::{Endpoint, Origin, trust};

/// The audience sidecars ask the kubelet for, unless configured otherwise.
pub const DEFAULT_AUDIENCE: &str = "intentgate-bundles";
/// Clock skew tolerated on `exp` and `nbf`.
const LEEWAY: Duration = Duration::from_secs(30);
/// How often discovered keys are fetched again, and how soon after a token names a key we do
/// not have.
const REFRESH: Duration = Duration::from_secs(300);
const UNKNOWN_KID_REFRESH: Duration = Duration::from_secs(10);
/// The largest discovery document or key set read.
const MAX_DOC: usize = 1024 * 1024;
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// `bundles.auth` of the inject config.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// The service-account issuer (the API server's `--service-account-issuer`), e.g.
    /// `https://kubernetes.default.svc.cluster.local`; tokens must carry it as `iss`.
    pub issuer: String,
    #[serde(default = "default_audience")]
    pub audience: String,
    /// `{jwks_file: PATH}`, `{jwks_url: {url, ca_file, token_file}}` or
    /// `{discovery: {url, ca_file, token_file}}`.
    #[serde(with = "serde_yaml::with::singleton_map")]
    pub keys: Keys,
}

fn default_audience() -> String {
    DEFAULT_AUDIENCE.into()
}

/// Where the issuer's public keys come from.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Keys {
    /// A JWK Set file (e.g. `kubectl get --raw /openid/v1/jwks`), read again when it changes.
    JwksFile(PathBuf),
    /// A JWK Set URL, e.g. the API server's own `https://kubernetes.default.svc/openid/v1/jwks`
    /// (with the cluster CA and a service-account token: the default RBAC lets every
    /// service account read it).
    JwksUrl(Endpoint),
    /// The issuer's OpenID discovery document (`…/.well-known/openid-configuration`), for an
    /// issuer outside the cluster: its `jwks_uri` is fetched with the same CA and token when on
    /// the same origin, else with the system roots and no token.
    Discovery(Endpoint),
}

/// Why a request gets no bundle.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AuthError {
    #[error("no bearer token")]
    Missing,
    #[error("token refused: {0}")]
    Token(#[from] JwsError),
    #[error("the token has no kubernetes.io namespace claim (not a service-account token)")]
    NoNamespace,
    #[error("the service-account issuer's keys are not loaded yet")]
    NoKeys,
    #[error("a token of namespace '{token}' may not fetch the bundle of namespace '{asked}'")]
    OtherNamespace { token: String, asked: String },
}

/// The verifier: its settings and the keys in force.
pub struct Auth {
    cfg: AuthConfig,
    keys: ArcSwapOption<Jwks>,
    /// The key file's bytes when last read.
    seen: Mutex<Vec<u8>>,
    wake: Notify,
}

impl Auth {
    /// Keys are loaded by `refresh_file` / `fetch_loop`; until then every token is refused.
    pub fn new(cfg: AuthConfig) -> Self {
        Auth {
            cfg,
            keys: ArcSwapOption::empty(),
            seen: Mutex::new(Vec::new()),
            wake: Notify::new(),
        }
    }

    /// Checks the `Authorization` header of a request for `namespace`'s bundle.
    pub fn authorize(
        &self,
        header: Option<&HeaderValue>,
        namespace: &str,
    ) -> Result<(), AuthError> {
        let token = header
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, token) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .ok_or(AuthError::Missing)?;
        let keys = self.keys.load_full().ok_or(AuthError::NoKeys)?;
        let verified = keys.verify(token).inspect_err(|e| {
            if matches!(e, JwsError::NoKey(_))
                && !matches!(self.cfg.keys, Keys::JwksFile(_))
                && unverified_kid(token).is_some_and(|k| !keys.has_kid(&k))
            {
                // Perhaps the issuer rotated its keys: fetch them again soon.
                self.wake.notify_one();
            }
        })?;
        verified.check(&Expect {
            issuer: &self.cfg.issuer,
            audience: &self.cfg.audience,
            leeway: LEEWAY,
            now: SystemTime::now(),
        })?;
        let own = verified.claims["kubernetes.io"]["namespace"]
            .as_str()
            .ok_or(AuthError::NoNamespace)?;
        if own != namespace {
            return Err(AuthError::OtherNamespace {
                token: own.to_string(),
                asked: namespace.to_string(),
            });
        }
        Ok(())
    }

    /// With `keys.jwks_file`: reads it when it changed and swaps the keys in once they parse
    /// (blocking). Returns an error to report; the keys in force stay.
    pub fn refresh_file(&self) -> Result<bool, String> {
        let Keys::JwksFile(path) = &self.cfg.keys else {
            return Ok(false);
        };
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let Ok(mut seen) = self.seen.lock() else {
            return Ok(false);
        };
        if *seen == bytes {
            return Ok(false);
        }
        let parsed = Jwks::parse(&bytes);
        *seen = bytes;
        let keys = parsed.map_err(|e| format!("{}: {e}", path.display()))?;
        info!(file = %path.display(), keys = keys.len(), "service-account issuer keys loaded");
        self.keys.store(Some(Arc::new(keys)));
        Ok(true)
    }

    /// With `keys.jwks_url` or `keys.discovery`: fetches the keys now, then every 5 minutes,
    /// and within 10 s of a token naming an unknown key; a failed fetch is retried with backoff
    /// (1 s doubling to 10 s). Runs until the process ends.
    pub async fn fetch_loop(self: Arc<Self>) {
        let (Keys::JwksUrl(endpoint) | Keys::Discovery(endpoint)) = self.cfg.keys.clone() else {
            return;
        };
        let mut backoff = Duration::from_secs(1);
        loop {
            let fetched = Instant::now();
            let wait = match self.fetch(&endpoint).await {
                Ok(keys) => {
                    info!(url = %endpoint.url, keys = keys.len(), "service-account issuer keys fetched");
                    self.keys.store(Some(Arc::new(keys)));
                    backoff = Duration::from_secs(1);
                    REFRESH
                }
                Err(e) => {
                    warn!(error = %e, "cannot fetch the service-account issuer keys; the keys in force stay");
                    let w = backoff;
                    backoff = (backoff * 2).min(UNKNOWN_KID_REFRESH);
                    w
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.wake.notified() => {
                    let soonest = fetched + wait.min(UNKNOWN_KID_REFRESH);
                    tokio::time::sleep_until(soonest.into()).await;
                }
            }
        }
    }

    async fn fetch(&self, endpoint: &Endpoint) -> Result<Jwks, String> {
        let (origin, uri) = endpoint.origin()?;
        let bearer = endpoint.bearer()?;
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let answer = origin.get(path, &bearer, MAX_DOC, FETCH_TIMEOUT).await?;
        if matches!(self.cfg.keys, Keys::JwksUrl(_)) {
            return jwks_of(&endpoint.url, answer);
        }
        let doc = json_of(answer).map_err(|e| format!("{}: {e}", endpoint.url))?;
        if doc["issuer"].as_str() != Some(self.cfg.issuer.as_str()) {
            return Err(format!(
                "{}: the discovery document names issuer {}, bundles.auth.issuer is '{}'",
                endpoint.url, doc["issuer"], self.cfg.issuer
            ));
        }
        let jwks: Uri = doc["jwks_uri"]
            .as_str()
            .ok_or_else(|| format!("{}: no jwks_uri", endpoint.url))?
            .parse()
            .map_err(|e| format!("{}: jwks_uri: {e}", endpoint.url))?;
        let path = jwks.path_and_query().map_or("/", |p| p.as_str());
        let answer = if origin.same(&jwks) {
            origin.get(path, &bearer, MAX_DOC, FETCH_TIMEOUT).await?
        } else {
            let other = Origin::of(&jwks, trust(None)?)?;
            other.get(path, &[], MAX_DOC, FETCH_TIMEOUT).await?
        };
        jwks_of(&jwks.to_string(), answer)
    }
}

fn jwks_of(url: &str, a: crate::tls::fetch::Answer) -> Result<Jwks, String> {
    if !a.status.is_success() {
        return Err(format!("{url}: answered {}", a.status));
    }
    Jwks::parse(&a.body).map_err(|e| format!("{url}: {e}"))
}

fn json_of(a: crate::tls::fetch::Answer) -> Result<serde_json::Value, String> {
    if !a.status.is_success() {
        return Err(format!(
            "answered {}: {}",
            a.status,
            String::from_utf8_lossy(&a.body[..a.body.len().min(200)])
        ));
    }
    serde_json::from_slice(&a.body).map_err(|e| format!("not JSON: {e}"))
}
