//! Every answer intentgate writes itself is JSON of the one error shape (`common::error_code`).

use bytes::Bytes;
use http::Request;
use http_body_util::Full;

use crate::common::*;

fn assert_json_error(j: &serde_json::Value, code: &str) {
    assert_eq!(error_code(j), code, "{j}");
    for field in ["reason", "hint", "decision_id"] {
        assert!(
            j[field].as_str().is_some_and(|s| !s.is_empty()),
            "missing {field}: {j}"
        );
    }
}

#[test]
fn upstream_down_is_502_json() {
    let proxy = ProxyProc::start("");
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let url = format!("http://{closed}/x");
    let resp = send(
        proxy.addr,
        Request::get(&url).body(Full::new(Bytes::new())).unwrap(),
    );
    assert_eq!(resp.status(), 502);
    assert_json_error(&body_json(&resp), "upstream_unreachable");
    assert_eq!(resp.headers()["content-type"], "application/json");
    let out = curl(&["-x", &proxy.url(), &url]);
    assert_eq!(out.status, 502);
    assert_json_error(&out.json(), "upstream_unreachable");
}

#[test]
fn slow_upstream_is_504_json() {
    let up = Upstream::start();
    let proxy = ProxyProc::start("limits: {upstream_response_timeout_ms: 300}\n");
    let out = curl(&["-x", &proxy.url(), &up.url("/slow?ms=3000")]);
    assert_eq!(out.status, 504, "{out:?}");
    assert_json_error(&out.json(), "upstream_timeout");
    let resp = send(
        proxy.addr,
        Request::get(up.url("/slow?ms=3000"))
            .body(Full::new(Bytes::new()))
            .unwrap(),
    );
    assert_eq!(resp.status(), 504);
}

#[test]
fn malformed_requests_are_400_json() {
    let up = Upstream::start();
    let proxy = ProxyProc::start("");
    let target = up.url("/echo");
    let cases: Vec<(String, &str)> = vec![
        ("GARBAGE\r\n\r\n".into(), "malformed_request"),
        ("GET\r\n\r\n".into(), "malformed_request"),
        (
            format!("GET {target} HTTP/9.9\r\n\r\n"),
            "malformed_request",
        ),
        (
            format!("GET {target} HTTP/1.1\r\nbad header line\r\n\r\n"),
            "malformed_request",
        ),
        (
            "GET http://exa mple.com/ HTTP/1.1\r\n\r\n".into(),
            "malformed_request",
        ),
        (
            "GET /relative HTTP/1.1\r\nHost: x\r\n\r\n".into(),
            "not_a_proxy_request",
        ),
        (
            "GET https://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n".into(),
            "bad_request",
        ),
        (
            "GET ftp://example.com/ HTTP/1.1\r\n\r\n".into(),
            "bad_request",
        ),
        (
            format!("GET http://{}/a%2fb HTTP/1.1\r\n\r\n", up.addr),
            "bad_request",
        ),
        (
            format!(
                "GET http://{}/ HTTP/1.1\r\nHost: other.example\r\n\r\n",
                up.addr
            ),
            "bad_request",
        ),
        (
            "GET http://user@example.com/ HTTP/1.1\r\n\r\n".into(),
            "bad_request",
        ),
        (
            "GET http://2130706433/ HTTP/1.1\r\n\r\n".into(),
            "bad_request",
        ),
    ];
    for (req, code) in cases {
        let resp = raw(proxy.addr, req.as_bytes());
        assert!(resp.starts_with("HTTP/1.1 400"), "{req:?} → {resp}");
        assert_json_error(&raw_json(&resp), code);
    }
    assert_eq!(up.requests(), 0, "nothing malformed reached the upstream");
    // Origin-form through curl (calling the proxy as if it were the origin).
    let out = curl(&[&format!("{}/some/path", proxy.url())]);
    assert_eq!(out.status, 400);
    assert_json_error(&out.json(), "not_a_proxy_request");
}

#[test]
fn oversized_heads_are_431_json() {
    let up = Upstream::start();
    let proxy = ProxyProc::start("limits: {max_header_bytes: 16384, max_headers: 20}\n");
    // Over our limit (our check answers).
    let big = "a".repeat(20_000);
    let out = curl(&[
        "-x",
        &proxy.url(),
        "-H",
        &format!("x-big: {big}"),
        &up.url("/echo"),
    ]);
    assert_eq!(out.status, 431, "{out:?}");
    assert_json_error(&out.json(), "headers_too_large");
    // Far over it (hyper's backstop answers, rewritten to our JSON).
    let huge = "b".repeat(80_000);
    let resp = raw(
        proxy.addr,
        format!("GET {} HTTP/1.1\r\nx-huge: {huge}\r\n\r\n", up.url("/echo")).as_bytes(),
    );
    assert!(
        resp.starts_with("HTTP/1.1 431"),
        "{}",
        &resp[..resp.len().min(200)]
    );
    assert_json_error(&raw_json(&resp), "headers_too_large");
    // Too many headers.
    let many: String = (0..30).map(|i| format!("x-h{i}: v\r\n")).collect();
    let resp = raw(
        proxy.addr,
        format!("GET {} HTTP/1.1\r\n{many}\r\n", up.url("/echo")).as_bytes(),
    );
    assert!(resp.starts_with("HTTP/1.1 431"), "{resp}");
    assert_eq!(up.requests(), 0);
}

#[test]
fn non_public_destinations_are_forbidden_by_default() {
    let up = Upstream::start();
    // No egress exceptions: loopback is as forbidden as any internal address.
    let proxy = ProxyProc::start("egress: {allow_cidrs: []}\n");
    for url in [
        up.url("/echo"),
        format!("http://localhost:{}/echo", up.addr.port()),
    ] {
        let out = curl(&["-x", &proxy.url(), &url]);
        assert_eq!(out.status, 403, "{url}: {out:?}");
        assert_json_error(&out.json(), "destination_forbidden");
        assert_eq!(
            out.json()["reason"]
                .as_str()
                .map(|r| r.contains("loopback")),
            Some(true)
        );
    }
    let resp = raw(
        proxy.addr,
        format!("CONNECT {} HTTP/1.1\r\n\r\n", up.addr).as_bytes(),
    );
    assert!(resp.starts_with("HTTP/1.1 403"), "{resp}");
    // The proxy's own listener is never a destination, even when loopback is allowed.
    let open = ProxyProc::start("");
    let out = curl(&["-x", &open.url(), &format!("{}/echo", open.url())]);
    assert_eq!(out.status, 403, "{out:?}");
    assert_eq!(up.requests(), 0, "nothing reached the upstream");
}
