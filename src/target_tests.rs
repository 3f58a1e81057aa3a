//! Tests of the canonical request target: authorities, paths, the Host header check.

use super::*;
use crate::vocab::ErrorCode;

#[test]
fn host_header_of_an_absolute_target() {
    let uri: Uri = "http://API.example.com:8080/x".parse().unwrap();
    let a = absolute_target(&uri).unwrap().0;
    let mut h = http::HeaderMap::new();
    for (host, ok) in [
        ("API.example.com:8080", true),
        ("api.example.com:8080", true),
        ("api.example.com", false),
        ("other.example.com:8080", false),
    ] {
        h.insert(http::header::HOST, http::HeaderValue::from_static(host));
        let first = crate::head::summary(&h, &[]).host;
        assert_eq!(check_host_of(&uri, first, &h, &a).is_ok(), ok, "{host}");
    }
}

#[test]
fn authority_forms() {
    let a = parse_authority("API.Example.COM.", Some(80)).unwrap();
    assert_eq!((a.host.as_str(), a.port), ("api.example.com", 80));
    let a = parse_authority("[::1]:8443", None).unwrap();
    assert_eq!((a.host.as_str(), a.port), ("::1", 8443));
    assert_eq!(a.to_host_port(), "[::1]:8443");
    assert_eq!(
        parse_authority("bücher.example", Some(443)).unwrap().host,
        "xn--bcher-kva.example"
    );
    for bad in [
        "",
        "a@b.com",
        "h:0",
        "h:65536",
        "h:-1",
        "h:8o",
        "2130706433",
        "0x7f.1",
        "127.1",
        "0177.0.0.1",
        "a b",
        "[::1",
    ] {
        assert!(
            parse_authority(bad, Some(80)).is_err(),
            "{bad} should be refused"
        );
    }
    assert!(parse_authority("example.com", None).is_err());
    assert_eq!(
        parse_authority("127.0.0.1:99", None).unwrap().host,
        "127.0.0.1"
    );
}

#[test]
fn path_canonicalisation() {
    assert_eq!(canonical_path("/a/./b/../c").unwrap(), "/a/c");
    assert_eq!(canonical_path("/a/%2e%2e/b").unwrap(), "/b");
    assert_eq!(canonical_path("/%61pi/%7e").unwrap(), "/api/~");
    assert_eq!(canonical_path("/a%25b").unwrap(), "/a%25b");
    assert_eq!(canonical_path("/a%3ab").unwrap(), "/a%3Ab");
    assert_eq!(canonical_path("/../..").unwrap(), "/");
    assert_eq!(canonical_path("/a/b/..").unwrap(), "/a/");
    assert_eq!(canonical_path("/%0e%2e\u{456}").unwrap(), "/%0E.%D1%96");
    assert!(parse_authority("I\0:ffff:127.0.0.1]:443", Some(80)).is_err());
    assert!(parse_authority("::1:443", Some(80)).is_err());
    for bad in [
        "/a%2fb", "/a%5Cb", "/a%00", "/a\\b", "/a%zz", "/a%2", "relative",
    ] {
        assert!(canonical_path(bad).is_err(), "{bad} should be refused");
    }
}

/// The shortcut for already canonical paths agrees with the full canonicalisation on every
/// path built from the characters that matter, up to four characters long.
#[test]
fn shortcut_agrees_with_the_full_canonicalisation() {
    let alphabet = [
        "/", ".", ";", "a", "%", "\\", " ", "~", "\u{e9}", "2e", "%2e",
    ];
    let mut paths = vec![String::new()];
    for _ in 0..4 {
        let longer: Vec<String> = paths
            .iter()
            .flat_map(|p| alphabet.iter().map(move |c| format!("{p}{c}")))
            .collect();
        paths.extend(longer);
    }
    paths.sort();
    paths.dedup();
    let mut shortcut = 0;
    for p in &paths {
        if path::already_canonical(p) {
            shortcut += 1;
            let full = path::canonicalise(p).ok();
            assert_eq!(full.as_ref(), Some(p), "the shortcut kept {p:?}");
        }
        if let Ok(c) = canonical_path(p) {
            assert_eq!(canonical_path(&c).ok(), Some(c), "not a fixed point: {p:?}");
        }
    }
    assert!(shortcut > 100, "only {shortcut} paths took the shortcut");
}

