//! The transparent listener: accepts connections that iptables redirected (REDIRECT), recovers
//! each one's original destination with `SO_ORIGINAL_DST`, sniffs its first bytes for at most
//! `limits.sniff_timeout_ms`, and hands it to the proxy (src/proxy/transparent.rs).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::{Instrument, debug, info_span, warn};

use super::{Tracker, finish_or_close, http1_builder};
use crate::config::Limits;
use crate::conn::guard::{Guard, InFlight};
use crate::proxy::Proxy;
use crate::proxy::transparent::{Redirected, Sniffed};
use crate::tls::rewind::Rewind;
use crate::tls::sni::{self, Peek};
use crate::vocab::ErrorCode;

/// Where a redirected connection was going before iptables rewrote it. The kernel knows
/// (`SoOriginalDst`, the only production implementation); in-process tests name a loopback
/// upstream instead, so transparent mode is exercised without root or iptables.
pub trait OriginalDst: Send + Sync + 'static {
    fn original_dst(&self, stream: &TcpStream) -> io::Result<SocketAddr>;
}

/// The kernel's answer: `SO_ORIGINAL_DST` (Linux only).
pub struct SoOriginalDst;

impl OriginalDst for SoOriginalDst {
    #[cfg(target_os = "linux")]
    fn original_dst(&self, stream: &TcpStream) -> io::Result<SocketAddr> {
        let sock = socket2::SockRef::from(stream);
        let v4 = match stream.local_addr()? {
            SocketAddr::V4(_) => true,
            SocketAddr::V6(a) => a.ip().to_ipv4_mapped().is_some(),
        };
        let addr = if v4 {
            sock.original_dst_v4()?
        } else {
            sock.original_dst_v6()?
        };
        addr.as_socket()
            .map(|a| SocketAddr::new(a.ip().to_canonical(), a.port()))
            .ok_or_else(|| io::Error::other("the original destination is not an IP address"))
    }

    #[cfg(not(target_os = "linux"))]
    fn original_dst(&self, _stream: &TcpStream) -> io::Result<SocketAddr> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "transparent mode needs Linux (SO_ORIGINAL_DST)",
        ))
    }
}

/// HTTP/1 methods that start a request line we serve ("PRI" — HTTP/2 prior knowledge — is not
/// among them: it is opaque and decided on IP and port).
const METHODS: [&[u8]; 9] = [
    b"GET ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"HEAD ",
    b"OPTIONS ",
    b"PATCH ",
    b"TRACE ",
    b"CONNECT ",
];

/// What `buf` is, or `None` while more bytes could change the answer.
pub fn classify(buf: &[u8]) -> Option<Sniffed> {
    let first = *buf.first()?;
    if first == 0x16 {
        return match sni::parse(buf) {
            Peek::NeedMore { .. } => None,
            Peek::Hello(h) => Some(Sniffed::Tls(h)),
            Peek::NotTls | Peek::Malformed(_) => Some(Sniffed::Opaque),
        };
    }
    if METHODS.iter().any(|m| buf.starts_with(m)) {
        return Some(Sniffed::Http);
    }
    let maybe = METHODS
        .iter()
        .any(|m| m.len() > buf.len() && m.starts_with(buf));
    (!maybe).then_some(Sniffed::Opaque)
}

/// Reads until the first bytes are classified, the client stops sending, or `wait` passes
/// (silence means the server speaks first: `Opaque`). Returns the verdict and the bytes read.
pub async fn sniff<IO: AsyncRead + Unpin>(io: &mut IO, wait: Duration) -> (Sniffed, Vec<u8>) {
    let deadline = Instant::now() + wait;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(v) = classify(&buf) {
            return (v, buf);
        }
        if buf.len() >= sni::MAX_PEEK {
            return (Sniffed::Opaque, buf);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let room = (sni::MAX_PEEK - buf.len()).min(chunk.len());
        match tokio::time::timeout(left, io.read(&mut chunk[..room])).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            // End of stream, an error, or the timeout: what we have is all we know.
            _ => return (Sniffed::Opaque, buf),
        }
    }
}

