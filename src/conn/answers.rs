//! The guard's own answers in place of hyper's (src/conn/guard.rs). hyper answers a request head
//! it cannot parse (bad request line, oversized head, URI too long) itself, with an empty body,
//! before our service ever runs: such an answer is recognised — a whole write that is exactly a
//! 400/414/431 head carrying nothing but `content-length: 0`, `date` and `connection`, which no
//! response of ours looks like (ours always carry `via` or `intentgate-*`) — and our JSON
//! refusal written in its place, so every answer a client gets from intentgate has the one error
//! shape (src/error.rs). And a head not read in time (src/conn/wait.rs) is answered 408.

use http::StatusCode;

use crate::error::{Blame, ErrorReply};
use crate::vocab::ErrorCode;

/// If `buf` is a whole head hyper wrote for its own error answer: its status (400, 414 or 431,
/// the only ones hyper answers with itself). Cheap (no allocation, the status looked at first):
/// it runs on every response head.
pub(super) fn bare_error_status(buf: &[u8]) -> Option<StatusCode> {
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
pub(super) fn replacement(buf: &[u8]) -> Option<Vec<u8>> {
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
    Some(client_reply(status, code, reason, hint))
}

/// The answer to a head not read in time.
pub(super) fn timed_out_reply() -> Vec<u8> {
    client_reply(
        StatusCode::REQUEST_TIMEOUT,
        ErrorCode::HeaderTimeout,
        "the request head did not arrive within the proxy's header-read timeout",
        "send the whole request head at once; the connection is closed",
    )
}

/// A refusal the guard writes itself (no request reached the service): the client's fault, a
/// fresh decision id, no agent or intent named.
fn client_reply(status: StatusCode, code: ErrorCode, reason: &str, hint: &str) -> Vec<u8> {
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
    .raw()
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
