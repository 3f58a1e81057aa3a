//! TLS interception: HTTPS made visible, decided request by request; consistency checks; upstream
//! TLS verified; splicing where not intercepting; leaf certificates cached; HTTP/2 inside tunnels.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::common::tls::{TestCa, client_config_trusting};
use crate::common::*;
use crate::connect::tls_in_tunnel;

/// An intentgate CA made with `intentgate ca init`, a TLS upstream signed by a separate test CA,
/// and a proxy that intercepts and trusts the upstream's CA.
struct Setup {
    _dir: tempfile::TempDir,
    ig_ca: PathBuf,
    up_ca: PathBuf,
    up: Upstream,
    proxy: ProxyProc,
    ig_ca_pem: String,
}

fn setup(extra: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let out = init_ca(dir.path());
    assert!(out.contains("fingerprint:"), "{out}");
    let ig_ca = dir.path().join("ca/ca.pem");
    let ig_key = dir.path().join("ca/ca-key.pem");
    let test_ca = TestCa::new("upstream test CA");
    let up_ca = test_ca.write_pem(dir.path());
    let up = Upstream::start_tls(test_ca.server_config(&["localhost"]));
    let p = up.addr.port();
    let proxy = ProxyProc::start(&format!(
        "agent: {{id: tls-bot, owner: o}}\ntls: {{ca_cert: \"{}\", ca_key: \"{}\", upstream_ca: \"{}\"}}\n\
         intents:\n  tickets:\n    allow:\n      - hosts: [localhost]\n        ports: [{p}]\n        methods: [GET, POST]\n        paths: [\"/echo/tickets/**\"]\n{extra}",
        ig_ca.display(),
        ig_key.display(),
        up_ca.display()
    ));
    let ig_ca_pem = std::fs::read_to_string(&ig_ca).unwrap();
    Setup {
        _dir: dir,
        ig_ca,
        up_ca,
        up,
        proxy,
        ig_ca_pem,
    }
}

fn https(s: &Setup, path: &str) -> String {
    format!("https://localhost:{}{}", s.up.addr.port(), path)
}

#[test]
fn https_requests_are_decided_by_path_with_curl_and_python() {
    let s = setup("");
    let ca = s.ig_ca.to_str().unwrap();
    let purl = s.proxy.url();
    for proto in ["--http1.1", "--http2"] {
        let ok = curl(&[
            proto,
            "-x",
            &purl,
            "--cacert",
            ca,
            "-H",
            "intentgate-intent: tickets",
            &https(&s, "/echo/tickets/7?x=1"),
        ]);
        assert_eq!(ok.status, 200, "{proto}: {ok:?}");
        // The upstream may speak HTTP/2 with intentgate (then the URI it sees is absolute).
        assert!(
            ok.json()["uri"]
                .as_str()
                .unwrap()
                .ends_with("/echo/tickets/7?x=1"),
            "{ok:?}"
        );
        assert_eq!(ok.json()["headers"]["intentgate-intent"], "tickets");
        let denied = curl(&[
            proto,
            "-x",
            &purl,
            "--cacert",
            ca,
            "-H",
            "intentgate-intent: tickets",
            &https(&s, "/echo/admin"),
        ]);
        assert_eq!(denied.status, 403, "{proto}: {denied:?}");
        assert_eq!(error_code(&denied.json()), "intent_violation");
        assert!(
            denied.json()["reason"]
                .as_str()
                .unwrap()
                .contains("path is not in scope")
        );
    }
    for lib in ["requests", "httpx"] {
        let h = ["--cacert", ca, "--header", "intentgate-intent: tickets"];
        let ok = python(lib, &purl, "GET", &https(&s, "/echo/tickets/1"), &h);
        assert_eq!(ok.status, 200, "{lib}: {ok:?}");
        let denied = python(
            lib,
            &purl,
            "POST",
            &https(&s, "/echo/other"),
            &[&h[..], &["body"]].concat(),
        );
        assert_eq!(denied.status, 403, "{lib}: {denied:?}");
        assert_eq!(error_code(&denied.json()), "intent_violation");
    }
    assert_eq!(
        s.up.requests(),
        4,
        "only the allowed requests reached the upstream"
    );
    eventually(
        "the intercepted request's audit record",
        Duration::from_secs(10),
        || {
            s.proxy
                .audit()
                .iter()
                .any(|r| {
                    r["connection"] == "intercepted"
                        && r["scheme"] == "https"
                        && r["path"] == "/echo/admin"
                })
                .then_some(())
        },
    );
}

