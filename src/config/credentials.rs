//! The `credentials` section (named secret sources the proxy injects for the agent, src/cred/)
//! and a catalog rule's `inject` binding. Only where a secret is kept is written here, never a
//! secret itself: this document may be printed and served.

use std::collections::BTreeMap;
use std::path::PathBuf;

use http::HeaderName;
use serde::{Deserialize, Serialize};

/// One named credential: exactly one source.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CredentialSpec {
    /// A file whose content (trimmed) is the secret, e.g. a mounted Kubernetes Secret; re-read
    /// when it changes, the old value kept until a new one reads cleanly.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// An environment variable of intentgate's own process (never passed to a `run` child).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// An OAuth 2.0 client-credentials grant (RFC 6749 4.4).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oauth2_client_credentials: Option<OAuth2ClientCredentials>,
    /// An OAuth 2.0 token exchange (RFC 8693).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oauth2_token_exchange: Option<OAuth2TokenExchange>,
    /// How often a `file` source is checked for a new value.
    pub poll_ms: u64,
}

impl Default for CredentialSpec {
    fn default() -> Self {
        Self {
            file: None,
            env: None,
            oauth2_client_credentials: None,
            oauth2_token_exchange: None,
            poll_ms: 1000,
        }
    }
}

/// A secret the config points at (never written inline): a file or an env variable.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SecretRef {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
}

/// `oauth2_client_credentials`: a token from `token_url` for this client.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OAuth2ClientCredentials {
    pub token_url: String,
    pub client_id: String,
    pub client_secret: SecretRef,
    pub scopes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// PEM file of the CA that signs the token endpoint's certificate (default: the roots of
    /// `tls.upstream_roots` plus `tls.upstream_ca`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
}

/// `oauth2_token_exchange`: an access token for a subject token: a file's, or the call's own
/// intent token.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OAuth2TokenExchange {
    pub token_url: String,
    /// What is exchanged (default `file`).
    pub subject_token: SubjectToken,
    /// The subject token, e.g. the pod's projected service-account token (read at each exchange);
    /// with `subject_token: intent_token`, what a call without an intent token exchanges.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject_token_file: Option<PathBuf>,
    /// The type of the file's token (default `urn:ietf:params:oauth:token-type:jwt`).
    pub subject_token_type: String,
    /// Client authentication at the token endpoint, if it wants any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<SecretRef>,
    pub scopes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
}

/// `oauth2_token_exchange.subject_token`: what the token endpoint is given as the subject.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SubjectToken {
    /// `subject_token_file`'s content.
    #[default]
    File,
    /// The verified intent token of the call (a JWT), `subject_token_file` being the fallback for
    /// a call that carries none.
    IntentToken,
}

/// A catalog rule's `inject`: which credential goes into requests the rule allows, and where.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct InjectSpec {
    pub credential: String,
    /// A request header (e.g. `Authorization`) ...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// ... written as this format, `{}` standing for the secret (default `{}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// Or a query parameter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// Or HTTP Basic: the secret is the password of this user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub basic: Option<BasicSpec>,
    /// An agent-sent value of the header/parameter is refused (403 `credential_present`)
    /// instead of removed.
    pub require_absent: bool,
    /// Allow injection into plain HTTP (else 403 `credential_requires_tls`).
    pub allow_plaintext: bool,
    /// OAuth 2.0 token exchange: what to ask for under this rule (else the source's own).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
}

/// `inject.basic`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BasicSpec {
    pub user: String,
}

/// Where an injected credential goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// `name: prefix SECRET suffix`.
    Header {
        name: HeaderName,
        prefix: Box<str>,
        suffix: Box<str>,
    },
    /// `?param=SECRET` (percent-encoded).
    Query(Box<str>),
    /// `Authorization: Basic base64(user:SECRET)`.
    Basic(Box<str>),
}

/// Token-exchange parameters one rule asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ExchangeScope {
    pub scopes: Option<Box<str>>,
    pub audience: Option<Box<str>>,
    pub resource: Option<Box<str>>,
}

/// A compiled `inject`, held by the catalog rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub credential: Box<str>,
    pub placement: Placement,
    pub require_absent: bool,
    pub allow_plaintext: bool,
    pub exchange: ExchangeScope,
}

impl Binding {
    /// The placement when the policy picks a credential for a rule that binds none:
    /// `Authorization: Bearer SECRET`, TLS only.
    pub fn bearer(credential: &str) -> Binding {
        Binding {
            credential: credential.into(),
            placement: Placement::Header {
                name: http::header::AUTHORIZATION,
                prefix: "Bearer ".into(),
                suffix: "".into(),
            },
            require_absent: false,
            allow_plaintext: false,
            exchange: ExchangeScope::default(),
        }
    }
}

