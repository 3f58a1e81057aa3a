//! One full decision (request facts → catalog → input → Rego evaluation → decision) with the
//! default policy and catalogs of 10 to 10,000 intents × 20 rules (uncached; 10 and 1,000 also
//! with the decision cache). Criterion reports the median; a plain timing loop at the end prints
//! p50 and p99. `cargo bench --bench decision -- uncached` runs the criterion uncached cases only.
#![allow(clippy::expect_used)] // set-up of a benchmark, not the request path

use std::time::Instant;

use criterion::{Criterion, black_box, criterion_group};
use intentgate::exposed::config::{Config, IntentSpec, ScopeRule};
use intentgate::exposed::identity::Agent;
use intentgate::exposed::intent::{Intent, IntentSource};
use intentgate::exposed::policy::{ConnectionFacts, PolicySet, RequestFacts};
use intentgate::exposed::vocab::{ConnectionMode, Protocol, Scheme};

/// `INTENTGATE_BENCH_POLICY=DIR` decides with the Rego modules of DIR instead of the builtin
/// policy (to compare rewrites of config/policy/*.rego without rebuilding the library).
fn config(intents: usize, cached: bool) -> Config {
    let mut c = Config::default();
    c.policy.decision_cache = cached;
    if let Some(dir) = std::env::var_os("INTENTGATE_BENCH_POLICY") {
        c.policy.builtin = false;
        c.policy.paths = vec![dir.into()];
    }
    for i in 0..intents {
        let allow = (0..20)
            .map(|r| ScopeRule {
                hosts: vec![
                    format!("api{r}.svc{i}.example.com"),
                    format!("*.r{r}.svc{i}.example.net"),
                ],
                ports: Some(vec![443]),
                methods: Some(vec!["GET".into(), "PUT".into()]),
                paths: Some(vec![
                    format!("/api/v{r}/tickets/**"),
                    "/users/*/profile".into(),
                ]),
                ..ScopeRule::default()
            })
            .collect();
        c.intents.insert(
            format!("intent-{i}"),
            IntentSpec {
                allow,
                ..IntentSpec::default()
            },
        );
    }
    c
}

fn agent() -> Agent {
    Agent {
        id: "support-bot".into(),
        namespace: Some("support".into()),
        service_account: Some("support-bot".into()),
        owner: Some("team-helpdesk".into()),
        owner_source: None,
        spiffe_id: Some("spiffe://cluster.local/ns/support/sa/support-bot".into()),
        labels: [("tier".to_string(), "prod".to_string())].into(),
        expires: None,
    }
}

struct Case {
    policy: PolicySet,
    agent: Agent,
    intent: Intent,
    headers: http::HeaderMap,
    host: String,
}

impl Case {
    fn new(intents: usize, cached: bool) -> Case {
        let agent = agent();
        let cfg = config(intents, cached);
        let t = Instant::now();
        let policy = PolicySet::load(&cfg, &agent).expect("policy loads");
        eprintln!("load: {intents} intents x 20 rules in {:?}", t.elapsed());
        let mut headers = http::HeaderMap::new();
        headers.insert("content-type", "application/json".parse().expect("header"));
        headers.insert("user-agent", "bench/1".parse().expect("header"));
        headers.insert("authorization", "Bearer x".parse().expect("header"));
        let mid = intents / 2;
        Case {
            policy,
            agent,
            intent: Intent {
                name: Some(format!("intent-{mid}").into()),
                task: Some("INC-4711".into()),
                source: IntentSource::Header,
                verified: false,
                claims: Default::default(),
                token: None,
                known: None,
            },
            headers,
            host: format!("api7.svc{mid}.example.com"),
        }
    }

    fn decide(&self, path: &str) -> bool {
        let facts = RequestFacts {
            id: "01JD6X2Q7",
            protocol: Protocol::Http11,
            method: "GET",
            scheme: Scheme::Https,
            host: &self.host,
            port: 443,
            path: Some(path),
            query: Some("page=2"),
            headers: Some(&self.headers),
            connection: ConnectionFacts {
                mode: ConnectionMode::Intercepted,
                sni: Some(&self.host),
                intercepted: true,
            },
            destination: Some(("203.0.113.7".parse().expect("ip"), "public")),
            body: None,
            mcp: None,
            llm: None,
        };
        self.policy.decide(&self.agent, &self.intent, &facts).allow
    }
}

const CASES: [(usize, bool); 6] = [
    (10, false),
    (100, false),
    (1000, false),
    (10_000, false),
    (10, true),
    (1000, true),
];

fn label(cached: bool) -> &'static str {
    if cached { "cached" } else { "uncached" }
}

fn bench(c: &mut Criterion) {
    for (n, cached) in CASES {
        let case = Case::new(n, cached);
        assert!(case.decide("/api/v7/tickets/42"));
        assert!(!case.decide("/admin"));
        let l = label(cached);
        c.bench_function(&format!("{l} allow, {n} intents x 20 rules"), |b| {
            b.iter(|| black_box(case.decide(black_box("/api/v7/tickets/42"))))
        });
        c.bench_function(&format!("{l} deny, {n} intents x 20 rules"), |b| {
            b.iter(|| black_box(case.decide(black_box("/admin"))))
        });
    }
}

/// p50 and p99 from a plain loop (criterion reports the median only).
fn percentiles() {
    for (n, cached) in CASES {
        let case = Case::new(n, cached);
        let l = label(cached);
        for (label, path) in [("allow", "/api/v7/tickets/42"), ("deny", "/admin")] {
            let mut t = Vec::with_capacity(20_000);
            for _ in 0..2_000 {
                black_box(case.decide(path));
            }
            for _ in 0..20_000 {
                let s = Instant::now();
                black_box(case.decide(path));
                t.push(s.elapsed().as_nanos() as u64);
            }
            t.sort_unstable();
            let p = |q: f64| t[((t.len() as f64 * q) as usize).min(t.len() - 1)] as f64 / 1000.0;
            println!(
                "{l:>8} {label:<5} {n:>5} intents x 20 rules: p50 {:.1} µs  p99 {:.1} µs  max {:.1} µs",
                p(0.5),
                p(0.99),
                p(1.0)
            );
        }
    }
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    percentiles();
}
