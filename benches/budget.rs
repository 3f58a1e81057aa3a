//! Budget cost per call in process: admitting a call (hash, shard read lock, counter mutex,
//! window check, count) and charging its bytes when it ends; one counter, and 1,000 counters
//! (1,000 intents) spread over the shards. Target: well under 1 µs.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use criterion::{Criterion, criterion_group, criterion_main};
use intentgate::exposed::budget::{Admission, Admit, Budgets, Key, Limits, StoreUnavailable};
use intentgate::exposed::config::{BudgetSpec, BudgetWindow, BudgetsConfig};

/// An in-process admission, which is answered at once.
fn now(a: Admit<'_>) -> Result<Admission, StoreUnavailable> {
    match a {
        Admit::Now(r) => r,
        Admit::Later(_) => panic!("an in-process admission never waits"),
    }
}

fn bench(c: &mut Criterion) {
    let budgets = Budgets::new(&BudgetsConfig::default());
    let limits = Arc::new(
        Limits::compile(&BudgetSpec {
            calls: Some(u64::MAX),
            bytes_out: Some(u64::MAX),
            window: BudgetWindow::Every(Duration::from_secs(3600)),
            ..BudgetSpec::default()
        })
        .unwrap_or_else(|e| panic!("{e}")),
    );
    let names: Vec<String> = (0..1000).map(|i| format!("intent-{i}")).collect();
    let key = |i: usize| Key {
        agent: "support-bot",
        intent: &names[i],
        scope: "",
    };
    c.bench_function("budget admit + charge, one counter", |b| {
        b.iter(|| {
            let a = now(budgets.admit(key(0), &limits, true, SystemTime::now()))
                .unwrap_or_else(|e| panic!("{e}"));
            if let Some(charge) = a.charge {
                charge.transfer(black_box(512), black_box(4096));
            }
        })
    });
    let mut i = 0;
    c.bench_function("budget admit + charge, 1000 counters", |b| {
        b.iter(|| {
            i = (i + 1) % names.len();
            let a = now(budgets.admit(key(i), &limits, true, SystemTime::now()))
                .unwrap_or_else(|e| panic!("{e}"));
            if let Some(charge) = a.charge {
                charge.transfer(black_box(512), black_box(4096));
            }
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
