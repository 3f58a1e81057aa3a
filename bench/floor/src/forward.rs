//! The floor's request path: the target made origin-form, the hop-by-hop headers dropped, the
//! request sent over the client connection's kept upstream connection, the response streamed
//! back. A CONNECT (with `--tls`) becomes an intercepted tunnel (`tls::intercept`).

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::{Either, Empty, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1 as client;
use hyper::server::conn::http1 as server;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::tls::Tls;

pub(crate) type Body = Either<Incoming, Either<Full<Bytes>, Empty<Bytes>>>;

/// One client connection (or one intercepted tunnel): its kept upstream connection (HTTP/1
/// serves a connection's requests one at a time) and where its requests go.
pub(crate) struct Conn {
    slot: Mutex<Option<Upstream>>,
    /// Inside an intercepted tunnel: its target (origin-form requests go there, over TLS).
    tunnel: Option<Authority>,
    tls: Option<Arc<Tls>>,
    builder: Arc<server::Builder>,
}

struct Upstream {
    authority: Authority,
    sender: client::SendRequest<Incoming>,
}

impl Conn {
    pub(crate) fn new(
        tunnel: Option<Authority>,
        tls: Option<Arc<Tls>>,
        builder: Arc<server::Builder>,
    ) -> Self {
        Self {
            slot: Mutex::new(None),
            tunnel,
            tls,
            builder,
        }
    }

    fn take(&self) -> Option<Upstream> {
        self.slot.lock().ok().and_then(|mut g| g.take())
    }

    fn put(&self, up: Upstream) {
        if let Ok(mut g) = self.slot.lock() {
            *g = Some(up);
        }
    }
}

pub(crate) async fn handle(
    conn: Arc<Conn>,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    if req.method() == Method::CONNECT {
        return Ok(match (&conn.tls, req.uri().authority().cloned()) {
            (Some(tls), Some(target)) if conn.tunnel.is_none() => {
                let upgrade = hyper::upgrade::on(&mut req);
                let (tls, builder) = (tls.clone(), conn.builder.clone());
                tokio::spawn(crate::tls::intercept(upgrade, target, tls, builder));
                Response::new(Either::Right(Either::Right(Empty::new())))
            }
            _ => reply(StatusCode::METHOD_NOT_ALLOWED, "CONNECT needs --tls\n"),
        });
    }
    let authority = match (&conn.tunnel, req.uri().authority()) {
        (Some(tunnel), _) => tunnel.clone(),
        (None, Some(a)) => a.clone(),
        (None, None) => {
            return Ok(reply(
                StatusCode::BAD_REQUEST,
                "absolute-form target expected\n",
            ));
        }
    };
    if req.uri().authority().is_some() {
        let pq = req.uri().path_and_query().cloned();
        *req.uri_mut() = Uri::from(pq.unwrap_or_else(|| PathAndQuery::from_static("/")));
    }
    strip_hop_by_hop(req.headers_mut());
    if !req.headers().contains_key(header::HOST)
        && let Ok(host) = authority.as_str().parse()
    {
        req.headers_mut().insert(header::HOST, host);
    }
    let kept = match conn.take() {
        Some(mut up) if up.authority == authority => up.sender.ready().await.ok().map(|()| up),
        _ => None,
    };
    let mut up = match kept {
        Some(up) => up,
        None => match dial(authority, conn.tunnel.is_some().then_some(&conn.tls)).await {
            Ok(up) => up,
            Err(e) => return Ok(reply(StatusCode::BAD_GATEWAY, &format!("upstream: {e}\n"))),
        },
    };
    let sent = up.sender.send_request(req).await;
    conn.put(up);
    match sent {
        Ok(resp) => {
            let mut resp = resp.map(Either::Left);
            strip_hop_by_hop(resp.headers_mut());
            Ok(resp)
        }
        Err(e) => Ok(reply(StatusCode::BAD_GATEWAY, &format!("upstream: {e}\n"))),
    }
}

/// A new upstream connection (TCP_NODELAY; TLS inside a tunnel), its hyper connection driven
/// by a task of its own.
async fn dial(authority: Authority, tls: Option<&Option<Arc<Tls>>>) -> std::io::Result<Upstream> {
    let port = authority
        .port_u16()
        .unwrap_or(if tls.is_some() { 443 } else { 80 });
    let tcp = TcpStream::connect((authority.host(), port)).await?;
    tcp.set_nodelay(true)?;
    let sender = match tls {
        None => handshake(tcp).await?,
        Some(tls) => {
            let tls = tls.as_ref().ok_or(std::io::Error::other("no TLS config"))?;
            handshake(tls.connect(authority.host(), tcp).await?).await?
        }
    };
    Ok(Upstream { authority, sender })
}

async fn handshake<IO>(io: IO) -> std::io::Result<client::SendRequest<Incoming>>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = client::handshake(TokioIo::new(io))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// The hop-by-hop headers (RFC 9110 §7.6.1), dropped both ways with those `Connection` names;
/// `strip_hop_by_hop` matches them in this order.
static HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
    header::TRANSFER_ENCODING,
];

/// Drops the hop-by-hop headers: one pass over the names notes those present, and only they are
/// removed (a `Connection` token naming one of them adds nothing: it is removed anyway).
fn strip_hop_by_hop(h: &mut HeaderMap) {
    let mut present = 0u8;
    for name in h.keys() {
        // A match on the name (length, then bytes): cheaper than comparing against each of HOP.
        present |= match name.as_str() {
            "connection" => 1,
            "keep-alive" => 1 << 1,
            "proxy-connection" => 1 << 2,
            "proxy-authorization" => 1 << 3,
            "te" => 1 << 4,
            "trailer" => 1 << 5,
            "upgrade" => 1 << 6,
            "transfer-encoding" => 1 << 7,
            _ => 0,
        };
    }
    if present == 0 {
        return;
    }
    let only_own = |v: &HeaderValue| {
        let b = v.as_bytes();
        b.eq_ignore_ascii_case(b"keep-alive") || b.eq_ignore_ascii_case(b"close")
    };
    if present & 1 != 0 && !h.get_all(header::CONNECTION).iter().all(only_own) {
        let named: Vec<HeaderName> = h
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|list| list.split(','))
            .map(str::trim)
            .filter(|t| {
                !t.is_empty() && !HOP.iter().any(|hop| t.eq_ignore_ascii_case(hop.as_str()))
            })
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .collect();
        for name in &named {
            h.remove(name);
        }
    }
    for (i, name) in HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            h.remove(name);
        }
    }
}

fn reply(status: StatusCode, text: &str) -> Response<Body> {
    let body = Full::new(Bytes::from(text.to_owned()));
    let mut r = Response::new(Either::Right(Either::Left(body)));
    *r.status_mut() = status;
    r
}
