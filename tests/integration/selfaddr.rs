//! intentgate's own listeners are never a destination through the proxy, however their address
//! is spelled: IPv4-mapped and IPv4-compatible IPv6, names resolving to them, any address of the
//! host for a listener bound to 0.0.0.0/[::], and CONNECT to the proxy itself (nesting). The one
//! door: plain HTTP to the admin listener's address as written, for the agent-facing endpoints
//! (tests/integration/admin_door.rs).

use std::time::Duration;

use crate::common::netns::Netns;
use crate::common::*;

const RELOADS: &str = "intentgate_policy_reloads_total{result=\"success\"}";

/// The test DNS server (tests/clients/dns_server.py) on loopback, serving `plan`; its port.
fn dns_server(dir: &std::path::Path, plan: &str) -> (std::process::Child, u16) {
    let port_file = dir.join("dns.port");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/dns_server.py");
    let child = std::process::Command::new("python3")
        .args([script, port_file.to_str().unwrap(), plan])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let port = eventually("the test DNS server", Duration::from_secs(10), || {
        std::fs::read_to_string(&port_file)
            .ok()
            .and_then(|p| p.trim().parse().ok())
    });
    (child, port)
}

fn forbidden(resp: &str, what: &str) {
    assert!(resp.starts_with("HTTP/1.1 403"), "{what}: {resp}");
    let j = raw_json(resp);
    assert_eq!(error_code(&j), "destination_forbidden", "{what}: {resp}");
    assert!(
        j["reason"].as_str().unwrap().contains("intentgate itself"),
        "{what}: {resp}"
    );
}

#[test]
fn every_spelling_of_our_own_addresses_is_refused_and_the_admin_api_sees_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (mut dns, dns_port) = dns_server(
        dir.path(),
        r#"{"self4.test": [["127.0.0.1"]], "self6.test": [["::ffff:7f00:1"]], "compat.test": [["::7f00:1"]]}"#,
    );
    // The test default allows loopback upstreams (egress.allow_cidrs): the self check must win.
    let proxy = ProxyProc::start(&format!(
        "dns: {{servers: [\"127.0.0.1:{dns_port}\"]}}\nlisten: {{proxy: 127.0.0.1:0, admin: 127.0.0.1:0, transparent: 127.0.0.1:0}}\n"
    ));
    let ready: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(proxy.path("ready.json")).unwrap()).unwrap();
    let transparent: std::net::SocketAddr = ready["transparent"].as_str().unwrap().parse().unwrap();
    let reloads = proxy.metric(RELOADS);
    let ports = [
        proxy.admin.unwrap().port(),
        proxy.addr.port(),
        transparent.port(),
    ];
    let hosts = [
        "[::ffff:127.0.0.1]",
        "[::ffff:7f00:1]",
        "[::127.0.0.1]",
        "127.0.0.1",
        "0.0.0.0",
        "[::]",
        "self4.test",
        "self6.test",
        "compat.test",
    ];
    for port in ports {
        for host in hosts {
            let put = format!(
                "PUT http://{host}:{port}/v1/intent HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\nContent-Length: 15\r\n\r\n{{\"name\": \"own\"}}"
            );
            let answer = raw(proxy.addr, put.as_bytes());
            if host == "127.0.0.1" && port == ports[0] {
                // The one door: the admin URL as written, answered by the admin API in-process.
                assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
                assert_eq!(raw_json(&answer)["session"]["name"], "own", "{answer}");
                curl(&["-X", "DELETE", &proxy.admin_url("/v1/intent")]);
            } else {
                forbidden(&answer, &format!("PUT {host}:{port}"));
            }
            let reload = format!(
                "POST http://{host}:{port}/v1/reload HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Length: 0\r\n\r\n"
            );
            forbidden(
                &raw(proxy.addr, reload.as_bytes()),
                &format!("POST {host}:{port}"),
            );
            let connect = format!("CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n");
            forbidden(
                &raw(proxy.addr, connect.as_bytes()),
                &format!("CONNECT {host}:{port}"),
            );
        }
    }
    // The admin API saw nothing else: the door's session intent was cleared, no reload.
    let session = curl(&[&proxy.admin_url("/v1/intent")]).json();
    assert!(session["session"].is_null(), "{session}");
    assert_eq!(proxy.metric(RELOADS), reloads);
    // Every refusal was audited as one (and the door's answer as an answer).
    let n = ports.len() * hosts.len() * 3;
    let audit = proxy.audit_n(n);
    assert_eq!(audit.len(), n);
    let (door, refused): (Vec<_>, Vec<_>) = audit.iter().partition(|r| r["decision"] == "allow");
    assert_eq!(door.len(), 1, "{audit:?}");
    assert_eq!(door[0]["status"], 200, "{audit:?}");
    assert!(
        refused
            .iter()
            .all(|r| r["error"] == "destination_forbidden" && r["status"] == 403),
        "{audit:?}"
    );
    dns.kill().unwrap();
    dns.wait().unwrap();
}

