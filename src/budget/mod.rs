//! Budgets per intent: how many calls, bytes out and in, and LLM tokens an intent may spend per
//! window, and how long it lasts (`intents.X.budget`). Counted per (agent, intent), or per
//! intent token (`window: per_token`). The decision step admits a call the policy allowed
//! (`Budgets::admit`: checked, then its call counted; with Redis the answer is awaited while
//! the upstream connection is acquired), the call's bytes are charged when its
//! record is written (`Charge::transfer`), and an LLM usage reader charges tokens
//! (`Charge::llm_tokens`). Counters live in process (`local`, sharded, one small lock per
//! counter) or, for a fleet, in Redis (`remote`).

mod limits;
mod local;
mod remote;
mod resp;
pub mod spec;
mod state;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use limits::Limits;
pub use state::{Refusal, RefusalKind, State, Used};

use spec::{BudgetsConfig, OnStoreError};

crate::vocab::words! {
    /// What a budget counts.
    pub enum Measure {
        Calls = "calls",
        BytesOut = "bytes_out",
        BytesIn = "bytes_in",
        LlmTokens = "llm_tokens",
    }
}

/// Whose counter a call spends from.
#[derive(Debug, Clone, Copy)]
pub struct Key<'a> {
    pub agent: &'a str,
    pub intent: &'a str,
    /// The intent token's id (`jti`) for `window: per_token`, else empty: one counter per
    /// (agent, intent).
    pub scope: &'a str,
}

/// The budget's answer for one call.
#[derive(Debug, Default)]
pub struct Admission {
    /// Why the call is over budget (enforce: not counted, refused; monitor: counted all the same).
    pub refused: Option<Box<Refusal>>,
    /// Where the call's bytes and tokens go; `None` when it was refused.
    pub charge: Option<Charge>,
}

/// The budget store could not be reached and `budgets.on_store_error` is `deny`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the budget store cannot be reached: {0}")]
pub struct StoreUnavailable(pub String);

/// Where a call's bytes and LLM tokens are charged: the counter (and window) that admitted it.
#[derive(Debug, Clone)]
pub struct Charge(ChargeTo);

#[derive(Debug, Clone)]
enum ChargeTo {
    Local(Arc<local::Entry>, u64),
    Remote(remote::Charge),
}

impl Charge {
    /// The call's request body bytes (`sent`, the agent's data going out) and response body
    /// bytes (`received`).
    pub fn transfer(&self, sent: u64, received: u64) {
        self.add(Used {
            calls: 0,
            bytes_out: sent,
            bytes_in: received,
            llm_tokens: 0,
        });
    }

    /// LLM tokens the call used (as the provider's `usage` reports them): the LLM usage reader's
    /// entry point. A stream in flight is never cut; the next call is refused.
    pub fn llm_tokens(&self, n: u64) {
        self.add(Used {
            llm_tokens: n,
            ..Used::default()
        });
    }

    fn add(&self, u: Used) {
        if u.is_zero() {
            return;
        }
        match &self.0 {
            ChargeTo::Local(e, window) => e.add(*window, u),
            ChargeTo::Remote(c) => c.add(u),
        }
    }
}

/// Every budget counter of this process: in process, or in Redis with a local view.
pub struct Budgets {
    local: local::Local,
    remote: Option<remote::Remote>,
    on_store_error: OnStoreError,
}

impl Budgets {
    /// Counters as `budgets:` says; a Redis store is dialled at its first use.
    pub fn new(cfg: &BudgetsConfig) -> Self {
        Budgets {
            local: local::Local::default(),
            remote: cfg.redis_url.as_deref().and_then(remote::Remote::new),
            on_store_error: cfg.on_store_error,
        }
    }

    /// Checks the call of `key` against `limits` at `now`, and counts it unless it is refused in
    /// enforce mode (`enforce: false` counts it all the same: monitor mode). In process the
    /// answer is there at once; with Redis the check is on its way and `Pending::answer` awaits
    /// it (the call is counted by the store whether or not that answer is awaited).
    pub fn admit(
        &self,
        key: Key<'_>,
        limits: &Arc<Limits>,
        enforce: bool,
        now: SystemTime,
    ) -> Admit<'_> {
        let now_ms = unix_ms(now);
        let Some(remote) = &self.remote else {
            return Admit::Now(Ok(self.local.admit(key, limits, enforce, now_ms)));
        };
        match remote.begin(key, limits, enforce, now_ms) {
            Ok(p) => Admit::Later(Pending {
                budgets: self,
                remote,
                p,
            }),
            Err(e) => Admit::Now(self.store_error(e)),
        }
    }

    /// `budgets.on_store_error` applied to a store that could not answer.
    fn store_error(&self, e: StoreUnavailable) -> Result<Admission, StoreUnavailable> {
        match self.on_store_error {
            OnStoreError::Deny => Err(e),
            // Uncounted: the call goes as if it had no budget.
            OnStoreError::Allow => Ok(Admission::default()),
        }
    }

    /// Ends the `per_session` counts: the session intent was set again or cleared.
    pub fn end_session(&self) {
        self.local
            .forget(|l| l.window == spec::BudgetWindow::PerSession);
        if let Some(r) = &self.remote {
            r.end_session();
        }
    }

    /// Every counter this process has used, with its limits and when it resets (`GET
    /// /v1/budgets`). With Redis: as of this process's last exchange with the store.
    pub fn states(&self, now: SystemTime) -> Vec<State> {
        let now_ms = unix_ms(now);
        let mut all = match &self.remote {
            None => self.local.states(now_ms),
            Some(r) => r.states(now_ms),
        };
        all.sort_by(|a, b| (&a.agent, &a.intent, &a.scope).cmp(&(&b.agent, &b.intent, &b.scope)));
        all
    }
}

/// A budget's answer for one call: at once (in process, or a store that could not take the
/// check), or after a round trip to the store.
pub enum Admit<'a> {
    Now(Result<Admission, StoreUnavailable>),
    Later(Pending<'a>),
}

/// A check on its way to the Redis store.
pub struct Pending<'a> {
    budgets: &'a Budgets,
    remote: &'a remote::Remote,
    p: remote::Pending,
}

impl Pending<'_> {
    /// The store's answer, `budgets.on_store_error` applied.
    pub async fn answer(self) -> Result<Admission, StoreUnavailable> {
        match self.p.answer(self.remote).await {
            Ok(a) => Ok(a),
            Err(e) => self.budgets.store_error(e),
        }
    }
}

/// Milliseconds since the Unix epoch (windows are aligned to it, so replicas agree on them).
fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `ms` since the epoch as RFC 3339, to the second.
fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}
