//! Parking idle keep-alive client connections of the proxy listener. hyper keeps a connection's
//! read and write buffers (8 KiB each) and its state for as long as the connection is open, idle
//! or not; at 10,000 idle keep-alive clients that was most of the proxy's memory. So when a
//! connection falls idle — its responses all ended and written, no byte of a next request read —
//! the guard ends hyper's connection with an end of stream only hyper sees
//! (src/conn/guard.rs), the socket goes back to its `Dock`, and the listener's task waits for
//! the socket to turn readable with nothing but the socket held (src/listen/mod.rs); then a new
//! hyper connection serves the next request on it.

use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::guard::Shared;
use crate::error::Body;

/// Where a parked connection's socket waits between its hyper connections.
#[derive(Default)]
pub(crate) struct Dock(Mutex<Option<TcpStream>>);

impl Dock {
    /// The socket, lent to one hyper connection: it comes back here when that one is dropped.
    pub(crate) fn lend(self: &Arc<Self>, stream: TcpStream) -> Lent {
        Lent {
            stream: Some(stream),
            dock: self.clone(),
        }
    }

    /// The socket a dropped hyper connection gave back.
    pub(crate) fn take(&self) -> Option<TcpStream> {
        self.0.lock().ok()?.take()
    }
}

/// A socket lent to one hyper connection.
pub(crate) struct Lent {
    stream: Option<TcpStream>,
    dock: Arc<Dock>,
}

impl Drop for Lent {
    fn drop(&mut self) {
        if let (Some(stream), Ok(mut docked)) = (self.stream.take(), self.dock.0.lock()) {
            *docked = Some(stream);
        }
    }
}

impl Lent {
    fn stream(&mut self) -> io::Result<Pin<&mut TcpStream>> {
        match self.stream.as_mut() {
            Some(s) => Ok(Pin::new(s)),
            None => Err(io::ErrorKind::NotConnected.into()),
        }
    }
}

impl AsyncRead for Lent {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.get_mut().stream()?.poll_read(cx, buf)
    }
}

impl AsyncWrite for Lent {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().stream()?.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().stream()?.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.as_ref().is_some_and(|s| s.is_write_vectored())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().stream()?.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().stream()?.poll_shutdown(cx)
    }
}

/// A request of a parking connection whose response has not ended: the connection does not
/// park while one is held (`InFlight::request`).
pub(crate) struct Pending(pub(super) Arc<Shared>);

impl Drop for Pending {
    fn drop(&mut self) {
        self.0.requests.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Pending {
    /// `body`, holding this until it ends (hyper drops it once its last frame is taken).
    pub(crate) fn hold(self, body: Body) -> Body {
        Body::new(Held {
            body,
            _pending: self,
        })
    }
}

struct Held {
    body: Body,
    _pending: Pending,
}

impl HttpBody for Held {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
#[path = "park_tests.rs"]
mod tests;
