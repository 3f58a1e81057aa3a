//! Test servers for the credential suites: a real HTTP(S) server answering with a closure, and the
//! API a credential is for, which checks the secret it expects now.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::common::rt;

/// A test server's answer to one request: (status, JSON body).
pub(crate) type Handler = Arc<dyn Fn(&http::request::Parts, &[u8]) -> (u16, String) + Send + Sync>;

/// A real HTTP server (TLS when `tls` is given) answering with `handler`; its address.
pub(crate) fn serve(tls: Option<Arc<rustls::ServerConfig>>, handler: Handler) -> SocketAddr {
    let listener = rt()
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let tls = tls.map(tokio_rustls::TlsAcceptor::from);
    rt().spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (h, tls) = (handler.clone(), tls.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let h = h.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let (status, text) = h(&parts, &body);
                        let resp = http::Response::builder()
                            .status(status)
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from(text)))
                            .unwrap();
                        Ok::<_, Infallible>(resp)
                    }
                });
                let b = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                match tls {
                    Some(acceptor) => {
                        if let Ok(s) = acceptor.accept(stream).await {
                            let _ = b.serve_connection(TokioIo::new(s), svc).await;
                        }
                    }
                    None => {
                        let _ = b.serve_connection(TokioIo::new(stream), svc).await;
                    }
                }
            });
        }
    });
    addr
}

/// The API the credential is for: 200 only with the secret it expects now (Bearer, `api_key`
/// under /q/, Basic `bot:` under /basic/, `x-api-key` under /plain*), else 401. Its body says
/// what it saw.
pub(crate) struct Api {
    pub(crate) addr: SocketAddr,
    pub(crate) expect: Arc<Mutex<String>>,
    pub(crate) seen: Arc<Mutex<Vec<String>>>,
}

pub(crate) fn api(tls: Option<Arc<rustls::ServerConfig>>, secret: &str) -> Api {
    let expect = Arc::new(Mutex::new(secret.to_string()));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (e, s) = (expect.clone(), seen.clone());
    let addr = serve(
        tls,
        Arc::new(move |p, _| {
            let secret = e.lock().unwrap().clone();
            let h = |n: &str| p.headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
            let path = p.uri.path();
            let query = p.uri.query().unwrap_or("");
            let ok = if path.starts_with("/q/") {
                query
                    .split('&')
                    .filter(|kv| kv.starts_with("api_key="))
                    .collect::<Vec<_>>()
                    == [format!("api_key={secret}")]
                    && h("authorization").is_empty()
            } else if path.starts_with("/basic/") {
                let pair =
                    base64::engine::general_purpose::STANDARD.encode(format!("bot:{secret}"));
                h("authorization") == format!("Basic {pair}")
            } else if path.starts_with("/plain") {
                h("x-api-key") == secret && h("authorization").is_empty()
            } else {
                h("authorization") == format!("Bearer {secret}")
            };
            let body = serde_json::json!({
                "object": "list", "data": [], "path": path, "query": query,
                "authorization": h("authorization"), "x-api-key": h("x-api-key"),
            });
            s.lock().unwrap().push(p.uri.to_string());
            (if ok { 200 } else { 401 }, body.to_string())
        }),
    );
    Api { addr, expect, seen }
}
