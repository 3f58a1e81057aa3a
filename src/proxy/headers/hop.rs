//! A head passed on, rewritten: hop-by-hop headers removed (RFC 9110 §7.6.1), with every
//! header `Connection` names; the agent's own intentgate and identity headers stripped; this hop
//! added to `Via`. One pass over the names finds what is there (usually nothing to remove).

use http::header::{self, Entry, HeaderMap, HeaderName, HeaderValue};

use super::{OWN_PREFIX, Seen, VIA, list_tokens};

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
/// each of the headers of every request and response. (Telling them apart by the name's length
/// first, through `as_str`, cost twice as much.)
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

/// What one pass over a head's names found: which of `HOP_BY_HOP` are there, whether the agent
/// claims something (`strip_agent_claims`'s names, when `extra` is given), and whether there
/// is a `Via`.
#[derive(Default)]
struct Found {
    hops: u8,
    claims: bool,
    via: bool,
}

/// One pass over the names (compared, not hashed; the values are not visited).
fn scan(headers: &HeaderMap, claims: Option<&[HeaderName]>) -> Found {
    let mut f = Found::default();
    for k in headers.keys() {
        match hop_index(k) {
            Some(i) => f.hops |= 1 << i,
            None => {
                f.via |= k == header::VIA;
                f.claims |= claims.is_some_and(|extra| claimed(k, extra));
            }
        }
    }
    f
}

/// Whether a `Connection` value is `keep-alive` alone (the usual one: it names no header).
fn keep_alive(v: &HeaderValue) -> bool {
    v.as_bytes()
        .trim_ascii()
        .eq_ignore_ascii_case(b"keep-alive")
}

/// Whether `k` is one of the agent's claims `strip_agent_claims` removes.
fn claimed(k: &HeaderName, extra: &[HeaderName]) -> bool {
    k.as_str().starts_with(OWN_PREFIX) || extra.contains(k)
}

/// Removes hop-by-hop headers, including every header named in `Connection`.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let found = scan(headers, None);
    remove_found(headers, &found);
}

/// `remove_hop_by_hop` and then `add_via`, with one pass over the names (a response's).
pub fn remove_hop_by_hop_add_via(headers: &mut HeaderMap) {
    let found = scan(headers, None);
    remove_found(headers, &found);
    // A `Via` that `Connection` named is gone: `add_via_after` then finds none and adds one.
    add_via_after(headers, found.via);
}

/// `remove_hop_by_hop` and then `strip_agent_claims`, with one pass over the names (a request's).
/// `seen`: the head's names as `head::summary` found them, given `extra` among its `named`
/// (`Seen::ALL` if unknown): usually neither a hop-by-hop name nor a claim is there, and then the
/// names are not walked again.
pub fn remove_hop_by_hop_and_claims(headers: &mut HeaderMap, extra: &[HeaderName], seen: Seen) {
    if !seen.any(Seen::HOP | Seen::OWN | Seen::NAMED) {
        return;
    }
    let found = scan(headers, Some(extra));
    remove_found(headers, &found);
    if found.claims {
        strip_agent_claims(headers, extra);
    }
}

/// Removes what `scan` found: usually nothing, or only `connection`, so one name is looked up
/// and removed instead of eight.
fn remove_found(headers: &mut HeaderMap, found: &Found) {
    let present = found.hops;
    if present & 1 != 0 {
        remove_connection(headers);
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

/// Removes `Connection` and every header it names. Usually its only value is `keep-alive`: then
/// it is looked up once, its values read and removed through the one entry (not `get_all` and
/// `remove`, two lookups).
fn remove_connection(headers: &mut HeaderMap) {
    let Entry::Occupied(connection) = headers.entry(header::CONNECTION) else {
        return;
    };
    if connection.iter().all(keep_alive) {
        connection.remove();
        return;
    }
    // Names in HOP_BY_HOP are removed by `remove_found` anyway: a list of only such names
    // allocates nothing here.
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
    headers.remove(header::CONNECTION);
}

/// Appends this hop to `Via`.
pub fn add_via(headers: &mut HeaderMap) {
    // Usually there is none: looked for among the names first.
    let via = crate::head::any(headers, [&header::VIA]);
    add_via_after(headers, via);
}

/// `add_via`, once the names were looked through (`via`: whether one of them is `Via`).
pub(crate) fn add_via_after(headers: &mut HeaderMap, via: bool) {
    if !via {
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
        .filter(|k| claimed(k, extra))
        .cloned()
        .collect();
    for name in present {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use http::header::{HeaderMap, HeaderValue};

    use super::{HOP_BY_HOP, remove_hop_by_hop_and_claims};
    use crate::head::{Seen, summary};

    /// Step 7 is skipped when step 1's summary saw no hop-by-hop name: every name this list
    /// removes must be one the summary notes as `Seen::HOP` (a name added here and not there
    /// would travel upstream), and with that summary it is removed.
    #[test]
    fn every_hop_by_hop_name_is_seen_by_the_summary_and_removed() {
        for name in HOP_BY_HOP {
            let mut h = HeaderMap::new();
            h.insert(name.clone(), HeaderValue::from_static("x"));
            h.insert("accept", HeaderValue::from_static("*/*"));
            let seen = summary(&h, &[]).seen;
            assert!(seen.any(Seen::HOP), "{name}");
            remove_hop_by_hop_and_claims(&mut h, &[], seen);
            assert!(!h.contains_key(&name), "{name} kept");
            assert!(h.contains_key("accept"));
        }
    }
}
