//! The bypass suite: every trick an agent (or a prompt-injected agent) could use to reach what its
//! intent forbids, each with its exact refusal and proof that nothing reached the upstream.

use std::time::Duration;

use crate::common::netns::Netns;
use crate::common::*;

fn refused(resp: &str, status: u16, code: &str) {
    assert!(
        resp.starts_with(&format!("HTTP/1.1 {status}")),
        "want {status} {code}: {resp}"
    );
    assert_eq!(raw_error_code(resp), code, "{resp}");
}

#[test]
fn smuggling_and_ambiguous_requests_are_refused_before_anything_is_forwarded() {
    let up = Upstream::start();
    let proxy = ProxyProc::start("");
    let u = up.url("/echo");
    let h = up.addr;
    let cases = [
        format!(
            "POST {u} HTTP/1.1\r\nHost: {h}\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        ),
        format!("get {u} HTTP/1.1\r\nHost: {h}\r\n\r\n"),
        format!("TRACE {u} HTTP/1.1\r\nHost: {h}\r\n\r\n"),
        format!(
            "GET {u} HTTP/1.1\r\nHost: {h}\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n"
        ),
    ];
    for req in &cases {
        refused(&raw(proxy.addr, req.as_bytes()), 400, "bad_request");
    }
    // Differing duplicate Content-Length, obsolete line folding and a non-chunked coding never
    // even parse.
    for req in [
        format!("POST {u} HTTP/1.1\r\nHost: {h}\r\nTransfer-Encoding: gzip\r\n\r\n"),
        format!(
            "POST {u} HTTP/1.1\r\nHost: {h}\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde"
        ),
        format!("GET {u} HTTP/1.1\r\nHost: {h}\r\nX-A: a\r\n  folded\r\n\r\n"),
    ] {
        refused(&raw(proxy.addr, req.as_bytes()), 400, "malformed_request");
    }
    assert_eq!(up.requests(), 0);
    // Content-Length with Transfer-Encoding: refused (400 ambiguous_framing) and the client
    // connection closed, so nothing can be smuggled behind it; nothing reaches the upstream.
    let smuggle = format!(
        "POST {u} HTTP/1.1\r\nHost: {h}\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET {u}/smuggled HTTP/1.1\r\nHost: {h}\r\n\r\n"
    );
    let (resp, closed) = closes_after(proxy.addr, smuggle.as_bytes());
    assert!(closed, "the connection must be closed: {resp}");
    assert_eq!(
        resp.matches("HTTP/1.1 ").count(),
        1,
        "one answer only: {resp}"
    );
    refused(&resp, 400, "ambiguous_framing");
    assert_eq!(up.requests(), 0);
}

#[test]
fn address_tricks_and_path_tricks() {
    let up = Upstream::start();
    let strict = ProxyProc::start("egress: {allow_cidrs: []}\n");
    let p = up.addr.port();
    for host in ["2130706433", "0x7f.1", "0177.0.0.1", "127.1", "0x7f000001"] {
        refused(
            &raw(
                strict.addr,
                format!("GET http://{host}:{p}/ HTTP/1.1\r\n\r\n").as_bytes(),
            ),
            400,
            "bad_request",
        );
    }
    for host in [
        "[::ffff:127.0.0.1]",
        "[::1]",
        "127.0.0.1",
        "localhost",
        "[::127.0.0.1]",
    ] {
        refused(
            &raw(
                strict.addr,
                format!("GET http://{host}:{p}/ HTTP/1.1\r\n\r\n").as_bytes(),
            ),
            403,
            "destination_forbidden",
        );
        refused(
            &raw(
                strict.addr,
                format!("CONNECT {host}:{p} HTTP/1.1\r\n\r\n").as_bytes(),
            ),
            403,
            "destination_forbidden",
        );
    }
    // Paths: ambiguous encodings refused; dot segments resolved, and the upstream gets exactly the
    // decided path.
    let open = ProxyProc::start("");
    for path in ["/a%2f..%2fadmin", "/a%5cadmin", "/a%00", "/a\\admin"] {
        refused(
            &raw(
                open.addr,
                format!("GET http://{}{path} HTTP/1.1\r\n\r\n", up.addr).as_bytes(),
            ),
            400,
            "bad_request",
        );
    }
    let out = curl(&[
        "--path-as-is",
        "-x",
        &open.url(),
        &up.url("/echo/a/../../%2e%2e/admin/./x"),
    ]);
    assert_eq!(out.json()["uri"], "/admin/x", "{out:?}");
    assert_eq!(up.requests(), 1);
}

#[test]
fn connect_to_other_ports_redirects_and_floods() {
    let up = Upstream::start();
    let other = Upstream::start();
    let catalog = format!(
        "agent: {{id: a, owner: o}}\nlimits: {{max_tunnels: 2}}\nintent: web\nintents:\n  web:\n    allow:\n      - hosts: [localhost, 127.0.0.1]\n        ports: [{}]\n",
        up.addr.port()
    );
    let proxy = ProxyProc::start(&catalog);
    // CONNECT to ports the intent does not name (ssh, smtp, redis): refused, nothing dialled.
    for port in [22, 25, 6379, other.addr.port()] {
        refused(
            &raw(
                proxy.addr,
                format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n").as_bytes(),
            ),
            403,
            "intent_violation",
        );
    }
    assert_eq!(other.connections(), 0);
    // A redirect from an allowed host to a forbidden one: the follow-up is judged on its own.
    let target = other.url("/echo/exfil");
    let out = curl(&[
        "-L",
        "-x",
        &proxy.url(),
        &up.url(&format!("/redirect?to={target}")),
    ]);
    assert_eq!(out.status, 403, "{out:?}");
    assert_eq!(other.requests(), 0);
    let recs = proxy.audit_n(6);
    assert_eq!(recs[4]["status"], 302);
    assert_eq!(recs[5]["decision"], "deny");
    assert_eq!(recs[5]["port"], other.addr.port());
    // Tunnel flood: beyond limits.max_tunnels, 503 with Retry-After.
    let t1 = crate::connect::connect_tunnel(proxy.addr, &up.addr.to_string());
    let t2 = crate::connect::connect_tunnel(proxy.addr, &up.addr.to_string());
    let third = raw(
        proxy.addr,
        format!("CONNECT {} HTTP/1.1\r\n\r\n", up.addr).as_bytes(),
    );
    refused(&third, 503, "overloaded");
    assert!(
        third.to_ascii_lowercase().contains("retry-after: 1"),
        "{third}"
    );
    drop((t1, t2));
}

/// Destinations off this machine are tested with intentgate inside a network namespace that has
/// only a loopback interface: even a bug could not send a packet anywhere.
#[test]
fn metadata_and_private_addresses_are_refused_in_an_isolated_namespace() {
    let mut ns = Netns::new("byp", &[]);
    let info = ns.intentgate("listen: {proxy: 127.0.0.1:0, admin: null}\nagent: {owner: t}\nmode: monitor\naudit: {path: off}\n");
    let proxy = info["proxy"].as_str().unwrap().to_string();
    // Even in monitor mode (which forwards policy denials), destination safety holds.
    for url in [
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
        "http://192.168.1.1/",
        "http://100.64.0.1/",
        "http://[fd00:ec2::254]/",
        "http://[::ffff:169.254.169.254]/",
        "http://[64:ff9b::a9fe:a9fe]/",
    ] {
        let body = ns.curl(&["-x", &proxy, url]);
        assert!(
            has_error_code(&body, "destination_forbidden"),
            "{url}: {body}"
        );
    }
    let body = ns.curl(&["-x", &proxy, "-p", "http://169.254.169.254:80/"]);
    assert!(!body.contains("meta-data"), "{body}");
}

/// `dns.servers` with a test resolver that answers a public address first and loopback next
/// (DNS rebinding), and a name that resolves to the metadata address. Run in an isolated
/// namespace (only loopback): the public address is unreachable, so no packet can leave.
#[test]
fn dns_rebinding_and_names_resolving_to_metadata_are_refused() {
    let mut ns = Netns::new("dns", &[]);
    let port_file = ns.dir().join("dns.port");
    let plan = r#"{"rebind.test": [["8.8.8.8"], ["127.0.0.1"]], "meta.test": [["169.254.169.254"]], "mapped.test": [["::ffff:127.0.0.1"]]}"#;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/dns_server.py");
    ns.spawn("python3", &[script, port_file.to_str().unwrap(), plan]);
    let port: u16 = eventually("the test DNS server", Duration::from_secs(10), || {
        std::fs::read_to_string(&port_file)
            .ok()
            .and_then(|p| p.trim().parse().ok())
    });
    let info = ns.intentgate(&format!(
        "listen: {{proxy: 127.0.0.1:0, admin: null}}\nagent: {{owner: t}}\nmode: monitor\naudit: {{path: off}}\ndns: {{servers: [\"127.0.0.1:{port}\"], cache_ttl_ms: 1000}}\nlimits: {{connect_timeout_ms: 2000}}\n"
    ));
    let proxy = info["proxy"].as_str().unwrap().to_string();
    let get = |url: &str| ns.curl(&["-x", &proxy, url]);
    // First answer: a public address. It is vetted and dialled (and unreachable in here).
    let first = get("http://rebind.test/");
    assert!(has_error_code(&first, "upstream_unreachable"), "{first}");
    // Once the cached resolution expires, the next answer is loopback: vetted again, refused.
    eventually(
        "the rebound name to be refused",
        Duration::from_secs(10),
        || has_error_code(&get("http://rebind.test/"), "destination_forbidden").then_some(()),
    );
    for name in ["meta.test", "mapped.test"] {
        let body = get(&format!("http://{name}/latest/meta-data/"));
        assert!(
            has_error_code(&body, "destination_forbidden"),
            "{name}: {body}"
        );
    }
}

#[test]
fn connection_floods_get_503_with_retry_after() {
    let up = Upstream::start();
    let proxy = ProxyProc::start("limits: {max_connections: 2}\n");
    let hold: Vec<_> = (0..2)
        .map(|_| std::net::TcpStream::connect(proxy.addr).unwrap())
        .collect();
    let resp = eventually(
        "the third connection to be refused",
        Duration::from_secs(10),
        || {
            let r = raw(
                proxy.addr,
                format!("GET {} HTTP/1.1\r\n\r\n", up.url("/echo")).as_bytes(),
            );
            r.starts_with("HTTP/1.1 503").then_some(r)
        },
    );
    assert_eq!(raw_error_code(&resp), "overloaded");
    assert!(resp.contains("retry-after: 1"), "{resp}");
    drop(hold);
    assert!(proxy.metric(r#"intentgate_refusals_total{error="too_many_connections"}"#) >= 1.0);
    eventually(
        "connections to be accepted again",
        Duration::from_secs(10),
        || {
            raw(
                proxy.addr,
                format!("GET {} HTTP/1.1\r\n\r\n", up.url("/echo")).as_bytes(),
            )
            .starts_with("HTTP/1.1 200")
            .then_some(())
        },
    );
}
