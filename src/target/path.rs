//! The canonical request path: decoded once, dot segments resolved, and every form that two
//! parsers could read as different paths refused.

use crate::error::{Ambiguity, ProxyError};

const HINT_PATH: &str = "send a plain path without encoded slashes, backslashes or NUL bytes";

const HINT_AMBIGUOUS: &str = "send the path exactly as the server should read it: no ';' \
     parameters on '.' or '..' segments, no double percent-encoding of '.', '/', '\\' or '%', \
     and percent-encoded bytes that are valid UTF-8";

/// Canonicalises a request path: percent-encoded unreserved characters are decoded once (`%25`
/// stays encoded), dot segments are resolved, and ambiguous forms (`%2F`, `%5C`, `%00`, raw
/// backslashes, control characters) are refused (400 `bad_request`), as are forms that some
/// upstreams read as another path (400 `ambiguous_request`): a `.`/`..` segment with `;`
/// parameters (`/..;/`, stripped by Java servers), a `%` encoded twice before `.`, `/`, `\`,
/// NUL or `%` (`%252e`: decoded twice by some), and bytes that are not UTF-8 (overlong `%c0%ae`).
pub fn canonical_path(raw: &str) -> Result<String, ProxyError> {
    if already_canonical(raw) {
        return Ok(raw.to_string());
    }
    canonicalise(raw)
}

pub(super) fn canonicalise(raw: &str) -> Result<String, ProxyError> {
    if !raw.starts_with('/') {
        return Err(ProxyError::bad_request(
            "the path must start with '/'",
            HINT_PATH,
        ));
    }
    let bytes = raw.as_bytes();
    let mut decoded = String::with_capacity(raw.len());
    // Whether any byte beyond ASCII was seen (then the decoded bytes must be UTF-8).
    let mut high = false;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'%' => {
                let hex = raw
                    .get(i + 1..i + 3)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| {
                        ProxyError::bad_request("malformed percent-encoding in the path", HINT_PATH)
                    })?;
                if hex == b'%' && double_encoded(raw.get(i + 3..i + 5)) {
                    return Err(ambiguous(format!(
                        "'{}' in the path is percent-encoded twice: a server that decodes twice reads it as another path",
                        &raw[i..i + 5]
                    )));
                }
                high |= hex >= 0x80;
                match hex {
                    b'/' | b'\\' | 0 => {
                        return Err(ProxyError::bad_request(
                            "encoded '/', '\\' or NUL in the path is ambiguous and refused",
                            HINT_PATH,
                        ));
                    }
                    c if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') => {
                        decoded.push(c as char)
                    }
                    _ => decoded.push_str(&raw[i..i + 3].to_ascii_uppercase()),
                }
                i += 3;
            }
            b'\\' => {
                return Err(ProxyError::bad_request(
                    "backslash in the path is refused",
                    HINT_PATH,
                ));
            }
            c if c < 0x21 || c == 0x7f => {
                return Err(ProxyError::bad_request(
                    "control character in the path",
                    HINT_PATH,
                ));
            }
            // Bytes beyond ASCII stay percent-encoded (upper case): the canonical form of a
            // path is ASCII, and canonicalising it again changes nothing (found by fuzzing).
            c if c >= 0x80 => {
                high = true;
                decoded.push_str(&format!("%{c:02X}"));
                i += 1;
            }
            _ => {
                decoded.push(b as char);
                i += 1;
            }
        }
    }
    if high {
        check_utf8(&decoded)?;
    }
    check_dot_parameters(&decoded)?;
    Ok(remove_dot_segments(&decoded))
}

fn ambiguous(reason: String) -> ProxyError {
    ProxyError::ambiguous(Ambiguity::Request, reason, HINT_AMBIGUOUS)
}

/// Whether the two characters after an encoded `%` are the hex code of `.`, `/`, `\`, NUL or
/// `%`: a second decoding would make them a dot segment, a separator, or another escape.
fn double_encoded(next: Option<&str>) -> bool {
    next.and_then(|h| u8::from_str_radix(h, 16).ok())
        .is_some_and(|c| matches!(c, b'.' | b'/' | b'\\' | 0 | b'%'))
}

