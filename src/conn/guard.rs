//! A client-connection wrapper that makes hyper's automatic error answers speak our JSON.
//!
//! hyper answers a request head it cannot parse itself, with an empty body; the guard writes our
//! JSON refusal in its place (src/conn/answers.rs), so every answer a client gets from
//! intentgate has the one error shape (src/error.rs). While a tunnel is open the guard is
//! off: tunnelled bytes are never inspected. It also follows the request heads as they are read
//! (src/conn/framing.rs), to flag what hyper would hide (Content-Length with Transfer-Encoding),
//! and, on the proxy listener, parks an idle connection and bounds the time a head may take
//! (src/conn/wait.rs).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::answers::{bare_error_status, replacement, timed_out_reply};
use super::framing::Scan;
use super::park::Pending;
use super::wait::{Clock, Stand, Wait};

/// What one client connection's requests share with its guard: its open tunnels (the guard
/// stays out of their bytes) and whether its request stream turned ambiguous.
#[derive(Clone, Default)]
pub struct InFlight(Arc<Shared>);

#[derive(Default)]
pub(super) struct Shared {
    tunnels: AtomicUsize,
    /// The raw request stream turned ambiguous (src/conn/framing.rs).
    ambiguous: AtomicBool,
    /// The client's address, on the proxy listener (the admin door judges it, src/proxy/door.rs).
    peer: Option<std::net::IpAddr>,
    /// Requests whose responses have not ended (src/conn/park.rs).
    pub(super) requests: AtomicUsize,
    /// The guard ended hyper's connection to park it (src/conn/park.rs).
    parked: AtomicBool,
}

impl InFlight {
    /// A connection from `peer`.
    pub(crate) fn from_peer(peer: std::net::IpAddr) -> Self {
        InFlight(Arc::new(Shared {
            peer: Some(peer),
            ..Shared::default()
        }))
    }

    /// A request starts: the connection does not park until the token (held by its response
    /// body) is dropped.
    pub(crate) fn request(&self) -> Pending {
        self.0.requests.fetch_add(1, Ordering::AcqRel);
        Pending(self.0.clone())
    }

    /// Whether the guard ended the last hyper connection to park it (and clears that).
    pub(crate) fn take_parked(&self) -> bool {
        self.0.parked.swap(false, Ordering::AcqRel)
    }

    /// The client's address, when known.
    pub(crate) fn peer(&self) -> Option<std::net::IpAddr> {
        self.0.peer
    }

    /// Marks a tunnel as open; the returned token closes it when dropped.
    pub fn start(&self) -> InFlightToken {
        self.0.tunnels.fetch_add(1, Ordering::AcqRel);
        InFlightToken(self.0.clone())
    }

    /// Whether the connection's raw request stream turned ambiguous: a head with both
    /// Content-Length and Transfer-Encoding, which hyper hands on as chunked alone.
    pub fn ambiguous_framing(&self) -> bool {
        self.0.ambiguous.load(Ordering::Acquire)
    }

    fn idle(&self) -> bool {
        self.0.tunnels.load(Ordering::Acquire) == 0
    }
}

/// Held by a tunnel task for the tunnel's lifetime.
pub struct InFlightToken(Arc<Shared>);

impl Drop for InFlightToken {
    fn drop(&mut self) {
        self.0.tunnels.fetch_sub(1, Ordering::AcqRel);
    }
}

enum State {
    Normal,
    /// Writing our replacement for hyper's answer; everything hyper writes afterwards is dropped.
    Replacing {
        bytes: Vec<u8>,
        written: usize,
    },
    Swallowing,
}

/// The wrapped client connection.
pub struct Guard<S> {
    inner: S,
    in_flight: InFlight,
    state: State,
    scan: Scan,
    /// How long the connection may wait idle or in a head (src/conn/wait.rs).
    clock: Clock,
    /// A head was not read in time: its 408 is being written, then hyper's read fails.
    timed_out: bool,
    /// The last write or flush could not finish: bytes may wait in hyper's buffer.
    write_blocked: bool,
}

impl<S> Guard<S> {
    pub fn new(inner: S, in_flight: InFlight) -> Self {
        Self {
            inner,
            in_flight,
            state: State::Normal,
            scan: Scan::default(),
            clock: Clock::default(),
            timed_out: false,
            write_blocked: false,
        }
    }

    /// A guard that ends hyper's connection (an end of stream on reading, a shutdown that leaves
    /// the socket open) once nothing has been left to do on it for `after`: every response ended
    /// and written, no tunnel open, and not a byte of a next request read (src/conn/park.rs).
    /// A busy keep-alive connection, its next request read within `after`, never parks.
    pub(crate) fn parking(inner: S, in_flight: InFlight, after: Duration) -> Self {
        let mut guard = Self::new(inner, in_flight);
        guard.clock.park_after = Some(after);
        guard
    }

