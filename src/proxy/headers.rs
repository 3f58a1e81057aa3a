//! Header rewriting: hop-by-hop removal (RFC 9110 §7.6.1), `Via`, the agent's own intentgate and
//! identity headers stripped, and intentgate's tags added.

use http::header::{self, HeaderMap, HeaderName};

use crate::error::{Ambiguity, ProxyError};
pub(crate) use crate::head::Seen;

mod hop;

pub(crate) use hop::add_via_after;
pub use hop::{
    add_via, remove_hop_by_hop, remove_hop_by_hop_add_via, remove_hop_by_hop_and_claims,
    strip_agent_claims,
};

/// The prefix of every header that speaks for intentgate; agents may not send them upstream.
pub(crate) use crate::head::OWN_PREFIX;

/// W3C trace context (continued, with OpenTelemetry export on; else passed through as is).
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// The decision id on our responses: a const, so that the name is neither parsed nor copied
/// for each response (a `&str` name is).
pub const DECISION_ID: HeaderName = HeaderName::from_static("intentgate-decision-id");

/// The value added to `Via` by this proxy.
pub const VIA: &str = "1.1 intentgate";

/// The comma-separated tokens of a list header such as `Connection`, trimmed (no allocation).
pub fn list_tokens(headers: &HeaderMap, name: HeaderName) -> impl Iterator<Item = &str> {
    headers
        .get_all(name)
        .into_iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Enforces our header limits before anything else reads the headers, so an oversized head gets
/// our JSON 431 rather than hyper's bare one (hyper's own limit sits above ours as a backstop):
/// a head of `count` headers and `total` bytes (`head::summary`'s).
pub(crate) fn check_limits(
    count: usize,
    total: usize,
    max_bytes: usize,
    max_count: usize,
) -> Result<(), ProxyError> {
    if count > max_count {
        return Err(ProxyError::HeadersTooLarge(format!(
            "{count} headers, at most {max_count} allowed"
        )));
    }
    if total > max_bytes {
        return Err(ProxyError::HeadersTooLarge(format!(
            "{total} bytes of headers, at most {max_bytes} allowed"
        )));
    }
    Ok(())
}

/// Methods intentgate forwards; anything else (lowercase spellings, TRACE, extension methods) is
/// refused, so no upstream parses a method differently than the policy did.
const METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT",
];

const HINT_SMUGGLE: &str =
    "send one framing: Content-Length or Transfer-Encoding: chunked, not both";

/// Refuses request forms that let two parsers disagree about where a request ends or what it
/// is (request smuggling): Content-Length with Transfer-Encoding, a Transfer-Encoding other than
/// chunked, unknown or lowercase methods, and `Upgrade: h2c`. `seen`: the head's names, from
/// `head::summary` (usually neither framing header nor `Upgrade` is there: then none is looked
/// up).
pub fn check_framing(
    method: &http::Method,
    headers: &HeaderMap,
    seen: Seen,
) -> Result<(), ProxyError> {
    if !METHODS.contains(&method.as_str()) {
        return Err(ProxyError::bad_request(
            format!("method '{method}' is not supported"),
            "use one of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS (upper case)",
        ));
    }
    let te = seen.any(Seen::TRANSFER_ENCODING);
    if te && seen.any(Seen::CONTENT_LENGTH) {
        return Err(ambiguous_framing());
    }
    if te {
        let values = headers.get_all(header::TRANSFER_ENCODING);
        let n = values.iter().count();
        for v in values {
            if !v
                .to_str()
                .is_ok_and(|s| s.trim().eq_ignore_ascii_case("chunked"))
                || n > 1
            {
                return Err(ProxyError::bad_request(
                    "only 'Transfer-Encoding: chunked' is accepted",
                    HINT_SMUGGLE,
                ));
            }
        }
    }
    let h2c = seen.any(Seen::UPGRADE)
        && headers.get_all(header::UPGRADE).iter().any(|v| {
            v.to_str()
                .map_or(true, |s| s.to_ascii_lowercase().contains("h2c"))
        });
    if h2c {
        return Err(ProxyError::bad_request(
            "Upgrade: h2c is refused (it would take the connection out of the proxy's view)",
            "speak HTTP/1.1 to the proxy, or HTTP/2 over TLS",
        ));
    }
    Ok(())
}

/// Content-Length with Transfer-Encoding: 400 `ambiguous_framing` (the connection is closed).
/// hyper lets Transfer-Encoding win and drops Content-Length before a request reaches us; the
/// listeners see both in the raw head (src/conn/framing.rs) and flag the connection.
pub fn ambiguous_framing() -> ProxyError {
    ProxyError::ambiguous(
        Ambiguity::Framing,
        "both Content-Length and Transfer-Encoding were sent",
        HINT_SMUGGLE,
    )
}

