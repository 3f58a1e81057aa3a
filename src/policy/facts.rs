//! What the proxy tells the policy about one call: how it arrived (`ConnectionFacts`), the
//! request or tunnel itself (`RequestFacts`) and the inspected start of its body (`BodyFacts`).

use crate::vocab::{ConnectionMode, Protocol, Scheme};

/// How the request reached intentgate.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionFacts<'a> {
    pub mode: ConnectionMode,
    pub sni: Option<&'a str>,
    pub intercepted: bool,
}

/// What the proxy knows about one call, of any kind: a request, a CONNECT (which has method
/// `CONNECT` and only host and port), or a transparent connection decided on its destination.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    pub id: &'a str,
    pub protocol: Protocol,
    pub method: &'a str,
    pub scheme: Scheme,
    /// Lowercase, no trailing dot, punycode.
    pub host: &'a str,
    pub port: u16,
    /// Canonical path, without the query; `None` on a tunnel that is not intercepted.
    pub path: Option<&'a str>,
    pub query: Option<&'a str>,
    /// The request's headers (a CONNECT's own headers for a spliced tunnel).
    pub headers: Option<&'a http::HeaderMap>,
    pub connection: ConnectionFacts<'a>,
    /// The vetted address and its class (`public`, `private`, ...), once resolved.
    pub destination: Option<(std::net::IpAddr, &'a str)>,
    /// The first `limits.inspect_body_bytes` of the body, read only when a module reads it.
    pub body: Option<BodyFacts<'a>>,
    /// The JSON-RPC message(s) of a call to an MCP server (src/mcp/): `input.mcp`.
    pub mcp: Option<&'a crate::mcp::Call>,
    /// An LLM API call under a `protocol: llm` rule, read from the body (`input.llm`).
    pub llm: Option<&'a crate::llm::LlmCall>,
}

/// The inspected start of a request body.
#[derive(Debug, Clone, Copy)]
pub struct BodyFacts<'a> {
    pub bytes: &'a [u8],
    /// The body is longer than `bytes`.
    pub truncated: bool,
    /// `Content-Type` is JSON: `input.request.body` is the parsed document when it is whole.
    pub json: bool,
}
