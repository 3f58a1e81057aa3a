//! A request's or response's head read by its names: walked in order and compared, not hashed
//! (a head has a few names, and a request usually carries none of those looked for, where `get`
//! and `contains_key` hash the name first, byte by byte for a custom one). `summary` is the one
//! pass over a request's names at the pipeline's first step: what it found is consulted by the
//! later steps instead of walking the names again. Layer 0: imports nothing of the crate (the
//! proxy's header steps and `target`'s `Host` check use it).

use http::header::{HeaderMap, HeaderName, HeaderValue};

/// Whether one of the head's names is one of `names` (a const count: the comparisons unrolled).
#[inline]
pub(crate) fn any<const N: usize>(headers: &HeaderMap, names: [&HeaderName; N]) -> bool {
    headers.keys().any(|k| names.contains(&k))
}

/// The prefix of every header that speaks for intentgate: agents may not send them upstream
/// (step 7 strips them; step 1's summary notes them as `Seen::OWN`).
pub(crate) const OWN_PREFIX: &str = "intentgate-";

/// Which kinds of names one pass over a head found (`summary`): a set of the consts below.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Seen(u16);

impl Seen {
    pub(crate) const TRANSFER_ENCODING: u16 = 1;
    pub(crate) const CONTENT_LENGTH: u16 = 1 << 1;
    pub(crate) const UPGRADE: u16 = 1 << 2;
    pub(crate) const CONNECTION: u16 = 1 << 3;
    pub(crate) const HOST: u16 = 1 << 4;
    pub(crate) const VIA: u16 = 1 << 5;
    /// `X-HTTP-Method-Override`, `X-Method-Override` or `X-HTTP-Method`.
    pub(crate) const OVERRIDE: u16 = 1 << 6;
    /// A hop-by-hop name (RFC 9110 §7.6.1): `Connection`, `Proxy-Connection`, `Keep-Alive`,
    /// `TE`, `Trailer`, `Upgrade`, `Proxy-Authorization`, `Proxy-Authenticate`.
    pub(crate) const HOP: u16 = 1 << 7;
    /// A name that starts with `intentgate-`.
    pub(crate) const OWN: u16 = 1 << 8;
    /// One of the names `summary` was given.
    pub(crate) const NAMED: u16 = 1 << 9;

    /// Whether one of `kinds` was seen.
    #[inline]
    pub(crate) fn any(self, kinds: u16) -> bool {
        self.0 & kinds != 0
    }

    /// Everything: a head not looked through (each step then looks for itself).
    pub(crate) const ALL: Seen = Seen(u16::MAX);
}

/// What one pass over a request head found.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Summary<'a> {
    pub(crate) seen: Seen,
    /// The head's size as the limits count it: each name and value and 4 bytes a line (`: `
    /// and CRLF), for every value of a repeated name.
    pub(crate) bytes: usize,
    /// The first `Host`'s value (the one `get` answers).
    pub(crate) host: Option<&'a HeaderValue>,
}

/// The kind of a name, from its text (one comparison of the length, then of the bytes: cheaper
/// than comparing the name with each of ours, and the text is read for the head's size anyway).
#[inline]
fn kind(n: &[u8]) -> u16 {
    match n.len() {
        2 if n == b"te" => Seen::HOP,
        3 if n == b"via" => Seen::VIA,
        4 if n == b"host" => Seen::HOST,
        7 if n == b"upgrade" => Seen::UPGRADE | Seen::HOP,
        7 if n == b"trailer" => Seen::HOP,
        10 if n == b"connection" => Seen::CONNECTION | Seen::HOP,
        10 if n == b"keep-alive" => Seen::HOP,
        13 if n == b"x-http-method" => Seen::OVERRIDE,
        14 if n == b"content-length" => Seen::CONTENT_LENGTH,
        16 if n == b"proxy-connection" => Seen::HOP,
        17 if n == b"transfer-encoding" => Seen::TRANSFER_ENCODING,
        17 if n == b"x-method-override" => Seen::OVERRIDE,
        18 if n == b"proxy-authenticate" => Seen::HOP,
        19 if n == b"proxy-authorization" => Seen::HOP,
        22 if n == b"x-http-method-override" => Seen::OVERRIDE,
        l if l >= OWN_PREFIX.len() && n.starts_with(OWN_PREFIX.as_bytes()) => Seen::OWN,
        _ => 0,
    }
}

