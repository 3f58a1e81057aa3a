//! The budget step of a call the decision let go (src/budget/): its intent's budget is checked
//! and the call counted; over budget it is refused with 429 (enforce) or recorded `would_deny`
//! and forwarded (monitor). Its bytes are charged when its record is written (`charge_bytes`).
//! With a Redis store the check's answer comes after a round trip, awaited while the upstream
//! connection is acquired (src/proxy/mod.rs, step 6b).

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::Request;

use super::Proxy;
use super::gate::LivePolicy;
use super::sender::{self, Acquired, Affinity};
use crate::audit::AuditRecord;
use crate::budget::{Admission, Admit, Key, Limits};
use crate::config::{BudgetWindow, Mode};
use crate::error::ProxyError;
use crate::intent::Intent;
use crate::target::Authority;
use crate::vocab::Verdict;

/// A call's budget check on its way to the Redis store: `Proxy::spent` awaits its answer.
pub(super) struct Spending<'a> {
    pending: crate::budget::Pending<'a>,
    enforce: bool,
}

impl Proxy {
    /// Checks and counts the call of `rec` against its intent's budget, if it has one. In process
    /// that is done here, with no await; with Redis the check is sent and `Some` is its answer
    /// to await (`spent`), so the upstream can be dialled meanwhile.
    pub(super) fn spend(
        &self,
        live: &LivePolicy,
        intent: &Intent,
        mode: Mode,
        rec: &mut AuditRecord,
    ) -> Result<Option<Spending<'_>>, ProxyError> {
        let Some(name) = intent.name.as_deref() else {
            return Ok(None);
        };
        let token = TokenBudget::of(intent);
        let limits = match (live.policy.catalog().budget_of(intent), token.narrows()) {
            (None, false) => return Ok(None),
            (Some(l), false) => Cow::Borrowed(l),
            (l, true) => Cow::Owned(Arc::new(token.narrow(l.map(|l| &**l)))),
        };
        let key = Key {
            agent: &live.agent.id,
            intent: name,
            scope: token.jti.unwrap_or(""),
        };
        let enforce = mode == Mode::Enforce;
        match self.budgets.admit(key, &limits, enforce, SystemTime::now()) {
            Admit::Now(admitted) => self.settle(live, admitted?, enforce, rec).map(|()| None),
            Admit::Later(pending) => Ok(Some(Spending { pending, enforce })),
        }
    }

    /// The Redis store's answer to `spend`, recorded as `spend` records one in process.
    pub(super) async fn spent(
        &self,
        live: &LivePolicy,
        s: Spending<'_>,
        rec: &mut AuditRecord,
    ) -> Result<(), ProxyError> {
        let admitted = s.pending.answer().await?;
        self.settle(live, admitted, s.enforce, rec)
    }

    /// `spent`, while the connection for the call to `to` (authority, TLS; none for a WebSocket,
    /// which dials its own) is acquired, bounded by the upstream response timeout. `Err` is the
    /// budget's refusal (the answer even when the dial failed; the connection is given back
    /// unused), `Ok(Some(Err))` a failed acquisition. A call admitted whose dial then fails
    /// stays counted, as in process (it is counted when admitted, before anything is dialled).
    pub(super) async fn spent_while_acquiring<B>(
        &self,
        live: &LivePolicy,
        s: Spending<'_>,
        rec: &mut AuditRecord,
        kept: &Affinity,
        to: Option<(&Authority, bool)>,
        req: &Request<B>,
    ) -> Result<Option<Result<Acquired, ProxyError>>, ProxyError> {
        let Some((authority, tls)) = to else {
            return self.spent(live, s, rec).await.map(|()| None);
        };
        let limit_ms = self.cfg.limits.upstream_response_timeout_ms;
        let acquiring = self
            .upstreams
            .acquire(kept, authority, tls, sender::is_sequential(req));
        let acquiring = tokio::time::timeout(Duration::from_millis(limit_ms), acquiring);
        let (spent, acquired) = tokio::join!(self.spent(live, s, rec), acquiring);
        let acquired = acquired.unwrap_or_else(|_| {
            Err(ProxyError::UpstreamTimeout {
                target: authority.to_host_port(),
                stage: "connect",
                after_ms: limit_ms,
            })
        });
        match (spent, acquired) {
            (Ok(()), acquired) => Ok(Some(acquired)),
            (Err(e), Ok(a)) => {
                self.upstreams.release(kept, a);
                Err(e)
            }
            (Err(e), Err(_)) => Err(e),
        }
    }

    /// The record and the answer of an admission: over budget, refused with 429 (enforce) or
    /// recorded `would_deny` (monitor).
    fn settle(
        &self,
        live: &LivePolicy,
        admitted: Admission,
        enforce: bool,
        rec: &mut AuditRecord,
    ) -> Result<(), ProxyError> {
        rec.charge = admitted.charge;
        let Some(refusal) = admitted.refused else {
            return Ok(());
        };
        rec.budget = Some(Box::new(refusal.state.clone()));
        let err = ProxyError::OverBudget {
            refusal,
            agent: live.agent.id.clone(),
        };
        let code = err.code();
        rec.reasons.push(err.to_string());
        if enforce {
            self.metrics.refused(code);
            rec.decision = Some(Verdict::Deny);
            rec.code = Some(code);
            return Err(err);
        }
        if rec.decision == Some(Verdict::Allow) {
            rec.decision = Some(Verdict::WouldDeny);
            rec.code = Some(code);
        }
        Ok(())
    }
}

