//! One audit record: what a call was, what was decided, and how it ended; written by
//! `line::write` (or `opa::write`) and read back by `read`, `learn`, `report` and `replay`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::{Shadow, Trace};
use crate::config::Mode;
use crate::intent::IntentSource;
use crate::vocab::{ConnectionMode, ErrorCode, Scheme, Verdict, blank};

/// One decision, as written to the audit log, and read back from it (`learn`, the `run` summary).
/// `line::write` writes it; its test fails until a field added here is written there too. Reading,
/// only `method`, `host`, `port` and `decision` are required: a line without them is no record.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AuditRecord {
    /// RFC 3339, filled in by the writer from `at`.
    #[serde(default)]
    pub time: String,
    /// Per-process sequence number (with `boot_id`, a gap in a collected log shows a loss).
    #[serde(default)]
    pub seq: u64,
    #[serde(default)]
    pub boot_id: String,
    #[serde(default)]
    pub decision_id: String,
    /// Shared with every record of the same configuration (no copy per request).
    #[serde(default)]
    pub agent: Arc<AuditAgent>,
    #[serde(default)]
    pub intent: AuditIntent,
    /// `None` (written `""`) until the request's target is known.
    #[serde(default, with = "blank")]
    pub connection: Option<ConnectionMode>,
    pub method: String,
    #[serde(default, with = "blank")]
    pub scheme: Option<Scheme>,
    pub host: String,
    pub port: u16,
    #[serde(default)]
    pub path: String,
    /// `None` (written `""`) until decided; `error` when refused before (or instead of) the
    /// policy's answer.
    #[serde(with = "blank")]
    pub decision: Option<Verdict>,
    #[serde(default, with = "blank")]
    pub mode: Option<Mode>,
    #[serde(default)]
    pub reasons: Vec<String>,
    /// Why the call was refused before the policy's answer (`decision: error`), or why a call the
    /// decision let go got no upstream answer (`ErrorCode::upstream_failure`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorCode>,
    /// The policy's code when it did not allow (`deny`, `would_deny`): `intent_violation`,
    /// `intent_not_claimable`, `agent_refused` or `policy_error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<ErrorCode>,
    /// The credential injected into the call (src/cred/): never its value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<Arc<AuditCredential>>,
    #[serde(default)]
    pub policy_revision: Arc<str>,
    #[serde(default)]
    pub status: u16,
    #[serde(default)]
    pub bytes_in: u64,
    #[serde(default)]
    pub bytes_out: u64,
    /// How a stream (a streamed response, WebSocket or tunnel) ended, when not by finishing
    /// normally or when it has no other way to say so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended: Option<Ended>,
    #[serde(default)]
    pub durations: Durations,
    /// The shadow policy's decision, when it disagreed with the live one (`policy.shadow`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<Box<Shadow>>,
    /// The call's place in the agent's trace (with `telemetry.otlp` on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<Trace>,
    /// An MCP call's method and tool (the first message of a batch), when the call was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp: Option<crate::mcp::Noted>,
    /// An LLM API call (issue 24): provider, model and the tokens its response reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm: Option<Box<crate::llm::AuditLlm>>,
    #[serde(skip)]
    pub at: Option<SystemTime>,
    /// The intent's budget counter, on a call refused (or, in monitor mode, that would be
    /// refused) for it: what was used, the limits, when it resets (src/budget/).
    #[serde(skip_deserializing, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Box<crate::budget::State>>,
    /// Where the call's bytes are charged when the record is written (src/proxy/budget.rs).
    #[serde(skip)]
    pub charge: Option<crate::budget::Charge>,
    /// `decision_id` as a header value, made once (`ids::header`): the upstream's tag and the
    /// response's header share it. Taken when the response is made.
    #[serde(skip)]
    pub decision_header: Option<http::HeaderValue>,
}

/// What became of a call, read from its record (the `run` summary, `learn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The policy allowed it and it was forwarded.
    Allowed,
    /// Monitor mode: enforce would have denied it; forwarded.
    WouldBlock,
    /// Refused: by the policy, or by intentgate before or after the decision.
    Blocked,
    /// The decision let it go, but the upstream side gave no answer (502/504).
    Failed,
}

