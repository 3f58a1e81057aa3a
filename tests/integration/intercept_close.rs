//! Intercepted HTTPS whose upstream ends a response by closing TCP without TLS `close_notify`:
//! a body with neither a length nor chunking ends there, as clients read it directly, and its
//! record says so; a body that declared its length and came short is still an error.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use crate::common::tls::TestCa;
use crate::common::*;

/// A TLS server that answers each connection with `response` and closes the TCP connection
/// without `close_notify` (the rustls connection is dropped, never shut down).
fn closing_server(ca: &TestCa, response: &'static str) -> SocketAddr {
    let mut cfg = (*ca.server_config(&["localhost"])).clone();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let cfg = Arc::new(cfg);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for tcp in listener.incoming().flatten() {
            let conn = rustls::ServerConnection::new(cfg.clone()).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            let mut reader = BufReader::new(&mut tls);
            let mut line = String::new();
            while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                if line == "\r\n" {
                    break;
                }
                line.clear();
            }
            let _ = tls.write_all(response.as_bytes());
            let _ = tls.flush();
            // Dropped: the TCP connection closes with no close_notify.
        }
    });
    addr
}

#[test]
fn a_body_ended_by_a_close_without_close_notify_reaches_the_client_whole() {
    let (dir, cert, key) = ca();
    let up_ca = TestCa::new("unclean close upstream CA");
    let up_ca_file = up_ca.write_pem(dir.path());
    let until_close = closing_server(
        &up_ca,
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\nthe whole body",
    );
    let short = closing_server(
        &up_ca,
        "HTTP/1.1 200 OK\r\ncontent-length: 100\r\nconnection: close\r\n\r\nonly this",
    );
    let proxy = ProxyProc::start(&format!(
        "agent: {{id: a, owner: o}}\n\
         egress: {{allow_cidrs: [127.0.0.1/32]}}\n\
         tls: {{ca_cert: \"{cert}\", ca_key: \"{key}\", upstream_ca: \"{}\"}}\n\
         intent: web\nintents:\n  web:\n    allow:\n      - hosts: [localhost]\n        ports: [{}, {}]\n",
        up_ca_file.display(),
        until_close.port(),
        short.port()
    ));
    let url = format!("https://localhost:{}/data", until_close.port());
    let out = curl(&["-x", &proxy.url(), "--cacert", &cert, &url]);
    assert_eq!(
        (out.status, out.body.as_str()),
        (200, "the whole body"),
        "{out:?}"
    );
    assert!(out.stderr.is_empty(), "curl reported an error: {out:?}");
    let out = python("requests", &proxy.url(), "GET", &url, &["--cacert", &cert]);
    assert_eq!(
        (out.status, out.body.as_str()),
        (200, "the whole body"),
        "{out:?}"
    );
    let recs = proxy.audit_n(4);
    let data: Vec<_> = recs.iter().filter(|r| r["path"] == "/data").collect();
    assert_eq!(data.len(), 2, "{recs:?}");
    for r in data {
        assert_eq!(r["ended"], "closed", "{r}");
        assert!(r["reasons"].to_string().contains("close_notify"), "{r}");
        assert_eq!(r["bytes_out"], 14, "{r}");
    }

    // A declared length that never arrives stays an error for the client.
    let url = format!("https://localhost:{}/short", short.port());
    let out = curl(&["-x", &proxy.url(), "--cacert", &cert, &url]);
    assert!(
        !out.stderr.is_empty() && out.body.len() < 100,
        "a short body went through as complete: {out:?}"
    );
}
