//! Admin API errors, and the one place they become responses: the one error shape of
//! src/error.rs, with the decision id of the proxy request when the call came through the proxy
//! (src/proxy/door.rs), else a new one that names the debug log line.

use std::borrow::Cow;

use http::{Response, StatusCode};
use tracing::debug;

use crate::error::{Blame, Body, ErrorReply};
use crate::vocab::ErrorCode;

/// Why an admin call was not answered as asked.
#[derive(Debug)]
pub(super) struct AdminError {
    pub(super) status: StatusCode,
    blame: Blame,
    code: ErrorCode,
    reason: String,
    hint: Cow<'static, str>,
    /// The agent and the intent it claimed, for a refused claim.
    claim: Option<(String, String)>,
}

impl AdminError {
    /// A call the caller got wrong (or may not make).
    pub(super) fn client(
        status: StatusCode,
        code: ErrorCode,
        reason: impl Into<String>,
        hint: &'static str,
    ) -> Self {
        AdminError {
            status,
            blame: Blame::Client,
            code,
            reason: reason.into(),
            hint: Cow::Borrowed(hint),
            claim: None,
        }
    }

    /// intentgate is stopping (the admin state is gone).
    pub(super) fn stopping() -> Self {
        AdminError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            blame: Blame::Proxy,
            code: ErrorCode::ShuttingDown,
            reason: "intentgate is shutting down".into(),
            hint: Cow::Borrowed("retry once it is back"),
            claim: None,
        }
    }

    /// An intent token refused for the session (403, its own code; the token never echoed).
    pub(super) fn token(r: crate::proxy::intent_token::Refusal, agent: &str) -> Self {
        AdminError {
            status: StatusCode::FORBIDDEN,
            blame: Blame::Policy,
            code: r.code,
            reason: r.reason,
            hint: Cow::Owned(r.hint),
            claim: r.intent.map(|i| (agent.to_string(), i)),
        }
    }

    /// A session intent the catalog does not let `agent` claim.
    pub(super) fn claim(r: crate::policy::ClaimRefusal, agent: &str, intent: &str) -> Self {
        AdminError {
            status: r.kind.status(),
            blame: Blame::Policy,
            code: r.kind.code(),
            reason: r.reason,
            hint: Cow::Owned(r.hint),
            claim: Some((agent.to_string(), intent.to_string())),
        }
    }

    /// The response, with `decision_id` when the call has one.
    pub(super) fn response(&self, decision_id: Option<&str>) -> Response<Body> {
        let made;
        let id = match decision_id {
            Some(id) => id,
            None => {
                made = crate::ids::decision_id();
                &made
            }
        };
        debug!(decision_id = %id, code = %self.code, reason = %self.reason, "admin call refused");
        ErrorReply {
            status: self.status,
            blame: self.blame,
            code: self.code,
            reason: &self.reason,
            hint: &self.hint,
            decision_id: id,
            agent: self.claim.as_ref().map(|(a, _)| a.as_str()),
            intent: self.claim.as_ref().map(|(_, i)| i.as_str()),
        }
        .response()
    }
}
