//! What a budget counter reports: what it used, its limits, when it resets or ends — in a
//! refusal's body, in the audit record of a refused (or would-be refused) call, and in
//! `GET /v1/budgets` — and the refusal itself, in words an agent can act on.

use serde::Serialize;

use super::limits::{Limits, Over};
use super::{Measure, rfc3339};

/// What a counter has used in its current window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Used {
    pub calls: u64,
    pub bytes_out: u64,
    pub bytes_in: u64,
    pub llm_tokens: u64,
}

impl Used {
    pub fn is_zero(&self) -> bool {
        *self == Used::default()
    }

    pub fn add(&mut self, u: Used) {
        self.calls = self.calls.saturating_add(u.calls);
        self.bytes_out = self.bytes_out.saturating_add(u.bytes_out);
        self.bytes_in = self.bytes_in.saturating_add(u.bytes_in);
        self.llm_tokens = self.llm_tokens.saturating_add(u.llm_tokens);
    }

    pub fn get(&self, m: Measure) -> u64 {
        match m {
            Measure::Calls => self.calls,
            Measure::BytesOut => self.bytes_out,
            Measure::BytesIn => self.bytes_in,
            Measure::LlmTokens => self.llm_tokens,
        }
    }
}

/// The limits as reported (absent ones left out).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LimitView {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calls: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_out: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_in: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub llm_tokens: Option<u64>,
}

/// One counter: whose, what it used, against what, and when it starts again or ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct State {
    pub agent: String,
    pub intent: String,
    /// The intent token's id for `window: per_token`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// `1h`, `per_session`, `per_token` or `none`.
    pub window: String,
    pub used: Used,
    pub limit: LimitView,
    /// When the counts start again (RFC 3339), for a window of time.
    pub resets_at: Option<String>,
    /// When the intent ends (`expires_after` after its first call).
    pub expires_at: Option<String>,
    /// `calls`, `bytes_out`, `bytes_in`, `llm_tokens` (that count is used up) or `expired`; null
    /// while the budget lasts.
    pub exhausted: Option<&'static str>,
}

impl State {
    /// The state of a counter; `index` is its window, `first_ms` its first call.
    pub fn of(
        key: (&str, &str, &str),
        limits: &Limits,
        used: Used,
        index: u64,
        first_ms: Option<u64>,
        now_ms: u64,
    ) -> Self {
        let current = limits.window_index(now_ms) == index;
        // A counter whose window has passed stands at zero until its next call.
        let used = if current { used } else { Used::default() };
        let over = first_ms.and_then(|f| limits.over(&used, f, now_ms));
        State {
            agent: key.0.to_string(),
            intent: key.1.to_string(),
            scope: (!key.2.is_empty()).then(|| key.2.to_string()),
            window: String::from(limits.window),
            used,
            limit: LimitView {
                calls: limits.calls,
                bytes_out: limits.bytes_out,
                bytes_in: limits.bytes_in,
                llm_tokens: limits.llm_tokens,
            },
            resets_at: limits
                .resets_at_ms(limits.window_index(now_ms))
                .map(rfc3339),
            expires_at: first_ms.and_then(|f| limits.expires_at_ms(f)).map(rfc3339),
            exhausted: over.map(|o| match o {
                Over::Exhausted(m) => m.as_str(),
                Over::Expired => "expired",
            }),
        }
    }
}

/// Why a call is over its intent's budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// A count is used up until the window resets (429 `budget_exhausted`, `Retry-After`).
    Exhausted(Measure),
    /// `expires_after` has passed: the intent has ended (429 `budget_expired`).
    Expired,
}

/// A call over budget: why, and the counter's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub kind: RefusalKind,
    pub state: State,
    /// Seconds until the window resets (`Retry-After`), for an exhausted count with a window.
    pub retry_after_s: Option<u64>,
}

impl Refusal {
    pub fn new(over: Over, state: State, resets_at_ms: Option<u64>, now_ms: u64) -> Self {
        let kind = match over {
            Over::Exhausted(m) => RefusalKind::Exhausted(m),
            Over::Expired => RefusalKind::Expired,
        };
        Refusal {
            kind,
            state,
            retry_after_s: match kind {
                RefusalKind::Exhausted(_) => {
                    resets_at_ms.map(|r| r.saturating_sub(now_ms).div_ceil(1000).max(1))
                }
                RefusalKind::Expired => None,
            },
        }
    }

    /// The reason, with what was used, the limit and when it resets.
    pub fn reason(&self) -> String {
        let s = &self.state;
        match self.kind {
            RefusalKind::Exhausted(m) => {
                let limit = match m {
                    Measure::Calls => s.limit.calls,
                    Measure::BytesOut => s.limit.bytes_out,
                    Measure::BytesIn => s.limit.bytes_in,
                    Measure::LlmTokens => s.limit.llm_tokens,
                };
                let until = match &s.resets_at {
                    Some(t) => format!("until {t}"),
                    None if s.window == "per_session" => "for this session".into(),
                    None if s.window == "per_token" => "for this intent token".into(),
                    None => "with no reset".into(),
                };
                format!(
                    "intent '{}' has used its budget of {} {} ({} used) {until}",
                    s.intent,
                    limit.unwrap_or(0),
                    m.as_str(),
                    s.used.get(m),
                )
            }
            RefusalKind::Expired => format!(
                "intent '{}' has ended: its budget's expires_after ran out at {}",
                s.intent,
                s.expires_at.as_deref().unwrap_or("its end"),
            ),
        }
    }

    /// What to do next.
    pub fn hint(&self) -> String {
        match (self.kind, self.retry_after_s) {
            (RefusalKind::Exhausted(_), Some(s)) => format!(
                "wait until the budget resets (in {s} s, see Retry-After), or ask the platform \
                 team to raise intent '{}''s budget",
                self.state.intent
            ),
            (RefusalKind::Exhausted(_), None) => format!(
                "start a new session or task with a fresh intent, or ask the platform team to \
                 raise intent '{}''s budget",
                self.state.intent
            ),
            (RefusalKind::Expired, _) => format!(
                "the task's time is up: declare a new intent (a new session or intent token) \
                 for further work, or ask the platform team to extend intent '{}'",
                self.state.intent
            ),
        }
    }
}
