//! What a canonical host is as an IP literal, and the reader of a dotted-quad IPv4 literal.

use std::net::Ipv4Addr;

/// What a canonical host is as an IP literal. An IPv6 one is read again from the host where it
/// is needed (rare; carried in full, every authority would be 16 bytes larger).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Literal {
    Name,
    V4(Ipv4Addr),
    V6,
}

impl Literal {
    /// The literal `host` (a canonical host) is.
    pub(super) fn of(host: &str) -> Self {
        match ipv4_literal(host.as_bytes()) {
            Some(ip) => Literal::V4(ip),
            None if host.contains(':') => Literal::V6,
            None => Literal::Name,
        }
    }
}

/// `s` as std parses an `Ipv4Addr` (four decimal numbers up to 255 joined by dots, none with a
/// leading zero), number by number: std's parser costs ~170 instructions for `127.0.0.1`.
pub(crate) fn ipv4_literal(s: &[u8]) -> Option<Ipv4Addr> {
    ipv4_prefix(s).and_then(|(ip, rest)| rest.is_empty().then_some(ip))
}

/// The dotted-quad literal at the start of `s` (as `ipv4_literal` reads one), and the bytes
/// after it (which may go on with a digit or a dot: the caller looks).
#[inline(always)]
pub(super) fn ipv4_prefix(s: &[u8]) -> Option<(Ipv4Addr, &[u8])> {
    let (a, s) = octet(s)?;
    let (b, s) = octet(s.strip_prefix(b".")?)?;
    let (c, s) = octet(s.strip_prefix(b".")?)?;
    let (d, s) = octet(s.strip_prefix(b".")?)?;
    Some((Ipv4Addr::new(a, b, c, d), s))
}

/// The decimal number of one to three digits at the start of `s` (no leading zero, at most
/// 255), and the bytes after it.
#[inline(always)]
fn octet(s: &[u8]) -> Option<(u8, &[u8])> {
    let digit = |i: usize| (s.get(i)).and_then(|b| Some(b.wrapping_sub(b'0')).filter(|d| *d < 10));
    let a = digit(0)?;
    let Some(b) = digit(1) else {
        return Some((a, &s[1..]));
    };
    if a == 0 {
        return None;
    }
    let Some(c) = digit(2) else {
        return Some((a * 10 + b, &s[2..]));
    };
    // A fourth digit is left to the caller, which wants a dot or the end there.
    let n = u16::from(a) * 100 + u16::from(b) * 10 + u16::from(c);
    Some((u8::try_from(n).ok()?, &s[3..]))
}
