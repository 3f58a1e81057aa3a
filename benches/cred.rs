//! The credential step on the request path (src/cred/inject.rs), cached path: a request whose
//! matched rule binds no credential, one whose rule injects a bearer token from a file source
//! (the agent's own Authorization removed, the secret's header built and set), and one whose
//! credential is exchanged for the call's own intent token (`subject_token: intent_token`: the
//! access token looked up by the SHA-256 of rule scope and intent token), in the same run. The
//! differences are what injection costs a request. The token endpoint of the last is a local
//! HTTPS server started here; it answers once, before the measurement.
#![allow(clippy::expect_used, clippy::unwrap_used)] // set-up of a benchmark, not the request path

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use criterion::{BatchSize, Criterion, black_box, criterion_group, criterion_main};
use intentgate::exposed::audit::AuditRecord;
use intentgate::exposed::config::{Config, IntentSpec, Mode};
use intentgate::exposed::cred::{Injection, IntentToken, Store};
use intentgate::exposed::policy::Decision;
use intentgate::exposed::policy::catalog::{Catalog, ScopeCode, ScopeVerdict};
use intentgate::exposed::vocab::Scheme;

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
            known: None,
        },
        policy_micros: 0,
        cached: false,
        credential: None,
    }
}

/// A local HTTPS token endpoint answering every request with one access token: its port and
/// the PEM file of the CA that signs its certificate.
fn token_endpoint(dir: &std::path::Path) -> (u16, std::path::PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).expect("ca cert");
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca_cert.pem()).expect("write ca");
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().expect("key");
    let leaf = CertificateParams::new(vec!["localhost".to_string()])
        .expect("params")
        .signed_by(&key, &issuer)
        .expect("leaf");
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let tls = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone()], key)
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            while let Ok((tcp, _)) = listener.accept().await {
                let Ok(mut s) = acceptor.accept(tcp).await else {
                    continue;
                };
                // The request's head and form body: read until the peer has sent it all.
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while let Ok(n @ 1..) = s.read(&mut chunk).await {
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf);
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let len = head
                            .lines()
                            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
                            .unwrap_or(0usize);
                        if body.len() >= len {
                            break;
                        }
                    }
                }
                let body = r#"{"access_token":"at-0123456789abcdefghijklmnopqrstuvwxyz","token_type":"Bearer","expires_in":3600}"#;
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(reply.as_bytes()).await;
                let _ = s.shutdown().await;
            }
        });
    });
    (port, ca_file)
}

/// An intent token of a common size (a compact JWS of an Ed25519 signature and a dozen claims).
fn intent_token() -> String {
    let part = |n: usize| "eyJhbGciOiJFZERTQSIsImtpZCI6ImsxIn0".repeat(n);
    format!("{}.{}.{}", part(1), part(12), &part(3)[..86])
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("token");
    std::fs::write(&secret, "ghp_0123456789abcdefghijklmnopqrstuvwxyzAB\n").expect("write");
    let (port, ca) = token_endpoint(dir.path());
    let yaml = format!(
        "credentials:\n  gh: {{file: \"{}\"}}\n\
         \x20 sts: {{oauth2_token_exchange: {{token_url: \"https://localhost:{port}/token\", subject_token: intent_token, ca: \"{}\"}}}}\n\
         intents:\n  triage:\n    allow:\n\
         \x20     - {{hosts: [api.example.com], paths: [\"/v1/**\"]}}\n\
         \x20     - {{hosts: [api.github.com], inject: {{credential: gh, header: Authorization, format: \"Bearer {{}}\"}}}}\n\
         \x20     - {{hosts: [storage.example.com], inject: {{credential: sts, header: Authorization, format: \"Bearer {{}}\", audience: storage}}}}\n",
        secret.display(),
        ca.display(),
    );
    let cfg: Config = serde_yaml::from_str(&yaml).expect("config");
    let intents: BTreeMap<String, IntentSpec> = cfg.intents.clone();
    let catalog =
        Catalog::compile(&[("bench".to_string(), intents)], Mode::Enforce).expect("catalog");
    let tls = intentgate::exposed::tls::Tls::from_config(&cfg.tls).expect("tls");
    let metrics = Arc::new(intentgate::exposed::metrics::Metrics::new().expect("metrics"));
    // No runtime: the file source is read once here and not polled (the cached path is the same).
    let store = Store::new(&cfg.credentials, &tls, &metrics).expect("store");
    let mut cx = Context::from_waker(Waker::noop());
    let token = intent_token();
    let token = IntentToken {
        raw: token.as_bytes(),
        exp: u64::MAX / 1000,
    };
    // The first use of the intent token exchanges it (not measured).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (mut h, mut rec, mut query) = (headers(), AuditRecord::default(), None);
    let exchanged = decision(3);
    let first = store.inject(
        Injection {
            decision: &exchanged,
            catalog: &catalog,
            scheme: Scheme::Https,
            headers: &mut h,
            query: &mut query,
            agent: "bench",
            intent: Some("triage"),
            intent_token: Some(token),
        },
        &mut rec,
    );
    rt.block_on(first).expect("the exchange");
    for (name, rule, token) in [
        ("cred/inject, rule binds none", 1, None),
        ("cred/inject, bearer from a file", 2, None),
        (
            "cred/inject, exchanged for the intent token",
            3,
            Some(token),
        ),
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
                                intent_token: token,
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