impl AuditRecord {
    /// Whether this is the CONNECT of an intercepted tunnel that was opened: not a call of its
    /// own (the requests inside are, a refusal decided at the CONNECT included). One answered
    /// with an error status (not opened) is a refused call.
    pub fn opened_tunnel(&self) -> bool {
        self.method == "CONNECT"
            && self.connection == Some(ConnectionMode::Intercepted)
            && self.status < 400
    }

    /// What became of the call. A policy that could not decide (`policy_error`) under
    /// `policy.on_error: allow` still let it go.
    pub fn outcome(&self) -> Outcome {
        match (self.decision, self.error) {
            (_, Some(e)) if e.upstream_failure() => Outcome::Failed,
            (Some(Verdict::Allow), None | Some(ErrorCode::PolicyError)) => Outcome::Allowed,
            (Some(Verdict::WouldDeny), None | Some(ErrorCode::PolicyError)) => Outcome::WouldBlock,
            _ => Outcome::Blocked,
        }
    }
}

/// How a stream ended (`ended` in the record).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ended {
    /// Either side closed it.
    Closed,
    /// Nothing moved for `limits.tunnel_idle_timeout_ms`.
    Idle,
    /// A read or write failed.
    Error,
    /// Still open at the end of `limits.shutdown_grace_ms`: closed by intentgate.
    Shutdown,
}

impl Ended {
    pub fn as_str(self) -> &'static str {
        match self {
            Ended::Closed => "closed",
            Ended::Idle => "idle",
            Ended::Error => "error",
            Ended::Shutdown => "shutdown",
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct AuditAgent {
    pub id: String,
    pub namespace: Option<String>,
    pub spiffe_id: Option<String>,
    pub service_account: Option<String>,
    pub owner: Option<String>,
    /// RFC 3339, to the second.
    pub expires: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct AuditIntent {
    /// The request's intent's own (shared: no copy a record).
    pub name: Option<Arc<str>>,
    pub task: Option<String>,
    #[serde(with = "blank")]
    pub source: Option<IntentSource>,
    pub verified: bool,
}

/// `credential` in the record: which credential was injected, its version and expiry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AuditCredential {
    pub name: String,
    /// Counts the values the source has had since start (1 = the first).
    pub version: u64,
    /// RFC 3339, for a token that expires.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Durations {
    pub policy_us: u64,
    pub upstream_ms: f64,
    pub total_ms: f64,
}

/// Milliseconds to the microsecond, for `Durations`: the log then reads `0.318` rather than
/// `0.31803700000000004`. The microseconds are counted in a `u64` where they fit (for 584,000
/// years) and converted from it: the same value as from the `u128` (both conversions round to
/// the nearest), without the library call a 128-bit conversion is (~45 instructions, twice a
/// request). Counted from the seconds, not by narrowing `as_micros`: LLVM turns a narrowed
/// `u128` back into the 128-bit conversion.
pub fn millis(d: Duration) -> f64 {
    let us = d
        .as_secs()
        .checked_mul(1_000_000)
        .and_then(|us| us.checked_add(u64::from(d.subsec_micros())));
    match us {
        Some(us) => us as f64 / 1e3,
        None => d.as_micros() as f64 / 1e3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millis_is_the_microseconds_as_f64_in_ms() {
        let mut ds = vec![
            Duration::ZERO,
            Duration::MAX,
            Duration::new(u64::MAX / 1_000_000, 0),
        ];
        let mut us = 1u64;
        while let Some(next) = us.checked_mul(3) {
            for d in [us - 1, us, us + 1] {
                ds.push(Duration::from_micros(d));
                ds.push(Duration::from_nanos(
                    d.saturating_mul(1000).saturating_add(999),
                ));
            }
            us = next;
        }
        for d in ds {
            let want = d.as_micros() as f64 / 1e3;
            assert_eq!(millis(d).to_bits(), want.to_bits(), "{d:?}");
        }
    }
}
