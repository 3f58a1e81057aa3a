//! The request path's pieces on their own, each as one criterion benchmark: the canonical target
//! of an absolute-form request, the policy input document built from a request's facts (every
//! field, as `explain` builds it), and the header rewriting before a request is forwarded.
#![allow(clippy::expect_used)] // set-up of a benchmark, not the request path

use criterion::{BatchSize, Criterion, black_box, criterion_group, criterion_main};
use intentgate::exposed::config::Mode;
use intentgate::exposed::identity::Agent;
use intentgate::exposed::intent::{Intent, IntentSource};
use intentgate::exposed::policy::catalog::{ScopeCode, ScopeVerdict};
use intentgate::exposed::policy::{ConnectionFacts, RequestFacts, input};
use intentgate::exposed::proxy::headers;
use intentgate::exposed::target;
use intentgate::exposed::vocab::{ConnectionMode, Protocol, Scheme};

/// An agent's request head as HTTP clients send it, with hop-by-hop headers and a forged claim.
fn agent_headers() -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    for (k, v) in [
        ("host", "api.example.com"),
        ("user-agent", "python-requests/2.32"),
        ("accept", "application/json"),
        ("accept-encoding", "gzip, deflate"),
        ("authorization", "Bearer x"),
        ("content-type", "application/json"),
        ("connection", "keep-alive, x-trace"),
        ("keep-alive", "timeout=5"),
        ("proxy-connection", "keep-alive"),
        ("x-trace", "abc"),
        ("intentgate-agent", "admin-bot"),
    ] {
        h.insert(k, v.parse().expect("header value"));
    }
    h
}

fn bench(c: &mut Criterion) {
    let uri: http::Uri = "http://API.example.com:8080/v1/tickets/42/../43?page=2"
        .parse()
        .expect("uri");
    c.bench_function("target/absolute-form -> canonical", |b| {
        b.iter(|| target::absolute_target(black_box(&uri)).expect("target"))
    });

    let agent = Agent {
        id: "support-bot".into(),
        namespace: Some("support".into()),
        service_account: Some("support-bot".into()),
        owner: Some("team-helpdesk".into()),
        owner_source: None,
        spiffe_id: None,
        labels: [("tier".to_string(), "prod".to_string())].into(),
        expires: None,
    };
    let agent_value = input::agent_value(&agent);
    let intent = Intent {
        name: Some("triage".into()),
        task: Some("INC-4711".into()),
        source: IntentSource::Header,
        verified: false,
        claims: Default::default(),
        token: None,
        known: None,
    };
    let request_headers = agent_headers();
    let facts = RequestFacts {
        id: "01JD6X2Q7",
        protocol: Protocol::Http11,
        method: "GET",
        scheme: Scheme::Https,
        host: "api.example.com",
        port: 443,
        path: Some("/v1/tickets/43"),
        query: Some("page=2&sort=name"),
        headers: Some(&request_headers),
        connection: ConnectionFacts {
            mode: ConnectionMode::Intercepted,
            sni: Some("api.example.com"),
            intercepted: true,
        },
        destination: Some(("203.0.113.7".parse().expect("ip"), "public")),
        body: None,
        mcp: None,
        llm: None,
    };
    let segments = input::segments("/v1/tickets/43");
    let verdict = ScopeVerdict {
        matched: true,
        intent: Some("triage".into()),
        rule: Some(1),
        why: "GET api.example.com:443/v1/tickets/43 matches intent 'triage' allow[1]".into(),
        code: ScopeCode::Matched,
        mode: Mode::Enforce,
        llm_allows: None,
        known: None,
    };
    let strip = vec!["authorization".to_string()];
    c.bench_function("input/build, every field", |b| {
        b.iter(|| {
            input::build(
                &agent_value,
                &intent,
                black_box(&facts),
                &segments,
                &verdict,
                &strip,
                1_764_400_000,
                u64::MAX,
            )
        })
    });

    let extra = [http::HeaderName::from_static("x-agent-id")];
    c.bench_function("headers/rewrite for upstream", |b| {
        b.iter_batched(
            agent_headers,
            |mut h| {
                headers::remove_hop_by_hop(&mut h);
                headers::strip_agent_claims(&mut h, &extra);
                headers::add_via(&mut h);
                h
            },
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
