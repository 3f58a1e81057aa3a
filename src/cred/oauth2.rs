//! OAuth 2.0 token sources: client credentials (RFC 6749 4.4) and token exchange (RFC 8693, a
//! subject token read from a file, e.g. the pod's projected service-account token, for an access
//! token scoped per rule). A token is fetched on first use (a denied call never asks for one),
//! kept until shortly before its `expires_in`, then refreshed in the background while requests
//! go on using it; a failed refresh keeps the old token until it expires (retried at most once a
//! second), after which requests are refused (503 `credential_unavailable`) until a fetch works.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use base64::Engine as _;
use http::{HeaderName, HeaderValue, Uri};
use tracing::{Instrument, info_span, warn};

use super::Secret;
use crate::tls::fetch::Origin;
use crate::config::{CredentialSpec, ExchangeScope, SecretRef};
use crate::metrics::Metrics;

/// A token endpoint's answer is small; an exchange never takes longer than this.
const BODY_LIMIT: usize = 64 * 1024;
const DEADLINE: Duration = Duration::from_secs(10);
/// After a failed fetch, how long before another is tried.
const RETRY: Duration = Duration::from_secs(1);
/// The lifetime assumed when the endpoint gives no `expires_in`.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);

/// The tokens of one OAuth 2.0 credential: one slot, or one per exchange scope.
pub(super) struct Tokens {
    inner: Arc<Inner>,
    slots: Mutex<HashMap<ExchangeScope, Arc<Slot>>>,
}

struct Inner {
    name: String,
    grant: Grant,
    origin: Origin,
    path: String,
    metrics: Arc<Metrics>,
}

enum Grant {
    ClientCredentials {
        client_id: String,
        secret: SecretRef,
        scopes: Option<String>,
        audience: Option<String>,
    },
    Exchange {
        subject: std::path::PathBuf,
        subject_type: String,
        client: Option<(String, Option<SecretRef>)>,
        scopes: Option<String>,
        audience: Option<String>,
        resource: Option<String>,
    },
}

/// One token and its refresh state.
#[derive(Default)]
struct Slot {
    token: ArcSwapOption<Secret>,
    /// When to start refreshing it (Unix ms).
    refresh_at: AtomicU64,
    /// No fetch before this (Unix ms): set after a failure.
    retry_at: AtomicU64,
    /// A fetch is under way (single flight).
    fetching: tokio::sync::Mutex<()>,
    refreshing: AtomicBool,
    version: AtomicU64,
}