/// The IP literal an authority carries is std's parse of its host, in every form: plain and
/// full reader, IPv6 (mapped, compatible, plain), IDNA digits, names, and `Authority::new`.
#[test]
fn the_carried_ip_is_what_std_parses_of_the_host() {
    let forms = [
        "127.0.0.1:8080",
        "10.1.2.3",
        "api.example.com",
        "API.Example.COM.",
        "1.2.3.4.",
        "[::1]:8443",
        "[::ffff:127.0.0.1]:8080",
        "[::FFFF:7f00:1]:8080",
        "[::127.0.0.1]:80",
        "[::]:80",
        "[fe80::1]",
        "\u{ff11}.\u{ff12}.\u{ff13}.\u{ff14}",
        "bücher.example",
        "svc_a.ns:8443",
    ];
    for raw in forms {
        let a = parse_authority(raw, Some(80)).unwrap();
        assert_eq!(a.ip(), a.host.parse().ok(), "{raw}");
        assert_eq!(a, Authority::new(a.host.clone(), a.port), "{raw}");
    }
    let ip = |raw: &str| parse_authority(raw, Some(80)).unwrap().ip();
    assert_eq!(ip("10.1.2.3"), Some([10, 1, 2, 3].into()));
    assert_eq!(ip("[::ffff:127.0.0.1]"), Some([127, 0, 0, 1].into()));
    assert_eq!(
        ip("\u{ff11}.\u{ff12}.\u{ff13}.\u{ff14}"),
        Some([1, 2, 3, 4].into())
    );
    assert!(ip("[::1]").is_some_and(|ip| ip.is_ipv6()));
    assert_eq!(ip("api.example.com"), None);
    for addr in ["192.0.2.1", "::1", "::ffff:1.2.3.4", "fe80::1"] {
        let a = Authority::new(addr.parse::<std::net::IpAddr>().unwrap().to_string(), 1);
        assert_eq!(a.ip(), addr.parse().ok(), "{addr}");
    }
}

#[test]
fn ipv4_in_ipv6_spelling() {
    // Mapped: the same destination, spelled canonically.
    for raw in ["[::ffff:127.0.0.1]:8080", "[::FFFF:7f00:1]:8080"] {
        let a = parse_authority(raw, None).unwrap();
        assert_eq!((a.host.as_str(), a.port), ("127.0.0.1", 8080), "{raw}");
    }
    // Compatible (deprecated): another address on the wire, left IPv6 (egress unmaps it).
    assert_eq!(
        parse_authority("[::127.0.0.1]:80", None).unwrap().host,
        "::7f00:1"
    );
    assert_eq!(parse_authority("[::1]:80", None).unwrap().host, "::1");
    assert_eq!(parse_authority("[::]:80", None).unwrap().host, "::");
}

#[test]
fn paths_that_upstreams_read_differently_are_ambiguous() {
    for bad in [
        "/api/v2/tickets/..;/admin",
        "/api/..;jsessionid=x/admin",
        "/api/.;/admin",
        "/api/%2e%2e;/admin",
        "/api/..%3b/admin",
        "/api/%252e%252e/admin",
        "/api/%252E./admin",
        "/api%252fadmin",
        "/api%255cadmin",
        "/a%2500",
        "/a%25252e",
        "/api/%c0%ae%c0%ae/admin",
        "/api/%e0%80%ae",
        "/api/%c0%af",
        "/api/%ff",
    ] {
        let err = canonical_path(bad).unwrap_err();
        assert_eq!(err.code(), ErrorCode::AmbiguousRequest, "{bad}: {err}");
    }
    // Parameters elsewhere, other double escapes and real UTF-8 stay.
    for (ok, canonical) in [
        ("/api/tickets;jsessionid=1/x", "/api/tickets;jsessionid=1/x"),
        ("/files/my%2520file", "/files/my%2520file"),
        ("/a%25b", "/a%25b"),
        ("/caf%C3%A9", "/caf%C3%A9"),
        ("/café", "/caf%C3%A9"),
        ("/a/;x/b", "/a/;x/b"),
    ] {
        assert_eq!(canonical_path(ok).unwrap(), canonical, "{ok}");
    }
}

#[test]
fn host_header_compared_without_building_it() {
    let a = |host: &str, port| Authority::new(host.into(), port);
    for (authority, default_port) in [
        (a("api.example.com", 80), 80),
        (a("api.example.com", 8080), 80),
        (a("api.example.com", 443), 443),
        (a("api.example.com", 443), 80),
        (a("127.0.0.1", 7), 80),
        (a("127.0.0.1", 65535), 443),
        (a("::1", 80), 80),
        (a("::1", 8443), 443),
    ] {
        let built = authority.host_header(default_port);
        assert!(
            authority.is_host_header(built.as_bytes(), default_port),
            "{built}"
        );
        for other in [
            format!("{built}0"),
            format!("{built}:"),
            built.to_uppercase(),
            format!("{}:0{}", authority.host, authority.port),
            format!("{}:{}", authority.host, authority.port.wrapping_add(1)),
            format!("x{built}"),
            built[..built.len() - 1].to_string(),
            String::new(),
        ] {
            assert!(
                other == built || !authority.is_host_header(other.as_bytes(), default_port),
                "{other} is not {built}"
            );
        }
    }
}

