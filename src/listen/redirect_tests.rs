//! Transparent mode in-process, without root or iptables: a fake `OriginalDst` says each
//! connection was made to a loopback upstream; the rest is the real thing (the listener, the
//! sniffing, the pipeline's decision, the forward). tests/integration/transparent.rs runs it for
//! real, with iptables in network namespaces.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::{OriginalDst, serve_transparent};
use crate::listen::Tracker;

/// Every connection "was made to" this address.
struct To(SocketAddr);

impl OriginalDst for To {
    fn original_dst(&self, _: &TcpStream) -> std::io::Result<SocketAddr> {
        Ok(self.0)
    }
}

/// A loopback HTTP server answering `200 upstream` to each request; the request heads it saw.
async fn upstream() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut b = [0u8; 1024];
                while !head.ends_with(b"\r\n\r\n") {
                    match s.read(&mut b).await {
                        Ok(n) if n > 0 => head.extend_from_slice(&b[..n]),
                        _ => return,
                    }
                }
                log.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&head).into_owned());
                let reply =
                    b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\nconnection: close\r\n\r\nupstream";
                let _ = s.write_all(reply).await;
            });
        }
    });
    (addr, seen)
}

/// One request on a new "redirected" connection: the whole answer.
async fn get(listener: SocketAddr, up: SocketAddr, path: &str) -> String {
    let mut c = TcpStream::connect(listener).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {up}\r\nConnection: close\r\n\r\n");
    c.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    c.read_to_end(&mut out).await.unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn a_redirected_connection_is_decided_and_forwarded_to_its_original_destination() {
    let (up, seen) = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "listen: {{proxy: 127.0.0.1:0}}\n\
         agent: {{id: tp-agent, owner: tp-owner}}\n\
         intent: ops\n\
         audit: {{path: \"{}\"}}\n\
         egress: {{allow_cidrs: [127.0.0.0/8]}}\n\
         intents:\n  ops:\n    allow:\n\
         \x20     - hosts: [127.0.0.1]\n        ports: [{}]\n        paths: [\"/allowed/**\"]\n",
        dir.path().join("audit.log").display(),
        up.port()
    );
    let loaded = crate::config::parse("t.yaml", &yaml, dir.path()).unwrap();
    let limits = loaded.config.limits.clone();
    let running = crate::app::start(loaded, Box::new(|| Err("no reload here".into())))
        .await
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let at = listener.local_addr().unwrap();
    let (_stop, shutdown) = watch::channel(false);
    tokio::spawn(serve_transparent(
        listener,
        To(up),
        running.proxy.clone(),
        limits,
        Arc::new(Tracker::default()),
        shutdown,
    ));

    // Allowed: reaches the upstream, tagged by intentgate.
    let answer = get(at, up, "/allowed/one").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("upstream"), "{answer}");
    let heads = seen.lock().unwrap().clone();
    assert_eq!(heads.len(), 1, "{heads:?}");
    assert!(heads[0].starts_with("GET /allowed/one "), "{heads:?}");
    assert!(heads[0].contains("intentgate-agent: tp-agent"), "{heads:?}");

    // Out of scope: refused by the decision, in JSON, and nothing reaches the upstream.
    let answer = get(at, up, "/secret").await;
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(answer.contains("\"decision_id\""), "{answer}");
    assert_eq!(seen.lock().unwrap().len(), 1);
}
