//! The proxy's error type; src/error/reply.rs is the ONE place where errors become HTTP
//! responses.
//!
//! Every error intentgate answers itself is JSON of one shape (`ErrorReply`): `error` is an object
//! as the LLM SDKs read errors — `message` (the reason and the hint in one sentence), `type`, and
//! `code` (the stable code) — followed by a human `reason`, the `decision_id`, a `hint` saying
//! what to do next, and the `agent` and `intent` a refusal concerns: an agent (often an LLM)
//! reads it and must understand it.

use bytes::Bytes;
use http::StatusCode;
use http_body_util::combinators::BoxBody;

use crate::vocab::ErrorCode;

/// The body type of every response the proxy returns.
pub type Body = BoxBody<Bytes, hyper::Error>;

/// Who caused an error: becomes an audit field and a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    Client,
    Upstream,
    Proxy,
    Policy,
}

/// Everything that can stop a request before (or instead of) an upstream response.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProxyError {
    #[error("{reason}")]
    BadRequest { reason: String, hint: &'static str },
    #[error(
        "this is a forward proxy: the request target must be absolute (http://host/path) or CONNECT host:port"
    )]
    NotAProxyRequest,
    #[error("request headers exceed the limit ({0})")]
    HeadersTooLarge(String),
    #[error("cannot resolve upstream host {host}: {detail}")]
    UpstreamResolve { host: String, detail: String },
    #[error("cannot connect to upstream {target}: {detail}")]
    UpstreamConnect { target: String, detail: String },
    #[error("upstream {target} did not answer within {after_ms} ms ({stage})")]
    UpstreamTimeout {
        target: String,
        stage: &'static str,
        after_ms: u64,
    },
    #[error("upstream {target} failed: {detail}")]
    UpstreamProtocol { target: String, detail: String },
    #[error("parent proxy refused the tunnel to {target}: {detail}")]
    ParentProxy { target: String, detail: String },
    /// The upstream's certificate failed verification, or its TLS handshake failed.
    #[error("TLS with upstream {target} failed: {reason}")]
    UpstreamTls { target: String, reason: String },
    #[error("{reason}")]
    Denied {
        code: ErrorCode,
        reason: String,
        hint: String,
        agent: String,
        intent: Option<String>,
    },
    #[error("{0}")]
    DestinationForbidden(String),
    /// A destination that is one of intentgate's own listeners (`destination_forbidden`).
    #[error("{0}")]
    Ourselves(String),
    #[error("the request names {named} but its tunnel goes to {tunnel}")]
    Misdirected { named: String, tunnel: String },
    #[error("too many {what}; limit is {limit}")]
    Overloaded { what: &'static str, limit: usize },
    #[error("agent '{agent}' is over its request rate (limits.requests_per_second)")]
    RateLimited { agent: String, retry_after_s: u64 },
    /// `audit.on_failure: block` while the audit log cannot be written.
    #[error(
        "the audit log cannot be written (disk full or an I/O error); nothing is forwarded without its record"
    )]
    AuditUnavailable,
    /// A credential to inject has no usable value (src/cred/): 503 `credential_unavailable`.
    #[error("credential '{name}' is unavailable: {why}")]
    CredentialUnavailable { name: String, why: String },
    /// A request that the proxy and an upstream could read differently (docs/security.md).
    #[error("{reason}")]
    Ambiguous {
        kind: Ambiguity,
        reason: String,
        hint: &'static str,
    },
    /// A refusal of an MCP call, answered in-band as JSON-RPC so it reaches the model
    /// (src/mcp/reply.rs); everything else about it is the wrapped error's.
    #[error("{}", .0.0)]
    Mcp(Box<(ProxyError, crate::mcp::Reply)>),
    /// A request to an MCP server whose body cannot be read as MCP (`mcp_unreadable`).
    #[error("{0}")]
    McpUnreadable(crate::mcp::Unreadable),
    /// Over the intent's budget (src/budget/): 429 with the counter's state.
    #[error("{}", .refusal.reason())]
    OverBudget {
        refusal: Box<crate::budget::Refusal>,
        agent: String,
    },
    /// The budget store cannot be reached (`budgets.on_store_error: deny`).
    #[error("{0}")]
    BudgetStore(#[from] crate::budget::StoreUnavailable),
}

