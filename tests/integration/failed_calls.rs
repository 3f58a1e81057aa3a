//! A call the decision let go that the upstream side fails (502/504) is recorded with its error
//! code, counted as failed (not allowed) in the metrics and the `run` summary, and logged at
//! `warn`.

use crate::common::tls::TestCa;
use crate::common::*;
use crate::run::{run, world};

/// An intercepting proxy that trusts `trusted` for upstreams, and an HTTPS upstream whose
/// certificate is signed by another CA (not trusted); intent `web` allows it and `dead` (where
/// nothing listens): (dir, proxy, rogue upstream, our CA file).
fn untrusted_upstream(dead: u16) -> (tempfile::TempDir, ProxyProc, Upstream, String) {
    let (dir, cert, key) = ca();
    let trusted = TestCa::new("trusted upstream CA").write_pem(dir.path());
    let rogue = Upstream::start_tls(TestCa::new("rogue CA").server_config(&["localhost"]));
    let proxy = ProxyProc::start(&format!(
        "agent: {{id: a, owner: o}}\n\
         egress: {{allow_cidrs: [127.0.0.0/8]}}\n\
         tls: {{ca_cert: \"{cert}\", ca_key: \"{key}\", upstream_ca: \"{}\"}}\n\
         intent: web\nintents:\n  web:\n    allow:\n      - hosts: [localhost, 127.0.0.1]\n        ports: [{}, {dead}]\n",
        trusted.display(),
        rogue.addr.port()
    ));
    (dir, proxy, rogue, cert)
}

#[test]
fn an_upstream_failure_is_recorded_counted_and_logged_as_failed() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = closed.local_addr().unwrap().port();
    drop(closed);
    let (_dir, proxy, rogue, ca) = untrusted_upstream(dead);
    // Intercepted HTTPS to an upstream whose certificate is not trusted: 502 upstream_tls.
    let url = format!("https://localhost:{}/echo/a", rogue.addr.port());
    let out = curl(&["-x", &proxy.url(), "--cacert", &ca, &url]);
    assert_eq!(out.status, 502, "{out:?}");
    // Plain HTTP to a port nothing listens on: 502 upstream_unreachable.
    let out = curl(&["-x", &proxy.url(), &format!("http://127.0.0.1:{dead}/b")]);
    assert_eq!(out.status, 502, "{out:?}");

    let recs = proxy.audit_n(3);
    let calls: Vec<_> = recs.iter().filter(|r| r["method"] == "GET").collect();
    assert_eq!(calls.len(), 2, "{recs:#?}");
    for (r, code, status) in [
        (calls[0], "upstream_tls", 502),
        (calls[1], "upstream_unreachable", 502),
    ] {
        // The decision stays what it was; the record says the call failed, and why.
        assert_eq!(
            (&r["decision"], &r["status"], &r["error"]),
            (&"allow".into(), &status.into(), &code.into()),
            "{r}"
        );
    }
    assert_eq!(
        proxy.metric("intentgate_upstream_errors_total{kind=\"upstream_tls\"}"),
        1.0
    );
    assert_eq!(
        proxy.metric("intentgate_upstream_errors_total{kind=\"upstream_unreachable\"}"),
        1.0
    );
    for (r, code) in [
        (calls[0], "upstream_tls"),
        (calls[1], "upstream_unreachable"),
    ] {
        let id = r["decision_id"].as_str().unwrap().to_string();
        eventually(
            "a warning naming the failed call",
            std::time::Duration::from_secs(30),
            || {
                proxy
                    .stderr()
                    .lines()
                    .find(|l| l.contains("WARN") && l.contains(&id) && l.contains(code))
                    .map(str::to_string)
            },
        );
    }
}

#[test]
fn run_counts_an_upstream_failure_as_failed_not_allowed() {
    // The world's upstream CA signs its HTTPS upstream; this one, which `work` may call too, is
    // signed by another.
    let rogue = Upstream::start_tls(TestCa::new("rogue CA").server_config(&["localhost"]));
    let w = world(&format!(
        "      - hosts: [localhost]\n        ports: [{}]\n",
        rogue.addr.port()
    ));
    let report = w.dir.path().join("report.json");
    let steps = serde_json::json!([
        {"lib": "requests", "method": "GET", "url": w.up.url("/echo/ok/1")},
        {"lib": "requests", "method": "GET",
         "url": format!("https://localhost:{}/echo/b", rogue.addr.port())},
    ]);
    let agent = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/agent.py");
    let (code, stdout, stderr) = run(
        &w,
        &["--intent", "work", "--report", report.to_str().unwrap()],
        &["python3", agent, &steps.to_string()],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(stdout.trim(), "[200, 502]", "{stderr}");
    assert!(
        stderr.contains("2 calls: 1 allowed, 0 blocked, 0 would-block, 1 failed"),
        "{stderr}"
    );
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!((&r["allowed"], &r["failed"]), (&1.into(), &1.into()), "{r}");
    let dest = format!("localhost:{}", rogue.addr.port());
    let line = &r["intents"]["work"][&dest];
    assert_eq!(line["failed"], 1, "{r}");
    assert_eq!(line["first_reason"], "upstream_tls", "{r}");
}
