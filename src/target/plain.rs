//! The usual authority read in one pass: a dotted quad or a lower-case DNS name, and a port,
//! already canonical (`parse_authority`'s fast path; anything else goes to its full reader).

use super::{Authority, Literal, ipv4_prefix, numeric_like};

/// The usual authority, already canonical: a dotted-quad IPv4 literal or a lower-case DNS name,
/// and a port (or none, for the default), read in one pass and copied once. `None` for any
/// other (upper case, IDNA, a trailing dot, brackets, userinfo, a bad port, …): `any_authority`
/// then reads it, and for the ones answered here it answers the same.
#[inline(always)]
pub(super) fn plain_authority(raw: &str, default_port: Option<u16>) -> Option<Authority> {
    let b = raw.as_bytes();
    let (end, literal) = match ipv4_prefix(b) {
        Some((ip, rest)) if matches!(rest.first(), None | Some(b':')) => {
            (b.len() - rest.len(), Literal::V4(ip))
        }
        _ => (plain_name(b)?, Literal::Name),
    };
    let port = match b.get(end + 1..) {
        None => default_port?,
        Some(p) => port_number(p)?,
    };
    Some(Authority {
        host: raw[..end].to_owned(),
        port,
        literal,
    })
}

/// Where a canonical DNS name at the start of `b` ends (at a `:` or the end): labels of 1 to 63
/// of `a-z`, `0-9`, `-`, `_`, none starting with `-`, at most 253 bytes, and a last label that
/// does not look numeric (`canonical_host`'s rules, for a name they leave as it is).
fn plain_name(b: &[u8]) -> Option<usize> {
    let (mut label, mut end) = (0, b.len());
    for (i, &c) in b.iter().enumerate() {
        match c {
            b'a'..=b'z' | b'0'..=b'9' | b'_' => {}
            b'-' if i > label => {}
            b'.' if i > label && i - label <= 63 => label = i + 1,
            b':' => {
                end = i;
                break;
            }
            _ => return None,
        }
    }
    let last = &b[label..end];
    if last.is_empty() || last.len() > 63 || end > 253 || numeric_like(last) {
        return None;
    }
    Some(end)
}

/// A port as `parse_port` reads one: one to five digits, 1 to 65535.
fn port_number(p: &[u8]) -> Option<u16> {
    if p.is_empty() || p.len() > 5 {
        return None;
    }
    let n = p.iter().try_fold(0u32, |n, &d| {
        d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0'))
    })?;
    u16::try_from(n).ok().filter(|&n| n != 0)
}
