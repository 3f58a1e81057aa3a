//! Body inspection for policy: when a loaded module reads `input.request.body`, the first
//! `limits.inspect_body_bytes` of a request body are read before the decision and then replayed
//! in front of the rest, so the upstream receives the body whole and unchanged. Otherwise the
//! body streams through untouched and nothing is buffered.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::gate::LivePolicy;
use super::{Proxy, mcp};
use crate::audit::AuditRecord;
use crate::config::McpDetect;
use crate::error::ProxyError;
use crate::llm::LlmCall;
use crate::policy::BodyFacts;

/// What step 5 read of a request: whether its body is JSON, its MCP message(s), its LLM API
/// call.
#[derive(Default)]
pub(super) struct Inspected {
    pub json: bool,
    pub mcp: Option<mcp::Read>,
    pub llm: Option<LlmCall>,
}

impl Proxy {
    /// Whether step 5 may read anything of a request: a loaded module reads bodies, some rule
    /// says `protocol: mcp` or `protocol: llm`, or `mcp.detect: auto`. Otherwise this test is
    /// all that MCP and LLM awareness costs a request.
    #[inline]
    pub(super) fn may_inspect(&self, live: &LivePolicy) -> bool {
        live.policy.reads_body()
            || live.policy.catalog().speaks_protocols()
            || self.cfg.mcp.detect == McpDetect::Auto
    }

    /// Reads the body's start into `req`'s body (to be replayed in front of the rest) when a
    /// loaded module reads it, the request is MCP (src/proxy/mcp.rs), or it is an LLM API call
    /// to a host of a `protocol: llm` rule; then its MCP message(s) (read whole; the record
    /// notes the call) and its LLM API call. The request is borrowed, not moved in and out.
    pub(super) async fn inspect(
        &self,
        req: &mut http::Request<Replay>,
        live: &LivePolicy,
        rec: &mut AuditRecord,
        host: &str,
        path: &str,
    ) -> Result<Inspected, ProxyError> {
        let mcp = self.speaks_mcp(req, live, host);
        let llm_api = live.policy.catalog().llm_api(host, path);
        let inspected = mcp || live.policy.reads_body() || llm_api.is_some();
        if inspected {
            req.body_mut()
                .fill(self.cfg.limits.inspect_body_bytes)
                .await?;
            let truncated = if req.body().truncated {
                "true"
            } else {
                "false"
            };
            self.metrics
                .bodies_inspected
                .with_label_values(&[truncated])
                .inc();
        }
        // Read only with the body (MCP, a module that reads it, an LLM call).
        let json = inspected && is_json(req.headers());
        let llm = llm_api.map(|(provider, api)| {
            let b = req.body().facts(json);
            LlmCall::parse(provider, api, path, b.bytes, b.truncated)
        });
        let mcp = mcp.then(|| self.read_mcp(req, json, rec)).transpose()?;
        Ok(Inspected { json, mcp, llm })
    }
}

/// A request body whose inspected start (if any) is sent before the rest.
pub struct Replay {
    prefix: Bytes,
    trailers: Option<HeaderMap>,
    inner: Incoming,
    ended: bool,
    /// The body is longer than the inspection limit.
    truncated: bool,
    limit: usize,
}

impl Replay {
    pub fn new(inner: Incoming) -> Self {
        Self {
            prefix: Bytes::new(),
            trailers: None,
            inner,
            ended: false,
            truncated: false,
            limit: 0,
        }
    }

    /// Reads until more than `limit` bytes (or the end) have arrived.
    pub async fn fill(&mut self, limit: usize) -> Result<(), ProxyError> {
        let mut buf = BytesMut::new();
        self.limit = limit;
        while buf.len() <= limit && !self.inner.is_end_stream() {
            match self.inner.frame().await {
                Some(Ok(f)) => match f.into_data() {
                    Ok(d) => buf.extend_from_slice(&d),
                    Err(f) => {
                        self.trailers = f.into_trailers().ok();
                        self.ended = true;
                        break;
                    }
                },
                Some(Err(e)) => {
                    return Err(ProxyError::bad_request(
                        format!("the request body could not be read: {e}"),
                        "send the whole body",
                    ));
                }
                None => {
                    self.ended = true;
                    break;
                }
            }
        }
        self.truncated = buf.len() > limit;
        self.prefix = buf.freeze();
        Ok(())
    }

    /// What the policy sees: at most `limit` bytes.
    pub fn facts(&self, json: bool) -> BodyFacts<'_> {
        let n = self.prefix.len().min(self.limit);
        BodyFacts {
            bytes: &self.prefix[..n],
            truncated: self.truncated,
            json,
        }
    }
}

impl HttpBody for Replay {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            return Poll::Ready(Some(Ok(Frame::data(std::mem::take(&mut this.prefix)))));
        }
        if let Some(t) = this.trailers.take() {
            return Poll::Ready(Some(Ok(Frame::trailers(t))));
        }
        if this.ended {
            return Poll::Ready(None);
        }
        Pin::new(&mut this.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_empty()
            && self.trailers.is_none()
            && (self.ended || self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let extra = self.prefix.len() as u64;
        if self.ended {
            return SizeHint::with_exact(extra);
        }
        let inner = self.inner.size_hint();
        let mut h = SizeHint::new();
        h.set_lower(inner.lower() + extra);
        if let Some(u) = inner.upper() {
            h.set_upper(u + extra);
        }
        h
    }
}

/// Whether a `Content-Type` is JSON (`application/json`, `application/*+json`).
pub fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|t| t.trim().as_bytes())
        .is_some_and(|t| {
            // In any case, without a lowercase copy.
            t.eq_ignore_ascii_case(b"application/json")
                || (t.len() >= 17
                    && t[..12].eq_ignore_ascii_case(b"application/")
                    && t[t.len() - 5..].eq_ignore_ascii_case(b"+json"))
        })
}
