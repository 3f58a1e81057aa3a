//! Requests an upstream could read differently than the proxy decided them: paths that some
//! servers resolve further (`..;`, double encoding, overlong UTF-8), method overrides, bodies on
//! body-less methods, Content-Length with Transfer-Encoding and malformed chunks. Each is refused
//! with 400 `ambiguous_request` or `ambiguous_framing` and never reaches the upstream, on the
//! listener and inside an intercepted tunnel.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::tls::{TestCa, client_config_trusting};
use crate::common::*;
use crate::connect::tls_in_tunnel;

fn refused(resp: &str, code: &str) {
    assert!(resp.starts_with("HTTP/1.1 400"), "want 400 {code}: {resp}");
    let j = raw_json(resp);
    assert_eq!(error_code(&j), code, "{resp}");
    assert!(
        j["hint"].as_str().is_some_and(|h| !h.is_empty()) && j["decision_id"].is_string(),
        "{resp}"
    );
}

const PATHS: [&str; 6] = [
    "/echo/tickets/..;/admin",
    "/echo/tickets/..;jsessionid=1/admin",
    "/echo/tickets/%252e%252e/admin",
    "/echo/tickets%252fadmin",
    "/echo/tickets/%c0%ae%c0%ae/admin",
    "/echo/tickets/%e0%80%ae",
];

#[test]
fn paths_that_upstreams_resolve_further_are_refused() {
    let up = Upstream::start();
    let proxy = ProxyProc::start("");
    for path in PATHS {
        let req = format!("GET http://{}{path} HTTP/1.1\r\n\r\n", up.addr);
        refused(&raw(proxy.addr, req.as_bytes()), "ambiguous_request");
    }
    assert_eq!(up.requests(), 0);
    // Parameters on other segments and single escapes of '%' are forwarded as they are.
    let ok = format!(
        "GET http://{}/echo/tickets;jsessionid=1/a%2520b HTTP/1.1\r\n\r\n",
        up.addr
    );
    let resp = raw(proxy.addr, ok.as_bytes());
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert_eq!(raw_json(&resp)["uri"], "/echo/tickets;jsessionid=1/a%2520b");
}

#[test]
fn method_overrides_naming_another_method_are_refused() {
    let up = Upstream::start();
    let proxy = ProxyProc::start("");
    let u = up.url("/echo");
    for (header, query) in [
        ("X-HTTP-Method-Override: DELETE\r\n", ""),
        ("X-Method-Override: PUT\r\n", ""),
        ("X-HTTP-Method: DELETE\r\n", ""),
        ("", "?a=1&_method=DELETE"),
        ("", "?_method=patch"),
    ] {
        let req = format!(
            "POST {u}{query} HTTP/1.1\r\nHost: {}\r\n{header}Content-Length: 0\r\n\r\n",
            up.addr
        );
        refused(&raw(proxy.addr, req.as_bytes()), "ambiguous_request");
    }
    assert_eq!(up.requests(), 0);
    // One naming the request's own method changes nothing: forwarded.
    let same = format!(
        "POST {u}?_method=POST HTTP/1.1\r\nHost: {}\r\nX-HTTP-Method-Override: post\r\nContent-Length: 0\r\n\r\n",
        up.addr
    );
    assert!(raw(proxy.addr, same.as_bytes()).starts_with("HTTP/1.1 200"));
    assert_eq!(up.requests(), 1);
}

