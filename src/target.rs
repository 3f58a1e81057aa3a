//! The canonical request target: one parser for the authority and one for the path, used for
//! BOTH the policy decision and the forwarded request, so what is decided is what is sent.

mod literal;
mod path;
mod plain;

use std::borrow::Cow;
use std::net::IpAddr;

use http::Uri;

use crate::error::ProxyError;
pub(crate) use literal::ipv4_literal;
use literal::{Literal, ipv4_prefix};
pub use path::canonical_path;
use plain::plain_authority;

/// A canonical destination: lowercase ASCII host (IDNA → punycode, no trailing dot) and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authority {
    pub host: String,
    pub port: u16,
    /// What the host is as an IP literal, read where the host was (the vetting reads no literal
    /// twice). A function of `host`: equal hosts, equal literals.
    literal: Literal,
}

impl Authority {
    /// The authority of a canonical host (as `canonical_host` answers, or an address's text).
    pub fn new(host: String, port: u16) -> Self {
        let literal = Literal::of(&host);
        Authority {
            host,
            port,
            literal,
        }
    }

    /// The host's address when it is an IP literal: std's parse of `host`, without reading it.
    pub(crate) fn ip(&self) -> Option<IpAddr> {
        match self.literal {
            Literal::V4(ip) => Some(IpAddr::V4(ip)),
            Literal::V6 => self.host.parse().ok(),
            Literal::Name => None,
        }
    }

    /// `host:port`, with IPv6 literals in brackets.
    pub fn to_host_port(&self) -> String {
        // Built by hand: this runs on every request, and `format!` costs several times more.
        let mut s = String::with_capacity(self.host.len() + 8);
        if self.host.contains(':') {
            s.push('[');
            s.push_str(&self.host);
            s.push(']');
        } else {
            s.push_str(&self.host);
        }
        s.push(':');
        push_u16(&mut s, self.port);
        s
    }

    /// The value of a `Host` header for this authority (port omitted when it is the default).
    pub fn host_header(&self, default_port: u16) -> String {
        if self.port == default_port {
            if self.host.contains(':') {
                format!("[{}]", self.host)
            } else {
                self.host.clone()
            }
        } else {
            self.to_host_port()
        }
    }

    /// Whether `value` is exactly `host_header(default_port)` (compared without building it: an
    /// agent's `Host` usually is, and then it is kept as it is).
    pub fn is_host_header(&self, value: &[u8], default_port: u16) -> bool {
        let host = self.host.as_bytes();
        // An IPv6 literal (the only host with a `:`) is in brackets.
        let rest = match value.strip_prefix(b"[") {
            Some(v) => (v.strip_prefix(host)).and_then(|v| v.strip_prefix(b"]")),
            None => value.strip_prefix(host),
        };
        let Some(rest) = rest else {
            return false;
        };
        if (value.len() - rest.len() == host.len()) == host.contains(&b':') {
            return false;
        }
        if self.port == default_port {
            return rest.is_empty();
        }
        // `:` and the port in decimal, with no leading zero.
        match rest {
            [b':', b'1'..=b'9', digits @ ..] if digits.len() < 5 => {
                let n = rest[1..].iter().try_fold(0u32, |n, &d| {
                    d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0'))
                });
                n == Some(u32::from(self.port))
            }
            _ => false,
        }
    }
}

/// Appends `n` in decimal, without the formatting machinery.
pub(crate) fn push_u16(s: &mut String, n: u16) {
    if n >= 10 {
        push_u16(s, n / 10);
    }
    s.push(char::from(b'0' + (n % 10) as u8));
}

const HINT_TARGET: &str =
    "send an absolute URL such as http://api.example.com/path, or CONNECT host:port";

/// Parses `host[:port]` (as in an absolute URI or a CONNECT target).
pub fn parse_authority(raw: &str, default_port: Option<u16>) -> Result<Authority, ProxyError> {
    match plain_authority(raw, default_port) {
        Some(authority) => Ok(authority),
        None => any_authority(raw, default_port),
    }
}

/// Whether a host's last label looks like a number (decimal, or hex with `0x`): such a host must
/// be a canonical dotted quad.
fn numeric_like(last: &[u8]) -> bool {
    last.iter().all(u8::is_ascii_digit)
        || (last.strip_prefix(b"0x")).is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
}

