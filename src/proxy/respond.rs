//! The end of a request: what the pipeline produced (`Outcome`) becomes the response, and the
//! audit record is sent now (a finished response, a refusal) or when its body or relay ends.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use http::Response;
use http::header::HeaderValue;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tracing::{Span, debug};

use super::Proxy;
use super::audited::{self, Audited};
use super::sender::UncleanClose;
use crate::audit::{AuditRecord, Slot};
use crate::error::{self, Body};

/// What the pipeline produced: an upstream response to stream back, or a finished response.
pub(super) enum Outcome {
    /// With the request body's byte count, and the upstream connection's close note
    /// (src/proxy/sender/eof.rs).
    Forwarded(Response<Incoming>, Arc<AtomicU64>, Option<UncleanClose>),
    Done(Response<Body>),
    /// A 101 (WebSocket) or a CONNECT's 200 (spliced tunnel) whose connections are relayed in
    /// the background; the audit record waits for the relay to end, and names it in its reasons.
    Upgraded(
        Response<Body>,
        tokio::sync::oneshot::Receiver<audited::Relayed>,
        &'static str,
    ),
}

impl Proxy {
    /// The response for `outcome`; `rec` goes to `slot` now or when the response's body or
    /// relay ends.
    pub(super) fn respond(
        &self,
        outcome: Result<Outcome, crate::error::ProxyError>,
        mut rec: Box<AuditRecord>,
        slot: Option<Slot>,
        span: &Span,
        started: Instant,
    ) -> Response<Body> {
        let resp = match outcome {
            Ok(Outcome::Forwarded(resp, bytes_in, unclean)) => {
                rec.status = resp.status().as_u16();
                // Taken before the record moves into the body (made once: src/ids.rs).
                let id = id_header(&mut rec);
                span.in_scope(|| debug!(status = rec.status, "forwarded"));
                // An MCP call's `tools/list` answer cut down to the permitted tools
                // (src/proxy/mcp.rs); an LLM call's usage read as its response passes
                // (src/llm/usage.rs), by the same body type as any other response's.
                let mut resp = if rec.mcp.is_none() && rec.llm.is_none() {
                    resp.map(|b| {
                        Audited::new(b, rec, slot, bytes_in, started, unclean, None).boxed()
                    })
                } else {
                    self.protocol_response(resp, rec, slot, bytes_in, started, unclean)
                };
                if let Some(v) = id {
                    resp.headers_mut().insert(super::headers::DECISION_ID, v);
                }
                return resp;
            }
            Ok(Outcome::Done(resp)) => {
                rec.status = resp.status().as_u16();
                resp
            }
            Ok(Outcome::Upgraded(mut resp, relayed, what)) => {
                // One record per WebSocket or spliced tunnel, written when its relay ends, with
                // the byte counts and how it ended.
                rec.status = resp.status().as_u16();
                if let Some(v) = id_header(&mut rec) {
                    resp.headers_mut().insert(super::headers::DECISION_ID, v);
                }
                tokio::spawn(audited::audit_when_relayed(
                    *rec, slot, relayed, started, what,
                ));
                return resp;
            }
            Err(err) => {
                span.in_scope(
                    || debug!(error = %err, code = %err.code(), blame = ?err.blame(), "refused"),
                );
                self.failed(&mut rec, &err);
                error::into_response(&err, &rec.decision_id)
            }
        };
        rec.decision_header = None;
        rec.durations.total_ms = crate::audit::millis(started.elapsed());
        if let Some(slot) = slot {
            slot.send(rec);
        }
        resp
    }

    /// `respond`'s forwarded response of an MCP or LLM API call: a `tools/list` answer filtered,
    /// an LLM call's usage counted.
    #[cold]
    fn protocol_response(
        &self,
        mut resp: Response<Incoming>,
        rec: Box<AuditRecord>,
        slot: Option<Slot>,
        bytes_in: Arc<AtomicU64>,
        started: Instant,
        unclean: Option<UncleanClose>,
    ) -> Response<Body> {
        let tools = resp.extensions_mut().remove::<super::mcp::FilterTools>();
        let (parts, b) = resp.into_parts();
        let usage = rec.llm.as_deref().and_then(|l| {
            let ct = parts.headers.get(http::header::CONTENT_TYPE);
            crate::llm::scan(l, ct, |l| l.counters(&self.metrics, &rec.agent.id))
        });
        let b = Audited::new(b, rec, slot, bytes_in, started, unclean, usage).boxed();
        let resp = Response::from_parts(parts, b);
        match tools {
            Some(f) => resp.map(|b| f.wrap(b)),
            None => resp,
        }
    }
}

/// The decision id's header value: the one made for the request (and already given to the
/// upstream), else made now.
fn id_header(rec: &mut AuditRecord) -> Option<HeaderValue> {
    (rec.decision_header.take()).or_else(|| HeaderValue::from_str(&rec.decision_id).ok())
}
