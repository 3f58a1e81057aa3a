//! Reads of a TLS stream polled again only once something woke them. hyper polls a connection's
//! read side every time its task runs (for the next request head, for a close while idle), most
//! often for reasons other than the socket: the upstream's answer, the body's progress, the
//! request channel. On a plain socket a read that cannot progress is a readiness check; on a
//! `tokio_rustls` stream it runs rustls's record reader and every layer beneath it down to the
//! socket, and ends in two `WouldBlock` errors. So the read side is polled with a waker of its
//! own: after a read returned `Pending`, the next is passed to the stream only once that waker
//! was woken (the socket became readable, a timer beneath fired, the stream woke itself), and
//! answers `Pending` at once otherwise — the stream, not having woken, would have answered the
//! same. The waker passes every wake on to the task. Writes go straight through.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The read side's waker: notes the wake, then wakes the task that last polled the read.
#[derive(Default)]
struct Signal {
    woken: AtomicBool,
    task: Mutex<Option<Waker>>,
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        let task = self.task.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(task) = task.as_ref() {
            task.wake_by_ref();
        }
    }
}

/// `inner`, its reads polled again after a `Pending` only once woken.
pub(crate) struct WokenReads<IO> {
    inner: IO,
    signal: Arc<Signal>,
    /// `signal` as a waker, made once.
    waker: Waker,
    /// The task's waker as `signal` holds it (compared without taking the lock).
    task: Option<Waker>,
    /// The last read answered `Pending`.
    waiting: bool,
}

impl<IO> WokenReads<IO> {
    pub(crate) fn new(inner: IO) -> Self {
        let signal = Arc::new(Signal::default());
        Self {
            inner,
            waker: Waker::from(signal.clone()),
            signal,
            task: None,
            waiting: false,
        }
    }

    #[cfg(test)]
    pub(crate) fn get_ref(&self) -> &IO {
        &self.inner
    }

    /// Makes `cx`'s waker the one a wake is passed on to (unless it already is).
    fn follow(&mut self, cx: &Context<'_>) {
        if self.task.as_ref().is_some_and(|t| t.will_wake(cx.waker())) {
            return;
        }
        let waker = cx.waker().clone();
        *self
            .signal
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(waker.clone());
        self.task = Some(waker);
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for WokenReads<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.waiting {
            this.follow(cx);
            if !this.signal.woken.swap(false, Ordering::AcqRel) {
                return Poll::Pending;
            }
        } else {
            // A wake left from before the last answer: this poll sees what it announced.
            this.signal.woken.store(false, Ordering::Relaxed);
        }
        let mut own = Context::from_waker(&this.waker);
        match Pin::new(&mut this.inner).poll_read(&mut own, buf) {
            Poll::Pending => {
                this.waiting = true;
                this.follow(cx);
                // Woken before the task's waker was in place: the wake is not lost.
                if this.signal.woken.load(Ordering::Acquire) {
                    cx.waker().wake_by_ref();
                }
                Poll::Pending
            }
            ready => {
                this.waiting = false;
                ready
            }
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for WokenReads<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
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

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
#[path = "woken_tests.rs"]
mod tests;
