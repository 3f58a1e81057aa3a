//! An intent's budget as compiled at load: the limits, the window arithmetic, and the check of
//! what a counter has used against them.

use super::spec::{BudgetSpec, BudgetWindow};
use super::{Measure, Used};

/// `intents.X.budget`, checked at load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub calls: Option<u64>,
    pub bytes_out: Option<u64>,
    pub bytes_in: Option<u64>,
    pub llm_tokens: Option<u64>,
    pub window: BudgetWindow,
    /// `expires_after` in milliseconds.
    pub expires_after_ms: Option<u64>,
}

/// How a counter stands against its limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Over {
    /// This count has reached its limit.
    Exhausted(Measure),
    /// `expires_after` has passed since the first call.
    Expired,
}

impl Limits {
    /// The budget of `spec`; an error (the message names the key) when it limits nothing.
    pub fn compile(spec: &BudgetSpec) -> Result<Self, String> {
        spec.check().map_err(|m| format!("budget: {m}"))?;
        Ok(Limits {
            calls: spec.calls,
            bytes_out: spec.bytes_out,
            bytes_in: spec.bytes_in,
            llm_tokens: spec.llm_tokens,
            window: spec.window,
            expires_after_ms: spec
                .expires_after
                .map(|s| u64::try_from(s.0.as_millis()).unwrap_or(u64::MAX)),
        })
    }

    /// The window length in milliseconds, for `window: <duration>`.
    pub fn window_ms(&self) -> Option<u64> {
        match self.window {
            BudgetWindow::Every(d) => Some(u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)),
            _ => None,
        }
    }

    /// The window `now_ms` falls in (0 when the counts never start again by time).
    pub fn window_index(&self, now_ms: u64) -> u64 {
        self.window_ms().map_or(0, |w| now_ms / w)
    }

    /// When window `index` ends, if the counts start again by time.
    pub fn resets_at_ms(&self, index: u64) -> Option<u64> {
        self.window_ms()
            .map(|w| index.saturating_add(1).saturating_mul(w))
    }

    /// When a counter first used at `first_ms` ends, with `expires_after`.
    pub fn expires_at_ms(&self, first_ms: u64) -> Option<u64> {
        self.expires_after_ms.map(|e| first_ms.saturating_add(e))
    }

    /// Whether one more call may go, given what was used (in the current window) and the first
    /// call's time.
    pub fn over(&self, used: &Used, first_ms: u64, now_ms: u64) -> Option<Over> {
        if self
            .expires_at_ms(first_ms)
            .is_some_and(|end| now_ms >= end)
        {
            return Some(Over::Expired);
        }
        [
            (Measure::Calls, self.calls, used.calls),
            (Measure::BytesOut, self.bytes_out, used.bytes_out),
            (Measure::BytesIn, self.bytes_in, used.bytes_in),
            (Measure::LlmTokens, self.llm_tokens, used.llm_tokens),
        ]
        .into_iter()
        .find(|(_, limit, used)| limit.is_some_and(|l| *used >= l))
        .map(|(m, _, _)| Over::Exhausted(m))
    }
}
