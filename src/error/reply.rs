//! The one body shape of every JSON error intentgate writes (`ErrorReply`), and `into_response`:
//! where a `ProxyError` becomes its HTTP answer (an MCP call's refusal as JSON-RPC, a budget's
//! with the counter's state).

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use serde::Serialize;

use super::{Blame, Body, ProxyError};
use crate::vocab::ErrorCode;

/// One error answer, in the one body shape every JSON error intentgate writes has (proxy, admin
/// API, webhook, the listeners' raw answers). `error` is an object as the LLM SDKs read errors
/// (`message`, `type`, `code`), so an SDK's exception shows the reason and the hint; our own
/// fields follow it.
#[derive(Debug, Clone, Copy)]
pub struct ErrorReply<'a> {
    pub status: StatusCode,
    pub blame: Blame,
    /// The stable machine-readable code.
    pub code: ErrorCode,
    pub reason: &'a str,
    pub hint: &'a str,
    pub decision_id: &'a str,
    /// The agent and its intent, on refusals that concern them.
    pub agent: Option<&'a str>,
    pub intent: Option<&'a str>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorObject<'a>,
    reason: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    agent: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    intent: Option<&'a str>,
    decision_id: &'a str,
    hint: &'a str,
}

#[derive(Serialize)]
struct ErrorObject<'a> {
    message: Message<'a>,
    #[serde(rename = "type")]
    kind: &'static str,
    code: ErrorCode,
}

/// `error.message`: the reason and the hint in one sentence, written straight into the JSON
/// (no string built for it).
struct Message<'a> {
    reason: &'a str,
    hint: &'a str,
}

impl std::fmt::Display for Message<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.reason)?;
        if !self.hint.is_empty() {
            f.write_str(" \u{2014} ")?;
            f.write_str(self.hint)?;
        }
        Ok(())
    }
}

impl Serialize for Message<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl ErrorReply<'_> {
    fn body(&self) -> ErrorBody<'_> {
        ErrorBody {
            error: ErrorObject {
                message: Message {
                    reason: self.reason,
                    hint: self.hint,
                },
                kind: self.blame.error_type(),
                code: self.code,
            },
            reason: self.reason,
            agent: self.agent,
            intent: self.intent,
            decision_id: self.decision_id,
            hint: self.hint,
        }
    }

    /// The JSON response, with `intentgate-decision-id`.
    pub fn response(&self) -> Response<Body> {
        self.respond_with(&self.body())
    }

    fn respond_with<T: Serialize>(&self, body: &T) -> Response<Body> {
        let mut resp = json_response(self.status, body);
        if let Ok(v) = HeaderValue::from_str(self.decision_id) {
            resp.headers_mut().insert("intentgate-decision-id", v);
        }
        resp
    }

    /// `response` with the budget counter's state as `budget`.
    fn with_budget(&self, budget: &crate::budget::State) -> Response<Body> {
        #[derive(Serialize)]
        struct WithBudget<'a> {
            #[serde(flatten)]
            body: ErrorBody<'a>,
            budget: &'a crate::budget::State,
        }
        self.respond_with(&WithBudget {
            body: self.body(),
            budget,
        })
    }

    /// The raw bytes of the response, for errors found before hyper parsed a request
    /// (malformed request lines, oversized heads) or outside it (a connection over the cap).
    /// Closes the connection.
    pub fn raw(&self) -> Vec<u8> {
        let body = serde_json::to_string(&self.body()).unwrap_or_else(|_| "{}".into());
        let retry = if self.status == StatusCode::SERVICE_UNAVAILABLE {
            "retry-after: 1\r\n"
        } else {
            ""
        };
        format!(
            "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nintentgate-decision-id: {}\r\n{retry}connection: close\r\n\r\n{}",
            self.status.as_u16(),
            self.status.canonical_reason().unwrap_or(""),
            body.len(),
            self.decision_id,
            body
        )
        .into_bytes()
    }
}

/// Turns an error into the JSON response the client receives. The only such place.
pub fn into_response(err: &ProxyError, decision_id: &str) -> Response<Body> {
    if let ProxyError::Mcp(m) = err {
        return mcp_response(&m.0, &m.1, decision_id);
    }
    let (agent, intent) = match err {
        ProxyError::Denied { agent, intent, .. } => (Some(agent.as_str()), intent.as_deref()),
        ProxyError::OverBudget { refusal, agent } => {
            (Some(agent.as_str()), Some(refusal.state.intent.as_str()))
        }
        _ => (None, None),
    };
    let (reason, hint) = (err.to_string(), err.hint());
    let reply = ErrorReply {
        status: err.status(),
        blame: err.blame(),
        code: err.code(),
        reason: &reason,
        hint: &hint,
        decision_id,
        agent,
        intent,
    };
    let mut resp = match err {
        // The counter's state (used, limit, resets_at) follows the usual fields.
        ProxyError::OverBudget { refusal, .. } => reply.with_budget(&refusal.state),
        _ => reply.response(),
    };
    let headers = resp.headers_mut();
    if matches!(
        err,
        ProxyError::Denied { .. }
            | ProxyError::DestinationForbidden(_)
            | ProxyError::Ourselves(_)
            | ProxyError::OverBudget { .. }
    ) {
        headers.insert("intentgate-decision", HeaderValue::from_static("deny"));
    }
    if err.blame() == Blame::Client {
        // After a malformed request the framing of the rest of the stream is not to be trusted.
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    if matches!(
        err,
        ProxyError::Overloaded { .. }
            | ProxyError::AuditUnavailable
            | ProxyError::CredentialUnavailable { .. }
    ) {
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    if let ProxyError::RateLimited { retry_after_s, .. } = err {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_s));
    }
    if let ProxyError::OverBudget { refusal, .. } = err {
        if let Some(s) = refusal.retry_after_s {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
    }
    if let ProxyError::BudgetStore(_) = err {
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp
}

/// A refused MCP call's in-band answer (src/mcp/reply.rs): HTTP 200, JSON-RPC under the ids
/// of its requests, the reason and hint as text, the decision id and code in the errors' data.
fn mcp_response(err: &ProxyError, reply: &crate::mcp::Reply, decision_id: &str) -> Response<Body> {
    let text = Message {
        reason: &err.to_string(),
        hint: &err.hint(),
    }
    .to_string();
    let (content_type, body) = reply.render(&text, decision_id, err.code().as_str());
    let mut resp = Response::new(full(Bytes::from(body)));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert("intentgate-decision", HeaderValue::from_static("deny"));
    if let Ok(v) = HeaderValue::from_str(decision_id) {
        h.insert("intentgate-decision-id", v);
    }
    resp
}

/// A response with a JSON body (also used by the admin API).
pub fn json_response<T: Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    let bytes = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    let mut resp = Response::new(full(Bytes::from(bytes)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// A complete in-memory body.
pub fn full(bytes: Bytes) -> Body {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}