/// Refuses a `.` or `..` segment carrying `;` parameters (`..;x`, also as `..%3B`): a server
/// that strips path parameters (Tomcat, Spring, Jetty) resolves it as a dot segment, this proxy
/// does not.
fn check_dot_parameters(decoded: &str) -> Result<(), ProxyError> {
    if !decoded.contains(';') && !decoded.contains("%3B") {
        return Ok(());
    }
    for segment in decoded.split('/') {
        let name = segment.split([';']).next().unwrap_or("");
        let name = name.split("%3B").next().unwrap_or("");
        if matches!(name, "." | "..") && name.len() < segment.len() {
            return Err(ambiguous(format!(
                "the path segment '{segment}' is a dot segment to servers that strip ';' parameters"
            )));
        }
    }
    Ok(())
}

/// Refuses a path whose decoded bytes are not UTF-8: an overlong form such as `%C0%AE` is `.`
/// to a lenient decoder and nothing to this proxy. `decoded` is ASCII with upper-case escapes.
fn check_utf8(decoded: &str) -> Result<(), ProxyError> {
    let b = decoded.as_bytes();
    let mut bytes = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = (b[i] == b'%')
            .then(|| decoded.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
            Some(c) => {
                bytes.push(c);
                i += 3;
            }
            None => {
                bytes.push(b[i]);
                i += 1;
            }
        }
    }
    match std::str::from_utf8(&bytes) {
        Ok(_) => Ok(()),
        Err(_) => Err(ambiguous(
            "the path's percent-encoded bytes are not valid UTF-8 (an overlong or broken sequence)"
                .into(),
        )),
    }
}

/// True when the full canonicalisation above would return `raw` unchanged (most requests): it
/// starts with `/`, is printable ASCII without `%` or `\\`, and has no `.` or `..` segment
/// (with or without `;` parameters). One pass, a byte's class looked up (`CLASS`).
pub(super) fn already_canonical(raw: &str) -> bool {
    let Some((b'/', rest)) = raw.as_bytes().split_first() else {
        return false;
    };
    // The current segment's name (up to a `;`) so far: `EMPTY`, `DOT`, `DOTS` or `OTHER`.
    let mut name = EMPTY;
    for &c in rest {
        match CLASS[usize::from(c)] {
            PLAIN => name = OTHER,
            // A dot segment ends (also one with `;` parameters, refused by the full path).
            SLASH | SEMI if matches!(name, DOT | DOTS) => return false,
            SLASH => name = EMPTY,
            SEMI => name = OTHER,
            // `...` is a name like any other.
            PERIOD => name = name.saturating_add(1).min(OTHER),
            _ => return false,
        }
    }
    !matches!(name, DOT | DOTS)
}

const EMPTY: u8 = 0;
const DOT: u8 = 1;
const DOTS: u8 = 2;
const OTHER: u8 = 3;

/// A path byte's class for `already_canonical`.
const PLAIN: u8 = 0;
const SLASH: u8 = 1;
const PERIOD: u8 = 2;
const SEMI: u8 = 3;
/// Never in a canonical path: controls, space, DEL, bytes beyond ASCII, `%` and `\\`.
const OUT: u8 = 4;
const CLASS: [u8; 256] = {
    let mut t = [OUT; 256];
    let mut c = 0x21;
    while c < 0x7f {
        t[c] = match c as u8 {
            b'/' => SLASH,
            b'.' => PERIOD,
            b';' => SEMI,
            b'%' | b'\\' => OUT,
            _ => PLAIN,
        };
        c += 1;
    }
    t
};

/// RFC 3986 §5.2.4 on an absolute path.
fn remove_dot_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path[1..].split('/').collect();
    let last = segments.len().saturating_sub(1);
    for (i, seg) in segments.iter().enumerate() {
        match *seg {
            "." => {
                if i == last {
                    out.push("");
                }
            }
            ".." => {
                out.pop();
                if i == last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    let mut s = String::with_capacity(path.len());
    for seg in &out {
        s.push('/');
        s.push_str(seg);
    }
    if s.is_empty() {
        s.push('/');
    }
    s
}