#[test]
fn a_connect_to_the_proxy_itself_is_refused_at_the_first_level() {
    let proxy = ProxyProc::start("tls: {intercept: none}\n");
    let me = format!("[::ffff:127.0.0.1]:{}", proxy.addr.port());
    // One connection that would nest CONNECTs through our own listener, level after level (the
    // last asks to close, so the refused connection ends).
    let connect = format!("CONNECT {me} HTTP/1.1\r\nHost: {me}\r\n");
    let nest = format!("{connect}\r\n{connect}\r\n{connect}Connection: close\r\n\r\n");
    let (resp, closed) = closes_after(proxy.addr, nest.as_bytes());
    assert!(closed, "{resp}");
    let answers = resp.matches("HTTP/1.1 ").count();
    assert!(resp.starts_with("HTTP/1.1 403"), "{resp}");
    assert!(!resp.contains("HTTP/1.1 200"), "{resp}");
    // No tunnel was opened: each CONNECT on this connection was answered by the proxy itself,
    // and no inner connection ever reached the listener (one audit record per answer).
    let audit = proxy.audit_n(answers);
    assert_eq!(audit.len(), answers, "{audit:?}");
    assert!(
        audit.iter().all(|r| r["error"] == "destination_forbidden"),
        "{audit:?}"
    );
}

#[test]
fn a_wildcard_listener_is_refused_at_every_address_of_the_host() {
    // A namespace whose only interface carries a non-loopback (and not private) address.
    let mut ns = Netns::new("self", &["192.88.99.7/32"]);
    let ready = ns.intentgate(
        "listen: {proxy: \"0.0.0.0:0\", admin: \"[::]:0\"}\nagent: {id: a, owner: o}\nmode: monitor\n\
         audit: {path: off}\negress: {allow_cidrs: [0.0.0.0/0, \"::/0\"]}\nlimits: {connect_timeout_ms: 2000}\n",
    );
    let port = |k: &str| {
        ready[k]
            .as_str()
            .unwrap()
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .port()
    };
    let (proxy_port, admin_port) = (port("proxy"), port("admin"));
    let proxy = format!("http://127.0.0.1:{proxy_port}");
    let admin = format!("http://127.0.0.1:{admin_port}");
    let reloads = |ns: &Netns| {
        ns.curl(&[&format!("{admin}/metrics")])
            .lines()
            .find_map(|l| l.strip_prefix(RELOADS).map(|v| v.trim().to_string()))
            .unwrap_or_default()
    };
    let before = reloads(&ns);
    let via =
        |ns: &Netns, url: &str| ns.curl(&["-x", &proxy, "-X", "POST", "-w", " %{http_code}", url]);
    for addr in ["192.88.99.7", "[::ffff:192.88.99.7]", "127.0.0.53"] {
        for p in [proxy_port, admin_port] {
            let out = via(&ns, &format!("http://{addr}:{p}/v1/reload"));
            assert!(
                has_error_code(&out, "destination_forbidden") && out.ends_with(" 403"),
                "{addr}:{p}: {out}"
            );
        }
    }
    // An address added after the start is read when it is first asked about.
    assert!(
        ns.run("ip", &["addr", "add", "192.88.99.8/32", "dev", "lo"])
            .status
            .success()
    );
    let out = via(&ns, &format!("http://192.88.99.8:{admin_port}/v1/reload"));
    assert!(
        has_error_code(&out, "destination_forbidden") && out.ends_with(" 403"),
        "{out}"
    );
    assert_eq!(reloads(&ns), before);
    // The same address at another port is an ordinary destination (nothing listens there).
    let out = via(&ns, "http://192.88.99.7:9/");
    assert!(has_error_code(&out, "upstream_unreachable"), "{out}");
}
