//! The end of an upstream TLS stream whose server closes TCP without TLS `close_notify`.
//!
//! A response with neither a length nor chunking ends when the server closes (RFC 9112 6.3). Many
//! servers then close without `close_notify`; rustls reports that as an error, which would cut
//! every such body at its end though clients called directly accept it. The close is taken as the
//! end of the stream, and noted: the response's record says how its body ended. A body that
//! declared its length or is chunked is still checked by hyper, so a truncated one stays an error.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Set once the server closed without `close_notify`; a response carries it in its extensions.
#[derive(Clone, Default)]
pub(crate) struct UncleanClose(Arc<AtomicBool>);

impl UncleanClose {
    /// Whether the stream ended by a close without `close_notify`.
    pub(crate) fn happened(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// `inner`, with a close without `close_notify` read as the end of the stream.
pub(super) struct EndAtClose<IO> {
    inner: IO,
    seen: UncleanClose,
}

impl<IO> EndAtClose<IO> {
    pub(super) fn new(inner: IO) -> (Self, UncleanClose) {
        let seen = UncleanClose::default();
        (
            Self {
                inner,
                seen: seen.clone(),
            },
            seen,
        )
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for EndAtClose<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                this.seen.0.store(true, Ordering::Relaxed);
                Poll::Ready(Ok(()))
            }
            r => r,
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for EndAtClose<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