#[test]
fn bodies_on_bodyless_methods_need_a_rule_that_allows_them() {
    let up = Upstream::start();
    let p = up.addr.port();
    let proxy = ProxyProc::start(&format!(
        "intent: search\nintents:\n  search:\n    allow:\n      - hosts: [localhost]\n        ports: [{p}]\n\
         \x20       methods: [GET, DELETE, HEAD, OPTIONS]\n        paths: [\"/echo/**\"]\n        body_methods: [DELETE]\n"
    ));
    let send = |method: &str, framing: &str, body: &str| {
        let req = format!(
            "{method} http://localhost:{p}/echo/x HTTP/1.1\r\nHost: localhost:{p}\r\n{framing}\r\n{body}"
        );
        raw(proxy.addr, req.as_bytes())
    };
    for method in ["GET", "OPTIONS", "HEAD"] {
        for (framing, body) in [
            ("Content-Length: 5\r\n", "hello"),
            ("Transfer-Encoding: chunked\r\n", "5\r\nhello\r\n0\r\n\r\n"),
        ] {
            let resp = send(method, framing, body);
            // An answer to HEAD has no body to read the code from (it is in the audit below).
            match method {
                "HEAD" => assert!(resp.starts_with("HTTP/1.1 400"), "{resp}"),
                _ => refused(&resp, "ambiguous_request"),
            }
        }
    }
    assert_eq!(up.requests(), 0);
    // The rule's body_methods lets DELETE carry one; a GET without a body is as ever.
    let resp = send("DELETE", "Content-Length: 5\r\n", "hello");
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert_eq!(raw_json(&resp)["body_len"], 5);
    assert!(send("GET", "Content-Length: 0\r\n", "").starts_with("HTTP/1.1 200"));
    assert_eq!(up.requests(), 2);
    // The refusal is audited as such.
    let audit = proxy.audit_n(8);
    assert!(
        audit
            .iter()
            .filter(|r| r["error"] == "ambiguous_request")
            .count()
            == 6,
        "{audit:?}"
    );
}

#[test]
fn content_length_with_transfer_encoding_and_malformed_chunks_are_client_errors() {
    let up = Upstream::start();
    let proxy = ProxyProc::start("");
    let u = up.url("/echo");
    let h = up.addr;
    // Both orders; the connection is closed after the answer.
    for framing in [
        "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
    ] {
        let req = format!("POST {u} HTTP/1.1\r\nHost: {h}\r\n{framing}\r\n0\r\n\r\n");
        let (resp, closed) = closes_after(proxy.addr, req.as_bytes());
        assert!(closed, "{resp}");
        refused(&resp, "ambiguous_framing");
    }
    assert_eq!(up.requests(), 0);
    // A chunk size that is not hexadecimal is the client's error, not the upstream's.
    let req = format!(
        "POST {u} HTTP/1.1\r\nHost: {h}\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"
    );
    let (resp, closed) = closes_after(proxy.addr, req.as_bytes());
    assert!(closed, "{resp}");
    refused(&resp, "ambiguous_framing");
}

