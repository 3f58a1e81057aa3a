//! CONNECT tunnels: TLS end to end through the proxy, refusals, idle timeout.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::tls::TestCa;
use crate::common::*;

/// CONNECTs through `proxy` to `target` and returns the stream after the 200.
pub fn connect_tunnel(proxy: std::net::SocketAddr, target: &str) -> TcpStream {
    let mut s = TcpStream::connect(proxy).unwrap();
    write!(s, "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            s.read(&mut b).unwrap(),
            1,
            "proxy closed during CONNECT: {}",
            String::from_utf8_lossy(&head)
        );
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    s
}

/// TLS with `cfg`, for `server_name`, inside a CONNECT tunnel to `target` through `proxy`: the
/// handshake's outcome (a test may expect it to fail).
pub async fn tls_in_tunnel(
    proxy: std::net::SocketAddr,
    target: &str,
    server_name: &str,
    cfg: Arc<rustls::ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tunnel = connect_tunnel(proxy, target);
    tunnel.set_nonblocking(true).unwrap();
    let tcp = tokio::net::TcpStream::from_std(tunnel).unwrap();
    let name = rustls_pki_types::ServerName::try_from(server_name.to_string()).unwrap();
    tokio_rustls::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await
}

/// An HTTPS GET over a CONNECT tunnel with a Rust TLS client; returns the raw response.
pub fn https_get_via(
    proxy: std::net::SocketAddr,
    ca: &TestCa,
    host: &str,
    port: u16,
    path: &str,
) -> String {
    let config = ca.client_config();
    rt().block_on(async move {
        let target = format!("{host}:{port}");
        let mut tls = tls_in_tunnel(proxy, &target, host, config).await.unwrap();
        tls.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = Vec::new();
        tls.read_to_end(&mut out).await.unwrap();
        String::from_utf8_lossy(&out).into_owned()
    })
}

#[test]
fn connect_reaches_a_tls_upstream_end_to_end() {
    let ca = TestCa::new("intentgate test upstream CA");
    let up = Upstream::start_tls(ca.server_config(&["localhost", "127.0.0.1"]));
    let proxy = ProxyProc::start("");
    let resp = https_get_via(
        proxy.addr,
        &ca,
        "localhost",
        up.addr.port(),
        "/echo?via=tunnel",
    );
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("\"uri\":\"/echo?via=tunnel\""), "{resp}");

    // curl with HTTPS through the proxy (it sends CONNECT), verifying the upstream with the test CA.
    let dir = tempfile::tempdir().unwrap();
    let ca_file = ca.write_pem(dir.path());
    let url = format!("https://localhost:{}/echo", up.addr.port());
    let out = curl(&[
        "-x",
        &proxy.url(),
        "--cacert",
        ca_file.to_str().unwrap(),
        &url,
    ]);
    assert_eq!(out.status, 200, "{out:?}");
    // curl negotiates HTTP/2 with the upstream through the tunnel (the URI is then absolute).
    assert!(
        out.json()["uri"].as_str().unwrap().ends_with("/echo"),
        "{out:?}"
    );
    assert_eq!(up.requests(), 2);
}

#[test]
fn connect_refusals_are_json() {
    let proxy = ProxyProc::start("");
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let resp = raw(
        proxy.addr,
        format!("CONNECT {closed} HTTP/1.1\r\nHost: {closed}\r\n\r\n").as_bytes(),
    );
    assert!(resp.starts_with("HTTP/1.1 502"), "{resp}");
    let j = raw_json(&resp);
    assert_eq!(error_code(&j), "upstream_unreachable");
    assert!(j["decision_id"].as_str().is_some_and(|s| !s.is_empty()));

    let resp = raw(
        proxy.addr,
        b"CONNECT example.com HTTP/1.1\r\nHost: example.com\r\n\r\n",
    );
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    assert_eq!(raw_error_code(&resp), "bad_request");

    // curl sees the refusal as a failed CONNECT.
    let out = curl(&["-x", &proxy.url(), &format!("https://{closed}/")]);
    assert_ne!(out.status, 200);

    // Every record names the agent, also one refused before its decision (the CONNECT without a
    // port, a request in origin form); a CONNECT's scheme is that of the URL it tunnels.
    let resp = raw(proxy.addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    let recs = proxy.audit_n(4);
    for r in &recs {
        assert_eq!(r["agent"]["id"], "test-agent", "{r}");
    }
    let connects: Vec<_> = recs
        .iter()
        .filter(|r| r["connection"] == "connect")
        .collect();
    assert_eq!(connects.len(), 2, "{recs:?}");
    assert!(connects.iter().all(|r| r["scheme"] == "https"), "{recs:?}");
}

#[test]
fn idle_tunnels_are_closed() {
    let up = Upstream::start();
    let proxy = ProxyProc::start("limits: {tunnel_idle_timeout_ms: 300}\n");
    let mut s = connect_tunnel(proxy.addr, &up.addr.to_string());
    // Plain HTTP inside the tunnel works...
    write!(s, "GET /echo HTTP/1.1\r\nHost: {}\r\n\r\n", up.addr).unwrap();
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // ...and once nothing moves, the proxy closes the tunnel.
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut rest = Vec::new();
    let r = s.read_to_end(&mut rest);
    assert!(r.is_ok(), "tunnel should be closed by the proxy, got {r:?}");
}
