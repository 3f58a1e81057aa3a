//! The pooled upstream clients and the connectors under them: plain TCP (directly or to a parent
//! proxy, which then gets absolute-form targets) and TLS (verified against the configured roots,
//! HTTP/2 when the upstream offers it, tunnelled through a parent proxy when there is one).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::audited::Counted;
use super::inspect::Replay;
use super::target::{Authority, parse_authority};
use super::upstream::{DialError, Dialer};
use crate::config::Limits;
use crate::tls::client::{UpstreamAlpn, UpstreamTls, UpstreamTlsError};

/// A plain or TLS byte stream to an upstream.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A connection handed to a pooled client. `proxied` makes hyper send absolute-form targets (to
/// a parent proxy); `h2` tells it the upstream agreed on HTTP/2.
pub struct Conn {
    io: TokioIo<Stream>,
    proxied: bool,
    h2: bool,
}

impl Connection for Conn {
    fn connected(&self) -> Connected {
        let c = Connected::new().proxy(self.proxied);
        if self.h2 { c.negotiated_h2() } else { c }
    }
}

impl hyper::rt::Read for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }
}

type ConnFuture<E> = Pin<Box<dyn Future<Output = Result<Conn, E>> + Send>>;

impl tower_service::Service<Uri> for Dialer {
    type Response = Conn;
    type Error = DialError;
    type Future = ConnFuture<DialError>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let (stream, proxied) = this.dial_for_http(&uri).await?;
            Ok(Conn {
                io: TokioIo::new(Stream::Plain(stream)),
                proxied,
                h2: false,
            })
        })
    }
}

/// Why an HTTPS upstream connection failed: reaching it, or TLS with it.
#[derive(Debug, thiserror::Error)]
pub enum TlsDialError {
    #[error(transparent)]
    Dial(#[from] DialError),
    #[error(transparent)]
    Tls(#[from] UpstreamTlsError),
}

/// Dials (vetted, or through the parent proxy's CONNECT) and then speaks verified TLS.
#[derive(Clone)]
pub struct TlsDialer {
    dialer: Dialer,
    tls: Arc<UpstreamTls>,
    handshake_timeout: Duration,
}

impl tower_service::Service<Uri> for TlsDialer {
    type Response = Conn;
    type Error = TlsDialError;
    type Future = ConnFuture<TlsDialError>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let raw = uri.authority().map(|a| a.as_str()).unwrap_or_default();
            let authority = parse_authority(raw, Some(443)).map_err(|e| DialError::Connect {
                target: raw.to_string(),
                detail: e.to_string(),
            })?;
            let tcp = this.dialer.tunnel(&authority).await?;
            let (tls, h2) =
                tls_handshake(&this.tls, tcp, &authority, this.handshake_timeout).await?;
            Ok(Conn {
                io: TokioIo::new(Stream::Tls(Box::new(tls))),
                proxied: false,
                h2,
            })
        })
    }
}

/// Verified TLS over `tcp` to `authority` (its host as SNI and for the certificate check, `h2`
/// then `http/1.1` offered), within `timeout`; whether the upstream agreed on HTTP/2. The pooled
/// connector and the connections intercepted tunnels keep (src/proxy/kept_tls.rs) both use it.
pub(super) async fn tls_handshake(
    tls: &UpstreamTls,
    tcp: TcpStream,
    authority: &Authority,
    timeout: Duration,
) -> Result<(TlsStream<TcpStream>, bool), TlsDialError> {
    let handshake = tls.connect(tcp, &authority.host, UpstreamAlpn::H2OrHttp1);
    let tls = tokio::time::timeout(timeout, handshake)
        .await
        .map_err(|_| DialError::Timeout {
            target: format!("TLS handshake with {}", authority.to_host_port()),
            ms: timeout.as_millis() as u64,
        })??;
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    Ok((tls, h2))
}

/// The pooled keep-alive client for plain-HTTP upstreams.
pub type HttpClient = Client<Dialer, Counted<Replay>>;
/// The pooled keep-alive client for HTTPS upstreams (intercepted tunnels).
pub type HttpsClient = Client<TlsDialer, Counted<Replay>>;

fn builder(limits: &Limits) -> hyper_util::client::legacy::Builder {
    let mut b = Client::builder(TokioExecutor::new());
    b.pool_idle_timeout(Duration::from_millis(limits.pool_idle_timeout_ms))
        .pool_max_idle_per_host(limits.pool_max_idle_per_host)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new());
    b
}

pub fn http_client(dialer: Dialer, limits: &Limits) -> HttpClient {
    builder(limits).build(dialer)
}

pub fn https_client(dialer: Dialer, tls: Arc<UpstreamTls>, limits: &Limits) -> HttpsClient {
    let handshake_timeout = Duration::from_millis(limits.connect_timeout_ms);
    builder(limits).build(TlsDialer {
        dialer,
        tls,
        handshake_timeout,
    })
}
