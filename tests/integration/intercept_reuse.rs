//! The upstream TLS connection an intercepted tunnel keeps: one tunnel's requests share ONE
//! upstream connection (HTTP/1.1 or HTTP/2 upstream), an upstream that closes the kept
//! connection after each response still answers every request (a new connection each time), and
//! an idle kept connection is closed after `limits.pool_idle_timeout_ms`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::tls::{TestCa, client_config_trusting};
use crate::common::*;
use crate::connect::tls_in_tunnel;

/// A raw HTTP/1.1-only TLS upstream: answers `GET` with `ok <n>` (n counts requests); keeps each
/// connection alive unless `close_after_each`, then closes it after the response, with no
/// `Connection: close` (as an upstream whose idle timeout fires between two requests).
struct RawUpstream {
    port: u16,
    accepted: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
    /// Connections that ended (closed by either side).
    closed: Arc<AtomicUsize>,
}

impl RawUpstream {
    fn start(ca: &TestCa, close_after_each: bool) -> Self {
        let mut cfg = (*ca.server_config(&["localhost"])).clone();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let listener = rt()
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let (acc, reqs, ended) = (accepted.clone(), requests.clone(), closed.clone());
        rt().spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                acc.fetch_add(1, Ordering::SeqCst);
                let (acceptor, reqs, ended) = (acceptor.clone(), reqs.clone(), ended.clone());
                let serve = async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut head = Vec::new();
                    let mut b = [0u8; 1024];
                    loop {
                        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                            match tls.read(&mut b).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => head.extend_from_slice(&b[..n]),
                            }
                        }
                        let end = head.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
                        head.drain(..end + 4);
                        let n = reqs.fetch_add(1, Ordering::SeqCst) + 1;
                        let body = format!("ok {n}");
                        let resp = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if tls.write_all(resp.as_bytes()).await.is_err() {
                            return;
                        }
                        let _ = tls.flush().await;
                        if close_after_each {
                            let _ = tls.shutdown().await;
                            return;
                        }
                    }
                };
                tokio::spawn(async move {
                    serve.await;
                    ended.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        Self {
            port,
            accepted,
            requests,
            closed,
        }
    }
}

