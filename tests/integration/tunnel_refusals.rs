//! Refusals decided at a CONNECT reach the client as the JSON refusal when the tunnel would be
//! intercepted: the CONNECT is answered 200, TLS is terminated with our CA, and each request
//! inside gets the 403 (curl, Python requests and httpx read it; a refused CONNECT shows in them
//! as a bare "tunnel failed"). The upstream is never dialled. A spliced tunnel keeps the 403 at
//! its CONNECT.

use crate::common::tls::TestCa;
use crate::common::*;

#[test]
fn a_connect_refused_by_policy_is_answered_inside_the_intercepted_tunnel() {
    let (dir, cert, key) = ca();
    let up_ca = TestCa::new("tunnel refusal upstream CA");
    let up_ca_file = up_ca.write_pem(dir.path());
    let allowed = Upstream::start_tls(up_ca.server_config(&["localhost", "127.0.0.1"]));
    let other = Upstream::start_tls(up_ca.server_config(&["localhost"]));
    let (p, q) = (allowed.addr.port(), other.addr.port());
    let proxy = ProxyProc::start(&format!(
        "agent: {{id: a, owner: o}}\n\
         egress: {{allow_cidrs: [127.0.0.1/32, \"::1/128\"]}}\n\
         tls: {{ca_cert: \"{cert}\", ca_key: \"{key}\", upstream_ca: \"{}\"}}\n\
         intent: web\nintents:\n  web:\n    allow:\n      - hosts: [localhost, 127.0.0.2]\n        ports: [{p}]\n",
        up_ca_file.display()
    ));
    // Port q: no intent allows it (port_not_in_scope). 127.0.0.2:p: a loopback address the
    // egress classes forbid (destination_forbidden; only 127.0.0.1 is let through), though the
    // intent allows it.
    let cases = [
        (
            format!("https://localhost:{q}/echo/x"),
            q,
            "port_not_in_scope",
            "deny",
        ),
        (
            format!("https://127.0.0.2:{p}/echo/x"),
            p,
            "destination_forbidden",
            "error",
        ),
    ];
    for (url, _, want, _) in &cases {
        let out = curl(&["-x", &proxy.url(), "--cacert", &cert, url]);
        assert_eq!(out.status, 403, "curl {url}: {out:?}");
        assert_eq!(error_code(&out.json()), *want, "curl {url}: {out:?}");
        assert!(
            !out.json()["reason"].as_str().unwrap().is_empty(),
            "{out:?}"
        );
        for lib in ["requests", "httpx"] {
            let out = python(lib, &proxy.url(), "GET", url, &["--cacert", &cert]);
            assert_eq!(out.status, 403, "{lib} {url}: {out:?}");
            assert_eq!(error_code(&out.json()), *want, "{lib} {url}: {out:?}");
        }
    }
    // The allowed destination still works, and nothing refused was ever dialled.
    let ok = curl(&[
        "-x",
        &proxy.url(),
        "--cacert",
        &cert,
        &format!("https://localhost:{p}/echo/ok"),
    ]);
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(
        other.connections(),
        0,
        "a refused tunnel dialled its upstream"
    );
    assert_eq!(
        allowed.requests(),
        1,
        "only the allowed request reached the upstream"
    );

    // Each refused tunnel: its CONNECT's record (opened: 200) and its request's (403), both
    // carrying the refusal. 2 cases × 3 clients × 2 records, and the allowed call's 2.
    let recs = proxy.audit_n(14);
    for (_, port, want, decision) in &cases {
        let of = |method: &str| -> Vec<&serde_json::Value> {
            recs.iter()
                .filter(|r| r["method"] == method && r["port"] == *port && r["error"] == *want)
                .collect()
        };
        let (connects, inner) = (of("CONNECT"), of("GET"));
        assert_eq!((connects.len(), inner.len()), (3, 3), "{want}: {recs:#?}");
        for r in &connects {
            assert_eq!(r["status"], 200, "{r}");
            assert_eq!(r["connection"], "intercepted", "{r}");
        }
        for r in &inner {
            assert_eq!(r["status"], 403, "{r}");
            assert_eq!(r["connection"], "intercepted", "{r}");
            assert_eq!(r["path"], "/echo/x", "{r}");
        }
        for r in connects.iter().chain(&inner) {
            assert_eq!(r["decision"], *decision, "{r}");
        }
    }
}

#[test]
fn a_spliced_tunnel_keeps_the_403_at_its_connect() {
    let (_dir, cert, key) = ca();
    let other = Upstream::start();
    let q = other.addr.port();
    let proxy = ProxyProc::start(&format!(
        "agent: {{id: a, owner: o}}\n\
         tls: {{ca_cert: \"{cert}\", ca_key: \"{key}\", splice: [localhost]}}\n\
         intent: web\nintents:\n  web:\n    allow:\n      - hosts: [example.com]\n"
    ));
    let resp = raw(
        proxy.addr,
        format!("CONNECT localhost:{q} HTTP/1.1\r\nHost: localhost:{q}\r\n\r\n").as_bytes(),
    );
    assert!(resp.starts_with("HTTP/1.1 403"), "{resp}");
    assert_eq!(error_code(&raw_json(&resp)), "intent_violation", "{resp}");
    let rec = proxy.audit_n(1).pop().unwrap();
    assert_eq!(
        (&rec["connection"], &rec["decision"], &rec["status"]),
        (&"connect".into(), &"deny".into(), &403.into()),
        "{rec}"
    );
    assert_eq!(other.connections(), 0);
}
