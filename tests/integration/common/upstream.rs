//! Real upstream servers (hyper, plain or TLS) that record what reached them.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc};

use super::rt;

/// One request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub version: String,
    pub headers: Vec<(String, String)>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
pub struct State {
    pub connections: AtomicUsize,
    pub seen: Mutex<Vec<Seen>>,
    /// Opened by the test to let `/sse` send its second event.
    pub sse_gate: Notify,
    /// Set once `/upload-gate` has received its first bytes.
    pub upload_started: AtomicUsize,
}

/// A running upstream server.
pub struct Upstream {
    pub addr: SocketAddr,
    pub state: Arc<State>,
}

impl Upstream {
    pub fn start() -> Self {
        Self::spawn(None)
    }

    pub fn start_tls(config: Arc<rustls::ServerConfig>) -> Self {
        Self::spawn(Some(tokio_rustls::TlsAcceptor::from(config)))
    }

    fn spawn(tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let state = Arc::new(State::default());
        let listener = rt()
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("bind upstream");
        let addr = listener.local_addr().expect("addr");
        let st = state.clone();
        rt().spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                st.connections.fetch_add(1, Ordering::SeqCst);
                let st = st.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| handle(st.clone(), req));
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    match tls {
                        Some(acceptor) => {
                            if let Ok(s) = acceptor.accept(stream).await {
                                let _ = builder.serve_connection(TokioIo::new(s), svc).await;
                            }
                        }
                        None => {
                            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                        }
                    }
                });
            }
        });
        Self { addr, state }
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().expect("lock").clone()
    }

    /// Header `name` of the last request it received (`None`: no request, or no such header).
    pub fn last_header(&self, name: &str) -> Option<String> {
        let seen = self.state.seen.lock().expect("lock");
        Some(seen.last()?.header(name)?.to_string())
    }

    pub fn requests(&self) -> usize {
        self.state.seen.lock().expect("lock").len()
    }

    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }
}

type Body = BoxBody<Bytes, Infallible>;

fn full(s: impl Into<Bytes>) -> Body {
    http_body_util::Full::new(s.into()).boxed()
}

/// A body fed by a channel, so the handler can pace it.
struct ChanBody(mpsc::Receiver<Bytes>);

impl http_body::Body for ChanBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.get_mut()
            .0
            .poll_recv(cx)
            .map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

fn channel_body() -> (mpsc::Sender<Bytes>, Body) {
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    (tx, ChanBody(rx).boxed())
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let seen = Seen {
        method: req.method().to_string(),
        uri: req.uri().to_string(),
        version: format!("{:?}", req.version()),
        headers: req
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
    };
    state.seen.lock().expect("lock").push(seen.clone());
    let path = req.uri().path().to_string();
    let resp = match path.as_str() {
        "/sse" => {
            let (tx, body) = channel_body();
            tokio::spawn(async move {
                let _ = tx.send(Bytes::from_static(b"data: one\n\n")).await;
                state.sse_gate.notified().await;
                let _ = tx.send(Bytes::from_static(b"data: two\n\n")).await;
            });
            let mut r = Response::new(body);
            r.headers_mut()
                .insert("content-type", "text/event-stream".parse().expect("hv"));
            r
        }
        "/slow" => {
            let ms = req
                .uri()
                .query()
                .and_then(|q| q.strip_prefix("ms="))
                .and_then(|v| v.parse().ok())
                .unwrap_or(5000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Response::new(full("slow"))
        }
        "/redirect" => {
            let to = req
                .uri()
                .query()
                .and_then(|q| q.strip_prefix("to="))
                .unwrap_or("/")
                .to_string();
            Response::builder()
                .status(302)
                .header("location", to)
                .body(full("moved"))
                .expect("response")
        }
        "/hop" => Response::builder()
            .header("connection", "x-hop-resp")
            .header("x-hop-resp", "1")
            .header("keep-alive", "timeout=5")
            .header("x-end-to-end", "kept")
            .body(full("hop"))
            .expect("response"),
        p if p.starts_with("/bytes/") => {
            let n: usize = p["/bytes/".len()..].parse().unwrap_or(0);
            let (tx, body) = channel_body();
            tokio::spawn(async move {
                let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
                let mut left = n;
                while left > 0 {
                    let k = left.min(chunk.len());
                    if tx.send(chunk.slice(..k)).await.is_err() {
                        return;
                    }
                    left -= k;
                }
            });
            Response::new(body)
        }
        _ => {
            // Echo: stream the body in, count and checksum it, answer with what was seen.
            let gate = path == "/upload-gate";
            let mut body = req.into_body();
            let (mut len, mut sum) = (0u64, 0xcbf29ce484222325u64);
            while let Some(frame) = body.frame().await {
                let Ok(frame) = frame else { break };
                if let Some(data) = frame.data_ref() {
                    if gate && len == 0 {
                        state.upload_started.store(1, Ordering::SeqCst);
                    }
                    len += data.len() as u64;
                    for b in data.iter() {
                        sum = (sum ^ u64::from(*b)).wrapping_mul(0x100000001b3);
                    }
                }
            }
            let headers: serde_json::Map<String, serde_json::Value> = seen
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone().into()))
                .collect();
            let body = serde_json::json!({
                "method": seen.method, "uri": seen.uri, "version": seen.version,
                "headers": headers, "body_len": len, "body_fnv": format!("{sum:016x}"),
            });
            let mut r = Response::new(full(body.to_string()));
            r.headers_mut()
                .insert("content-type", "application/json".parse().expect("hv"));
            r
        }
    };
    let mut resp = resp;
    if resp.status() == StatusCode::OK {
        resp.headers_mut()
            .insert("x-upstream", "yes".parse().expect("hv"));
    }
    Ok(resp)
}

/// FNV-1a of `data`, to compare with the upstream's `body_fnv`.
pub fn fnv(data: &[u8]) -> String {
    let mut sum = 0xcbf29ce484222325u64;
    for b in data {
        sum = (sum ^ u64::from(*b)).wrapping_mul(0x100000001b3);
    }
    format!("{sum:016x}")
}