pub(super) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Tokens {
    pub(super) fn new(
        name: &str,
        spec: &CredentialSpec,
        tls: &crate::tls::Tls,
        metrics: &Arc<Metrics>,
    ) -> Result<Self, String> {
        let field = |f: &str, m: String| format!("credentials.{name}.{f}: {m}");
        let (kind, url, ca, grant) =
            match (&spec.oauth2_client_credentials, &spec.oauth2_token_exchange) {
                (Some(c), _) => (
                    "oauth2_client_credentials",
                    &c.token_url,
                    &c.ca,
                    Grant::ClientCredentials {
                        client_id: c.client_id.clone(),
                        secret: c.client_secret.clone(),
                        scopes: (!c.scopes.is_empty()).then(|| c.scopes.join(" ")),
                        audience: c.audience.clone(),
                    },
                ),
                (None, Some(x)) => (
                    "oauth2_token_exchange",
                    &x.token_url,
                    &x.ca,
                    Grant::Exchange {
                        subject: x.subject_token_file.clone(),
                        subject_type: if x.subject_token_type.is_empty() {
                            "urn:ietf:params:oauth:token-type:jwt".into()
                        } else {
                            x.subject_token_type.clone()
                        },
                        client: x.client_id.clone().map(|id| (id, x.client_secret.clone())),
                        scopes: (!x.scopes.is_empty()).then(|| x.scopes.join(" ")),
                        audience: x.audience.clone(),
                        resource: x.resource.clone(),
                    },
                ),
                (None, None) => return Err(format!("credentials.{name}: no source")),
            };
        let uri: Uri = url
            .parse()
            .map_err(|e| field(&format!("{kind}.token_url"), format!("'{url}': {e}")))?;
        let trust = match ca {
            Some(ca) => crate::tls::fetch::trust(Some(&ca.display().to_string()))
                .map_err(|m| field(&format!("{kind}.ca"), m))?,
            None => tls.upstream.clone(),
        };
        let origin = Origin::of(&uri, trust).map_err(|m| field(&format!("{kind}.token_url"), m))?;
        // Secrets it needs are checked now (a missing env variable is a broken config).
        if let Grant::ClientCredentials { secret, .. } = &grant {
            read_ref(secret).map_err(|m| field(&format!("{kind}.client_secret"), m))?;
        }
        Ok(Tokens {
            inner: Arc::new(Inner {
                name: name.to_string(),
                grant,
                origin,
                path: uri.path_and_query().map_or("/", |p| p.as_str()).to_string(),
                metrics: metrics.clone(),
            }),
            slots: Mutex::default(),
        })
    }

    /// The slot of `scope` (client credentials: the one slot).
    fn slot(&self, scope: &ExchangeScope) -> Arc<Slot> {
        let none = ExchangeScope::default();
        let key = match self.inner.grant {
            Grant::ClientCredentials { .. } => &none,
            Grant::Exchange { .. } => scope,
        };
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        match slots.get(key) {
            Some(s) => s.clone(),
            None => slots.entry(key.clone()).or_default().clone(),
        }
    }

    /// The cached token for `scope` if it is usable (no waiting: the request path's common
    /// case); a refresh that is due is started in the background.
    pub(super) fn cached(&self, scope: &ExchangeScope) -> Option<Arc<Secret>> {
        let slot = self.slot(scope);
        let now = unix_ms(SystemTime::now());
        let t = slot.token.load_full().filter(|t| t.usable_at(now))?;
        if now >= slot.refresh_at.load(Ordering::Relaxed)
            && now >= slot.retry_at.load(Ordering::Relaxed)
            && !slot.refreshing.swap(true, Ordering::AcqRel)
        {
            let (inner, slot, scope) = (self.inner.clone(), slot.clone(), scope.clone());
            let span = info_span!("credential_refresh", credential = %inner.name);
            tokio::spawn(
                async move {
                    let _one = slot.fetching.lock().await;
                    let _ = inner.fetch_into(&slot, &scope).await;
                    slot.refreshing.store(false, Ordering::Release);
                }
                .instrument(span),
            );
        }
        Some(t)
    }

    /// No usable token: this request waits for a fetch (one at a time; the others then use it).
    pub(super) async fn fetch_now(&self, scope: &ExchangeScope) -> Result<Arc<Secret>, String> {
        let slot = self.slot(scope);
        let _one = slot.fetching.lock().await;
        let now = unix_ms(SystemTime::now());
        if let Some(t) = slot.token.load_full().filter(|t| t.usable_at(now)) {
            return Ok(t);
        }
        if now < slot.retry_at.load(Ordering::Relaxed) {
            return Err("its token request failed a moment ago".into());
        }
        self.inner.fetch_into(&slot, scope).await
    }
}

impl Inner {
    /// Fetches a token into `slot` (the caller holds its `fetching` lock).
    async fn fetch_into(&self, slot: &Slot, scope: &ExchangeScope) -> Result<Arc<Secret>, String> {
        let started = SystemTime::now();
        match self.fetch(scope).await {
            Ok((value, lifetime)) => {
                let expires = started + lifetime;
                let margin = (lifetime / 4).min(Duration::from_secs(60));
                let version = slot.version.fetch_add(1, Ordering::Relaxed) + 1;
                let t = Arc::new(Secret::token(&self.name, value, version, expires));
                slot.token.store(Some(t.clone()));
                slot.refresh_at
                    .store(unix_ms(expires - margin), Ordering::Relaxed);
                slot.retry_at.store(0, Ordering::Relaxed);
                self.metrics.credential_refreshed(&self.name, true);
                self.metrics
                    .credential_expiry
                    .with_label_values(&[self.name.as_str()])
                    .set(unix_ms(expires) as f64 / 1000.0);
                Ok(t)
            }
            Err(why) => {
                slot.retry_at
                    .store(unix_ms(SystemTime::now() + RETRY), Ordering::Relaxed);
                self.metrics.credential_refreshed(&self.name, false);
                let kept = slot.token.load().is_some();
                warn!(credential = %self.name, error = %why, kept_until_expiry = kept, "credential token request failed");
                Err(format!("its token request failed: {why}"))
            }
        }
    }