/// What an ambiguous request leaves open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ambiguity {
    /// Where the request ends (Content-Length with Transfer-Encoding, a malformed chunk):
    /// `ambiguous_framing`, and the connection is closed.
    Framing,
    /// What the request is (its path or method, as an upstream may parse them):
    /// `ambiguous_request`.
    Request,
}

impl ProxyError {
    pub fn bad_request(reason: impl Into<String>, hint: &'static str) -> Self {
        ProxyError::BadRequest {
            reason: reason.into(),
            hint,
        }
    }

    pub fn ambiguous(kind: Ambiguity, reason: impl Into<String>, hint: &'static str) -> Self {
        ProxyError::Ambiguous {
            kind,
            reason: reason.into(),
            hint,
        }
    }

    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BadRequest { .. }
            | ProxyError::NotAProxyRequest
            | ProxyError::Ambiguous { .. } => StatusCode::BAD_REQUEST,
            ProxyError::HeadersTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ProxyError::Misdirected { .. } => StatusCode::MISDIRECTED_REQUEST,
            ProxyError::UpstreamResolve { .. }
            | ProxyError::UpstreamConnect { .. }
            | ProxyError::UpstreamProtocol { .. }
            | ProxyError::ParentProxy { .. }
            | ProxyError::UpstreamTls { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Denied { .. }
            | ProxyError::DestinationForbidden(_)
            | ProxyError::Ourselves(_) => StatusCode::FORBIDDEN,
            ProxyError::Overloaded { .. }
            | ProxyError::AuditUnavailable
            | ProxyError::CredentialUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::Mcp(_) => StatusCode::OK,
            ProxyError::McpUnreadable(crate::mcp::Unreadable::TooLarge(_)) => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            ProxyError::McpUnreadable(_) => StatusCode::BAD_REQUEST,
            ProxyError::OverBudget { .. } => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::BudgetStore(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The stable machine-readable code.
    pub fn code(&self) -> ErrorCode {
        match self {
            ProxyError::BadRequest { .. } => ErrorCode::BadRequest,
            ProxyError::NotAProxyRequest => ErrorCode::NotAProxyRequest,
            ProxyError::HeadersTooLarge(_) => ErrorCode::HeadersTooLarge,
            ProxyError::Misdirected { .. } => ErrorCode::MisdirectedRequest,
            ProxyError::UpstreamResolve { .. } => ErrorCode::UpstreamUnresolvable,
            ProxyError::UpstreamConnect { .. } => ErrorCode::UpstreamUnreachable,
            ProxyError::UpstreamTimeout { .. } => ErrorCode::UpstreamTimeout,
            ProxyError::UpstreamProtocol { .. } => ErrorCode::UpstreamError,
            ProxyError::ParentProxy { .. } => ErrorCode::ParentProxyError,
            ProxyError::UpstreamTls { .. } => ErrorCode::UpstreamTls,
            ProxyError::Denied { code, .. } => *code,
            ProxyError::DestinationForbidden(_) | ProxyError::Ourselves(_) => {
                ErrorCode::DestinationForbidden
            }
            ProxyError::Overloaded { .. } => ErrorCode::Overloaded,
            ProxyError::RateLimited { .. } => ErrorCode::RateLimited,
            ProxyError::AuditUnavailable => ErrorCode::AuditUnavailable,
            ProxyError::CredentialUnavailable { .. } => ErrorCode::CredentialUnavailable,
            ProxyError::Ambiguous {
                kind: Ambiguity::Framing,
                ..
            } => ErrorCode::AmbiguousFraming,
            ProxyError::Ambiguous {
                kind: Ambiguity::Request,
                ..
            } => ErrorCode::AmbiguousRequest,
            ProxyError::Mcp(m) => m.0.code(),
            ProxyError::McpUnreadable(_) => ErrorCode::McpUnreadable,
            ProxyError::OverBudget { refusal, .. } => match refusal.kind {
                crate::budget::RefusalKind::Exhausted(_) => ErrorCode::BudgetExhausted,
                crate::budget::RefusalKind::Expired => ErrorCode::BudgetExpired,
            },
            ProxyError::BudgetStore(_) => ErrorCode::BudgetStoreUnavailable,
        }
    }

    pub fn blame(&self) -> Blame {
        match self {
            ProxyError::BadRequest { .. }
            | ProxyError::NotAProxyRequest
            | ProxyError::HeadersTooLarge(_)
            | ProxyError::Misdirected { .. }
            | ProxyError::Ambiguous { .. } => Blame::Client,
            ProxyError::UpstreamResolve { .. }
            | ProxyError::UpstreamConnect { .. }
            | ProxyError::UpstreamTimeout { .. }
            | ProxyError::UpstreamProtocol { .. }
            | ProxyError::ParentProxy { .. }
            | ProxyError::UpstreamTls { .. } => Blame::Upstream,
            ProxyError::Denied { .. }
            | ProxyError::DestinationForbidden(_)
            | ProxyError::Ourselves(_) => Blame::Policy,
            ProxyError::Overloaded { .. }
            | ProxyError::RateLimited { .. }
            | ProxyError::AuditUnavailable
            | ProxyError::CredentialUnavailable { .. } => Blame::Proxy,
            ProxyError::Mcp(m) => m.0.blame(),
            ProxyError::McpUnreadable(_) => Blame::Client,
            ProxyError::OverBudget { .. } => Blame::Policy,
            ProxyError::BudgetStore(_) => Blame::Proxy,
        }
    }

    pub(crate) fn hint(&self) -> String {
        match self {
            ProxyError::BadRequest { hint, .. } => (*hint).to_string(),
            ProxyError::NotAProxyRequest => {
                "configure this address as your HTTP(S) proxy (HTTP_PROXY / HTTPS_PROXY) instead of calling it directly".into()
            }
            ProxyError::HeadersTooLarge(_) => "send fewer or smaller headers".into(),
            ProxyError::Misdirected { .. } => "a tunnel carries requests for its own host only; open a new CONNECT for another host".into(),
            ProxyError::UpstreamResolve { .. } => "check the host name; the proxy could not resolve it".into(),
            ProxyError::UpstreamConnect { .. } => "the destination refused or is unreachable; retry later or check the address".into(),
            ProxyError::UpstreamTimeout { .. } => "the destination is slow or unreachable; retry later".into(),
            ProxyError::UpstreamProtocol { .. } => "the destination answered with something that is not valid HTTP; retry later".into(),
            ProxyError::ParentProxy { .. } => "the parent proxy refused the destination; ask its operators".into(),
            ProxyError::UpstreamTls { .. } => "the destination's TLS certificate could not be verified and intentgate never skips verification; if the server is yours, add its CA to tls.upstream_ca".into(),
            ProxyError::Denied { hint, .. } => hint.clone(),
            ProxyError::DestinationForbidden(_) => {
                "internal, loopback and metadata addresses are not reachable through intentgate; ask the platform team to add an egress.allow_cidrs exception if this is intended".into()
            }
            ProxyError::Ourselves(_) => "intentgate is never a destination of its own proxy: call the admin API at $INTENTGATE_ADMIN_URL, where /v1/intent and /v1/explain also answer through the proxy; the other admin endpoints answer direct calls only".into(),
            ProxyError::Overloaded { .. } => "retry after a short wait".into(),
            ProxyError::RateLimited { retry_after_s, .. } => {
                format!("slow down: retry after {retry_after_s} s (see Retry-After)")
            }
            ProxyError::AuditUnavailable => "retry later: intentgate answers again once its audit log can be written (an operator must free space or fix the audit.path file system)".into(),
            ProxyError::Ambiguous { hint, .. } => (*hint).to_string(),
            ProxyError::Mcp(m) => m.0.hint(),
            ProxyError::McpUnreadable(u) => u.hint().to_string(),
            ProxyError::CredentialUnavailable { .. } => "retry later; if it persists, the platform team must fix the credential's source (docs/credentials.md)".into(),
            ProxyError::OverBudget { refusal, .. } => refusal.hint(),
            ProxyError::BudgetStore(_) => "retry later: intentgate counts this intent's budget in a store it cannot reach now (budgets.on_store_error: deny)".into(),
        }
    }
}

impl Blame {
    /// The error's `error.type`: what kind of refusal it is, for SDKs that branch on it.
    pub fn error_type(self) -> &'static str {
        match self {
            Blame::Policy => "intent_violation",
            Blame::Client => "invalid_request",
            Blame::Upstream => "upstream_error",
            Blame::Proxy => "proxy_unavailable",
        }
    }
}

mod reply;

pub use reply::{ErrorReply, full, into_response, json_response};
