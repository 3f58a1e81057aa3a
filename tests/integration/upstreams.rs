//! One upstream sender for every way a request arrives (src/proxy/sender/): a connection that a
//! client connection of the proxy listener kept serves plain HTTP inside an intercepted tunnel
//! too, through a parent proxy plain requests go in absolute-form over one kept connection, and a
//! kept connection idles only from the end of its last exchange.

use std::time::Duration;

use crate::common::*;

#[test]
fn a_connection_a_client_connection_kept_serves_plain_http_inside_a_tunnel_too() {
    let up = Upstream::start();
    let proxy = ProxyProc::start("tls: {intercept: all}\n");
    let mut conn = ProxyConn::open(proxy.addr);
    assert_eq!(conn.get(&up.url("/echo?via=listener")).status(), 200);
    drop(conn);
    // curl -p: a CONNECT (intercepted: tls.intercept all), then plain HTTP inside the tunnel.
    let out = curl(&["-p", "-x", &proxy.url(), &up.url("/echo?via=tunnel")]);
    assert_eq!(out.status, 200, "{out:?}");
    assert_eq!(out.json()["uri"], "/echo?via=tunnel", "{out:?}");
    // The inner request was decided (and sent) as an intercepted tunnel's, not spliced.
    eventually(
        "the inner request's record",
        Duration::from_secs(10),
        || {
            proxy
                .audit()
                .into_iter()
                .find(|r| r["method"] == "GET" && r["connection"] == "intercepted")
        },
    );
    assert_eq!(up.requests(), 2);
    assert_eq!(
        up.connections(),
        1,
        "the tunnel's request went over the connection the listener's client connection left"
    );
}

#[test]
fn through_a_parent_proxy_plain_requests_share_one_connection_in_absolute_form() {
    // The test upstream stands in for the parent proxy: it answers absolute-form requests too.
    let parent = Upstream::start();
    let proxy = ProxyProc::start(&format!("upstream: {{proxy: \"{}\"}}\n", parent.url("")));
    let mut conn = ProxyConn::open(proxy.addr);
    for i in 0..3 {
        let url = format!("http://api.example.test/echo?i={i}");
        assert_eq!(conn.get(&url).status(), 200, "{url}");
    }
    let seen = parent.seen();
    let uris: Vec<&str> = seen.iter().map(|s| s.uri.as_str()).collect();
    assert_eq!(
        uris,
        (0..3)
            .map(|i| format!("http://api.example.test:80/echo?i={i}"))
            .collect::<Vec<_>>()
    );
    assert!(
        seen.iter()
            .all(|s| s.header("host") == Some("api.example.test")),
        "{seen:?}"
    );
    assert_eq!(parent.connections(), 1, "one kept connection to the parent");
}

#[test]
fn a_kept_connection_busy_for_longer_than_the_idle_timeout_is_reused_afterwards() {
    let up = Upstream::start();
    let proxy = ProxyProc::start("limits: {pool_idle_timeout_ms: 2000}\n");
    let mut conn = ProxyConn::open(proxy.addr);
    // The first exchange outlasts the idle timeout, but the connection was busy, not idle: its
    // idle time starts when it is kept again.
    assert_eq!(conn.get(&up.url("/slow?ms=2500")).status(), 200);
    assert_eq!(conn.get(&up.url("/echo")).status(), 200);
    assert_eq!(up.requests(), 2);
    assert_eq!(up.connections(), 1, "the kept connection was reused");
}

#[test]
fn a_connection_kept_for_one_name_never_serves_another_name_of_the_same_address() {
    let up = Upstream::start();
    let p = up.addr.port();
    let (by_ip, by_name) = (up.url("/echo"), format!("http://localhost:{p}/echo"));
    let proxy = ProxyProc::start("");
    let mut first = ProxyConn::open(proxy.addr);
    for url in [&by_ip, &by_name, &by_ip, &by_name] {
        assert_eq!(first.get(url).status(), 200, "{url}");
    }
    assert_eq!(up.connections(), 2, "one kept connection per name");
    // Its client connection ends: both are left for the next client, each for its own name.
    drop(first);
    let mut second = ProxyConn::open(proxy.addr);
    for url in [&by_name, &by_ip] {
        assert_eq!(second.get(url).status(), 200, "{url}");
    }
    let hosts: Vec<String> = up
        .seen()
        .iter()
        .map(|s| s.header("host").unwrap_or_default().to_string())
        .collect();
    let (ip, name) = (format!("127.0.0.1:{p}"), format!("localhost:{p}"));
    assert_eq!(
        hosts,
        [&ip, &name, &ip, &name, &name, &ip].map(String::as_str)
    );
    assert_eq!(
        up.connections(),
        2,
        "the left connections served their own names again"
    );
}