/// A request body whose chunked framing could not be read (a malformed chunk size): the
/// client's fault, 400 `ambiguous_framing`, not the upstream's 502.
pub fn malformed_body() -> ProxyError {
    ProxyError::ambiguous(
        Ambiguity::Framing,
        "the request body's chunked framing is malformed (a chunk size that is not hexadecimal, \
         or a chunk not ended by CRLF)",
        "send a well-formed chunked body (hexadecimal sizes, CRLF after each chunk) or a \
         Content-Length",
    )
}

/// Headers that ask a server to run another method than the request line's (bound once per
/// call: a const array is built wherever it is used).
const OVERRIDES: [HeaderName; 3] = [
    HeaderName::from_static("x-http-method-override"),
    HeaderName::from_static("x-method-override"),
    HeaderName::from_static("x-http-method"),
];

const HINT_OVERRIDE: &str = "send the method you mean in the request line; intentgate decides \
     the method it forwards and does not pass on method overrides that name another";

/// Refuses a method override (`X-HTTP-Method-Override`, `X-Method-Override`, `X-HTTP-Method`, or
/// a `_method` query parameter) that names another method than the request's own: the upstream
/// may run either, and the policy decided one. An override naming the request's own method is
/// harmless and passes. `seen`: the head's names (`head::summary`; usually none of them).
pub fn check_method_override(
    method: &http::Method,
    headers: &HeaderMap,
    query: Option<&str>,
    seen: Seen,
) -> Result<(), ProxyError> {
    let other = |v: &[u8]| {
        !v.trim_ascii()
            .eq_ignore_ascii_case(method.as_str().as_bytes())
    };
    // The names walked only when the summary saw one of them (usually none is there).
    if seen.any(Seen::OVERRIDE) {
        let overrides = OVERRIDES;
        for name in headers.keys().filter(|k| overrides.contains(k)) {
            if headers.get_all(name).iter().any(|v| other(v.as_bytes())) {
                return Err(ProxyError::ambiguous(
                    Ambiguity::Request,
                    format!(
                        "the method override header '{name}' names another method than {method}"
                    ),
                    HINT_OVERRIDE,
                ));
            }
        }
    }
    // `_method=`, also with `_` encoded, in any case; parameters split at `&` or `;`.
    for param in query.into_iter().flat_map(|q| q.split(['&', ';'])) {
        let (key, value) = param.split_once('=').unwrap_or((param, ""));
        let key = key.as_bytes();
        let named = key.eq_ignore_ascii_case(b"_method") || key.eq_ignore_ascii_case(b"%5fmethod");
        if named && other(value.as_bytes()) {
            return Err(ProxyError::ambiguous(
                Ambiguity::Request,
                format!("the query parameter '_method' names another method than {method}"),
                HINT_OVERRIDE,
            ));
        }
    }
    Ok(())
}

/// Whether a request of a body-less method (`BODYLESS`: GET, HEAD, OPTIONS, DELETE) carries a
/// body, which only a matched rule's `body_methods` allows.
pub fn body_on_bodyless<B: http_body::Body>(req: &http::Request<B>) -> bool {
    !req.body().is_end_stream() && crate::policy::catalog::BODYLESS.contains(req.method())
}

/// The refusal of a body no rule allows.
pub fn unexpected_body(method: &http::Method) -> ProxyError {
    ProxyError::ambiguous(
        Ambiguity::Request,
        format!(
            "a {method} request with a body is refused: an upstream that ignores the body reads it as the next request"
        ),
        "send the data with POST, PUT or PATCH, or ask the platform team for a rule with \
         body_methods for this method",
    )
}

/// Reads a single-valued header; two different values are refused (an agent must not be able to
/// smuggle a second intent past the first).
pub fn single_value<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
) -> Result<Option<&'a str>, ProxyError> {
    // Looked for among the names first: a request usually carries none of the headers asked
    // for here (intent, task, intent token).
    if !crate::head::any(headers, [name]) {
        return Ok(None);
    }
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.any(|v| v != first) {
        return Err(ProxyError::bad_request(
            format!("two different '{name}' headers on one request"),
            "send exactly one intent header per request",
        ));
    }
    let s = first.to_str().map_err(|_| {
        ProxyError::bad_request(
            format!("header '{name}' is not valid text"),
            "use plain ASCII names",
        )
    })?;
    let s = s.trim();
    Ok(if s.is_empty() { None } else { Some(s) })
}

#[cfg(test)]
#[path = "headers_tests.rs"]
mod tests;