    /// One token request: the access token and its lifetime.
    async fn fetch(&self, scope: &ExchangeScope) -> Result<(Box<str>, Duration), String> {
        let mut form = Form::default();
        let mut headers: Vec<(HeaderName, HeaderValue)> = Vec::new();
        let mut basic = |id: &str, secret: &SecretRef| -> Result<(), String> {
            let secret = read_ref(secret)?;
            let pair = format!("{}:{}", form_encode(id), form_encode(&secret));
            let mut v = String::from("Basic ");
            base64::engine::general_purpose::STANDARD.encode_string(pair, &mut v);
            let mut v = HeaderValue::from_str(&v).map_err(|_| "client secret is not text")?;
            v.set_sensitive(true);
            headers.push((http::header::AUTHORIZATION, v));
            Ok(())
        };
        match &self.grant {
            Grant::ClientCredentials {
                client_id,
                secret,
                scopes,
                audience,
            } => {
                basic(client_id, secret)?;
                form.add("grant_type", "client_credentials");
                form.opt("scope", scopes.as_deref());
                form.opt("audience", audience.as_deref());
            }
            Grant::Exchange {
                subject,
                subject_type,
                client,
                scopes,
                audience,
                resource,
            } => {
                match client {
                    Some((id, Some(secret))) => basic(id, secret)?,
                    Some((id, None)) => form.add("client_id", id),
                    None => {}
                }
                let token = super::source::read_clean(subject)?;
                form.add(
                    "grant_type",
                    "urn:ietf:params:oauth:grant-type:token-exchange",
                );
                form.add("subject_token", &token);
                form.add("subject_token_type", subject_type);
                form.add(
                    "requested_token_type",
                    "urn:ietf:params:oauth:token-type:access_token",
                );
                form.opt("scope", scope.scopes.as_deref().or(scopes.as_deref()));
                form.opt(
                    "audience",
                    scope.audience.as_deref().or(audience.as_deref()),
                );
                form.opt(
                    "resource",
                    scope.resource.as_deref().or(resource.as_deref()),
                );
            }
        }
        let answer = self
            .origin
            .post_form(&self.path, &headers, form.0, BODY_LIMIT, DEADLINE)
            .await?;
        #[derive(serde::Deserialize)]
        struct Reply {
            access_token: Option<String>,
            expires_in: Option<u64>,
            error: Option<String>,
        }
        let reply: Option<Reply> = serde_json::from_slice(&answer.body).ok();
        if !answer.status.is_success() {
            let code = reply.and_then(|r| r.error).unwrap_or_default();
            return Err(format!(
                "the token endpoint answered {} {code}",
                answer.status
            ));
        }
        let reply = reply.ok_or("the token endpoint's answer is not a token response")?;
        let token = reply
            .access_token
            .filter(|t| !t.is_empty() && !t.bytes().any(|b| b.is_ascii_control()))
            .ok_or("the token endpoint's answer has no access_token")?;
        let lifetime = reply
            .expires_in
            .map_or(DEFAULT_LIFETIME, Duration::from_secs);
        Ok((token.into(), lifetime))
    }
}

/// A `SecretRef`'s value, read now.
fn read_ref(r: &SecretRef) -> Result<Box<str>, String> {
    match (&r.file, &r.env) {
        (Some(f), _) => super::source::read_clean(f),
        (None, Some(v)) => std::env::var(v)
            .ok()
            .filter(|s| !s.trim().is_empty())
            .map(|s| s.trim().into())
            .ok_or_else(|| format!("the environment variable {v} is not set or empty")),
        (None, None) => Err("no file or env".into()),
    }
}

/// An `application/x-www-form-urlencoded` body.
#[derive(Default)]
struct Form(String);

impl Form {
    fn add(&mut self, k: &str, v: &str) {
        if !self.0.is_empty() {
            self.0.push('&');
        }
        self.0.push_str(&form_encode(k));
        self.0.push('=');
        self.0.push_str(&form_encode(v));
    }

    fn opt(&mut self, k: &str, v: Option<&str>) {
        if let Some(v) = v {
            self.add(k, v);
        }
    }
}

fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    super::inject::encode_into(&mut out, s);
    out
}
