//! A header found among a request's or response's names: walked in order and compared, not
//! hashed. A head has a few names and a request usually carries none of those looked for, where
//! `get` and `contains_key` hash the name first (byte by byte for a custom one). Layer 0:
//! imports nothing of the crate (the proxy's header steps and `target`'s `Host` check use it).

use http::header::{HeaderMap, HeaderName, HeaderValue};

/// Whether one of the head's names is one of `names` (a const count: the comparisons unrolled).
#[inline]
pub(crate) fn any<const N: usize>(headers: &HeaderMap, names: [&HeaderName; N]) -> bool {
    headers.keys().any(|k| names.contains(&k))
}

/// The value of the head's first `name` (the one `get` answers).
#[inline]
pub(crate) fn first<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a HeaderValue> {
    headers.iter().find_map(|(k, v)| (k == name).then_some(v))
}

#[cfg(test)]
mod tests {
    use http::header::{self, HeaderMap, HeaderName, HeaderValue};

    use super::{any, first};

    fn head(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            let k = HeaderName::from_bytes(k.as_bytes()).unwrap();
            h.append(k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    /// Absent, present once, present twice, spelled in another case (a name is read in lower
    /// case), among standard and custom names: the same answers as `contains_key` and `get`.
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
                assert_eq!(first(h, name), h.get(name), "{name} in {h:?}");
            }
            let either = h.contains_key(&intent) || h.contains_key(&task);
            assert_eq!(any(h, [&intent, &task]), either, "{h:?}");
            assert_eq!(any(h, [&task, &header::VIA, &intent]), either, "{h:?}");
        }
        assert!(!any(&heads[1], []));
        assert_eq!(first(&heads[3], &intent).unwrap(), "one");
        assert_eq!(first(&heads[4], &header::HOST).unwrap(), "b.test:80");
        assert!(any(
            &heads[3],
            [&HeaderName::from_bytes(b"X-Intent").unwrap()]
        ));
        assert!(!any(&heads[5], [&intent]));
    }
}
