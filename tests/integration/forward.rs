//! Plain-HTTP forwarding: methods, bodies, streaming, keep-alive, header hygiene.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;

use crate::common::*;

#[test]
fn get_and_post_reach_the_upstream_in_origin_form() {
    let up = Upstream::start();
    let proxy = ProxyProc::start("");
    // Rust client, absolute-form request.
    let resp = send(
        proxy.addr,
        Request::get(up.url("/echo?page=2"))
            .body(Full::new(Bytes::new()))
            .unwrap(),
    );
    assert_eq!(resp.status(), 200);
    let echo = body_json(&resp);
    assert_eq!(echo["uri"], "/echo?page=2", "forwarded in origin-form");
    assert_eq!(echo["headers"]["host"], up.addr.to_string());
    assert_eq!(echo["headers"]["via"], "1.1 intentgate");
    assert!(
        echo["headers"]["intentgate-decision-id"]
            .as_str()
            .is_some_and(|s| s.len() == 24)
    );
    assert_eq!(resp.headers()["via"], "1.1 intentgate");

    let payload = b"{\"ticket\": 4711, \"label\": \"billing\"}".to_vec();
    let req = Request::post(up.url("/echo"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(payload.clone())))
        .unwrap();
    let echo = body_json(&send(proxy.addr, req));
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["body_len"], payload.len());
    assert_eq!(echo["body_fnv"], fnv(&payload));

    // The same with curl.
    let out = curl(&[
        "-x",
        &proxy.url(),
        "--data-binary",
        "hello curl",
        &up.url("/echo"),
    ]);
    assert_eq!(out.status, 200, "{out:?}");
    assert_eq!(out.json()["body_len"], 10);
    assert_eq!(out.json()["uri"], "/echo");
    let out = curl(&[
        "-x",
        &proxy.url(),
        "-X",
        "PUT",
        "-d",
        "x=1",
        &up.url("/echo"),
    ]);
    assert_eq!(out.json()["method"], "PUT");
}

#[test]
fn chunked_upload_and_large_bodies_stream_without_being_held() {
    let up = Upstream::start();
    let proxy = ProxyProc::start("");
    let dir = tempfile::tempdir().unwrap();
    let size = 64 * 1024 * 1024;
    let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let file = dir.path().join("big.bin");
    std::fs::write(&file, &data).unwrap();
    let at = format!("@{}", file.display());

    // 64 MiB up, chunked, through curl.
    let out = curl(&[
        "-x",
        &proxy.url(),
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        &at,
        &up.url("/echo"),
    ]);
    assert_eq!(out.status, 200, "{out:?}");
    let echo = out.json();
    assert_eq!(echo["body_len"], size);
    assert_eq!(echo["body_fnv"], fnv(&data));
    assert_eq!(echo["headers"]["transfer-encoding"], "chunked");
    // 64 MiB down.
    let out_file = dir.path().join("down.bin");
    let out = curl(&[
        "-x",
        &proxy.url(),
        "-o",
        out_file.to_str().unwrap(),
        &up.url(&format!("/bytes/{size}")),
    ]);
    assert_eq!(out.status, 200, "{out:?}");
    assert_eq!(std::fs::metadata(&out_file).unwrap().len(), size as u64);
    // Held in memory, 128 MiB would show in the peak RSS; streamed, it stays small.
    let peak_mib = proxy.peak_rss_kib() / 1024;
    assert!(
        peak_mib < 48,
        "proxy peak RSS {peak_mib} MiB: bodies were buffered"
    );
}

#[test]
fn request_body_reaches_the_upstream_before_the_client_finishes() {
    let up = Upstream::start();
    let proxy = ProxyProc::start("");
    let mut s = TcpStream::connect(proxy.addr).unwrap();
    let total = 1_000_000usize;
    write!(
        s,
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Length: {total}\r\nConnection: close\r\n\r\n",
        up.url("/upload-gate"),
        up.addr
    )
    .unwrap();
    s.write_all(&vec![b'a'; 1000]).unwrap();
    // The upstream sees the first bytes while the client still holds back the rest.
    eventually(
        "upstream to receive the first part",
        Duration::from_secs(10),
        || (up.state.upload_started.load(Ordering::SeqCst) == 1).then_some(()),
    );
    s.write_all(&vec![b'a'; total - 1000]).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains(&format!("\"body_len\":{total}")), "{text}");
}

#[test]
fn server_sent_events_arrive_event_by_event() {
    let up = Upstream::start();
    let proxy = ProxyProc::start("");
    let mut s = TcpStream::connect(proxy.addr).unwrap();
    write!(
        s,
        "GET {} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n\r\n",
        up.url("/sse"),
        up.addr
    )
    .unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut got = String::new();
    let mut read_until = |needle: &str, got: &mut String| {
        eventually(
            &format!("'{needle}' through the proxy"),
            Duration::from_secs(10),
            || {
                let mut buf = [0u8; 1024];
                if let Ok(n) = s.read(&mut buf) {
                    got.push_str(&String::from_utf8_lossy(&buf[..n]));
                }
                got.contains(needle).then_some(())
            },
        )
    };
    // The first event arrives while the upstream still holds the second one back.
    read_until("data: one", &mut got);
    assert!(!got.contains("data: two"));
    up.state.sse_gate.notify_one();
    read_until("data: two", &mut got);
    assert!(
        got.to_ascii_lowercase()
            .contains("content-type: text/event-stream")
    );
}