    /// The guard bounds the request heads in hyper's place (whose header-read timeout is then
    /// off): a head not read within `limit` of the connection being ready for it is answered
    /// 408 `header_timeout` and the connection closed; idle that long, it is closed. Only for a
    /// connection whose requests are counted (`InFlight::request`): a request in flight does not
    /// count as waiting.
    pub(crate) fn bounding_heads(mut self, limit: Duration) -> Self {
        self.clock.head = Some(limit);
        self
    }

    /// Where the connection stands, a read having found nothing.
    fn stand(&self) -> Stand {
        if self.write_blocked
            || !matches!(self.state, State::Normal)
            || !self.in_flight.idle()
            || self.in_flight.0.requests.load(Ordering::Acquire) != 0
        {
            Stand::Busy
        } else if self.scan.at_rest() {
            Stand::Idle
        } else if self.scan.in_head() {
            Stand::InHead
        } else {
            Stand::Busy
        }
    }

    fn wrote<T>(&mut self, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        self.write_blocked = r.is_pending();
        r
    }
}

impl<S: AsyncWrite + Unpin> Guard<S> {
    /// Writes what is left of the replacement; Ready once it is all out.
    fn drive_replacement(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let State::Replacing { bytes, written } = &mut self.state {
            if *written == bytes.len() {
                self.state = State::Swallowing;
                break;
            }
            let n =
                std::task::ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        Poll::Ready(Ok(()))
    }

    fn write_inner(
        &mut self,
        cx: &mut Context<'_>,
        buf: &[u8],
        total: usize,
    ) -> Poll<io::Result<usize>> {
        self.response_starts(buf);
        if matches!(self.state, State::Normal) && self.in_flight.idle() {
            if let Some(bytes) = replacement(buf) {
                self.state = State::Replacing { bytes, written: 0 };
            }
        }
        match self.state {
            State::Normal => {
                let r = Pin::new(&mut self.inner).poll_write(cx, buf);
                self.wrote(r)
            }
            _ => {
                std::task::ready!(self.drive_replacement(cx))?;
                Poll::Ready(Ok(total))
            }
        }
    }
}

impl<S> Guard<S> {
    /// Shows the start of a write to the scan (which looks only while a CONNECT or an upgrade
    /// awaits its answer), and to the clock: the wait for the next head starts after it (not at
    /// a flush: hyper flushes on every turn of its loop, written or not).
    fn response_starts(&mut self, buf: &[u8]) {
        self.clock.restart();
        if self.scan.on_response(buf) {
            self.in_flight.0.ambiguous.store(true, Ordering::Release);
        }
    }
}

impl<S: AsyncWrite + Unpin> Guard<S> {
    /// A read found nothing: waits, or parks, closes or times the head out (src/conn/wait.rs).
    fn read_nothing(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.clock.runs() {
            return Poll::Pending;
        }
        match self.clock.on_pending(cx, self.stand()) {
            Wait::On => Poll::Pending,
            Wait::Park => {
                // Nothing read: hyper takes it for the client's end and closes its side.
                self.in_flight.0.parked.store(true, Ordering::Release);
                Poll::Ready(Ok(()))
            }
            // Idle: an end of stream, and hyper closes the connection without a word.
            Wait::Close => Poll::Ready(Ok(())),
            Wait::TimedOut => {
                self.state = State::Replacing {
                    bytes: timed_out_reply(),
                    written: 0,
                };
                self.timed_out = true;
                self.time_out(cx)
            }
        }
    }

    /// Writes the 408, then fails hyper's read: it drops the connection (hyper answers no
    /// read error itself, and whatever it writes now is swallowed).
    fn time_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.drive_replacement(cx))?;
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "request head not read within the header-read timeout",
        )))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Guard<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.timed_out {
            return this.time_out(cx);
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Pending => return this.read_nothing(cx),
            r => std::task::ready!(r)?,
        }
        if this.scan.watching() && this.scan.feed(&buf.filled()[before..]) {
            this.in_flight.0.ambiguous.store(true, Ordering::Release);
        }
        // A head begun and not ended keeps the wait's start; anything else ends the wait.
        if !this.scan.in_head() {
            this.clock.restart();
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guard<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().write_inner(cx, buf, buf.len())
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let first = bufs
            .iter()
            .find(|b| !b.is_empty())
            .map_or(&[][..], |b| &b[..]);
        this.response_starts(first);
        // A response head and its body leave in one write unless the head is hyper's own
        // bare error answer (which is replaced, so it is handled alone).
        if matches!(this.state, State::Normal)
            && !(this.in_flight.idle() && bare_error_status(first).is_some())
        {
            let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
            return this.wrote(r);
        }
        this.write_inner(cx, first, total)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.drive_replacement(cx))?;
        let r = Pin::new(&mut this.inner).poll_flush(cx);
        this.wrote(r)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.in_flight.0.parked.load(Ordering::Acquire) {
            return Poll::Ready(Ok(())); // parked: the socket stays open
        }
        std::task::ready!(this.drive_replacement(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}
