//! One upstream connection: dialled for exactly one destination (vetted by `Dialer`, TLS verified
//! against the configured roots), spoken to over HTTP/1.1 or HTTP/2 as ALPN agreed, and driven
//! by a task of its own until it closes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tracing::debug;

use super::super::upstream::{DialError, Dialer};
use super::OutBody;
use super::eof::{EndAtClose, UncleanClose};
use crate::error::ProxyError;
use crate::target::Authority;
use crate::tls::client::{UpstreamAlpn, UpstreamTls};
use crate::tls::woken::WokenReads;

/// A request sender on an upstream connection.
pub(super) enum Conn {
    /// With its TLS stream's close note, when it is HTTPS (src/proxy/sender/eof.rs).
    H1(http1::SendRequest<OutBody>, Option<UncleanClose>),
    /// Shared: every request to its destination may use it at once.
    H2(http2::SendRequest<OutBody>),
}

impl Conn {
    pub(super) fn is_closed(&self) -> bool {
        match self {
            Conn::H1(s, _) => s.is_closed(),
            Conn::H2(s) => s.is_closed(),
        }
    }

    /// Whether nothing is in flight on it (an HTTP/2 one: no way to tell cheaply, so its
    /// `since` is refreshed on each use and it counts as idle).
    pub(super) fn is_idle(&self) -> bool {
        match self {
            Conn::H1(s, _) => s.is_ready(),
            Conn::H2(_) => true,
        }
    }

    /// Waits until it can take a request; an error means it closed meanwhile.
    pub(super) async fn ready(&mut self) -> Result<(), hyper::Error> {
        match self {
            Conn::H1(s, _) => s.ready().await,
            Conn::H2(s) => s.ready().await,
        }
    }
}

/// The destination a connection was dialled for; it never carries a request to another one.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(super) struct Key {
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

impl Key {
    pub fn new(authority: &Authority, tls: bool) -> Self {
        Self {
            host: authority.host.clone(),
            port: authority.port,
            tls,
        }
    }

    pub fn is(&self, authority: &Authority, tls: bool) -> bool {
        self.port == authority.port && self.tls == tls && self.host == authority.host
    }
}

/// A connection between requests, and since when it has been idle.
pub(super) struct Idle {
    /// Shared with the copies of a shared HTTP/2 connection.
    pub key: Arc<Key>,
    pub conn: Conn,
    pub since: Instant,
}

impl Idle {
    pub fn new(key: Key, conn: Conn) -> Self {
        Self {
            key: Arc::new(key),
            conn,
            since: Instant::now(),
        }
    }

    /// Open, and idle for at most `max_idle`.
    pub fn fresh(&self, max_idle: Duration) -> bool {
        !self.conn.is_closed() && self.since.elapsed() <= max_idle
    }

    /// To be closed at `now`: closed already, or idle for longer than `max_idle` (not one
    /// still streaming a response). `now` is read once per list, not per connection.
    pub fn expired(&self, now: Instant, max_idle: Duration) -> bool {
        self.conn.is_closed()
            || (now.saturating_duration_since(self.since) > max_idle && self.conn.is_idle())
    }
}

/// A new connection to `authority`: plain HTTP to the vetted destination (or to the parent
/// proxy, which then gets absolute-form targets), or verified TLS to it (through the parent's
/// CONNECT when there is one), then HTTP/2 or HTTP/1.1 as ALPN agreed.
pub(super) async fn dial(
    dialer: &Dialer,
    tls: Option<(&UpstreamTls, Duration)>,
    authority: &Authority,
) -> Result<Conn, ProxyError> {
    let Some((tls, handshake_timeout)) = tls else {
        let tcp = dialer.dial_plain(authority).await?;
        return h1(TokioIo::new(tcp), authority, None).await;
    };
    let tcp = dialer.tunnel(authority).await?;
    let (stream, h2) = tls_handshake(tls, tcp, authority, handshake_timeout).await?;
    let stream = WokenReads::new(stream);
    if !h2 {
        let (stream, unclean) = EndAtClose::new(stream);
        return h1(TokioIo::new(stream), authority, Some(unclean)).await;
    }
    let io = TokioIo::new(stream);
    let (mut sender, conn) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .handshake(io)
        .await
        .map_err(|e| protocol_error(authority, &e))?;
    drive(conn);
    sender
        .ready()
        .await
        .map_err(|e| protocol_error(authority, &e))?;
    Ok(Conn::H2(sender))
}

async fn h1<IO>(
    io: TokioIo<IO>,
    authority: &Authority,
    unclean: Option<UncleanClose>,
) -> Result<Conn, ProxyError>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http1::handshake(io)
        .await
        .map_err(|e| protocol_error(authority, &e))?;
    drive(conn);
    Ok(Conn::H1(sender, unclean))
}

/// Verified TLS over `tcp` to `authority` (its host as SNI and for the certificate check, `h2`
/// then `http/1.1` offered), within `timeout`; whether the upstream agreed on HTTP/2.
async fn tls_handshake(
    tls: &UpstreamTls,
    tcp: TcpStream,
    authority: &Authority,
    timeout: Duration,
) -> Result<(TlsStream<TcpStream>, bool), ProxyError> {
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

/// Runs an upstream connection until it closes.
fn drive<C>(conn: C)
where
    C: std::future::Future<Output = Result<(), hyper::Error>> + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            debug!(error = %e, "upstream connection ended with an error");
        }
    });
}

pub(super) fn protocol_error(authority: &Authority, e: &hyper::Error) -> ProxyError {
    ProxyError::UpstreamProtocol {
        target: authority.to_host_port(),
        detail: e.to_string(),
    }
}
