//! The intent step of the decision: which intent a call is made under, with signed intent
//! tokens (src/token/) wired in. A token comes in the `intent_tokens.header` of the request,
//! else with the session intent (`PUT /v1/intent {"token": …}`), else from `run --intent-token`.
//! A verified token declares the intent and task and beats any bare name; a bare name (header or
//! session) that contradicts it is refused, as is a bare name where a token is required
//! (`intent_tokens.required`, `intents.X.requires_token`). The token's narrowing claims then
//! bound the call, natively and in every mode. A refusal names what failed, never the token.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::HeaderName;

use super::gate::LivePolicy;
use crate::audit::{AuditIntent, AuditRecord};
use crate::config::IntentTokensConfig;
use crate::error::ProxyError;
use crate::identity::Agent;
use crate::intent::{self, Intent, IntentSource, SessionStore};
use crate::metrics::Metrics;
use crate::policy::RequestFacts;
use crate::token::verify::Verifier;
use crate::token::{IntentClaims, TokenError};
use crate::vocab::{ErrorCode, Verdict};

/// The intent-token settings in force, built at start.
pub(crate) struct IntentTokens {
    /// `None` when no issuer is configured: every token is then refused (`unknown_issuer`).
    verifier: Option<Verifier>,
    header: HeaderName,
    required: bool,
    /// The issuers' names, for hints.
    issuers: String,
    /// `run --intent-token FILE`: the token presented for every call without one of its own.
    presented: Option<Arc<str>>,
}

/// Where the intent token a call's intent was verified from is, for the credential step (an
/// RFC 8693 subject token, src/cred/): a handle, not a copy.
pub(crate) enum Presented {
    /// The request's own `intent_tokens.header`.
    Header,
    /// The session's token, or `run --intent-token`'s.
    Held(Arc<str>),
}

impl std::fmt::Debug for IntentTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntentTokens")
            .field("issuers", &self.issuers)
            .field("required", &self.required)
            .finish_non_exhaustive()
    }
}

/// A call refused by the intent step.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub code: ErrorCode,
    pub reason: String,
    pub hint: String,
    /// The intent the call was (or claimed to be) made under, and how it was declared.
    pub intent: Option<String>,
    pub source: IntentSource,
}

impl IntentTokens {
    /// Loads the issuers' keys; `agent`'s id and SPIFFE id are the default audiences.
    pub(crate) fn new(
        cfg: &IntentTokensConfig,
        agent: &Agent,
        metrics: &Arc<Metrics>,
    ) -> Result<Self, String> {
        let audiences: Vec<String> = std::iter::once(agent.id.clone())
            .chain(agent.spiffe_id.clone())
            .collect();
        let verifier = if cfg.issuers.is_empty() {
            None
        } else {
            Some(
                Verifier::new(cfg, &audiences, metrics)
                    .map_err(|e| format!("intent_tokens: {e}"))?,
            )
        };
        let issuers: Vec<&str> = cfg.issuers.iter().map(|i| i.issuer.as_str()).collect();
        Ok(IntentTokens {
            verifier,
            header: HeaderName::from_bytes(cfg.header.as_bytes())
                .map_err(|_| format!("intent_tokens.header: '{}' is not valid", cfg.header))?,
            required: cfg.required,
            issuers: issuers.join(", "),
            presented: cfg.presented.as_ref().map(|p| p.0.trim().into()),
        })
    }

    /// After a refusal: fetches again (rate limited) the `jwks_url` key sets a token found
    /// lacking a key; whether the call is worth resolving again.
    pub(crate) async fn refetch_keys(&self) -> bool {
        match &self.verifier {
            Some(v) => v.refetch_wanted().await,
            None => false,
        }
    }

    /// The request header that carries a token.
    pub(crate) fn header(&self) -> &HeaderName {
        &self.header
    }

    /// Verifies `token` and checks it against the catalog: its intent must be there and its
    /// narrowing claims may only narrow.
    pub(crate) fn verify(
        &self,
        token: &str,
        live: &LivePolicy,
    ) -> Result<Arc<IntentClaims>, Refusal> {
        let verifier = self
            .verifier
            .as_ref()
            .ok_or_else(|| self.invalid(TokenError::UnknownIssuer))?;
        let claims = verifier
            .verify(token, SystemTime::now())
            .map_err(|e| self.invalid(e))?;
        let catalog = live.policy.catalog();
        let name = &claims.intent;
        if !catalog.contains(name) {
            return Err(Refusal {
                code: ErrorCode::IntentTokenUnknownIntent,
                reason: format!(
                    "the intent token declares intent '{name}', which is not in the catalog"
                ),
                hint: format!(
                    "ask the token's issuer ({}) for a token naming an intent of the catalog",
                    self.issuers
                ),
                intent: Some(name.clone()),
                source: IntentSource::Token,
            });
        }
        if claims.narrows() {
            let (h, m, p) = (&claims.hosts, &claims.methods, &claims.paths);
            if let Some(what) = catalog.widening(name, h.as_deref(), m.as_deref(), p.as_deref()) {
                return Err(Refusal {
                    code: ErrorCode::IntentTokenWidening,
                    reason: format!(
                        "the intent token's claim {what} names more than intent '{name}' allows \
                         (narrowing claims may only narrow)"
                    ),
                    hint: format!(
                        "ask the token's issuer ({}) for a token whose hosts, methods and paths lie inside intent '{name}'",
                        self.issuers
                    ),
                    intent: Some(name.clone()),
                    source: IntentSource::Token,
                });
            }
        }
        Ok(claims)
    }

