//! Limits of issue 8 not covered by the bypass suite: CONNECT only to ports the policy allows,
//! whatever the interception setting.

use std::io::{Read, Write};

use crate::common::*;
use crate::connect::connect_tunnel;

fn refused(resp: &str, status: u16, code: &str) {
    assert!(
        resp.starts_with(&format!("HTTP/1.1 {status}")),
        "want {status} {code}: {resp}"
    );
    assert_eq!(raw_error_code(resp), code, "{resp}");
}

/// A CONNECT to `target` opens, and a request inside gets 403 `port_not_in_scope`.
fn refused_inside(proxy: std::net::SocketAddr, target: &str) {
    let mut tunnel = connect_tunnel(proxy, target);
    write!(
        tunnel,
        "GET / HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    tunnel.read_to_string(&mut resp).unwrap();
    refused(&resp, 403, "port_not_in_scope");
}

#[test]
fn an_intercepted_connect_to_a_port_no_intent_allows_is_refused_inside_its_tunnel() {
    let up = Upstream::start();
    let other = Upstream::start();
    let (_dir, cert, key) = ca();
    for intercept in ["auto", "all"] {
        let proxy = ProxyProc::start(&format!(
            "agent: {{id: a, owner: o}}\ntls: {{intercept: {intercept}, ca_cert: \"{cert}\", ca_key: \"{key}\"}}\n\
             intent: web\nintents:\n  web:\n    allow:\n      - hosts: [localhost, 127.0.0.1]\n        ports: [{}]\n",
            up.addr.port()
        ));
        // Refused by the tunnel rule: the tunnel is opened all the same (the client would
        // trust our CA) and the request inside gets the refusal (src/proxy/gate.rs).
        for port in [22, 25, 6379, other.addr.port()] {
            refused_inside(proxy.addr, &format!("127.0.0.1:{port}"));
        }
        let recs = proxy.audit_n(8);
        let connects: Vec<_> = recs.iter().filter(|r| r["method"] == "CONNECT").collect();
        assert_eq!(connects.len(), 4, "{recs:?}");
        assert!(
            recs.iter()
                .all(|r| r["decision"] == "deny" && r["error"] == "port_not_in_scope"),
            "{recs:?}"
        );
        // The port the intent names, and 443 (egress.connect_ports by default), are opened.
        drop(connect_tunnel(
            proxy.addr,
            &format!("127.0.0.1:{}", up.addr.port()),
        ));
        drop(connect_tunnel(proxy.addr, "localhost:443"));
        assert!(proxy.metric("intentgate_refusals_total{error=\"port_not_in_scope\"}") >= 4.0);
    }
    assert_eq!(other.connections(), 0, "a refused CONNECT dialled its port");

    // egress.connect_ports opens a port for intercepted tunnels; monitor mode only records.
    let proxy = ProxyProc::start(&format!(
        "agent: {{id: a, owner: o}}\ntls: {{ca_cert: \"{cert}\", ca_key: \"{key}\"}}\n\
         egress: {{allow_cidrs: [127.0.0.0/8], connect_ports: [443, {}]}}\n\
         intent: web\nintents:\n  web:\n    allow:\n      - hosts: [localhost]\n",
        other.addr.port()
    ));
    drop(connect_tunnel(
        proxy.addr,
        &format!("127.0.0.1:{}", other.addr.port()),
    ));
    refused_inside(proxy.addr, "127.0.0.1:6379");
    let monitor = ProxyProc::start(&format!(
        "agent: {{id: a, owner: o}}\nmode: monitor\ntls: {{ca_cert: \"{cert}\", ca_key: \"{key}\"}}\n"
    ));
    drop(connect_tunnel(monitor.addr, "127.0.0.1:6379"));
    let rec = monitor.audit_n(1).pop().unwrap();
    assert_eq!(rec["decision"], "would_deny", "{rec}");
}

#[test]
fn a_burst_over_the_agent_rate_gets_exactly_the_expected_429s_then_recovers() {
    let up = Upstream::start();
    let proxy = ProxyProc::start("limits: {requests_per_second: 0.5, burst: 3}\n");
    let mut conn = ProxyConn::open(proxy.addr);
    let statuses: Vec<u16> = (0..5)
        .map(|i| {
            let resp = conn.get(&up.url(&format!("/echo/{i}")));
            if resp.status() == 429 {
                let retry: u64 = resp.headers()["retry-after"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!((1..=2).contains(&retry), "Retry-After {retry}");
                let body = body_json(&resp);
                assert_eq!(error_code(&body), "rate_limited", "{body}");
                assert!(body["hint"].as_str().unwrap().contains("retry after"));
            }
            resp.status().as_u16()
        })
        .collect();
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    assert_eq!(up.requests(), 3, "a refused request was forwarded");
    assert_eq!(
        proxy.metric("intentgate_refusals_total{error=\"rate_limited\"}"),
        2.0
    );
    let recs = proxy.audit_n(5);
    assert_eq!(
        recs.iter()
            .filter(|r| r["error"] == "rate_limited" && r["status"] == 429)
            .count(),
        2,
        "{recs:?}"
    );
    // One token comes back every 2 s: the agent recovers without any restart.
    eventually(
        "a request passes again",
        std::time::Duration::from_secs(10),
        || {
            (ProxyConn::open(proxy.addr)
                .get(&up.url("/echo/later"))
                .status()
                == 200)
                .then_some(())
        },
    );
    assert_eq!(up.requests(), 4);
}

#[test]
fn a_policy_reading_the_body_sees_its_start_and_the_upstream_gets_it_whole() {
    let up = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("body.rego"),
        "package intentgate\nimport rego.v1\n\
         deny contains \"refunds over 100 need a human\" if input.request.body.amount > 100\n\
         deny contains \"strict paths need the whole body\" if {\n  input.request.path == \"/echo/strict\"\n  input.request.body_truncated\n}\n",
    )
    .unwrap();
    let proxy = ProxyProc::start(&format!(
        "agent: {{id: a, owner: o}}\nintent: pay\nintents:\n  pay:\n    allow:\n      - hosts: [127.0.0.1]\n        ports: [{}]\n        methods: [POST]\n\
         policy: {{paths: [\"{}\"]}}\nlimits: {{inspect_body_bytes: 1024}}\n",
        up.addr.port(),
        dir.path().display()
    ));
    let post = |path: &str, ctype: &str, body: &str| {
        curl(&[
            "-x",
            &proxy.url(),
            "-H",
            &format!("content-type: {ctype}"),
            "--data-binary",
            body,
            &up.url(path),
        ])
    };
    let json = "application/json";
    let ok = post("/echo/refund", json, r#"{"amount": 40}"#);
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(ok.json()["body_len"], 14);
    let denied = post("/echo/refund", json, r#"{"amount": 500}"#);
    assert_eq!(denied.status, 403, "{denied:?}");
    assert_eq!(denied.json()["reason"], "refunds over 100 need a human");
    // Not JSON: the body is text to the policy, so `.amount` is undefined.
    assert_eq!(
        post("/echo/refund", "text/plain", r#"{"amount": 500}"#).status,
        200
    );
    // Over limits.inspect_body_bytes: body_truncated.
    let long = format!(r#"{{"amount": 1, "pad": "{}"}}"#, "x".repeat(2000));
    assert_eq!(post("/echo/strict", json, &long).status, 403);
    assert_eq!(post("/echo/strict", json, r#"{"amount": 1}"#).status, 200);
    assert_eq!(up.requests(), 3, "a denied body reached the upstream");
    assert_eq!(
        proxy.metric("intentgate_bodies_inspected_total{truncated=\"true\"}"),
        1.0
    );
    // 8 MiB: inspected start replayed in front of the rest, the upstream's hash matches.
    let big: Vec<u8> = (0..8u32 * 1024 * 1024)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let file = dir.path().join("big.bin");
    std::fs::write(&file, &big).unwrap();
    for framing in ["x-framing: content-length", "transfer-encoding: chunked"] {
        let out = curl(&[
            "-x",
            &proxy.url(),
            "-H",
            "content-type: application/octet-stream",
            "-H",
            framing,
            "--data-binary",
            &format!("@{}", file.display()),
            &up.url("/echo/upload"),
        ]);
        assert_eq!(out.status, 200, "{framing}: {out:?}");
        assert_eq!(out.json()["body_len"], big.len(), "{framing}");
        assert_eq!(out.json()["body_fnv"], fnv(&big), "{framing}");
    }
}

/// The proxy listener's accept queue holds `limits.max_connections` connections (the kernel caps
/// it at `net.core.somaxconn`), not tokio's 128: a burst of new tunnels arriving while the one
/// runtime thread is busy with handshakes waits there instead of being dropped, each drop a 1 s
/// SYN retransmit for its client (bench/tunnels.py). `ss` shows a listener's queue as Send-Q.
#[test]
fn the_proxy_listener_queues_a_burst_up_to_the_connection_cap() {
    let proxy = ProxyProc::start("limits: {max_connections: 1000}\n");
    let out = std::process::Command::new("ss")
        .args(["-Hltn", &format!("sport = :{}", proxy.addr.port())])
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&out.stdout).to_string();
    let backlog: u32 = line.split_whitespace().nth(2).unwrap().parse().unwrap();
    let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(backlog, 1000.min(somaxconn), "{line}");
}

/// The proxy grows its descriptor table at start to a descriptor per allowed connection and one
/// for its upstream (at most its RLIMIT_NOFILE): grown later, in a process with several threads,
/// each doubling stalled the thread opening the descriptor for an RCU grace period (~10 ms at the
/// 512th and the 1,024th; bench/tunnels.py). `FDSize` in /proc/PID/status is the table's size.
#[test]
fn the_proxy_sizes_its_descriptor_table_for_its_connections_at_start() {
    let proxy = ProxyProc::start("limits: {max_connections: 1000}\n");
    let field = |file: &str, name: &str| -> u64 {
        let text = std::fs::read_to_string(format!("/proc/{}/{file}", proxy.pid())).unwrap();
        let line = text.lines().find(|l| l.starts_with(name)).unwrap();
        line[name.len()..]
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let top = (2 * 1000 + 64).min(field("limits", "Max open files") - 1);
    eventually(
        "the descriptor table grown",
        std::time::Duration::from_secs(30),
        || {
            let size = field("status", "FDSize:");
            (size > top).then_some(())
        },
    );
}
