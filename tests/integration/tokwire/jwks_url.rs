//! An issuer's keys over HTTPS (`jwks_url`): a JWKS server the test runs (its own CA, given as
//! the issuer's `ca_file`) rotates keys, goes down and comes up; the proxy takes the new keys
//! (early when a token names a key it lacks, else when `max-age` says), keeps the last good set
//! while the server is down, and starts without the keys, refusing that issuer's tokens until
//! they arrive.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;

use super::*;
use crate::common::tls::TestCa;
use crate::common::*;

const WAIT: Duration = Duration::from_secs(30);

/// The JWKS server: answers `GET /jwks` with `body` (503 while it is empty), with
/// `Cache-Control: cache` when set; counts the requests; `stop` closes its port.
struct JwksServer {
    addr: SocketAddr,
    body: Arc<Mutex<String>>,
    cache: Arc<Mutex<Option<String>>>,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    fn start(ca: &TestCa) -> Self {
        let acceptor = tokio_rustls::TlsAcceptor::from(ca.server_config(&["localhost"]));
        let listener = rt()
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let body = Arc::new(Mutex::new(String::new()));
        let cache = Arc::new(Mutex::new(None::<String>));
        let hits = Arc::new(AtomicUsize::new(0));
        let (b, c, h) = (body.clone(), cache.clone(), hits.clone());
        let task = rt().spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (b, c, h, acceptor) = (b.clone(), c.clone(), h.clone(), acceptor.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        h.fetch_add(1, Ordering::SeqCst);
                        let text = b.lock().unwrap().clone();
                        let mut resp = http::Response::builder()
                            .status(if text.is_empty() || req.uri().path() != "/jwks" {
                                503
                            } else {
                                200
                            })
                            .header("content-type", "application/jwk-set+json");
                        if let Some(cc) = c.lock().unwrap().clone() {
                            resp = resp.header("cache-control", cc);
                        }
                        let resp = resp.body(Full::new(Bytes::from(text))).unwrap();
                        async move { Ok::<_, std::convert::Infallible>(resp) }
                    });
                    if let Ok(s) = acceptor.accept(stream).await {
                        let b = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                        let _ = b.serve_connection(TokioIo::new(s), svc).await;
                    }
                });
            }
        });
        JwksServer {
            addr,
            body,
            cache,
            hits,
            task,
        }
    }

    /// Serves the keys of these JWKS documents (as `token keygen` prints them) as one set.
    fn serve(&self, sets: &[&str]) {
        let keys: Vec<Value> = sets
            .iter()
            .flat_map(|s| {
                serde_json::from_str::<Value>(s).unwrap()["keys"]
                    .as_array()
                    .unwrap()
                    .clone()
            })
            .collect();
        *self.body.lock().unwrap() = serde_json::json!({ "keys": keys }).to_string();
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Closes the listening port: a fetch is refused a connection.
    fn stop(&self) {
        self.task.abort();
        eventually("the JWKS port to close", WAIT, || {
            std::net::TcpStream::connect(self.addr)
                .is_err()
                .then_some(())
        });
    }
}

/// An issuer key: its PEM file and its JWKS (made by `intentgate token keygen`).
struct Key {
    pem: PathBuf,
    jwks: String,
}

fn key(dir: &Path, name: &str) -> Key {
    let pem = dir.join(format!("{name}.pem"));
    let (code, jwks, err) = run_cli(&["token", "keygen", "--out", p(&pem)]);
    assert_eq!(code, 0, "{err}");
    Key { pem, jwks }
}

/// A proxy whose issuer `ISS` has its keys at the server's `/jwks`.
struct World {
    _dir: tempfile::TempDir,
    server: JwksServer,
    up: Upstream,
    proxy: ProxyProc,
    keys: Vec<Key>,
    minted: Vec<String>,
}

impl World {
    fn start(serve_first: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new("jwks server CA");
        let ca_file = ca.write_pem(dir.path());
        let keys: Vec<Key> = ["a", "b", "c"].iter().map(|n| key(dir.path(), n)).collect();
        let server = JwksServer::start(&ca);
        if serve_first {
            server.serve(&[&keys[0].jwks]);
        }
        let up = Upstream::start();
        let yaml = format!(
            "mode: enforce\n\
             intent_tokens:\n  issuers:\n\
             \x20   - {{issuer: \"{ISS}\", jwks_url: \"https://localhost:{port}/jwks\", ca_file: \"{ca}\",\n\
             \x20      refresh_seconds: 3600, min_refresh_seconds: 1}}\n\
             intents:\n  read-issues:\n    allow: [{{hosts: [localhost], ports: [{up}], methods: [GET]}}]\n",
            port = server.addr.port(),
            ca = ca_file.display(),
            up = up.addr.port(),
        );
        let proxy = ProxyProc::start(&yaml);
        World {
            _dir: dir,
            server,
            up,
            proxy,
            keys,
            minted: Vec::new(),
        }
    }

