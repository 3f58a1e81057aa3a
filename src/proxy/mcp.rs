//! The pipeline's MCP step (src/mcp/): whether a request is read as MCP, and reading it from the
//! inspected start of its body. Plain requests pay one flag test (and a host lookup only when
//! some rule says `protocol: mcp`).

use http::Request;

use super::Proxy;
use super::gate::LivePolicy;
use super::inspect::Replay;
use crate::config::McpDetect;
use crate::error::ProxyError;
use crate::mcp::{Call, Reply, Unreadable};
use crate::policy::catalog::BODYLESS;

/// An MCP call read for the decision, and how a refusal of it is answered.
pub(super) struct Read {
    pub call: Call,
    /// `None` when no message expects an answer: refused as any HTTP request.
    reply: Option<Reply>,
}

impl Read {
    /// `err` answered in-band as JSON-RPC when the call has requests to answer.
    pub(super) fn refusal(&self, err: ProxyError) -> ProxyError {
        match &self.reply {
            Some(r) => ProxyError::Mcp(Box::new((err, r.clone()))),
            None => err,
        }
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

    /// Reads the MCP message(s) from the inspected body (filled by `inspect_body`): the whole
    /// body is needed, so one over the inspection limit is refused.
    pub(super) fn read_mcp(&self, req: &Request<Replay>, json: bool) -> Result<Read, ProxyError> {
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
        Ok(Read { call, reply })
    }
}
