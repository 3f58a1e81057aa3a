//! One full decision (request facts → catalog match → input → Rego evaluation → decision) with the
//! default policy, for catalogs of 10 and 1,000 intents × 20 rules. Criterion reports the median;
//! a plain timing loop at the end prints p50/p99 per catalog size.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use intentgate::config::{AgentConfig, Config, IntentSpec, ScopeRule};
use intentgate::identity::Agent;
use intentgate::intent::{Intent, IntentSource};
use intentgate::policy::{ConnectionFacts, PolicySet, RequestFacts};

fn catalog(intents: usize) -> BTreeMap<String, IntentSpec> {
    (0..intents)
        .map(|i| {
            let rules = (0..20)
                .map(|r| ScopeRule {
                    hosts: vec![
                        format!("api{r}.svc{i}.example.com"),
                        format!("*.cdn{r}.svc{i}.example.net"),
                    ],
                    ports: Some(vec![443]),
                    methods: Some(vec!["GET".into(), "POST".into()]),
                    paths: Some(vec![
                        format!("/v{r}/items/*/detail"),
                        format!("/v{r}/list/**"),
                    ]),
                })
                .collect();
            (
                format!("intent-{i}"),
                IntentSpec {
                    allow: rules,
                    ..Default::default()
                },
            )
        })
        .collect()
}

fn setup(intents: usize, cached: bool) -> (PolicySet, Agent, Vec<(Intent, String, String)>) {
    let mut cfg = Config {
        intents: catalog(intents),
        ..Config::default()
    };
    cfg.policy.decision_cache = cached;
    let agent = Agent::from_config(
        &AgentConfig {
            id: Some("bench".into()),
            namespace: Some("ns".into()),
            owner: Some("o".into()),
            ..Default::default()
        },
        &|_| None,
    )
    .unwrap();
    let policy = PolicySet::load(&cfg, &agent).unwrap();
    // A mix of requests: matches on exact and wildcard hosts, and misses by path and host.
    let reqs = (0..64)
        .map(|k| {
            let i = (k * 7919) % intents;
            let r = k % 20;
            let intent = Intent {
                name: Some(format!("intent-{i}")),
                task: None,
                source: IntentSource::Header,
                verified: false,
                claims: Default::default(),
            };
            let (host, path) = match k % 4 {
                0 => (
                    format!("api{r}.svc{i}.example.com"),
                    format!("/v{r}/items/{k}/detail"),
                ),
                1 => (
                    format!("edge.cdn{r}.svc{i}.example.net"),
                    format!("/v{r}/list/a/b/c"),
                ),
                2 => (format!("api{r}.svc{i}.example.com"), format!("/v{r}/admin")),
                _ => ("other.example.org".to_string(), "/".to_string()),
            };
            (intent, host, path)
        })
        .collect();
    (policy, agent, reqs)
}

fn decide(
    policy: &PolicySet,
    agent: &Agent,
    (intent, host, path): &(Intent, String, String),
) -> bool {
    let facts = RequestFacts {
        id: "bench",
        protocol: "HTTP/1.1",
        method: "GET",
        scheme: "https",
        host,
        port: 443,
        path: Some(path),
        query: Some("page=2"),
        headers: None,
        connection: ConnectionFacts {
            mode: "intercepted",
            sni: Some(host),
            intercepted: true,
        },
        destination: None,
    };
    policy.decide(agent, intent, &facts).allow
}

fn bench(c: &mut Criterion) {
    let mut summary = Vec::new();
    for (n, cached) in [(10, false), (1000, false), (1000, true)] {
        let (policy, agent, reqs) = setup(n, cached);
        let mut k = 0;
        let label = if cached { "cache_hit" } else { "uncached" };
        c.bench_function(&format!("decision/{label}/{n}_intents_x_20_rules"), |b| {
            b.iter(|| {
                k = (k + 1) % reqs.len();
                black_box(decide(&policy, &agent, &reqs[k]))
            })
        });
        let mut samples: Vec<u128> = (0..20_000)
            .map(|i| {
                let t = Instant::now();
                black_box(decide(&policy, &agent, &reqs[i % reqs.len()]));
                t.elapsed().as_nanos()
            })
            .collect();
        samples.sort_unstable();
        let pct = |p: f64| {
            samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)] as f64 / 1000.0
        };
        summary.push(format!(
            "{label:>9} {n:>5} intents x 20 rules: p50 {:.2} µs, p99 {:.2} µs",
            pct(0.5),
            pct(0.99)
        ));
    }
    for line in summary {
        println!("{line}");
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50).measurement_time(std::time::Duration::from_secs(5));
    targets = bench
}
criterion_main!(benches);