    /// The intent `facts` is decided under: `token` (the request's token header), else the
    /// session's token, else the presented one; without any, the bare name (`declared`, else
    /// the session, else the default), if the catalog and config let a bare name declare it.
    /// With it, where the token it was verified from is.
    pub(crate) fn resolve(
        &self,
        live: &LivePolicy,
        session: &SessionStore,
        declared: Option<(&str, Option<&str>)>,
        token: Option<&str>,
        facts: &RequestFacts<'_>,
    ) -> Result<(Intent, Option<Presented>), Refusal> {
        let default = live
            .default_intent
            .as_ref()
            .map(|(n, t)| (n.as_str(), t.as_deref()));
        // A tunnel to be intercepted is decided on its destination: its requests bring their own.
        let catalog = live.policy.catalog();
        if facts.opens_tunnel() {
            let current = session.get_shared(Instant::now);
            let intent =
                intent::resolve_in(declared, current.as_deref(), default, |n| live.share(n));
            return Ok((intent, None));
        }
        // The session is read once (a shared lock), for its token and for its bare name.
        let current = session.get_shared(Instant::now);
        let session_token = current.as_ref().and_then(|s| s.token.as_ref());
        let held = session_token.or(self.presented.as_ref());
        let (token, presented) = match (token, held) {
            (Some(t), _) => (t, Presented::Header),
            (None, Some(t)) => (&**t, Presented::Held(t.clone())),
            (None, None) => {
                // Found in the catalog once: its later questions about it go straight to it.
                let intent =
                    intent::resolve_in(declared, current.as_deref(), default, |n| live.share(n));
                return match intent.name.as_deref() {
                    Some(_) if self.required || catalog.intent_requires_token(&intent) => {
                        Err(self.required(&intent))
                    }
                    None if self.required => Err(self.required(&intent)),
                    _ => Ok((intent, None)),
                };
            }
        };
        let claims = self.verify(token, live)?;
        // A bare name beside the token must name the same intent.
        let bare = declared
            .map(|(n, _)| n)
            .or(current
                .as_ref()
                .filter(|s| s.token.is_none())
                .map(|s| s.name.as_str()))
            .map(str::trim)
            .filter(|n| !n.is_empty());
        if let Some(bare) = bare.filter(|b| *b != claims.intent) {
            return Err(self.mismatch(bare, &claims.intent));
        }
        narrow(&claims, facts)?;
        let mut intent = Intent::from_token(claims);
        catalog.know(&mut intent);
        Ok((intent, Some(presented)))
    }

    /// A bare name `bare` beside a token that declares `intent`.
    pub(crate) fn mismatch(&self, bare: &str, intent: &str) -> Refusal {
        Refusal {
            code: ErrorCode::IntentTokenMismatch,
            reason: format!(
                "intent '{bare}' was declared by name, but the intent token declares '{intent}'"
            ),
            hint: "drop the bare intent name: the intent token declares the intent".into(),
            intent: Some(intent.to_string()),
            source: IntentSource::Token,
        }
    }

    /// The refusal of a session intent set by bare `name` where a token is required.
    pub(crate) fn bare_session(&self, live: &LivePolicy, name: &str) -> Option<Refusal> {
        (self.required || live.policy.catalog().requires_token(name)).then(|| {
            self.required(&Intent {
                name: Some(name.into()),
                ..Intent::none()
            })
        })
    }

    fn required(&self, intent: &Intent) -> Refusal {
        let which = match &intent.name {
            Some(n) => format!("intent '{n}' must be declared by a signed intent token"),
            None => "every intent must be declared by a signed intent token".into(),
        };
        Refusal {
            code: ErrorCode::IntentTokenRequired,
            reason: format!("{which}; a bare intent name is not accepted"),
            hint: format!(
                "present an intent token from {} in the '{}' header (or PUT /v1/intent with {{\"token\": …}})",
                if self.issuers.is_empty() {
                    "a configured issuer".into()
                } else {
                    format!("issuer {}", self.issuers)
                },
                self.header
            ),
            intent: intent.name.as_deref().map(str::to_string),
            source: intent.source,
        }
    }