#[test]
fn one_client_connection_alternating_between_upstreams_never_mixes_them_up() {
    let (a, b) = (Upstream::start(), Upstream::start());
    let proxy = ProxyProc::start("");
    let mut conn = ProxyConn::open(proxy.addr);
    for i in 0..3 {
        assert_eq!(conn.get(&a.url(&format!("/echo?a={i}"))).status(), 200);
        assert_eq!(conn.get(&b.url(&format!("/echo?b={i}"))).status(), 200);
    }
    assert_eq!((a.requests(), b.requests()), (3, 3));
    assert_eq!(
        (a.connections(), b.connections()),
        (1, 1),
        "each upstream connection is kept and reused, never used for the other upstream"
    );
}

#[test]
fn keep_alive_is_reused_on_both_sides() {
    let up = Upstream::start();
    let proxy = ProxyProc::start("");
    let mut conn = ProxyConn::open(proxy.addr);
    for i in 0..5 {
        let resp = conn.get(&up.url(&format!("/echo?i={i}")));
        assert_eq!(resp.status(), 200);
    }
    assert_eq!(up.requests(), 5);
    assert_eq!(
        up.connections(),
        1,
        "the upstream connection is pooled and reused"
    );

    // curl fetching two URLs in one run reuses its connection to the proxy.
    let out = curl(&[
        "-v",
        "-x",
        &proxy.url(),
        &up.url("/echo?a"),
        &up.url("/echo?b"),
    ]);
    assert_eq!(out.status, 200);
    assert!(
        out.stderr.contains("Re-using existing connection")
            || out.stderr.contains("Reusing existing"),
        "{}",
        out.stderr
    );
    assert_eq!(up.connections(), 1);
}

#[test]
fn hop_by_hop_headers_are_removed_both_ways_and_agent_claims_stripped() {
    let up = Upstream::start();
    let proxy = ProxyProc::start("headers: {strip: [x-agent-identity]}\n");
    let req = Request::get(up.url("/echo"))
        .header("connection", "keep-alive, x-private-hop")
        .header("x-private-hop", "secret")
        .header("keep-alive", "timeout=5")
        .header("proxy-connection", "keep-alive")
        .header("proxy-authorization", "Basic dXNlcjpwYXNz")
        .header("te", "trailers")
        .header("trailer", "x-foo")
        .header("upgrade", "websocket")
        .header("intentgate-agent", "root")
        .header("intentgate-decision-id", "forged")
        .header("x-agent-identity", "admin")
        .header("x-end-to-end", "kept")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .body(Full::new(Bytes::new()))
        .unwrap();
    let echo = body_json(&send(proxy.addr, req));
    let h = echo["headers"].as_object().unwrap();
    for gone in [
        "connection",
        "x-private-hop",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "te",
        "trailer",
        "upgrade",
        "x-agent-identity",
    ] {
        assert!(!h.contains_key(gone), "{gone} was forwarded: {h:?}");
    }
    assert_ne!(h["intentgate-decision-id"], "forged");
    assert_eq!(
        h["intentgate-agent"], "test-agent",
        "the agent's claim is replaced by the configured identity"
    );
    assert_eq!(h["x-end-to-end"], "kept");
    assert_eq!(
        h["traceparent"],
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    );

    let resp = send(
        proxy.addr,
        Request::get(up.url("/hop"))
            .body(Full::new(Bytes::new()))
            .unwrap(),
    );
    assert!(resp.headers().get("x-hop-resp").is_none());
    assert!(resp.headers().get("keep-alive").is_none());
    assert_eq!(resp.headers()["x-end-to-end"], "kept");
    assert_eq!(resp.headers()["via"], "1.1 intentgate");
}

#[test]
fn python_clients_work_through_the_proxy() {
    let ca = crate::common::tls::TestCa::new("python test CA");
    let up = Upstream::start();
    let tls_up = Upstream::start_tls(ca.server_config(&["localhost"]));
    let proxy = ProxyProc::start("");
    let dir = tempfile::tempdir().unwrap();
    let ca_file = ca.write_pem(dir.path());
    let https = format!("https://localhost:{}/echo?tls=1", tls_up.addr.port());
    for lib in ["requests", "httpx"] {
        let out = python(lib, &proxy.url(), "GET", &up.url("/echo?lib=1"), &[]);
        assert_eq!(out.status, 200, "{lib}: {out:?}");
        assert_eq!(out.json()["uri"], "/echo?lib=1");
        let out = python(
            lib,
            &proxy.url(),
            "POST",
            &up.url("/echo"),
            &["payload-123"],
        );
        assert_eq!(out.json()["body_len"], 11, "{lib}");
        // HTTPS: the client tunnels with CONNECT and verifies the upstream itself.
        let out = python(
            lib,
            &proxy.url(),
            "GET",
            &https,
            &["--cacert", ca_file.to_str().unwrap()],
        );
        assert_eq!(out.status, 200, "{lib}: {out:?}");
        // A refusal reaches the client as our JSON.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let out = python(lib, &proxy.url(), "GET", &format!("http://{closed}/"), &[]);
        assert_eq!(out.status, 502);
        assert_eq!(error_code(&out.json()), "upstream_unreachable");
    }
}