/// `parse_authority` for any authority: userinfo refused, IPv6 literals, IDNA, upper case.
fn any_authority(raw: &str, default_port: Option<u16>) -> Result<Authority, ProxyError> {
    if raw.is_empty() {
        return Err(ProxyError::bad_request(
            "the request target has no host",
            HINT_TARGET,
        ));
    }
    // One pass over the bytes (this runs on every request): any `@`, the first and the last `:`.
    let (mut at, mut first_colon, mut last_colon) = (false, None, None);
    for (i, &b) in raw.as_bytes().iter().enumerate() {
        match b {
            b'@' => at = true,
            b':' => {
                first_colon = first_colon.or(Some(i));
                last_colon = Some(i);
            }
            _ => {}
        }
    }
    if at {
        return Err(ProxyError::bad_request(
            "credentials (userinfo) in the request target are refused",
            "remove 'user@' from the URL; send credentials in headers",
        ));
    }
    // The host as written (borrowed), or an IPv6 literal's canonical text.
    let (host_raw, port_raw): (Cow<'_, str>, _) = if let Some(rest) = raw.strip_prefix('[') {
        let end = rest.find(']').ok_or_else(|| {
            ProxyError::bad_request(
                "unterminated IPv6 literal in the request target",
                HINT_TARGET,
            )
        })?;
        let after = &rest[end + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => {
                return Err(ProxyError::bad_request(
                    "malformed authority in the request target",
                    HINT_TARGET,
                ));
            }
        };
        let ip: std::net::Ipv6Addr = rest[..end].parse().map_err(|_| {
            ProxyError::bad_request("invalid IPv6 literal in the request target", HINT_TARGET)
        })?;
        // An IPv4-mapped address is that IPv4 address: `[::ffff:127.0.0.1]` is `127.0.0.1` to
        // the policy and the dialler. (The deprecated IPv4-compatible `[::a.b.c.d]` reaches no
        // IPv4 host on Linux; it stays IPv6, and egress compares it as `a.b.c.d` all the same.)
        match ip.to_ipv4_mapped() {
            Some(v4) => (Cow::Owned(v4.to_string()), port),
            None => (Cow::Owned(ip.to_string()), port),
        }
    } else {
        // A colon left in the host means an unbracketed IPv6 literal or garbage: both refused
        // (found by fuzzing: `x:ffff:127.0.0.1]:443` must never pass as a host).
        if first_colon != last_colon {
            return Err(ProxyError::bad_request(
                "IPv6 addresses in a request target must be in brackets, e.g. [2001:db8::1]:443",
                HINT_TARGET,
            ));
        }
        match last_colon {
            Some(i) => (Cow::Borrowed(&raw[..i]), Some(&raw[i + 1..])),
            None => (Cow::Borrowed(raw), None),
        }
    };
    let port = match port_raw {
        Some(p) => parse_port(p)?,
        None => default_port.ok_or_else(|| {
            ProxyError::bad_request("the target needs an explicit port (host:port)", HINT_TARGET)
        })?,
    };
    let (host, literal) = match host_raw {
        Cow::Owned(ipv6) if ipv6.contains(':') => (ipv6, Literal::V6), // already canonical
        host_raw => canonical(&host_raw)?,
    };
    Ok(Authority {
        host,
        port,
        literal,
    })
}

fn parse_port(p: &str) -> Result<u16, ProxyError> {
    let bad = || {
        ProxyError::bad_request(
            format!("invalid port '{p}' in the request target"),
            HINT_TARGET,
        )
    };
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    // At most five decimal digits: no overflow in a u32.
    let n = (p.bytes()).fold(0u32, |n, d| n * 10 + u32::from(d - b'0'));
    match u16::try_from(n) {
        Ok(0) | Err(_) => Err(bad()),
        Ok(n) => Ok(n),
    }
}

/// Lowercases, removes one trailing dot, converts IDNA to punycode and refuses anything that is not
/// a plain DNS name or a canonical dotted-quad IPv4 literal.
pub fn canonical_host(raw: &str) -> Result<String, ProxyError> {
    canonical(raw).map(|(host, _)| host)
}

/// `canonical_host`, and what the host is as an IP literal (an IPv6 one is refused here).
fn canonical(raw: &str) -> Result<(String, Literal), ProxyError> {
    let trimmed = raw.strip_suffix('.').unwrap_or(raw);
    if trimmed.is_empty() || trimmed.len() > 253 {
        return Err(ProxyError::bad_request(
            "invalid host name in the request target",
            HINT_TARGET,
        ));
    }
    // A dotted-quad literal is already canonical (std parses only four decimal numbers without
    // leading zeros): the usual case of a pod calling a cluster IP, checked first.
    if let Some(ip) = ipv4_literal(trimmed.as_bytes()) {
        return Ok((trimmed.to_string(), Literal::V4(ip)));
    }
    let ascii = if trimmed.is_ascii() {
        trimmed.to_ascii_lowercase()
    } else {
        idna::domain_to_ascii(trimmed)
            .map_err(|_| ProxyError::bad_request("host name is not valid IDNA", HINT_TARGET))?
    };
    let valid = ascii.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !label.starts_with('-')
    });
    if !valid {
        return Err(ProxyError::bad_request(
            format!("invalid host name '{raw}' in the request target"),
            HINT_TARGET,
        ));
    }
    // Anything that looks numeric must be a canonical dotted quad: `2130706433`, `0x7f.1`,
    // `0177.0.0.1` and `127.1` are all ways to hide an address from a name-based rule.
    let last = ascii.rsplit('.').next().unwrap_or("");
    if !numeric_like(last.as_bytes()) {
        return Ok((ascii, Literal::Name));
    }
    match ipv4_literal(ascii.as_bytes()) {
        Some(ip) => Ok((ascii, Literal::V4(ip))),
        None => Err(ProxyError::bad_request(
            format!("non-canonical IP address literal '{raw}' is refused"),
            "write IPv4 addresses as four decimal numbers, e.g. 192.0.2.1",
        )),
    }
}