    fn invalid(&self, e: TokenError) -> Refusal {
        let code = match e {
            TokenError::Expired => ErrorCode::IntentTokenExpired,
            TokenError::BadSignature | TokenError::UnknownKid | TokenError::AlgKeyMismatch => {
                ErrorCode::IntentTokenBadSignature
            }
            TokenError::UnknownIssuer => ErrorCode::IntentTokenUnknownIssuer,
            TokenError::WrongAudience => ErrorCode::IntentTokenWrongAudience,
            TokenError::Revoked => ErrorCode::IntentTokenRevoked,
            TokenError::Malformed
            | TokenError::UnsupportedAlg
            | TokenError::NotYetValid
            | TokenError::MissingClaim
            | TokenError::InvalidClaim
            | TokenError::BindingMismatch => ErrorCode::IntentTokenInvalid,
            TokenError::KeysUnavailable => ErrorCode::IntentTokenKeysUnavailable,
        };
        let issuers = if self.issuers.is_empty() {
            "no issuer is configured (intent_tokens.issuers)".to_string()
        } else {
            format!("accepted issuers: {}", self.issuers)
        };
        Refusal {
            code,
            reason: format!("intent token refused ({}): {e}", e.code()),
            hint: format!(
                "ask the orchestrator for a fresh intent token for this agent; {issuers}"
            ),
            intent: None,
            source: IntentSource::Token,
        }
    }
}

/// The intent token a call's intent was verified from, held past the removal of its header: a
/// reference (a header value shares the request's buffer), never a copy.
pub(crate) enum Subject {
    Header(http::HeaderValue),
    Held(Arc<str>),
}

/// The intent token `presented` points at, in `headers` (under `header`) or held.
pub(crate) fn subject(
    presented: Option<Presented>,
    headers: &http::HeaderMap,
    header: &HeaderName,
) -> Option<Subject> {
    match presented? {
        Presented::Header => headers.get(header).cloned().map(Subject::Header),
        Presented::Held(t) => Some(Subject::Held(t)),
    }
}

/// The intent token of a call, for the credential step (src/cred/): its text and `exp`.
pub(crate) fn for_credential<'a>(
    subject: Option<&'a Subject>,
    intent: &Intent,
) -> Option<crate::cred::IntentToken<'a>> {
    let raw = match subject? {
        Subject::Header(v) => v.as_bytes(),
        Subject::Held(t) => t.as_bytes(),
    };
    let exp = intent.token.as_ref()?.exp;
    Some(crate::cred::IntentToken { raw, exp })
}

/// The token's narrowing claims against the call. A tunnel that is not intercepted shows only
/// its host: a token that narrows methods or paths is refused there (it cannot be enforced).
fn narrow(claims: &IntentClaims, facts: &RequestFacts<'_>) -> Result<(), Refusal> {
    if !claims.narrows() {
        return Ok(());
    }
    let request = facts.path.map(|p| (facts.method, p));
    let outside = match request {
        None if claims.narrows_inside() => {
            Err("methods and paths (not visible in a tunnel that is not intercepted)")
        }
        _ => claims.permits(facts.host, request).map_err(|o| o.claim()),
    };
    outside.map_err(|claim| Refusal {
        code: ErrorCode::OutsideTokenScope,
        reason: format!(
            "{} {}{} is outside the intent token's {claim}",
            facts.method,
            facts.host,
            facts.path.unwrap_or_default()
        ),
        hint: "the intent token narrows this task to fewer hosts, methods or paths; ask its issuer for a token that covers this call".into(),
        intent: Some(claims.intent.clone()),
        source: IntentSource::Token,
    })
}

impl Refusal {
    /// Records the refusal in `rec` and the metrics; the error to answer.
    pub(crate) fn refuse(
        self,
        live: &LivePolicy,
        rec: &mut AuditRecord,
        metrics: &Metrics,
    ) -> ProxyError {
        rec.policy_revision = live.policy.shared_revision();
        rec.intent = AuditIntent {
            name: self.intent.as_deref().map(Arc::from),
            task: None,
            source: Some(self.source),
            verified: false,
        };
        rec.decision = Some(Verdict::Deny);
        rec.code = Some(self.code);
        rec.reasons = vec![self.reason.clone()];
        metrics.refused(self.code);
        ProxyError::Denied {
            code: self.code,
            reason: self.reason,
            hint: self.hint,
            agent: live.agent.id.clone(),
            intent: self.intent,
        }
    }
}