/// A proxy intercepting with a CA from `intentgate ca init` and trusting `up_ca` upstream; the
/// intent `tickets` allows GET on localhost:`port`. Returns it, the interception CA PEM and the
/// temporary directory holding the files.
fn proxy(up_ca: &TestCa, port: u16, extra: &str) -> (ProxyProc, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("ca");
    let (code, out, err) = run_cli(&["ca", "init", "--out", ca_dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    let up_ca_file = up_ca.write_pem(dir.path());
    let proxy = ProxyProc::start(&format!(
        "agent: {{id: tls-bot, owner: o}}\ntls: {{ca_cert: \"{}\", ca_key: \"{}\", upstream_ca: \"{}\"}}\n\
         intents:\n  tickets:\n    allow:\n      - hosts: [localhost]\n        ports: [{port}]\n        methods: [GET]\n        paths: [\"/**\"]\n{extra}",
        ca_dir.join("ca.pem").display(),
        ca_dir.join("ca-key.pem").display(),
        up_ca_file.display()
    ));
    let pem = std::fs::read_to_string(ca_dir.join("ca.pem")).unwrap();
    (proxy, pem, dir)
}

type Tunnel = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

/// Sends `paths` one after another through ONE intercepted tunnel (HTTP/1.1 inside it), then
/// closes it; returns each status and body.
fn through_one_tunnel(
    proxy: &ProxyProc,
    ig_ca_pem: &str,
    port: u16,
    paths: &[&str],
) -> Vec<(u16, String)> {
    let mut tunnel = open_tunnel(proxy, ig_ca_pem, port);
    get_all(&mut tunnel, port, paths)
}

/// An intercepted tunnel to localhost:`port` speaking HTTP/1.1 inside TLS; open while kept.
fn open_tunnel(proxy: &ProxyProc, ig_ca_pem: &str, port: u16) -> Tunnel {
    let cfg = client_config_trusting(ig_ca_pem, &[b"http/1.1"]);
    let target = format!("localhost:{port}");
    rt().block_on(async move {
        let tls = tls_in_tunnel(proxy.addr, &target, "localhost", cfg)
            .await
            .unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(conn);
        sender
    })
}

/// Sends `paths` one after another on `tunnel`; returns each status and body.
fn get_all(tunnel: &mut Tunnel, port: u16, paths: &[&str]) -> Vec<(u16, String)> {
    rt().block_on(async move {
        let sender = tunnel;
        let mut out = Vec::new();
        for p in paths {
            let req = http::Request::get(*p)
                .header("host", format!("localhost:{port}"))
                .header("intentgate-intent", "tickets")
                .body(Empty::<Bytes>::new())
                .unwrap();
            sender.ready().await.unwrap();
            let resp = sender.send_request(req).await.unwrap();
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            out.push((status, String::from_utf8_lossy(&body).into_owned()));
        }
        out
    })
}

#[test]
fn one_tunnel_reuses_one_upstream_tls_connection_http1() {
    let ca = TestCa::new("upstream test CA");
    let up = RawUpstream::start(&ca, false);
    let (proxy, ig_ca, _dir) = proxy(&ca, up.port, "");
    let got = through_one_tunnel(&proxy, &ig_ca, up.port, &["/a", "/b", "/c", "/d", "/e"]);
    let want: Vec<(u16, String)> = (1..=5).map(|n| (200, format!("ok {n}"))).collect();
    assert_eq!(got, want);
    assert_eq!(
        up.accepted.load(Ordering::SeqCst),
        1,
        "the tunnel's five requests share one upstream TLS connection"
    );
}

#[test]
fn one_tunnel_reuses_one_upstream_tls_connection_http2() {
    let ca = TestCa::new("upstream test CA");
    // The shared test upstream offers h2 first: the kept connection is HTTP/2.
    let up = Upstream::start_tls(ca.server_config(&["localhost"]));
    let port = up.addr.port();
    let (proxy, ig_ca, _dir) = proxy(&ca, port, "");
    let got = through_one_tunnel(&proxy, &ig_ca, port, &["/echo/1", "/echo/2", "/echo/3"]);
    assert!(got.iter().all(|(s, _)| *s == 200), "{got:?}");
    assert_eq!(up.requests(), 3);
    assert_eq!(up.connections(), 1, "one upstream HTTP/2 connection");
    let seen = up.seen();
    assert!(
        seen.iter().all(|s| s.version == "HTTP/2.0"
            && s.uri
                .starts_with(&format!("https://localhost:{port}/echo/"))),
        "{seen:?}"
    );
    // A second tunnel to the same host is answered too (over the connection the first one
    // left, or a new one if the first tunnel has not ended yet).
    let again = through_one_tunnel(&proxy, &ig_ca, port, &["/echo/4"]);
    assert_eq!(again[0].0, 200, "{again:?}");
}

#[test]
fn an_upstream_closing_the_kept_connection_is_redialled_for_the_next_request() {
    let ca = TestCa::new("upstream test CA");
    let up = RawUpstream::start(&ca, true);
    let (proxy, ig_ca, _dir) = proxy(&ca, up.port, "");
    let got = through_one_tunnel(&proxy, &ig_ca, up.port, &["/a", "/b", "/c", "/d"]);
    let want: Vec<(u16, String)> = (1..=4).map(|n| (200, format!("ok {n}"))).collect();
    assert_eq!(
        got, want,
        "every request is answered, none lost or repeated"
    );
    assert_eq!(up.requests.load(Ordering::SeqCst), 4);
    assert_eq!(
        up.accepted.load(Ordering::SeqCst),
        4,
        "a closed kept connection is replaced by a new one"
    );
}

#[test]
fn an_idle_kept_upstream_connection_is_closed_after_the_pool_idle_timeout() {
    let ca = TestCa::new("upstream test CA");
    let up = RawUpstream::start(&ca, false);
    let (proxy, ig_ca, _dir) = proxy(&ca, up.port, "limits: {pool_idle_timeout_ms: 200}\n");
    let mut tunnel = open_tunnel(&proxy, &ig_ca, up.port);
    assert_eq!(
        get_all(&mut tunnel, up.port, &["/a"]),
        [(200, "ok 1".into())]
    );
    // The tunnel stays open; the connection it keeps upstream is closed once idle too long.
    eventually(
        "the idle kept connection is closed",
        Duration::from_secs(20),
        || (up.closed.load(Ordering::SeqCst) == 1).then_some(()),
    );
    // The tunnel's next request goes over a new connection.
    assert_eq!(
        get_all(&mut tunnel, up.port, &["/b"]),
        [(200, "ok 2".into())]
    );
    assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
}

#[test]
fn open_tunnels_to_one_host_share_one_http2_upstream_connection() {
    let ca = TestCa::new("upstream test CA");
    let up = Upstream::start_tls(ca.server_config(&["localhost"]));
    let port = up.addr.port();
    let (proxy, ig_ca, _dir) = proxy(&ca, port, "");
    let mut tunnels = [
        open_tunnel(&proxy, &ig_ca, port),
        open_tunnel(&proxy, &ig_ca, port),
    ];
    // Both tunnels stay open: the second takes the HTTP/2 connection the first one holds.
    for (i, path) in [(0, "/echo/1"), (1, "/echo/2"), (0, "/echo/3")] {
        let got = get_all(&mut tunnels[i], port, &[path]);
        assert_eq!(got[0].0, 200, "{path}: {got:?}");
    }
    assert_eq!(up.requests(), 3);
    assert_eq!(up.connections(), 1, "one upstream HTTP/2 connection");
}

#[test]
fn through_a_parent_proxy_a_tunnel_reuses_one_upstream_connection() {
    let ca = TestCa::new("upstream test CA");
    let up = RawUpstream::start(&ca, false);
    let parent = ProxyProc::start("");
    let extra = format!("upstream: {{proxy: \"{}\"}}\n", parent.url());
    let (proxy, ig_ca, _dir) = proxy(&ca, up.port, &extra);
    let got = through_one_tunnel(&proxy, &ig_ca, up.port, &["/a", "/b", "/c"]);
    let want: Vec<(u16, String)> = (1..=3).map(|n| (200, format!("ok {n}"))).collect();
    assert_eq!(got, want);
    assert_eq!(
        up.accepted.load(Ordering::SeqCst),
        1,
        "one CONNECT through the parent carries the tunnel's three requests"
    );
}