/// The canonical authority, path and raw query of an absolute-form request target.
pub fn absolute_target(uri: &Uri) -> Result<(Authority, String, Option<String>), ProxyError> {
    match uri.scheme_str() {
        None => return Err(ProxyError::NotAProxyRequest),
        Some("http") => {}
        Some("https") => {
            return Err(ProxyError::bad_request(
                "https:// targets must be tunnelled with CONNECT",
                "set HTTPS_PROXY so your client sends CONNECT host:443 for https URLs",
            ));
        }
        Some(other) => {
            return Err(ProxyError::bad_request(
                format!("unsupported scheme '{other}'"),
                "only http:// (forwarded) and CONNECT (tunnelled) are supported",
            ));
        }
    }
    let raw = uri.authority().map(|a| a.as_str()).unwrap_or_default();
    let authority = parse_authority(raw, Some(80))?;
    let path = canonical_path(uri.path())?;
    Ok((authority, path, uri.query().map(str::to_string)))
}

/// A `Host` header that names another destination than the request target is refused: the
/// decision and the upstream must see the same host.
pub fn check_host_header(
    headers: &http::HeaderMap,
    authority: &Authority,
) -> Result<(), ProxyError> {
    let Some(value) = headers.get(http::header::HOST) else {
        return Ok(());
    };
    let host = value
        .to_str()
        .ok()
        .and_then(|v| parse_authority(v, Some(80)).ok());
    if host.as_ref() != Some(authority) {
        return Err(ProxyError::bad_request(
            "the Host header does not match the request target",
            "send the same host in the URL and the Host header (or omit Host)",
        ));
    }
    Ok(())
}

/// `check_host_header` for an absolute-form request, given the head's first `Host` (the one
/// `get` answers; `head::summary` found it): a `Host` spelled exactly like the target's
/// authority (the usual case) names the same destination, without parsing it a second time.
pub(crate) fn check_host_of(
    uri: &Uri,
    host: Option<&http::HeaderValue>,
    headers: &http::HeaderMap,
    authority: &Authority,
) -> Result<(), ProxyError> {
    let raw = uri.authority().map(|a| a.as_str().as_bytes());
    match host {
        Some(v) if Some(v.as_bytes()) == raw => Ok(()),
        _ => check_host_header(headers, authority),
    }
}

#[cfg(test)]
#[path = "target_tests.rs"]
pub(crate) mod tests;