/// Accepts redirected connections until `shutdown` flips, each one's destination from `dst`.
/// The connection limit is shared with the proxy listener (`tracker`).
pub async fn serve_transparent(
    listener: TcpListener,
    dst: impl OriginalDst,
    proxy: Arc<Proxy>,
    limits: Limits,
    tracker: Arc<Tracker>,
    mut shutdown: watch::Receiver<bool>,
) {
    let limits = Arc::new(limits);
    loop {
        let Some((stream, peer)) = super::accept(&listener, &mut shutdown, "transparent").await
        else {
            break;
        };
        let refuse = |code| proxy.metrics.refused(code);
        let Ok(live) = tracker.admit(limits.max_connections) else {
            refuse(ErrorCode::TooManyConnections);
            continue;
        };
        // Not redirected (connected to the listener directly), or redirected to itself: a loop.
        // (A dual-stack listener sees IPv4 clients as IPv4-mapped: compared canonically.)
        let local = stream
            .local_addr()
            .map(|l| SocketAddr::new(l.ip().to_canonical(), l.port()));
        let original = match (dst.original_dst(&stream), local) {
            (Ok(o), Ok(local)) if o != local => o,
            (r, _) => {
                refuse(ErrorCode::TransparentNotRedirected);
                warn!(%peer, original = ?r.ok(), "transparent connection refused: not redirected, or to the listener itself");
                continue;
            }
        };
        let proxy = proxy.clone();
        let limits = limits.clone();
        let shutdown = shutdown.clone();
        let span = info_span!("transparent_conn", %peer, %original);
        tokio::spawn(
            async move {
                let _live = live;
                serve_one(stream, original, proxy, &limits, shutdown).await;
            }
            .instrument(span),
        );
    }
}

async fn serve_one(
    mut stream: TcpStream,
    original: SocketAddr,
    proxy: Arc<Proxy>,
    limits: &Limits,
    mut shutdown: watch::Receiver<bool>,
) {
    let wait = Duration::from_millis(limits.sniff_timeout_ms);
    let (sniffed, prefix) = sniff(&mut stream, wait).await;
    debug!(?sniffed, bytes = prefix.len(), "sniffed");
    let io = Rewind::new(prefix, stream);
    if sniffed != Sniffed::Http {
        return proxy.transparent_stream(io, original, sniffed).await;
    }
    proxy
        .metrics
        .transparent_connections
        .with_label_values(&["http"])
        .inc();
    let in_flight = InFlight::default();
    let io = TokioIo::new(Guard::new(io, in_flight.clone()));
    let info = Arc::new(Redirected::new(original, in_flight));
    let own = proxy.clone();
    let service = service_fn(move |req| proxy.clone().handle_transparent(req, info.clone()));
    // With upgrades: an allowed WebSocket is relayed as on the proxy listener.
    let conn = http1_builder(limits)
        .serve_connection(io, service)
        .with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = shutdown.changed() => {
            conn.as_mut().graceful_shutdown();
            finish_or_close(conn, &own.audit).await
        }
    };
    if let Err(e) = result {
        debug!(error = %e, "transparent connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_bytes_are_classified() {
        assert_eq!(classify(b""), None);
        assert_eq!(classify(b"G"), None);
        assert_eq!(classify(b"GET"), None);
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Some(Sniffed::Http));
        assert_eq!(classify(b"OPTIONS * HTTP/1.1"), Some(Sniffed::Http));
        assert_eq!(classify(b"GETX"), Some(Sniffed::Opaque));
        assert_eq!(classify(b"PRI * HTTP/2.0"), Some(Sniffed::Opaque));
        assert_eq!(
            classify(b"\x00\x00\x00\x08\x04\xd2\x16\x2f"),
            Some(Sniffed::Opaque)
        );
        assert_eq!(classify(b"SSH-2.0-x"), Some(Sniffed::Opaque));
        // A TLS record start needs the whole ClientHello.
        assert_eq!(classify(&[0x16, 0x03, 0x01]), None);
    }

    #[tokio::test]
    async fn silence_is_opaque_after_the_timeout_and_bytes_are_kept() {
        let (mut c, mut s) = tokio::io::duplex(1024);
        let (v, buf) = sniff(&mut s, Duration::from_millis(20)).await;
        assert_eq!((v, buf.len()), (Sniffed::Opaque, 0));
        tokio::io::AsyncWriteExt::write_all(&mut c, b"PO")
            .await
            .unwrap();
        let (v, buf) = sniff(&mut s, Duration::from_millis(20)).await;
        assert_eq!((v, buf), (Sniffed::Opaque, b"PO".to_vec()));
        // A request line that arrives in pieces is still HTTP.
        let (mut c, mut s) = tokio::io::duplex(1024);
        let reader = tokio::spawn(async move { sniff(&mut s, Duration::from_secs(5)).await });
        for piece in [&b"PO"[..], b"ST /x HTTP/1.1\r\n"] {
            tokio::io::AsyncWriteExt::write_all(&mut c, piece)
                .await
                .unwrap();
            tokio::task::yield_now().await;
        }
        let (v, buf) = reader.await.unwrap();
        assert_eq!(v, Sniffed::Http);
        assert!(buf.starts_with(b"POST"));
    }
}

#[cfg(test)]
#[path = "redirect_tests.rs"]
mod redirect_tests;
