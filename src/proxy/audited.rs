//! Body wrappers that count bytes as they stream and write the request's audit record when the
//! response body ends (or the client goes away), with the final byte counts and duration.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};

use crate::audit::{AuditRecord, Slot};

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

/// A response body that writes the audit record once it is finished or dropped.
pub struct Audited<B> {
    inner: B,
    out: u64,
    bytes_in: Arc<AtomicU64>,
    started: Instant,
    pending: Option<(Box<AuditRecord>, Option<Slot>)>,
}

impl<B> Audited<B> {
    pub fn new(
        inner: B,
        record: AuditRecord,
        slot: Option<Slot>,
        bytes_in: Arc<AtomicU64>,
        started: Instant,
    ) -> Self {
        Self {
            inner,
            out: 0,
            bytes_in,
            started,
            pending: Some((Box::new(record), slot)),
        }
    }

    fn finish(&mut self) {
        if let Some((mut rec, slot)) = self.pending.take() {
            rec.bytes_out = self.out;
            rec.bytes_in = self.bytes_in.load(Ordering::Relaxed) & !CLIENT_BODY_FAILED;
            rec.durations.total_ms = crate::audit::millis(self.started.elapsed());
            if let Some(slot) = slot {
                slot.send(*rec);
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
                }
            }
            Poll::Ready(None) => this.finish(),
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

impl<B> Drop for Audited<B> {
    fn drop(&mut self) {
        self.finish();
    }
}
