//! A client-connection wrapper that makes hyper's automatic error answers speak our JSON.
//!
//! hyper answers a request head it cannot parse (bad request line, oversized head, URI too long)
//! itself, with an empty body, before our service ever runs. The guard recognises such an answer —
//! a whole write that is exactly a 400/414/431 head carrying nothing but `content-length: 0`,
//! `date` and `connection`, which no response of ours looks like (ours always carry `via` or
//! `intentgate-*`) — and writes our JSON refusal in its place, so every answer a client gets from
//! intentgate has the one error shape (src/error.rs). While a tunnel is open the guard is
//! off: tunnelled bytes are never inspected. It also follows the request heads as they are read
//! (src/conn/framing.rs), to flag what hyper would hide (Content-Length with Transfer-Encoding).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::framing::Scan;
use super::park::Pending;
use crate::error::{Blame, ErrorReply};
use crate::vocab::ErrorCode;

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
    /// Ends hyper's connection once it has been idle this long, to park it (src/conn/park.rs).
    parks: Option<Duration>,
    /// Wakes the connection to ask whether it has been idle long enough. Lazy: it keeps an
    /// earlier idle spell's deadline until that fires (not moved in tokio's wheel per request).
    idle_timer: Option<Pin<Box<Sleep>>>,
    idle_since: Option<Instant>,
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
            parks: None,
            idle_timer: None,
            idle_since: None,
            write_blocked: false,
        }
    }

    /// A guard that ends hyper's connection (an end of stream on reading, a shutdown that leaves
    /// the socket open) once nothing has been left to do on it for `after`: every response ended
    /// and written, no tunnel open, and not a byte of a next request read (src/conn/park.rs).
    /// A busy keep-alive connection, its next request read within `after`, never parks.
    pub(crate) fn parking(inner: S, in_flight: InFlight, after: Duration) -> Self {
        Self {
            parks: Some(after),
            ..Self::new(inner, in_flight)
        }
    }

    /// Whether to park now, the read having found nothing: idle for long enough (else the
    /// idle timer is left or set to wake the connection no later than that, to ask again).
    fn park_now(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(after) = self.parks.filter(|_| self.may_park()) else {
            return false;
        };
        if after.is_zero() {
            return true;
        }
        let since = *self.idle_since.get_or_insert_with(Instant::now);
        let due = since + after;
        let Some(timer) = self.idle_timer.as_mut() else {
            self.idle_timer = Some(Box::pin(tokio::time::sleep_until(due)));
            return self.idle_timer_fired(cx);
        };
        // An earlier spell's deadline wakes the connection early; it is moved then (or now).
        if timer.as_mut().poll(cx).is_pending() {
            return false;
        }
        if Instant::now() >= due {
            return true;
        }
        timer.as_mut().reset(due);
        self.idle_timer_fired(cx)
    }

    fn idle_timer_fired(&mut self, cx: &mut Context<'_>) -> bool {
        self.idle_timer
            .as_mut()
            .is_some_and(|timer| timer.as_mut().poll(cx).is_ready())
    }

    fn may_park(&self) -> bool {
        !self.write_blocked
            && matches!(self.state, State::Normal)
            && self.scan.at_rest()
            && self.in_flight.idle()
            && self.in_flight.0.requests.load(Ordering::Acquire) == 0
    }

    fn wrote<T>(&mut self, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        self.write_blocked = r.is_pending();
        r
    }
}

/// If `buf` is a whole head hyper wrote for its own error answer: its status (400, 414 or 431,
/// the only ones hyper answers with itself). Cheap (no allocation, the status looked at first):
/// it runs on every response head.
fn bare_error_status(buf: &[u8]) -> Option<StatusCode> {
    let rest = buf.strip_prefix(b"HTTP/1.1 ")?;
    let code = rest.get(..3)?;
    if !matches!(code, b"400" | b"414" | b"431") {
        return None;
    }
    let head = buf.strip_suffix(b"\r\n\r\n")?;
    let starts = |l: &[u8], p: &[u8]| l.len() >= p.len() && l[..p.len()].eq_ignore_ascii_case(p);
    let only_bare = head.split(|&b| b == b'\n').skip(1).all(|l| {
        let l = l.strip_suffix(b"\r").unwrap_or(l);
        l.eq_ignore_ascii_case(b"content-length: 0")
            || starts(l, b"date: ")
            || starts(l, b"connection: ")
    });
    if !only_bare {
        return None;
    }
    StatusCode::from_bytes(code).ok()
}

/// If `buf` is hyper's own error head, the JSON answer that replaces it.
fn replacement(buf: &[u8]) -> Option<Vec<u8>> {
    let status = bare_error_status(buf)?;
    let (code, reason, hint) = match status {
        StatusCode::BAD_REQUEST => (
            ErrorCode::MalformedRequest,
            "the request line or headers could not be parsed as HTTP/1.1",
            "send a well-formed HTTP/1.1 request with an absolute URL (http://host/path) or CONNECT host:port",
        ),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => (
            ErrorCode::HeadersTooLarge,
            "the request head exceeds the proxy's size or count limit",
            "send fewer or smaller headers",
        ),
        StatusCode::URI_TOO_LONG => (
            ErrorCode::UriTooLong,
            "the request target is too long",
            "shorten the URL",
        ),
        _ => return None,
    };
    Some(
        ErrorReply {
            status,
            blame: Blame::Client,
            code,
            reason,
            hint,
            decision_id: &crate::ids::decision_id(),
            agent: None,
            intent: None,
        }
        .raw(),
    )
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
    /// awaits its answer).
    fn response_starts(&mut self, buf: &[u8]) {
        if self.scan.on_response(buf) {
            self.in_flight.0.ambiguous.store(true, Ordering::Release);
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guard<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Pending if this.park_now(cx) => {
                // Nothing read: hyper takes it for the client's end and closes its side.
                this.in_flight.0.parked.store(true, Ordering::Release);
                return Poll::Ready(Ok(()));
            }
            r => std::task::ready!(r)?,
        }
        this.idle_since = None;
        if this.scan.watching() && this.scan.feed(&buf.filled()[before..]) {
            this.in_flight.0.ambiguous.store(true, Ordering::Release);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hyper_error_heads_are_replaced() {
        let r = replacement(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n").unwrap();
        let text = String::from_utf8(r).unwrap();
        assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"));
        let body: serde_json::Value =
            serde_json::from_str(text.split_once("\r\n\r\n").unwrap().1).unwrap();
        assert_eq!(body["error"]["code"], "malformed_request");
        assert_eq!(body["error"]["type"], "invalid_request");
        assert!(replacement(b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: x\r\n\r\n").is_some());
        // Ours always carry via or intentgate-* headers, and bodies never end a head exactly.
        assert!(replacement(b"HTTP/1.1 400 Bad Request\r\nvia: 1.1 intentgate\r\n\r\n").is_none());
        assert!(
            replacement(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\nmore").is_none()
        );
        assert!(replacement(b"HTTP/1.1 200 OK\r\n\r\n").is_none());
        assert!(replacement(b"hello").is_none());
    }
}