    /// A fresh token (never cached by the proxy) signed with key `i`: its call's status and
    /// JSON body.
    fn call(&mut self, i: usize) -> (u16, Value) {
        let t = mint_with(&self.keys[i].pem, "read-issues", &[]);
        let url = format!("http://localhost:{}/issues/1", self.up.addr.port());
        let out = curl(&["-x", &self.proxy.url(), "-H", &tok(&t), &url]);
        assert!(!out.body.contains(&t), "the answer echoes the token");
        self.minted.push(t);
        let body = if out.status == 200 {
            Value::Null
        } else {
            out.json()
        };
        (out.status, body)
    }

    fn fetches(&self, result: &str) -> f64 {
        self.proxy.metric(&format!(
            "intentgate_jwks_fetches_total{{issuer=\"{ISS}\",result=\"{result}\"}}"
        ))
    }

    /// No token reached the logs, the audit or the upstream.
    fn assert_never_leaked(&self) {
        let audit = std::fs::read_to_string(self.proxy.path("audit.log")).unwrap();
        let logs = format!("{}{}", self.proxy.stdout(), self.proxy.stderr());
        let seen = format!("{:?}", self.up.seen());
        for t in &self.minted {
            let payload = t.split('.').nth(1).unwrap();
            assert!(!audit.contains(payload), "a token is in the audit log");
            assert!(!logs.contains(payload), "a token is in the log");
            assert!(!seen.contains(payload), "a token reached the upstream");
        }
    }
}

#[test]
fn keys_fetched_over_https_rotate_and_the_last_good_set_outlives_the_server() {
    let mut w = World::start(true);
    // The first call waits for the fetch under way at start (or makes it).
    let (status, body) = w.call(0);
    assert_eq!(status, 200, "{body}");
    // Rotation overlap: the server now has A and B. A token signed with B names a key the
    // fetched set lacks: its call fetches the set again (at most once a second), no waiting
    // for refresh_seconds (an hour).
    let before = w.server.hits();
    w.server.serve(&[&w.keys[0].jwks, &w.keys[1].jwks]);
    eventually(
        "a token signed with the new key B to be accepted",
        WAIT,
        || (w.call(1).0 == 200).then_some(()),
    );
    assert!(w.server.hits() > before, "the set was not fetched again");
    assert_eq!(w.call(0).0, 200, "key A is still in the set");
    // The server goes down: a token naming an unknown key C makes a fetch that fails, and is
    // refused with the bad-signature code; A and B, the last good set, still verify.
    w.server.stop();
    eventually("a failed fetch to be counted", WAIT, || {
        let (status, body) = w.call(2);
        assert_eq!(status, 403, "{body}");
        assert_eq!(error_code(&body), "intent_token_bad_signature", "{body}");
        (w.fetches("error") >= 1.0).then_some(())
    });
    assert!(w.fetches("ok") >= 2.0, "{}", w.fetches("ok"));
    assert_eq!(w.call(0).0, 200, "the last good set was not kept");
    assert_eq!(w.call(1).0, 200, "the last good set was not kept");
    assert!(
        w.proxy.stderr().contains("the last good set is kept")
            || w.proxy.stdout().contains("the last good set is kept"),
        "the failed fetch was not logged"
    );
    w.assert_never_leaked();
}

#[test]
fn the_proxy_starts_without_the_keys_then_refreshes_as_max_age_says() {
    // The server answers 503 until it has keys: the proxy starts anyway.
    let mut w = World::start(false);
    let (status, body) = w.call(0);
    assert_eq!(status, 403, "{body}");
    assert_eq!(error_code(&body), "intent_token_keys_unavailable", "{body}");
    assert!(
        body["reason"]
            .as_str()
            .unwrap()
            .contains("keys_unavailable"),
        "{body}"
    );
    eventually("the failed fetch to be counted", WAIT, || {
        (w.fetches("error") >= 1.0).then_some(())
    });
    // Keys arrive, with max-age=1: the set is then fetched every second or so (refresh_seconds
    // is an hour), with no token asking for it.
    *w.server.cache.lock().unwrap() = Some("public, max-age=1".into());
    w.server.serve(&[&w.keys[0].jwks]);
    eventually("the keys to arrive", WAIT, || {
        (w.call(0).0 == 200).then_some(())
    });
    let hits = w.server.hits();
    eventually("max-age to bring refetches", WAIT, || {
        (w.server.hits() >= hits + 3).then_some(())
    });
    // A rotation with no overlap reaches the proxy by the periodic refresh: B is taken, A is
    // dropped (its tokens are refused).
    w.server.serve(&[&w.keys[1].jwks]);
    eventually("the set with B alone to be taken", WAIT, || {
        let ok_b = w.call(1).0 == 200;
        (ok_b && w.call(0).0 == 403).then_some(())
    });
    w.assert_never_leaked();
}
