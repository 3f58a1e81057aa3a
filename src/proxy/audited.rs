//! Body wrappers that count bytes as they stream and write the request's audit record when the
//! response body ends (or the client goes away, or shutdown closes it: `ended: "shutdown"`),
//! with the final byte counts, duration and an LLM call's token usage; and the record of a relay
//! (WebSocket, spliced tunnel), written when it ends.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::sync::oneshot;

use super::sender::UncleanClose;
use super::tunnel::Spliced;
use crate::audit::{AuditRecord, Ended, Slot};
use crate::llm::Scanner;

/// A request body that counts the bytes passing through it.
/// Set in a request's byte count when reading the client's body failed (a malformed chunk): the
/// failure is the client's, whatever the upstream send then reports.
pub const CLIENT_BODY_FAILED: u64 = 1 << 63;

pub struct Counted<B> {
    inner: B,
    count: Arc<AtomicU64>,
}

impl<B> Counted<B> {
    pub fn new(inner: B, count: Arc<AtomicU64>) -> Self {
        Self { inner, count }
    }
}

impl<B: HttpBody<Data = Bytes> + Unpin> HttpBody for Counted<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_frame(cx);
        match &r {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    this.count.fetch_add(d.len() as u64, Ordering::Relaxed);
                }
            }
            Poll::Ready(Some(Err(_))) => {
                this.count.fetch_or(CLIENT_BODY_FAILED, Ordering::Relaxed);
            }
            _ => {}
        }
        r
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that writes the audit record once it is finished or dropped; an LLM call's
/// is watched for its token usage on the way (`usage`, src/llm/usage.rs). One type for both, so
/// hyper's write path and this body's code exist once.
pub struct Audited<B: HttpBody> {
    inner: B,
    out: u64,
    bytes_in: Arc<AtomicU64>,
    started: Instant,
    pending: Option<(Box<AuditRecord>, Option<Slot>)>,
    /// Set when the upstream ended the body by closing without TLS `close_notify`.
    unclean: Option<UncleanClose>,
    /// An LLM call's usage scanner (`None` for any other response): read before the record is
    /// written.
    usage: Option<Box<Scanner>>,
}

impl<B: HttpBody> Audited<B> {
    pub fn new(
        inner: B,
        record: Box<AuditRecord>,
        slot: Option<Slot>,
        bytes_in: Arc<AtomicU64>,
        started: Instant,
        unclean: Option<UncleanClose>,
        usage: Option<Box<Scanner>>,
    ) -> Self {
        Self {
            inner,
            out: 0,
            bytes_in,
            started,
            pending: Some((record, slot)),
            unclean,
            usage,
        }
    }

    /// Writes the record; `complete` when the body ended, else it was dropped (the client went
    /// away, or shutdown closed the stream).
    fn finish(&mut self, complete: bool) {
        // The usage first: the record (and a budget's `on_settled`) get the final counts. A body
        // of known length ends with its last frame, and hyper then drops it unpolled: here too.
        if let Some(s) = self.usage.take() {
            s.finish();
        }
        if let Some((mut rec, slot)) = self.pending.take() {
            rec.bytes_out = self.out;
            rec.bytes_in = self.bytes_in.load(Ordering::Relaxed) & !CLIENT_BODY_FAILED;
            rec.durations.total_ms = crate::audit::millis(self.started.elapsed());
            super::budget::charge_bytes(&mut rec);
            if complete && self.unclean.as_ref().is_some_and(UncleanClose::happened) {
                rec.ended = Some(Ended::Closed);
                rec.reasons
                    .push("the upstream ended the body by closing without TLS close_notify".into());
            }
            if let Some(slot) = slot {
                if !complete && !self.inner.is_end_stream() && slot.closing() {
                    rec.ended = Some(Ended::Shutdown);
                }
                slot.send(rec);
            }
        }
    }
}

impl<B: HttpBody<Data = Bytes> + Unpin> HttpBody for Audited<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_frame(cx);
        match &r {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    this.out += d.len() as u64;
                    if let Some(s) = &mut this.usage {
                        s.data(d);
                    }
                }
            }
            Poll::Ready(None) => this.finish(true),
            _ => {}
        }
        r
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B: HttpBody> Drop for Audited<B> {
    fn drop(&mut self) {
        self.finish(false);
    }
}

/// A request's record while its pipeline runs: if the request is dropped before the pipeline
/// returns (the client went away, or shutdown closed its connection), `Drop` writes a copy of
/// the record as it stands (`status` 0: no response was sent; `ended: "shutdown"` when
/// shutdown closed it). Disarmed, it does nothing: the caller writes the record.
pub struct Armed<'a> {
    rec: &'a mut AuditRecord,
    slot: &'a mut Option<Slot>,
    started: Instant,
    armed: bool,
}

impl<'a> Armed<'a> {
    pub fn new(rec: &'a mut AuditRecord, slot: &'a mut Option<Slot>, started: Instant) -> Self {
        Self {
            rec,
            slot,
            started,
            armed: true,
        }
    }

    pub fn rec(&mut self) -> &mut AuditRecord {
        self.rec
    }

    pub fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for Armed<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Some(slot) = self.slot.take() {
            // The cancelled path only: the copy costs nothing on a request that completes.
            let mut rec = self.rec.clone();
            rec.durations.total_ms = crate::audit::millis(self.started.elapsed());
            if slot.closing() {
                rec.ended = Some(Ended::Shutdown);
            }
            slot.send(rec);
        }
    }
}

/// What a finished relay moved: client→upstream, upstream→client, and how it ended.
pub struct Relayed {
    pub up: u64,
    pub down: u64,
    pub end: Ended,
}

impl From<&Spliced> for Relayed {
    fn from(s: &Spliced) -> Self {
        Self {
            up: s.client_to_upstream,
            down: s.upstream_to_client,
            end: s.ended(),
        }
    }
}

/// Writes a relay's one audit record when it ends (`what` names it in the reasons), with the
/// byte counts and how it ended. A relay task that is gone without a word (it failed before
/// relaying) still leaves the record.
pub async fn audit_when_relayed(
    rec: AuditRecord,
    slot: Option<Slot>,
    relayed: oneshot::Receiver<Relayed>,
    started: Instant,
    what: &'static str,
) {
    write_relayed(rec, slot, relayed.await.ok(), started, what);
}

/// Writes a relay's record with what it moved (nothing when it never relayed).
pub fn write_relayed(
    mut rec: AuditRecord,
    slot: Option<Slot>,
    relayed: Option<Relayed>,
    started: Instant,
    what: &'static str,
) {
    if let Some(r) = relayed {
        rec.bytes_in = r.up;
        rec.bytes_out = r.down;
        rec.ended = Some(r.end);
        rec.reasons
            .push(format!("{what} ended: {}", r.end.as_str()));
    }
    super::budget::charge_bytes(&mut rec);
    rec.durations.total_ms = crate::audit::millis(started.elapsed());
    if let Some(slot) = slot {
        slot.send(rec);
    }
}
