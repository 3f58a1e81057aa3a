//! The pipeline's MCP steps (src/mcp/): whether a request is read as MCP, reading it from the
//! inspected start of its body, and setting up the filtering of a `tools/list` answer. Plain
//! requests pay one flag test (and a host lookup only when some rule says `protocol: mcp`).

use http::header::{ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, Request};
use http_body_util::BodyExt;

use super::Proxy;
use super::gate::LivePolicy;
use super::inspect::Replay;
use crate::audit::AuditRecord;
use crate::config::McpDetect;
use crate::error::{Body, ProxyError};
use crate::mcp::filter::ToolsFilter;
use crate::mcp::{Call, Reply, Unreadable};
use crate::policy::Decision;
use crate::policy::catalog::BODYLESS;

/// An MCP call read for the decision, and how a refusal of it is answered.
pub(super) struct Read {
    pub call: Call,
    /// `None` when no message expects an answer: refused as any HTTP request.
    reply: Option<Reply>,
}

/// `err` answered in-band as JSON-RPC when the call is MCP and has requests to answer.
pub(super) fn refusal(read: &Option<Read>, err: ProxyError) -> ProxyError {
    match read.as_ref().and_then(|r| r.reply.as_ref()) {
        Some(r) => ProxyError::Mcp(Box::new((err, r.clone()))),
        None => err,
    }
}

impl Proxy {
    /// Whether the request is read as MCP: one that may carry a body to a host a `protocol: mcp`
    /// rule names, or (`mcp.detect: auto`) one that says it is MCP.
    pub(super) fn speaks_mcp<B>(&self, req: &Request<B>, live: &LivePolicy, host: &str) -> bool {
        (live.policy.catalog().speaks_mcp(host) && !BODYLESS.contains(req.method()))
            || (self.cfg.mcp.detect == McpDetect::Auto
                && crate::mcp::announced(
                    req.method(),
                    req.headers(),
                    super::inspect::is_json(req.headers()),
                ))
    }

    /// Reads the MCP message(s) from the inspected body (filled by `Proxy::inspect`): the whole
    /// body is needed, so one over the inspection limit is refused. The record notes the call.
    #[cold]
    pub(super) fn read_mcp(
        &self,
        req: &Request<Replay>,
        json: bool,
        rec: &mut AuditRecord,
    ) -> Result<Read, ProxyError> {
        let body = req.body().facts(json);
        if body.truncated {
            return Err(ProxyError::McpUnreadable(Unreadable::TooLarge(
                self.cfg.limits.inspect_body_bytes,
            )));
        }
        let content_type = req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .map(|v| String::from_utf8_lossy(v.as_bytes()));
        let call = crate::mcp::parse(body.bytes, json, content_type.as_deref())
            .map_err(ProxyError::McpUnreadable)?;
        let accept = req
            .headers()
            .get(http::header::ACCEPT)
            .and_then(|v| v.to_str().ok());
        let reply = call.reply(accept);
        rec.mcp = Some(call.noted());
        Ok(Read { call, reply })
    }
}

/// A `tools/list` answer to filter (`mcp.filter_tools_list`), carried from the pipeline to the
/// response step in the response's extensions (only then is an extension map made).
#[derive(Clone)]
pub(super) struct FilterTools(ToolsFilter, bool);

impl FilterTools {
    /// `body` filtered.
    pub(super) fn wrap(self, body: Body) -> Body {
        self.0.wrap(body, self.1).boxed()
    }
}

impl Proxy {
    /// The filter for the answers of an allowed MCP call, when `mcp.filter_tools_list` is on,
    /// the call asks `tools/list` and the matched rule names tools. The request then asks for
    /// an unencoded answer (a compressed one could not be read).
    #[inline(never)]
    pub(super) fn tools_filter(
        &self,
        live: &LivePolicy,
        mcp: &Read,
        decision: &Decision,
        headers: &mut http::HeaderMap,
    ) -> Option<ToolsFilter> {
        if !self.cfg.mcp.filter_tools_list {
            return None;
        }
        let scope = live.policy.catalog().mcp_scope(&decision.scope)?;
        let f = ToolsFilter::of(&mcp.call, scope)?;
        headers.insert(ACCEPT_ENCODING, HeaderValue::from_static("identity"));
        Some(f)
    }

    /// Sets up the filtering of an answer (its length changes); refuses one whose encoding
    /// cannot be read (an unfiltered list is never passed on).
    pub(super) fn filter_answer(
        &self,
        parts: &mut http::response::Parts,
        f: ToolsFilter,
        target: &str,
    ) -> Result<(), ProxyError> {
        let encoded = parts
            .headers
            .get(CONTENT_ENCODING)
            .is_some_and(|e| !e.as_bytes().eq_ignore_ascii_case(b"identity"));
        if encoded {
            return Err(ProxyError::UpstreamProtocol {
                target: target.to_string(),
                detail: "its tools/list answer is compressed and cannot be filtered \
                         (mcp.filter_tools_list)"
                    .into(),
            });
        }
        let sse = parts
            .headers
            .get(CONTENT_TYPE)
            .is_some_and(|t| t.as_bytes().starts_with(b"text/event-stream"));
        parts.headers.remove(CONTENT_LENGTH);
        parts.extensions.insert(FilterTools(f, sse));
        Ok(())
    }
}
