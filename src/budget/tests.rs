//! Unit tests of the budget counters: limits, windows, monitor counting, charges, sessions.

use std::sync::Arc;
use std::time::Duration;

use super::limits::Limits;
use super::local::Local;
use super::spec::{BudgetSpec, BudgetWindow, Span};
use super::{Key, Measure, RefusalKind};

const KEY: Key<'static> = Key {
    agent: "a",
    intent: "work",
    scope: "",
};

fn limits(spec: BudgetSpec) -> Arc<Limits> {
    Arc::new(Limits::compile(&spec).unwrap())
}

#[test]
fn n_calls_go_and_the_next_is_refused_until_the_window_ends() {
    let l = limits(BudgetSpec {
        calls: Some(2),
        window: BudgetWindow::Every(Duration::from_secs(60)),
        ..BudgetSpec::default()
    });
    let store = Local::default();
    let t0 = 120_000 + 5_000;
    for _ in 0..2 {
        assert!(store.admit(KEY, &l, true, t0).refused.is_none());
    }
    let a = store.admit(KEY, &l, true, t0 + 1_000);
    let r = a.refused.expect("refused");
    assert!(a.charge.is_none());
    assert_eq!(r.kind, RefusalKind::Exhausted(Measure::Calls));
    assert_eq!(r.state.used.calls, 2);
    assert_eq!(r.retry_after_s, Some(54));
    assert_eq!(r.state.resets_at.as_deref(), Some("1970-01-01T00:03:00Z"));
    // A refused call is not counted; the next window starts from zero.
    assert_eq!(store.states(t0)[0].used.calls, 2);
    assert!(store.admit(KEY, &l, true, 180_000).refused.is_none());
    assert_eq!(store.states(180_000)[0].used.calls, 1);
}

#[test]
fn monitor_mode_counts_a_call_over_budget() {
    let l = limits(BudgetSpec {
        calls: Some(1),
        ..BudgetSpec::default()
    });
    let store = Local::default();
    assert!(store.admit(KEY, &l, false, 1).refused.is_none());
    let a = store.admit(KEY, &l, false, 2);
    assert!(a.refused.is_some() && a.charge.is_some());
    assert_eq!(store.states(3)[0].used.calls, 2);
}

#[test]
fn bytes_and_tokens_are_charged_to_the_window_of_their_call() {
    let l = limits(BudgetSpec {
        bytes_out: Some(10),
        llm_tokens: Some(100),
        window: BudgetWindow::Every(Duration::from_secs(1)),
        ..BudgetSpec::default()
    });
    let store = Local::default();
    let c = store.admit(KEY, &l, true, 500).charge.unwrap();
    c.transfer(7, 1000);
    c.llm_tokens(150);
    let r = store.admit(KEY, &l, true, 600).refused.expect("refused");
    assert_eq!(r.kind, RefusalKind::Exhausted(Measure::LlmTokens));
    assert_eq!((r.state.used.bytes_out, r.state.used.bytes_in), (7, 1000));
    // A charge that arrives after its window ended counts nowhere.
    let late = store.admit(KEY, &l, true, 1500).charge.unwrap();
    let _ = store.admit(KEY, &l, true, 2500);
    late.transfer(99, 0);
    assert_eq!(store.states(2500)[0].used.bytes_out, 0);
}

#[test]
fn expires_after_counts_from_the_first_call() {
    let l = limits(BudgetSpec {
        expires_after: Some(Span(Duration::from_secs(10))),
        ..BudgetSpec::default()
    });
    let store = Local::default();
    assert!(store.admit(KEY, &l, true, 1_000).refused.is_none());
    assert!(store.admit(KEY, &l, true, 10_999).refused.is_none());
    let r = store.admit(KEY, &l, true, 11_000).refused.expect("ended");
    assert_eq!(r.kind, RefusalKind::Expired);
    assert_eq!(r.retry_after_s, None);
    assert!(r.reason().contains("has ended"));
}

#[test]
fn keys_count_apart_and_sessions_end() {
    let session = limits(BudgetSpec {
        calls: Some(1),
        window: BudgetWindow::PerSession,
        ..BudgetSpec::default()
    });
    let store = Local::default();
    let token = Key {
        scope: "jti-1",
        ..KEY
    };
    assert!(store.admit(KEY, &session, true, 1).refused.is_none());
    assert!(store.admit(token, &session, true, 1).refused.is_none());
    assert!(store.admit(KEY, &session, true, 2).refused.is_some());
    store.forget(|l| l.window == BudgetWindow::PerSession);
    assert!(store.states(3).is_empty());
    assert!(store.admit(KEY, &session, true, 3).refused.is_none());
}

#[test]
fn a_budget_that_limits_nothing_is_refused() {
    let e = Limits::compile(&BudgetSpec {
        window: BudgetWindow::PerToken,
        ..BudgetSpec::default()
    })
    .unwrap_err();
    assert!(e.contains("at least one of"), "{e}");
}
