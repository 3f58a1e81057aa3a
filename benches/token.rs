//! Intent-token and attestation costs: verifying a repeated token (a cache hit: hash + lookup),
//! a first sighting (signature check, EdDSA), and signing one attestation (Ed25519).

use std::hint::black_box;
use std::time::SystemTime;

use criterion::{Criterion, criterion_group, criterion_main};
use intentgate::exposed::config::{IntentTokensConfig, TokenIssuer};
use intentgate::exposed::token::attest::{Attester, Statement};
use intentgate::exposed::token::mint::{MintRequest, SigningKey, jwks_json, mint};
use intentgate::exposed::token::verify::Verifier;

const AGENT: &str = "spiffe://cluster.local/ns/agents/sa/triage";

fn metrics() -> std::sync::Arc<intentgate::exposed::metrics::Metrics> {
    std::sync::Arc::new(
        intentgate::exposed::metrics::Metrics::new().unwrap_or_else(|e| panic!("{e}")),
    )
}

fn key() -> SigningKey {
    SigningKey::generate_ed25519()
        .unwrap_or_else(|e| panic!("{e}"))
        .0
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let signer = key();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, jwks_json(&[&signer]).to_string()).unwrap_or_else(|e| panic!("{e}"));
    let cfg = IntentTokensConfig {
        issuers: vec![TokenIssuer {
            issuer: "https://orchestrator.example".into(),
            jwks_file: Some(jwks),
            ..TokenIssuer::default()
        }],
        ..IntentTokensConfig::default()
    };
    let verifier =
        Verifier::new(&cfg, &[AGENT.to_string()], &metrics()).unwrap_or_else(|e| panic!("{e}"));
    let mut req = MintRequest {
        issuer: "https://orchestrator.example".into(),
        agent: AGENT.into(),
        intent: "read-issues".into(),
        sub: Some("alice@example.com".into()),
        task: Some("TICKET-42: triage the open issues of o/r".into()),
        ttl_seconds: 300,
        ..MintRequest::default()
    };
    if let serde_json::Value::Object(m) = serde_json::json!({
        "hosts": ["api.github.com"], "methods": ["GET"], "paths": ["/repos/o/r/issues*"],
        "max_calls": 100
    }) {
        req.extra = m;
    }
    let token = mint(&signer, &req, SystemTime::now()).unwrap_or_else(|e| panic!("{e}"));
    let now = SystemTime::now();
    verifier
        .verify(&token, now)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut g = c.benchmark_group("token");
    g.bench_function("verify_cached", |b| {
        b.iter(|| verifier.verify(black_box(&token), now))
    });
    // A one-entry cache and two tokens taken in turn: every verification is a miss.
    let one = IntentTokensConfig {
        cache_entries: 1,
        ..cfg.clone()
    };
    let missing =
        Verifier::new(&one, &[AGENT.to_string()], &metrics()).unwrap_or_else(|e| panic!("{e}"));
    req.jti = Some("other".into());
    let other = mint(&signer, &req, SystemTime::now()).unwrap_or_else(|e| panic!("{e}"));
    let pair = [token.as_str(), other.as_str()];
    let mut i = 0usize;
    g.bench_function("verify_uncached_eddsa", |b| {
        b.iter(|| {
            i += 1;
            missing.verify(black_box(pair[i % 2]), now)
        })
    });
    let attester = Attester::new(key(), AGENT.into(), 60).unwrap_or_else(|e| panic!("{e}"));
    let statement = Statement {
        sub: AGENT,
        aud: "api.github.com",
        intent: Some("read-issues"),
        task: Some("TICKET-42"),
        token_sub: Some("alice@example.com"),
        decision_id: "5f3a9c1e0000000000000042",
        policy_revision: "r7",
        method: "GET",
        authority: "api.github.com",
        path_and_query: "/repos/o/r/issues?state=open&per_page=100",
    };
    g.bench_function("attestation_sign", |b| {
        b.iter(|| attester.header_value(black_box(&statement), now))
    });
    // What the proxy calls (src/proxy/attest.rs): the bytes, without `header_value`'s UTF-8 check.
    g.bench_function("attestation_header_bytes", |b| {
        b.iter(|| attester.header_bytes(black_box(&statement), now))
    });
    // The Ed25519 signature alone, over a signing input of an attestation's size: what the rest
    // of `attestation_sign` (claims, encoding) adds on top of it.
    let pair = {
        use aws_lc_rs::signature::Ed25519KeyPair;
        let doc = Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new())
            .unwrap_or_else(|e| panic!("{e}"));
        Ed25519KeyPair::from_pkcs8(doc.as_ref()).unwrap_or_else(|e| panic!("{e}"))
    };
    let input = [b'a'; 420];
    g.bench_function("ed25519_sign_only", |b| {
        b.iter(|| pair.sign(black_box(&input)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