#[test]
fn sni_and_host_must_match_the_tunnel() {
    let s = setup("");
    let port = s.up.addr.port();
    // SNI naming another host than the CONNECT: the handshake is refused.
    let cfg = client_config_trusting(&s.ig_ca_pem, &[]);
    let target = format!("localhost:{port}");
    let refused = rt().block_on(tls_in_tunnel(s.proxy.addr, &target, "evil.example", cfg));
    assert!(
        refused.is_err(),
        "a TLS session for another name must not be set up"
    );
    assert!(
        s.proxy
            .metric(r#"intentgate_refusals_total{error="sni_mismatch"}"#)
            >= 1.0
    );
    // A Host header naming another host inside the tunnel: 421.
    let out = curl(&[
        "--http1.1",
        "-x",
        &s.proxy.url(),
        "--cacert",
        s.ig_ca.to_str().unwrap(),
        "-H",
        "intentgate-intent: tickets",
        "-H",
        "Host: other.example",
        &https(&s, "/echo/tickets/1"),
    ]);
    assert_eq!(out.status, 421, "{out:?}");
    assert_eq!(error_code(&out.json()), "misdirected_request");
    assert_eq!(s.up.requests(), 0);
}

#[test]
fn an_untrusted_upstream_certificate_is_a_502_never_a_downgrade() {
    let s = setup("");
    let rogue_ca = TestCa::new("rogue CA");
    let rogue = Upstream::start_tls(rogue_ca.server_config(&["localhost"]));
    let p = rogue.addr.port();
    let proxy = ProxyProc::start(&format!(
        "agent: {{id: tls-bot, owner: o}}\ntls: {{ca_cert: \"{}\", ca_key: \"{}\", upstream_ca: \"{}\"}}\nmode: monitor\n",
        s.ig_ca.display(),
        s.ig_ca.with_file_name("ca-key.pem").display(),
        s.up_ca.display()
    ));
    let out = curl(&[
        "-x",
        &proxy.url(),
        "--cacert",
        s.ig_ca.to_str().unwrap(),
        &format!("https://localhost:{p}/echo"),
    ]);
    assert_eq!(out.status, 502, "{out:?}");
    assert_eq!(error_code(&out.json()), "upstream_tls");
    assert!(
        out.json()["reason"]
            .as_str()
            .unwrap()
            .contains("not signed by a trusted CA"),
        "{out:?}"
    );
    assert_eq!(rogue.requests(), 0);
}

#[test]
fn hosts_not_intercepted_are_spliced_end_to_end() {
    let s = setup("");
    // The same upstream, but localhost is listed for splicing (a certificate-pinned client).
    let spliced = ProxyProc::start(&format!(
        "agent: {{id: tls-bot, owner: o}}\ntls: {{ca_cert: \"{}\", ca_key: \"{}\", splice: [localhost]}}\nintent: any\nintents: {{any: {{allow: [{{hosts: [localhost], ports: [{}]}}]}}}}\n",
        s.ig_ca.display(),
        s.ig_ca.with_file_name("ca-key.pem").display(),
        s.up.addr.port()
    ));
    // Trusting ONLY the upstream's own CA works: the client sees the upstream's certificate.
    let out = curl(&[
        "-x",
        &spliced.url(),
        "--cacert",
        s.up_ca.to_str().unwrap(),
        &https(&s, "/echo/anything"),
    ]);
    assert_eq!(out.status, 200, "{out:?}");
    // Trusting only intentgate's CA fails: nobody minted a certificate.
    let out = curl(&[
        "-x",
        &spliced.url(),
        "--cacert",
        s.ig_ca.to_str().unwrap(),
        &https(&s, "/echo/anything"),
    ]);
    assert_eq!(out.status, 0, "{out:?}");
    assert!(spliced.metric(r#"intentgate_tls_leaf_certificates_total{result="mint"}"#) == 0.0);
}

#[test]
fn leaf_certificates_are_minted_once_per_host() {
    let s = setup("");
    for i in 0..4 {
        let out = curl(&[
            "-x",
            &s.proxy.url(),
            "--cacert",
            s.ig_ca.to_str().unwrap(),
            "-H",
            "intentgate-intent: tickets",
            &https(&s, &format!("/echo/tickets/{i}")),
        ]);
        assert_eq!(out.status, 200, "{out:?}");
    }
    let m = curl(&[&s.proxy.admin_url("/metrics")]).body;
    assert_eq!(
        s.proxy
            .metric(r#"intentgate_tls_leaf_certificates_total{result="mint"}"#),
        1.0,
        "{m}"
    );
    assert!(
        s.proxy
            .metric(r#"intentgate_tls_leaf_certificates_total{result="cache_hit"}"#)
            >= 3.0
    );
}

/// Five tunnels to a host with no certificate yet, their ClientHellos sent at once: one mint,
/// the other four handshakes wait for it (and all five succeed).
#[test]
fn concurrent_tunnels_to_a_new_host_mint_once() {
    let s = setup("");
    let target = format!("localhost:{}", s.up.addr.port());
    // The tunnels are open before any handshake starts, so the five ClientHellos arrive together.
    let tunnels: Vec<_> = (0..5)
        .map(|_| crate::connect::connect_tunnel(s.proxy.addr, &target))
        .collect();
    let cfg = client_config_trusting(&s.ig_ca_pem, &[b"http/1.1"]);
    let done = rt().block_on(async move {
        let handshakes = tunnels.into_iter().map(|t| {
            t.set_nonblocking(true).unwrap();
            let tcp = tokio::net::TcpStream::from_std(t).unwrap();
            let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
            tokio::spawn(tokio_rustls::TlsConnector::from(cfg.clone()).connect(name, tcp))
        });
        let mut ok = 0;
        for h in handshakes.collect::<Vec<_>>() {
            h.await.unwrap().unwrap();
            ok += 1;
        }
        ok
    });
    assert_eq!(done, 5);
    let mint = r#"intentgate_tls_leaf_certificates_total{result="mint"}"#;
    let hit = r#"intentgate_tls_leaf_certificates_total{result="cache_hit"}"#;
    assert_eq!(s.proxy.metric(mint), 1.0, "one mint for five tunnels");
    assert_eq!(s.proxy.metric(hit), 4.0);
}

#[test]
fn http2_multiplexed_requests_each_get_their_own_decision() {
    let s = setup("");
    let port = s.up.addr.port();
    let cfg = client_config_trusting(&s.ig_ca_pem, &[b"h2"]);
    let target = format!("localhost:{port}");
    let statuses = rt().block_on(async move {
        let tls = tls_in_tunnel(s.proxy.addr, &target, "localhost", cfg)
            .await
            .unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(conn);
        let paths = [
            "/echo/tickets/1",
            "/echo/tickets/2",
            "/echo/secret",
            "/echo/tickets/3",
        ];
        let reqs = paths.iter().map(|p| {
            let mut sender = sender.clone();
            let req = http::Request::get(format!("https://localhost:{port}{p}"))
                .header("intentgate-intent", "tickets")
                .body(Empty::<Bytes>::new())
                .unwrap();
            async move {
                let resp = sender.send_request(req).await.unwrap();
                let status = resp.status().as_u16();
                let _ = resp.into_body().collect().await;
                status
            }
        });
        let mut out = Vec::new();
        for r in futures_join(reqs.collect()).await {
            out.push(r);
        }
        out
    });
    assert_eq!(statuses, [200, 200, 403, 200]);
    let recs = s.proxy.audit_n(5);
    let inner: Vec<_> = recs
        .iter()
        .filter(|r| r["connection"] == "intercepted" && r["method"] == "GET")
        .collect();
    assert_eq!(inner.len(), 4, "{recs:?}");
    let ids: std::collections::HashSet<_> = inner
        .iter()
        .map(|r| r["decision_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 4, "each request has its own decision");
    assert_eq!(s.up.requests(), 3);
}

/// Runs the futures concurrently on the current task and returns their outputs in order.
async fn futures_join<F: std::future::Future<Output = u16> + Send + 'static>(
    futs: Vec<F>,
) -> Vec<u16> {
    let handles: Vec<_> = futs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[test]
fn ca_show_prints_the_fingerprint() {
    let s = setup("");
    let (code, out, _) = run_cli(&["ca", "show", "--cert", s.ig_ca.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("fingerprint:") && out.contains(':'), "{out}");
    let (code, _, err) = run_cli(&[
        "ca",
        "init",
        "--out",
        s.ig_ca.parent().unwrap().to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "init refuses to overwrite: {err}");
}

#[test]
fn intercepted_requests_reach_the_upstream_through_a_parent_proxy() {
    let parent = ProxyProc::start("");
    let mut s = setup(&format!("upstream: {{proxy: \"{}\"}}\n", parent.url()));
    let (ca, purl) = (s.ig_ca.to_str().unwrap(), s.proxy.url());
    for (path, status) in [("/echo/tickets/1", 200), ("/echo/admin", 403)] {
        let out = curl(&[
            "--http1.1",
            "-x",
            &purl,
            "--cacert",
            ca,
            "-H",
            "intentgate-intent: tickets",
            &https(&s, path),
        ]);
        assert_eq!(out.status, status, "{path}: {out:?}");
    }
    assert_eq!(s.up.requests(), 1, "only the allowed request went upstream");
    // It went through the parent, as a CONNECT to the upstream. The parent records a spliced
    // tunnel when it ends (with its bytes), and the child keeps that upstream connection until
    // it exits.
    s.proxy.signal("TERM");
    assert!(s.proxy.wait_exit(Duration::from_secs(20)).success());
    let port = s.up.addr.port();
    let rec = eventually(
        "the parent's audit record of the CONNECT",
        Duration::from_secs(10),
        || {
            parent
                .audit()
                .into_iter()
                .find(|r| r["method"] == "CONNECT" && r["host"] == "localhost" && r["port"] == port)
        },
    );
    assert!(rec["bytes_in"].as_u64().unwrap() > 0, "{rec}");
}