/// `ipv4_literal` is std's `Ipv4Addr` parse: every join of one to four numbers (of every length,
/// with and without leading zeros, at and over 255, signs, spaces, empty), every string of up to
/// six of digits, dots and other bytes, and some longer ones.
#[test]
fn an_ipv4_literal_is_what_std_parses() {
    let std = |s: &str| s.parse::<std::net::Ipv4Addr>().ok();
    let parts = [
        "0", "00", "01", "000", "1", "9", "10", "09", "99", "100", "199", "200", "249", "250",
        "255", "256", "260", "299", "300", "999", "0255", "1000", "", "a", "+1", "-1", " 1", "1 ",
        "٣",
    ];
    let mut joined = 0;
    for n in 1..=4 {
        let mut idx = vec![0usize; n];
        loop {
            let s = (idx.iter().map(|&i| parts[i]))
                .collect::<Vec<_>>()
                .join(".");
            assert_eq!(ipv4_literal(s.as_bytes()), std(&s), "{s:?}");
            joined += 1;
            let Some(i) = (0..n).rev().find(|&i| idx[i] + 1 < parts.len()) else {
                break;
            };
            idx[i] += 1;
            idx[i + 1..].iter_mut().for_each(|x| *x = 0);
        }
    }
    let p = parts.len();
    assert_eq!(joined, p + p * p + p.pow(3) + p.pow(4));
    let all = strings_over(b"0125.x", 6);
    let more = [
        "127.0.0.1",
        "10.1.2.3",
        "255.255.255.255",
        "1.2.3.4.",
        ".1.2.3.4",
        "1..2.3",
        "1.2.3.4.5",
        "0.0.0.0.0",
        "255.255.255.255.255",
        "1.2.3.04",
    ];
    for s in all.iter().map(String::as_str).chain(more) {
        assert_eq!(ipv4_literal(s.as_bytes()), std(s), "{s:?}");
    }
    assert_eq!(ipv4_literal(b"127.0.0.1"), Some([127, 0, 0, 1].into()));
    assert_eq!(ipv4_literal(b"1.2.3.4\xff"), None);
}

/// The one-pass reading of a plain authority answers as the full parser does, on every string
/// of up to six of the bytes that matter and on the edges (label and name lengths, ports,
/// numeric-looking labels); and it is the one that reads the usual authorities.
#[test]
fn plain_authorities_are_read_as_the_full_parser_reads_them() {
    let mut plain = 0;
    let mut check = |s: &str| {
        for default in [Some(80), None] {
            let full = any_authority(s, default).ok();
            if let Some(a) = &full {
                assert_eq!(a.ip(), a.host.parse().ok(), "{s:?} {default:?}");
            }
            if let Some(a) = plain_authority(s, default) {
                plain += 1;
                assert_eq!(Some(&a), full.as_ref(), "{s:?} {default:?}");
            }
            assert_eq!(parse_authority(s, default).ok(), full, "{s:?} {default:?}");
        }
    };
    for s in strings_over(b"a0-._:9x", 6) {
        check(&s);
    }
    let label = |n: usize| "a".repeat(n);
    let name = |n: usize| format!("{}.{}.{}.{}", label(63), label(63), label(63), label(n));
    let mut edges = vec![
        label(63),
        label(64),
        format!("{}.b", label(63)),
        format!("{}.b", label(64)),
        name(61),
        name(62),
    ];
    assert_eq!((name(61).len(), name(62).len()), (253, 254));
    edges.extend(
        [
            "0x",
            "0x1f",
            "a.0x1f",
            "a.0xg",
            "a.0X1f",
            "1.2.3.4",
            "1.2.3.04",
            "256.1.1.1",
            "1.2.3.4.5",
            "1.2.3",
            "1.2.3.4.",
            "1.2.3.4a",
            "1.2.3.1234",
            "a-.b",
            "-a.b",
            "a.-b",
            "_a.b",
            "a..b",
            ".a",
            "a.",
            "A.b",
            "a.B",
            "xn--bcher-kva.example",
            "bücher.example",
            "[::1]",
            "u@a",
            "",
        ]
        .map(String::from),
    );
    let ports = [
        "", ":", ":0", ":1", ":80", ":00080", ":65535", ":65536", ":123456", ":8o", ":1:2",
    ];
    for host in &edges {
        for port in ports {
            check(&format!("{host}{port}"));
        }
    }
    assert!(plain > 50_000, "only {plain} read in one pass");
    for usual in [
        "127.0.0.1:8080",
        "10.1.2.3",
        "api.example.com",
        "svc_a.ns:8443",
    ] {
        assert!(plain_authority(usual, Some(80)).is_some(), "{usual}");
    }
}

/// Every string of up to `max_len` characters of `alphabet` (ASCII), the empty one included: the
/// inputs of a parser checked against std's.
pub(crate) fn strings_over(alphabet: &[u8], max_len: usize) -> Vec<String> {
    let mut all = vec![String::new()];
    for len in 0..max_len {
        let longer: Vec<String> = (all.iter().filter(|s| s.len() == len))
            .flat_map(|s| alphabet.iter().map(move |c| format!("{s}{}", *c as char)))
            .collect();
        all.extend(longer);
    }
    all
}