/// Charges the bytes of `rec`'s call to the budget counter that admitted it: its request body
/// (`bytes_in` in the record) as the budget's `bytes_out`, its response body as `bytes_in`.
pub(super) fn charge_bytes(rec: &mut AuditRecord) {
    if let Some(c) = rec.charge.take() {
        c.transfer(rec.bytes_in, rec.bytes_out);
    }
}

/// Charges an LLM call's tokens (input + output, as its response's usage reports them) to the
/// budget counter that admitted it, once the response ends (src/llm/usage.rs). A stream in
/// flight is never cut: the next call is refused.
#[cold]
pub(super) fn charge_llm_tokens(rec: &AuditRecord) {
    let (Some(l), Some(c)) = (&rec.llm, &rec.charge) else {
        return;
    };
    let c = c.clone();
    let settled = Box::new(move |input: Option<u64>, output: Option<u64>| {
        c.llm_tokens(input.unwrap_or(0) + output.unwrap_or(0));
    });
    // One callback per call: this is the only one.
    let _ = l.usage().on_settled(settled);
}

/// What a verified intent token says about budgets: its id (each token counts on its own) and
/// the narrowing claims `max_calls` and `max_bytes`.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct TokenBudget<'a> {
    pub jti: Option<&'a str>,
    pub max_calls: Option<u64>,
    pub max_bytes: Option<u64>,
}

impl<'a> TokenBudget<'a> {
    pub(super) fn of(intent: &'a Intent) -> Self {
        let Some(c) = intent.token.as_deref().filter(|_| intent.verified) else {
            return TokenBudget::default();
        };
        TokenBudget {
            jti: c.jti.as_deref(),
            max_calls: c.max_calls,
            max_bytes: c.max_bytes,
        }
    }

    fn narrows(&self) -> bool {
        self.max_calls.is_some() || self.max_bytes.is_some()
    }

    /// The catalog's budget (if any) narrowed by the token's claims; `max_bytes` bounds the
    /// bytes each way. Without a catalog budget, the token's is counted per token.
    pub(super) fn narrow(&self, catalog: Option<&Limits>) -> Limits {
        let min = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let base = catalog.cloned().unwrap_or(Limits {
            calls: None,
            bytes_out: None,
            bytes_in: None,
            llm_tokens: None,
            window: BudgetWindow::PerToken,
            expires_after_ms: None,
        });
        Limits {
            calls: min(base.calls, self.max_calls),
            bytes_out: min(base.bytes_out, self.max_bytes),
            bytes_in: min(base.bytes_in, self.max_bytes),
            ..base
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intent::IntentSource;

    fn token(claims: serde_json::Value, verified: bool) -> Intent {
        let mut c = serde_json::json!({"iss": "i", "aud": "a", "intent": "work", "exp": 1});
        let extra = claims.as_object().cloned().unwrap_or_default();
        c.as_object_mut().unwrap().extend(extra);
        Intent {
            name: Some("work".into()),
            task: None,
            source: IntentSource::Token,
            verified,
            claims: serde_json::Map::new(),
            token: Some(std::sync::Arc::new(serde_json::from_value(c).unwrap())),
            known: None,
        }
    }

    #[test]
    fn a_verified_token_counts_apart_and_narrows_the_catalog_budget() {
        let i = token(
            serde_json::json!({"jti": "t-1", "max_calls": 5, "max_bytes": 100}),
            true,
        );
        let t = TokenBudget::of(&i);
        assert_eq!(t.jti, Some("t-1"));
        let catalog = Limits {
            calls: Some(10),
            bytes_out: None,
            bytes_in: Some(50),
            llm_tokens: Some(7),
            window: BudgetWindow::Every(std::time::Duration::from_secs(60)),
            expires_after_ms: None,
        };
        let l = t.narrow(Some(&catalog));
        assert_eq!(
            (l.calls, l.bytes_out, l.bytes_in),
            (Some(5), Some(100), Some(50))
        );
        assert_eq!((l.llm_tokens, l.window), (Some(7), catalog.window));
        // Without a catalog budget, the token's own, per token.
        assert_eq!(t.narrow(None).window, BudgetWindow::PerToken);
        // An unverified intent's claims count for nothing.
        assert_eq!(
            TokenBudget::of(&token(serde_json::json!({"jti": "x"}), false)),
            TokenBudget::default()
        );
    }
}
