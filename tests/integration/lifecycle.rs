//! Process lifecycle and topology: graceful shutdown, a parent proxy, timeouts on slow clients.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::common::tls::TestCa;
use crate::common::*;
use crate::connect::https_get_via;

#[test]
fn sigterm_drains_in_flight_requests_then_exits() {
    let up = Upstream::start();
    let mut proxy = ProxyProc::start("limits: {shutdown_grace_ms: 10000}\n");
    let url = up.url("/slow?ms=1500");
    let proxy_url = proxy.url();
    let inflight = std::thread::spawn(move || curl(&["-x", &proxy_url, &url]));
    eventually(
        "the slow request to reach the upstream",
        Duration::from_secs(10),
        || (up.requests() == 1).then_some(()),
    );
    proxy.signal("TERM");
    // New connections are refused once the listener is closed...
    eventually("the listener to close", Duration::from_secs(10), || {
        TcpStream::connect(proxy.addr).is_err().then_some(())
    });
    // ...while the request in flight completes normally.
    let out = inflight.join().unwrap();
    assert_eq!(out.status, 200, "{out:?}");
    let status = proxy.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "{status}");
    assert!(proxy.stderr().contains("drained"), "{}", proxy.stderr());
}

#[test]
fn a_parent_proxy_carries_plain_requests_and_tunnels() {
    let ca = TestCa::new("parent test CA");
    let up = Upstream::start();
    let tls_up = Upstream::start_tls(ca.server_config(&["localhost"]));
    let parent = ProxyProc::start("");
    let child = ProxyProc::start(&format!("upstream: {{proxy: \"{}\"}}\n", parent.url()));

    let out = curl(&["-x", &child.url(), &up.url("/echo?through=parent")]);
    assert_eq!(out.status, 200, "{out:?}");
    let echo = out.json();
    assert_eq!(echo["uri"], "/echo?through=parent");
    // Both hops added themselves to Via: the request really went through the parent.
    assert_eq!(echo["headers"]["via"], "1.1 intentgate, 1.1 intentgate");

    let resp = https_get_via(child.addr, &ca, "localhost", tls_up.addr.port(), "/echo");
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");

    // The parent refuses (its upstream is down): the child answers 502 naming the parent.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let resp = raw(
        child.addr,
        format!("CONNECT {closed} HTTP/1.1\r\n\r\n").as_bytes(),
    );
    assert!(resp.starts_with("HTTP/1.1 502"), "{resp}");
    assert_eq!(raw_error_code(&resp), "parent_proxy_error");
}

#[test]
fn slow_request_heads_are_cut_off() {
    let proxy = ProxyProc::start("limits: {header_read_timeout_ms: 300}\n");
    let mut s = TcpStream::connect(proxy.addr).unwrap();
    s.write_all(b"GET http://127.0.0.1/ HTTP/1.1\r\nX-Slow: ")
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut out = Vec::new();
    // The proxy closes the connection (EOF) well before our 10 s read timeout.
    let r = s.read_to_end(&mut out);
    assert!(
        r.is_ok(),
        "expected the proxy to close the connection, got {r:?}"
    );
}

#[test]
fn a_slow_request_head_is_answered_408_json_and_an_idle_connection_closed_without_one() {
    let proxy = ProxyProc::start("limits: {header_read_timeout_ms: 300}\n");
    let read_all = |s: &mut TcpStream| {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out)
            .expect("the proxy closes the connection");
        String::from_utf8_lossy(&out).into_owned()
    };
    let mut slow = TcpStream::connect(proxy.addr).unwrap();
    slow.write_all(b"GET http://127.0.0.1/ HTTP/1.1\r\nX-Slow: ")
        .unwrap();
    let idle = TcpStream::connect(proxy.addr).unwrap();
    let resp = read_all(&mut slow);
    assert!(
        resp.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{resp}"
    );
    assert_eq!(raw_error_code(&resp), "header_timeout");
    assert_eq!(read_all(&mut { idle }), "");
}
