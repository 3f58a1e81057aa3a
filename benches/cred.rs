//! The credential step on the request path (src/cred/inject.rs), cached path: a request whose
//! matched rule binds no credential, and one whose rule injects a bearer token from a file
//! source (the agent's own Authorization removed, the secret's header built and set), in the
//! same run. The difference is what injection costs a request.
#![allow(clippy::expect_used, clippy::unwrap_used)] // set-up of a benchmark, not the request path

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use criterion::{BatchSize, Criterion, black_box, criterion_group, criterion_main};
use intentgate::audit::AuditRecord;
use intentgate::config::{Config, IntentSpec, Mode};
use intentgate::cred::{Injection, Store};
use intentgate::policy::Decision;
use intentgate::policy::catalog::{Catalog, ScopeCode, ScopeVerdict};
use intentgate::vocab::Scheme;

fn headers() -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    for (k, v) in [
        ("user-agent", "python-requests/2.32"),
        ("accept", "application/json"),
        ("authorization", "Bearer agent-dummy"),
        ("content-type", "application/json"),
    ] {
        h.insert(k, v.parse().expect("header value"));
    }
    h
}

fn decision(rule: usize) -> Decision {
    Decision {
        allow: true,
        mode: Mode::Enforce,
        reasons: Vec::new(),
        headers: Vec::new(),
        code: None,
        hint: String::new(),
        scope: ScopeVerdict {
            matched: true,
            intent: Some("triage".into()),
            rule: Some(rule),
            why: String::new(),
            code: ScopeCode::Matched,
            mode: Mode::Enforce,
            llm_allows: None,
        },
        policy_micros: 0,
        cached: false,
        credential: None,
    }
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("token");
    std::fs::write(&secret, "ghp_0123456789abcdefghijklmnopqrstuvwxyzAB\n").expect("write");
    let yaml = format!(
        "credentials: {{gh: {{file: \"{}\"}}}}\n\
         intents:\n  triage:\n    allow:\n\
         \x20     - {{hosts: [api.example.com], paths: [\"/v1/**\"]}}\n\
         \x20     - {{hosts: [api.github.com], inject: {{credential: gh, header: Authorization, format: \"Bearer {{}}\"}}}}\n",
        secret.display()
    );
    let cfg: Config = serde_yaml::from_str(&yaml).expect("config");
    let intents: BTreeMap<String, IntentSpec> = cfg.intents.clone();
    let catalog =
        Catalog::compile(&[("bench".to_string(), intents)], Mode::Enforce).expect("catalog");
    let tls = intentgate::tls::Tls::from_config(&cfg.tls).expect("tls");
    let metrics = Arc::new(intentgate::metrics::Metrics::new().expect("metrics"));
    // No runtime: the file source is read once here and not polled (the cached path is the same).
    let store = Store::new(&cfg.credentials, &tls, &metrics).expect("store");
    let mut cx = Context::from_waker(Waker::noop());
    for (name, rule) in [
        ("cred/inject, rule binds none", 1),
        ("cred/inject, bearer from a file", 2),
    ] {
        let d = decision(rule);
        c.bench_function(name, |b| {
            b.iter_batched(
                || (headers(), AuditRecord::default()),
                |(mut h, mut rec)| {
                    let mut query = None;
                    {
                        let step = store.inject(
                            Injection {
                                decision: black_box(&d),
                                catalog: &catalog,
                                scheme: Scheme::Https,
                                headers: &mut h,
                                query: &mut query,
                                agent: "bench",
                                intent: Some("triage"),
                            },
                            &mut rec,
                        );
                        // The cached path never waits: the step is ready on its first poll.
                        let mut step = std::pin::pin!(step);
                        assert!(matches!(step.as_mut().poll(&mut cx), Poll::Ready(Ok(()))));
                    }
                    (h, rec)
                },
                BatchSize::SmallInput,
            )
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