impl InjectSpec {
    /// Checks and compiles the binding; the error is a message for the `inject` field.
    pub fn compile(&self) -> Result<Binding, String> {
        if self.credential.trim().is_empty() {
            return Err("inject.credential: names no credential".into());
        }
        let placement = match (&self.header, &self.query, &self.basic) {
            (Some(h), None, None) => {
                let name = HeaderName::from_bytes(h.trim().as_bytes())
                    .map_err(|_| format!("inject.header: '{h}' is not a header name"))?;
                let format = self.format.as_deref().unwrap_or("{}");
                let (prefix, suffix) = format
                    .split_once("{}")
                    .filter(|(_, rest)| !rest.contains("{}"))
                    .ok_or_else(|| {
                        format!("inject.format: '{format}' must contain `{{}}` exactly once")
                    })?;
                if http::HeaderValue::from_str(&format.replace("{}", "")).is_err() {
                    return Err(format!("inject.format: '{format}' is not a header value"));
                }
                Placement::Header {
                    name,
                    prefix: prefix.into(),
                    suffix: suffix.into(),
                }
            }
            (None, Some(q), None) if !q.is_empty() && !q.contains(['&', '=', '#']) => {
                Placement::Query(q.as_str().into())
            }
            (None, Some(q), None) => {
                return Err(format!("inject.query: '{q}' is not a parameter name"));
            }
            (None, None, Some(b)) if !b.user.contains(':') => {
                Placement::Basic(b.user.as_str().into())
            }
            (None, None, Some(_)) => return Err("inject.basic.user: may not contain ':'".into()),
            _ => {
                return Err(
                    "inject: give exactly one of `header` (with `format`), `query`, `basic`".into(),
                );
            }
        };
        if self.format.is_some() && self.header.is_none() {
            return Err("inject.format: goes with `header` only".into());
        }
        Ok(Binding {
            credential: self.credential.trim().into(),
            placement,
            require_absent: self.require_absent,
            allow_plaintext: self.allow_plaintext,
            exchange: ExchangeScope {
                scopes: self.scopes.as_ref().map(|s| s.join(" ").into()),
                audience: self.audience.as_deref().map(Into::into),
                resource: self.resource.as_deref().map(Into::into),
            },
        })
    }
}

/// Checks the `credentials` section and every `inject` of the config's own catalog; the error
/// names the field.
pub fn validate_credentials(
    creds: &BTreeMap<String, CredentialSpec>,
    intents: &BTreeMap<String, super::IntentSpec>,
) -> Result<(), (String, String)> {
    for (name, c) in creds {
        let field = |f: &str| format!("credentials.{name}{f}");
        let kinds = [
            c.file.is_some(),
            c.env.is_some(),
            c.oauth2_client_credentials.is_some(),
            c.oauth2_token_exchange.is_some(),
        ];
        if kinds.iter().filter(|k| **k).count() != 1 {
            return Err((
                field(""),
                "give exactly one of file, env, oauth2_client_credentials, oauth2_token_exchange"
                    .into(),
            ));
        }
        if c.env
            .as_deref()
            .is_some_and(|e| e.is_empty() || e.contains('='))
        {
            return Err((field(".env"), "is not an environment variable name".into()));
        }
        if c.poll_ms == 0 {
            return Err((field(".poll_ms"), "must be greater than 0".into()));
        }
        let secret_ok = |s: &SecretRef| s.file.is_some() != s.env.is_some();
        if let Some(o) = &c.oauth2_client_credentials {
            if !o.token_url.starts_with("https://") {
                return Err((field(".oauth2_client_credentials.token_url"), HTTPS.into()));
            }
            if o.client_id.is_empty() {
                return Err((
                    field(".oauth2_client_credentials.client_id"),
                    "is empty".into(),
                ));
            }
            if !secret_ok(&o.client_secret) {
                return Err((
                    field(".oauth2_client_credentials.client_secret"),
                    ONE_REF.into(),
                ));
            }
        }
        if let Some(x) = &c.oauth2_token_exchange {
            if !x.token_url.starts_with("https://") {
                return Err((field(".oauth2_token_exchange.token_url"), HTTPS.into()));
            }
            let file = x.subject_token_file.as_ref();
            if file.is_some_and(|f| f.as_os_str().is_empty())
                || (file.is_none() && x.subject_token == SubjectToken::File)
            {
                return Err((
                    field(".oauth2_token_exchange.subject_token_file"),
                    "names no file (required unless subject_token is intent_token)".into(),
                ));
            }
            if x.client_secret.as_ref().is_some_and(|s| !secret_ok(s)) {
                return Err((
                    field(".oauth2_token_exchange.client_secret"),
                    ONE_REF.into(),
                ));
            }
        }
    }
    for (intent, spec) in intents {
        for (i, rule) in spec.allow.iter().enumerate() {
            let Some(inject) = &rule.inject else { continue };
            let field = format!("intents.{intent}.allow.{}.inject", i + 1);
            let b = inject.compile().map_err(|m| (field.clone(), m))?;
            if !creds.contains_key(&*b.credential) {
                return Err((
                    field,
                    format!(
                        "credential '{}' is not defined under `credentials`",
                        b.credential
                    ),
                ));
            }
        }
    }
    Ok(())
}

const HTTPS: &str = "must be an https:// URL (a client secret is never sent in clear text)";
const ONE_REF: &str = "give exactly one of `file` or `env`";

/// The file paths of a credential (resolved against the config's directory at load).
pub(super) fn paths_mut(c: &mut CredentialSpec) -> impl Iterator<Item = &mut PathBuf> {
    let cc = c.oauth2_client_credentials.as_mut();
    let (cc_secret, cc_ca) = match cc {
        Some(o) => (o.client_secret.file.as_mut(), o.ca.as_mut()),
        None => (None, None),
    };
    let (x_subject, x_secret, x_ca) = match c.oauth2_token_exchange.as_mut() {
        Some(x) => (
            x.subject_token_file.as_mut(),
            x.client_secret.as_mut().and_then(|s| s.file.as_mut()),
            x.ca.as_mut(),
        ),
        None => (None, None, None),
    };
    [c.file.as_mut(), cc_secret, cc_ca, x_subject, x_secret, x_ca]
        .into_iter()
        .flatten()
}