/// One pass over a request head: its size, its first `Host`, and which kinds of names it has;
/// `named` (usually empty) are further names to note as `Seen::NAMED`.
pub(crate) fn summary<'a>(headers: &'a HeaderMap, named: &[HeaderName]) -> Summary<'a> {
    let (mut seen, mut bytes, mut host) = (0, 0, None);
    for (k, v) in headers {
        let n = k.as_str().as_bytes();
        bytes += n.len() + v.len();
        let kind = kind(n);
        if kind & Seen::HOST != 0 && host.is_none() {
            host = Some(v);
        }
        seen |= kind;
        if !named.is_empty() && named.contains(k) {
            seen |= Seen::NAMED;
        }
    }
    Summary {
        seen: Seen(seen),
        bytes: bytes + 4 * headers.len(),
        host,
    }
}

#[cfg(test)]
mod tests {
    use http::header::{self, HeaderMap, HeaderName, HeaderValue};

    use super::{OWN_PREFIX, Seen, any, summary};

    fn head(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            let k = HeaderName::from_bytes(k.as_bytes()).unwrap();
            h.append(k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    /// Absent, present once, present twice, spelled in another case (a name is read in lower
    /// case), among standard and custom names: the same answers as `contains_key`.
    #[test]
    fn names_are_found_as_the_map_finds_them() {
        let intent = HeaderName::from_static("x-intent");
        let task = HeaderName::from_static("x-task");
        let heads = [
            head(&[]),
            head(&[("accept", "*/*"), ("user-agent", "oha")]),
            head(&[
                ("accept", "*/*"),
                ("Host", "a.test"),
                ("X-Intent", "triage"),
            ]),
            head(&[("host", "a.test"), ("x-intent", "one"), ("X-INTENT", "two")]),
            head(&[("x-task", "t"), ("HOST", "b.test:80"), ("host", "c.test")]),
            head(&[
                ("connection", "keep-alive"),
                ("x-intentx", "no"),
                ("x-inten", "no"),
            ]),
        ];
        for h in &heads {
            for name in [
                &header::HOST,
                &header::CONNECTION,
                &header::VIA,
                &intent,
                &task,
            ] {
                assert_eq!(any(h, [name]), h.contains_key(name), "{name} in {h:?}");
            }
            let either = h.contains_key(&intent) || h.contains_key(&task);
            assert_eq!(any(h, [&intent, &task]), either, "{h:?}");
            assert_eq!(any(h, [&task, &header::VIA, &intent]), either, "{h:?}");
        }
        assert!(!any(&heads[1], []));
        assert_eq!(summary(&heads[4], &[]).host.unwrap(), "b.test:80");
        assert!(any(
            &heads[3],
            [&HeaderName::from_bytes(b"X-Intent").unwrap()]
        ));
        assert!(!any(&heads[5], [&intent]));
    }

    /// The names each kind stands for, as the map finds them.
    fn kinds() -> Vec<(u16, Vec<HeaderName>)> {
        let names = |l: &[&'static str]| l.iter().map(|n| HeaderName::from_static(n)).collect();
        vec![
            (Seen::TRANSFER_ENCODING, names(&["transfer-encoding"])),
            (Seen::CONTENT_LENGTH, names(&["content-length"])),
            (Seen::UPGRADE, names(&["upgrade"])),
            (Seen::CONNECTION, names(&["connection"])),
            (Seen::HOST, names(&["host"])),
            (Seen::VIA, names(&["via"])),
            (
                Seen::OVERRIDE,
                names(&[
                    "x-http-method-override",
                    "x-method-override",
                    "x-http-method",
                ]),
            ),
            (
                Seen::HOP,
                names(&[
                    "connection",
                    "proxy-connection",
                    "keep-alive",
                    "te",
                    "trailer",
                    "upgrade",
                    "proxy-authorization",
                    "proxy-authenticate",
                ]),
            ),
        ]
    }

    /// The summary agrees with the map's own answers on tricky heads: each kind seen exactly when
    /// `contains_key` finds one of its names, `Seen::OWN` when a name starts with `intentgate-`,
    /// `Seen::NAMED` when one of the given names is there, the size the sum over every value, and
    /// the `Host` the one `get` answers (repeated names, upper case, near misses, many headers).
    #[test]
    fn the_summary_agrees_with_the_map() {
        let mut heads = vec![
            head(&[]),
            head(&[
                ("accept", "*/*"),
                ("accept-encoding", "gzip, compress, deflate, br"),
                ("user-agent", "oha/1.16.0"),
                ("host", "127.0.0.1:8080"),
            ]),
            head(&[
                ("Host", "a.test"),
                ("HOST", "b.test"),
                ("Transfer-Encoding", "chunked"),
                ("Content-Length", "3"),
                ("content-length", "4"),
            ]),
            head(&[
                ("connection", "keep-alive, Upgrade"),
                ("Upgrade", "websocket"),
                ("TE", "trailers"),
                ("trailer", "x"),
                ("Keep-Alive", "5"),
                ("proxy-connection", "close"),
                ("proxy-authorization", "Basic x"),
                ("proxy-authenticate", "y"),
                ("via", "1.1 other"),
            ]),
            head(&[
                ("X-HTTP-Method-Override", "PUT"),
                ("x-method-override", "PUT"),
                ("x-http-method", "PUT"),
                ("intentgate-intent", "triage"),
                ("x-agent-id", "root"),
            ]),
            head(&[
                ("intentgate-", "x"),
                ("intentgate", "x"),
                ("intentgatex-a", "x"),
                ("x-intentgate-a", "x"),
                ("tE", "x"),
                ("vias", "x"),
                ("hosts", "x"),
                ("upgrades", "x"),
                ("connections", "x"),
                ("keep-alive2", "x"),
                ("x-http-methods", "x"),
                ("content-lengths", "x"),
                ("transfer-encodings", "x"),
                ("proxy-authorizations", "x"),
                ("x-http-method-overridden", "x"),
                ("trailers", "x"),
                ("x-agent", "x"),
            ]),
            head(&[("x-agent-id", "a"), ("X-Agent-Id", "b"), ("host", "")]),
        ];
        // Many headers, each name repeated.
        let mut many = HeaderMap::new();
        for i in 0..120 {
            let k = HeaderName::from_bytes(format!("x-h{}", i % 40).as_bytes()).unwrap();
            many.append(k, HeaderValue::from_str(&"v".repeat(i)).unwrap());
        }
        many.append(header::HOST, HeaderValue::from_static("late.test"));
        heads.push(many);
        let named = [
            HeaderName::from_static("x-agent-id"),
            HeaderName::from_static("host"),
        ];
        for h in &heads {
            for given in [&named[..], &named[..1], &[]] {
                let s = summary(h, given);
                for (kind, names) in kinds() {
                    let there = names.iter().any(|n| h.contains_key(n));
                    assert_eq!(s.seen.any(kind), there, "{kind:#b} in {h:?}");
                }
                let own = h.keys().any(|k| k.as_str().starts_with(OWN_PREFIX));
                assert_eq!(s.seen.any(Seen::OWN), own, "{h:?}");
                let is_named = given.iter().any(|n| h.contains_key(n));
                assert_eq!(s.seen.any(Seen::NAMED), is_named, "{given:?} in {h:?}");
                let bytes: usize = h.iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum();
                assert_eq!(s.bytes, bytes, "{h:?}");
                assert_eq!(s.host, h.get(header::HOST), "{h:?}");
            }
        }
        assert!(Seen::ALL.any(Seen::NAMED) && !Seen::default().any(u16::MAX));
    }
}