/// The same refusals inside an intercepted TLS tunnel (raw bytes over the client's TLS).
#[test]
fn inside_an_intercepted_tunnel_too() {
    let dir = tempfile::tempdir().unwrap();
    init_ca(dir.path());
    let test_ca = TestCa::new("ambiguity upstream CA");
    let up_ca = test_ca.write_pem(dir.path());
    let up = Upstream::start_tls(test_ca.server_config(&["localhost"]));
    let ig_ca = dir.path().join("ca/ca.pem");
    let proxy = ProxyProc::start(&format!(
        "tls: {{ca_cert: \"{}\", ca_key: \"{}\", upstream_ca: \"{}\"}}\n",
        ig_ca.display(),
        dir.path().join("ca/ca-key.pem").display(),
        up_ca.display()
    ));
    let client = client_config_trusting(&std::fs::read_to_string(&ig_ca).unwrap(), &[b"http/1.1"]);
    let p = up.addr.port();
    let addr = proxy.addr;
    let exchange = |request: String| -> String {
        let client = Arc::clone(&client);
        rt().block_on(async move {
            let target = format!("localhost:{p}");
            let mut tls = tls_in_tunnel(addr, &target, "localhost", client)
                .await
                .unwrap();
            tls.write_all(request.as_bytes()).await.unwrap();
            let mut out = Vec::new();
            // The proxy closes after a client error; a read error after the answer is fine.
            let _ = tls.read_to_end(&mut out).await;
            String::from_utf8_lossy(&out).into_owned()
        })
    };
    let host = format!("Host: localhost:{p}\r\n");
    for path in PATHS {
        let resp = exchange(format!(
            "GET {path} HTTP/1.1\r\n{host}Connection: close\r\n\r\n"
        ));
        refused(&resp, "ambiguous_request");
    }
    let resp = exchange(format!(
        "POST /echo HTTP/1.1\r\n{host}X-HTTP-Method-Override: DELETE\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    ));
    refused(&resp, "ambiguous_request");
    let resp = exchange(format!(
        "GET /echo HTTP/1.1\r\n{host}Content-Length: 5\r\nConnection: close\r\n\r\nhello"
    ));
    refused(&resp, "ambiguous_request");
    let resp = exchange(format!(
        "POST /echo HTTP/1.1\r\n{host}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    ));
    refused(&resp, "ambiguous_framing");
    assert_eq!(resp.matches("HTTP/1.1 ").count(), 1, "{resp}");
    assert_eq!(up.requests(), 0);
    // The tunnel still forwards what is unambiguous.
    let resp = exchange(format!(
        "POST /echo HTTP/1.1\r\n{host}Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    ));
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert_eq!(up.requests(), 1);
}

/// The same refusals on plain HTTP redirected to the transparent listener: one namespace, the
/// rules applied by `intentgate iptables` (uid 0, intentgate itself, excluded), an upstream on an
/// address of the namespace's loopback, and a raw client running as uid 65534.
#[test]
fn on_transparent_http_too() {
    const UP: &str = "10.233.9.2";
    let mut ns = crate::common::netns::Netns::new("amb", &[&format!("{UP}/32")]);
    let log = ns.dir().join("upstream.log");
    let server = format!(
        "import http.server, sys\n\
         class H(http.server.BaseHTTPRequestHandler):\n\
         \x20   protocol_version = 'HTTP/1.1'\n\
         \x20   def do_GET(self):\n\
         \x20       open(sys.argv[1], 'a').write(self.command + ' ' + self.path + '\\n')\n\
         \x20       self.send_response(200); self.send_header('content-length', '2'); self.end_headers(); self.wfile.write(b'ok')\n\
         \x20   do_POST = do_GET\n\
         http.server.HTTPServer(('{UP}', 80), H).serve_forever()\n"
    );
    ns.spawn("python3", &["-c", &server, log.to_str().unwrap()]);
    let ready = ns.intentgate(
        "listen: {proxy: 127.0.0.1:0, admin: null, transparent: \"0.0.0.0:15702\"}\n\
         agent: {id: a, owner: o}\nmode: monitor\naudit: {path: off}\n\
         egress: {allow_cidrs: [10.233.9.0/24]}\n",
    );
    assert_eq!(ready["transparent"], "0.0.0.0:15702", "{ready}");
    let out = ns.run(BIN, &["iptables", "--proxy-uid", "0", "--port", "15702"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A raw exchange as the agent (system Python: the agent cannot read root's): the bytes
    // out, everything read until the proxy closes.
    let client = "import socket, sys\n\
                  s = socket.create_connection((sys.argv[1], 80), timeout=10)\n\
                  s.sendall(sys.argv[2].encode('latin-1'))\n\
                  out = b''\n\
                  while True:\n\
                  \x20   b = s.recv(65536)\n\
                  \x20   if not b: break\n\
                  \x20   out += b\n\
                  sys.stdout.write(out.decode('latin-1'))\n";
    let exchange = |request: &str| {
        let out = ns.run(
            "setpriv",
            &[
                "--reuid",
                "65534",
                "--regid",
                "65534",
                "--clear-groups",
                "/usr/bin/python3",
                "-c",
                client,
                UP,
                request,
            ],
        );
        let err = String::from_utf8_lossy(&out.stderr);
        String::from_utf8_lossy(&out.stdout).into_owned() + &err
    };
    let host = format!("Host: {UP}\r\nConnection: close\r\n");
    // Unambiguous: forwarded (the redirect works), once the upstream listens.
    eventually(
        "the upstream behind the redirect",
        Duration::from_secs(10),
        || {
            let resp = exchange(&format!("GET /fine HTTP/1.1\r\n{host}\r\n"));
            resp.starts_with("HTTP/1.1 200").then_some(())
        },
    );
    for (request, code) in [
        (
            format!("GET /a/..;/admin HTTP/1.1\r\n{host}\r\n"),
            "ambiguous_request",
        ),
        (
            format!("GET /a/%252e%252e/admin HTTP/1.1\r\n{host}\r\n"),
            "ambiguous_request",
        ),
        (
            format!(
                "POST /a HTTP/1.1\r\n{host}X-HTTP-Method-Override: DELETE\r\nContent-Length: 0\r\n\r\n"
            ),
            "ambiguous_request",
        ),
        (
            format!("GET /a HTTP/1.1\r\n{host}Content-Length: 5\r\n\r\nhello"),
            "ambiguous_request",
        ),
        (
            format!(
                "POST /a HTTP/1.1\r\n{host}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
            ),
            "ambiguous_framing",
        ),
    ] {
        refused(&exchange(&request), code);
    }
    let seen = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(seen, "GET /fine\n", "only the unambiguous request arrived");
}
