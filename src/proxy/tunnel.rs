//! CONNECT tunnels: bytes copied both ways after the 200, closed when idle too long or when
//! shutdown closes every stream still open.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::audit::Ended;

mod relay;

/// Milliseconds since the first call: a cheap monotonic clock for activity stamps.
fn now_ms() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// Stamps the time of the last byte moved in either direction, and counts the bytes read from
/// this side (so a tunnel's byte counts survive an idle or failed end).
struct Stamped<S> {
    inner: S,
    last: Arc<AtomicU64>,
    read: u64,
}

impl<S> Stamped<S> {
    fn touch(&self) {
        self.last.store(now_ms(), Ordering::Relaxed);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Stamped<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        let n = buf.filled().len().saturating_sub(before);
        if n > 0 {
            this.read += n as u64;
            this.touch();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Stamped<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.touch();
        }
        r
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// How a tunnel ended.
#[derive(Debug)]
pub enum TunnelEnd {
    Closed,
    Idle,
    Error,
    /// Closed by intentgate at the end of the shutdown grace period.
    Shutdown,
}

/// A finished tunnel: how it ended and the bytes it moved each way.
#[derive(Debug)]
pub struct Spliced {
    pub end: TunnelEnd,
    pub client_to_upstream: u64,
    pub upstream_to_client: u64,
}

impl Spliced {
    /// `ended` for the tunnel's audit record.
    pub fn ended(&self) -> Ended {
        match self.end {
            TunnelEnd::Closed => Ended::Closed,
            TunnelEnd::Idle => Ended::Idle,
            TunnelEnd::Error => Ended::Error,
            TunnelEnd::Shutdown => Ended::Shutdown,
        }
    }
}

/// Copies bytes both ways until either side closes, nothing moves for `idle`, or `closing`
/// resolves (shutdown).
pub async fn splice<A, B>(
    client: A,
    upstream: B,
    idle: Duration,
    closing: impl Future<Output = ()>,
) -> Spliced
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let last = Arc::new(AtomicU64::new(now_ms()));
    let mut a = Stamped {
        inner: client,
        last: last.clone(),
        read: 0,
    };
    let mut b = Stamped {
        inner: upstream,
        last: last.clone(),
        read: 0,
    };
    let idle_ms = idle.as_millis() as u64;
    let watchdog = async {
        loop {
            let since = now_ms().saturating_sub(last.load(Ordering::Relaxed));
            if since >= idle_ms {
                return;
            }
            tokio::time::sleep(Duration::from_millis(idle_ms - since)).await;
        }
    };
    let end = tokio::select! {
        r = relay::copy_both(&mut a, &mut b) => match r {
            Ok(_) => TunnelEnd::Closed,
            Err(_) => TunnelEnd::Error,
        },
        () = watchdog => TunnelEnd::Idle,
        () = closing => TunnelEnd::Shutdown,
    };
    Spliced {
        end,
        client_to_upstream: a.read,
        upstream_to_client: b.read,
    }
}
