//! Header rewriting: hop-by-hop removal (RFC 9110 §7.6.1), `Via`, the agent's own intentgate and
//! identity headers stripped, and intentgate's tags added.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::error::{Ambiguity, ProxyError};

/// Headers that describe one hop and never travel further (`hop_index` tells them apart).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    PROXY_CONNECTION,
    KEEP_ALIVE,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
];
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

/// `k`'s index in `HOP_BY_HOP`, compared name by name: no array is built (and dropped) for
/// each of the headers of every request and response.
fn hop_index(k: &HeaderName) -> Option<usize> {
    let i = if *k == header::CONNECTION {
        0
    } else if *k == PROXY_CONNECTION {
        1
    } else if *k == KEEP_ALIVE {
        2
    } else if *k == header::TE {
        3
    } else if *k == header::TRAILER {
        4
    } else if *k == header::UPGRADE {
        5
    } else if *k == header::PROXY_AUTHORIZATION {
        6
    } else if *k == header::PROXY_AUTHENTICATE {
        7
    } else {
        return None;
    };
    Some(i)
}

/// The prefix of every header that speaks for intentgate; agents may not send them upstream.
pub const OWN_PREFIX: &str = "intentgate-";

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

/// Removes hop-by-hop headers, including every header named in `Connection`.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // Which of HOP_BY_HOP are present, in one pass over the names (compared, not hashed): usually
    // none or only `connection`, so one name is looked up and removed instead of eight.
    let mut present = 0u8;
    for k in headers.keys() {
        if let Some(i) = hop_index(k) {
            present |= 1 << i;
        }
    }
    // Every header `Connection` names goes too. Names in HOP_BY_HOP are removed below anyway:
    // a `Connection: keep-alive` (the usual value) is not split into tokens, and a list of only
    // such names allocates nothing here.
    if present & 1 != 0 && !only_keep_alive(headers) {
        let other = |t: &&str| {
            !HOP_BY_HOP
                .iter()
                .any(|h| h.as_str().eq_ignore_ascii_case(t))
        };
        let named: Vec<HeaderName> = list_tokens(headers, header::CONNECTION)
            .filter(other)
            .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    if present & 1 != 0 {
        headers.remove(header::CONNECTION);
    }
    // The rest only when one is there (the array is built only then).
    if present > 1 {
        for (i, name) in HOP_BY_HOP.into_iter().enumerate().skip(1) {
            if present & (1 << i) != 0 {
                headers.remove(name);
            }
        }
    }
}

/// Whether every `Connection` value is `keep-alive` alone.
fn only_keep_alive(headers: &HeaderMap) -> bool {
    (headers.get_all(header::CONNECTION).iter()).all(|v| {
        v.as_bytes()
            .trim_ascii()
            .eq_ignore_ascii_case(b"keep-alive")
    })
}

/// Appends this hop to `Via`.
pub fn add_via(headers: &mut HeaderMap) {
    // Usually there is none: looked for among the names first (compared, not hashed).
    if !headers.keys().any(|k| k == header::VIA) {
        headers.insert(header::VIA, HeaderValue::from_static(VIA));
        return;
    }
    let value = match headers.get(header::VIA).and_then(|v| v.to_str().ok()) {
        Some(prev) => HeaderValue::from_str(&format!("{prev}, {VIA}")).ok(),
        None => Some(HeaderValue::from_static(VIA)),
    };
    if let Some(v) = value {
        headers.insert(header::VIA, v);
    }
}

/// Removes every `intentgate-*` header and every configured identity header the agent sent:
/// they are never trusted and never forwarded.
pub fn strip_agent_claims(headers: &mut HeaderMap, extra: &[HeaderName]) {
    // One pass over the names (compared, not hashed): usually none of them is there, and then
    // nothing is looked up, removed or allocated.
    let present: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with(OWN_PREFIX) || extra.contains(k))
        .cloned()
        .collect();
    for name in present {
        headers.remove(name);
    }
}

/// Enforces our header limits before anything else reads the headers, so an oversized head gets
/// our JSON 431 rather than hyper's bare one (hyper's own limit sits above ours as a backstop).
pub fn check_limits(
    headers: &HeaderMap,
    max_bytes: usize,
    max_count: usize,
) -> Result<(), ProxyError> {
    if headers.len() > max_count {
        return Err(ProxyError::HeadersTooLarge(format!(
            "{} headers, at most {max_count} allowed",
            headers.len()
        )));
    }
    let total: usize = headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
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
/// chunked, unknown or lowercase methods, and `Upgrade: h2c`.
pub fn check_framing(method: &http::Method, headers: &HeaderMap) -> Result<(), ProxyError> {
    if !METHODS.contains(&method.as_str()) {
        return Err(ProxyError::bad_request(
            format!("method '{method}' is not supported"),
            "use one of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS (upper case)",
        ));
    }
    // One pass over the names (compared, not hashed): usually neither header is there, and
    // then none is looked up.
    let (mut te, mut cl, mut upgrade) = (false, false, false);
    for k in headers.keys() {
        te |= k == header::TRANSFER_ENCODING;
        cl |= k == header::CONTENT_LENGTH;
        upgrade |= k == header::UPGRADE;
    }
    if te && cl {
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
    let h2c = upgrade
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
/// harmless and passes.
pub fn check_method_override(
    method: &http::Method,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<(), ProxyError> {
    let other = |v: &[u8]| {
        !v.trim_ascii()
            .eq_ignore_ascii_case(method.as_str().as_bytes())
    };
    // One pass over the names (compared, not hashed): usually none of them is there.
    let overrides = OVERRIDES;
    for name in headers.keys().filter(|k| overrides.contains(k)) {
        if headers.get_all(name).iter().any(|v| other(v.as_bytes())) {
            return Err(ProxyError::ambiguous(
                Ambiguity::Request,
                format!("the method override header '{name}' names another method than {method}"),
                HINT_OVERRIDE,
            ));
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
    // Looked for among the names first (compared, not hashed): a request usually carries none
    // of the headers asked for here (intent, task, intent token).
    if !headers.keys().any(|k| k == name) {
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
