//! Tests of reading the SNI from a ClientHello.

use super::*;

use crate::tls::test_support::client_hello;

const H2: &[u8] = b"h2";
const H1: &[u8] = b"http/1.1";

fn ext(ty: u16, data: &[u8]) -> (u16, Vec<u8>) {
    (ty, data.to_vec())
}

fn vec16(data: &[u8]) -> Vec<u8> {
    let mut v = (data.len() as u16).to_be_bytes().to_vec();
    v.extend_from_slice(data);
    v
}

fn sni_ext(names: &[(u8, &[u8])]) -> (u16, Vec<u8>) {
    let mut list = Vec::new();
    for (ty, name) in names {
        list.push(*ty);
        list.extend(vec16(name));
    }
    (EXT_SERVER_NAME, vec16(&list))
}

fn alpn_ext(protos: &[&[u8]]) -> (u16, Vec<u8>) {
    let mut list = Vec::new();
    for p in protos {
        list.push(p.len() as u8);
        list.extend_from_slice(p);
    }
    (EXT_ALPN, vec16(&list))
}

/// A ClientHello body: TLS 1.2 version, zero random, no session id, one suite, null compression.
fn body(exts: Option<&[(u16, Vec<u8>)]>) -> Vec<u8> {
    let mut b = vec![0x03, 0x03];
    b.extend([7u8; 32]);
    b.push(0);
    b.extend([0x00, 0x02, 0x13, 0x01, 0x01, 0x00]);
    if let Some(exts) = exts {
        let mut e = Vec::new();
        for (ty, data) in exts {
            e.extend(ty.to_be_bytes());
            e.extend(vec16(data));
        }
        b.extend(vec16(&e));
    }
    b
}

fn handshake(ty: u8, body: &[u8]) -> Vec<u8> {
    let n = body.len();
    let mut m = vec![ty, (n >> 16) as u8, (n >> 8) as u8, n as u8];
    m.extend_from_slice(body);
    m
}

/// Wraps a handshake message in handshake records of at most `chunk` bytes.
fn records(msg: &[u8], chunk: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for c in msg.chunks(chunk) {
        out.extend([RECORD_HANDSHAKE, 0x03, 0x01]);
        out.extend(vec16(c));
    }
    out
}

fn wire(exts: &[(u16, Vec<u8>)]) -> Vec<u8> {
    records(&handshake(1, &body(Some(exts))), MAX_RECORD_LEN)
}

fn hello(buf: &[u8]) -> ClientHello {
    match parse(buf) {
        Peek::Hello(h) => h,
        other => panic!("expected a hello, got {other:?}"),
    }
}

fn malformed(buf: &[u8]) -> &'static str {
    match parse(buf) {
        Peek::Malformed(why) => why,
        other => panic!("expected malformed, got {other:?}"),
    }
}

#[test]
fn parses_a_real_rustls_client_hello() {
    let buf = client_hello("api.example.com", &[H2, H1]);
    let h = hello(&buf);
    assert_eq!(h.sni.as_deref(), Some("api.example.com"));
    assert_eq!(h.alpn, vec![H2.to_vec(), H1.to_vec()]);
    assert!(h.offers_alpn(H2) && !h.offers_alpn(b"spdy/3"));
    assert!(h.offers_tls13);
    assert!(!h.ech);
    assert_eq!(h.legacy_version, 0x0303);
    assert_eq!(h.len, buf.len());
    // Bytes after the hello (early data, the next record) are not its business.
    let mut more = buf.clone();
    more.extend([0x17, 0x03, 0x03, 0x00, 0x01, 0xff]);
    assert_eq!(hello(&more).len, buf.len());
}

#[test]
fn ip_servers_get_no_sni_and_alpn_may_be_absent() {
    let h = hello(&client_hello("127.0.0.1", &[]));
    assert_eq!(h.sni, None);
    assert!(h.alpn.is_empty());
}

#[test]
fn every_prefix_needs_more() {
    let buf = client_hello("api.example.com", &[H2, H1]);
    for n in 0..buf.len() {
        match parse(&buf[..n]) {
            Peek::NeedMore { at_least } => {
                assert!(at_least > n && at_least <= buf.len(), "{n}: {at_least}")
            }
            other => panic!("prefix {n}: {other:?}"),
        }
    }
}

#[test]
fn other_protocols_are_not_tls() {
    for buf in [
        &b"GET / HTTP/1.1\r\n"[..],
        b"CONNECT a:443",
        b"PRI * HTTP/2.0",
        &[0x80, 0x2e, 0x01],
    ] {
        assert_eq!(parse(buf), Peek::NotTls);
    }
    assert_eq!(parse(&[]), Peek::NeedMore { at_least: 5 });
}

#[test]
fn reassembles_a_hello_split_across_records() {
    let real = client_hello("api.example.com", &[H2, H1]);
    let msg = &real[5..]; // one record: strip its header
    for chunk in [1000, 300, 100] {
        let buf = records(msg, chunk);
        let h = hello(&buf);
        assert_eq!(h.sni.as_deref(), Some("api.example.com"));
        assert_eq!(h.alpn.len(), 2);
        assert_eq!(h.len, buf.len());
        for n in 0..buf.len() {
            assert!(
                matches!(parse(&buf[..n]), Peek::NeedMore { .. }),
                "{chunk}/{n}"
            );
        }
    }
    assert_eq!(
        malformed(&records(msg, 3)),
        "ClientHello split across too many records"
    );
}

#[test]
fn minimal_hellos() {
    let h = hello(&records(&handshake(1, &body(None)), 512));
    assert_eq!((h.sni, h.alpn.len(), h.offers_tls13), (None, 0, false));
    let h = hello(&wire(&[
        sni_ext(&[(0, b"Example.COM.")]),
        ext(EXT_SUPPORTED_VERSIONS, &[4, 0x03, 0x03, 0x03, 0x02]),
        ext(EXT_ECH, &[0, 1, 2]),
        ext(0x1234, &[]),
    ]));
    assert_eq!(h.sni.as_deref(), Some("Example.COM."));
    assert!(!h.offers_tls13);
    assert!(h.ech);
    // Unknown name types are skipped.
    let h = hello(&wire(&[sni_ext(&[(7, b"\x00\xff"), (0, b"a.example")])]));
    assert_eq!(h.sni.as_deref(), Some("a.example"));
}

#[test]
fn refuses_malformed_hellos() {
    let ok_body = body(Some(&[sni_ext(&[(0, b"a.example")])]));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "duplicate",
            wire(&[sni_ext(&[(0, b"a.example")]), sni_ext(&[(0, b"b.example")])]),
        ),
        ("duplicate", wire(&[alpn_ext(&[H2]), alpn_ext(&[H1])])),
        (
            "more than one host",
            wire(&[sni_ext(&[(0, b"a.example"), (0, b"b.example")])]),
        ),
        ("not a valid host", wire(&[sni_ext(&[(0, b"a/b.example")])])),
        ("not a valid host", wire(&[sni_ext(&[(0, b"a b")])])),
        ("not a valid host", wire(&[sni_ext(&[(0, b".a.example")])])),
        ("not a valid host", wire(&[sni_ext(&[(0, b"")])])),
        (
            "not a valid host",
            wire(&[sni_ext(&[(0, "ä.example".as_bytes())])]),
        ),
        ("past the end", wire(&[ext(EXT_SERVER_NAME, &[])])),
        (
            "malformed server_name",
            wire(&[ext(EXT_SERVER_NAME, &[0, 0])]),
        ),
        ("malformed ALPN", wire(&[ext(EXT_ALPN, &[0, 0])])),
        ("empty ALPN protocol", wire(&[ext(EXT_ALPN, &[0, 1, 0])])),
        (
            "past the end",
            wire(&[ext(EXT_ALPN, &[0, 9, 2, b'h', b'2'])]),
        ),
        (
            "malformed supported_versions",
            wire(&[ext(EXT_SUPPORTED_VERSIONS, &[3, 3, 4, 3])]),
        ),
        ("not a ClientHello", records(&handshake(2, &ok_body), 512)),
        ("unknown TLS record version", {
            let mut b = records(&handshake(1, &ok_body), 512);
            b[1] = 2;
            b
        }),
        ("empty handshake record", vec![0x16, 3, 1, 0, 0]),
        ("record longer than 16 KiB", vec![0x16, 3, 1, 0x40, 0x01]),
        (
            "ClientHello too large",
            vec![0x16, 3, 1, 0, 4, 1, 0, 0x40, 0x01],
        ),
        ("non-handshake record", {
            let mut b = records(&handshake(1, &ok_body), 20);
            b.truncate(25);
            b.extend([0x17, 3, 3, 0, 1, 0]);
            b
        }),
        ("unexpected data after the ClientHello", {
            let mut m = handshake(1, &ok_body);
            m.push(0);
            records(&m, 512)
        }),
        ("unexpected data after the extensions", {
            let mut b = ok_body.clone();
            b.push(0);
            records(&handshake(1, &b), 512)
        }),
        ("unsupported ClientHello version", {
            let mut b = ok_body.clone();
            b[1] = 0;
            records(&handshake(1, &b), 512)
        }),
        ("session id longer", {
            let mut b = vec![3, 3];
            b.extend([0u8; 32]);
            b.push(33);
            b.extend([0u8; 33]);
            b.extend([0, 2, 0x13, 1, 1, 0]);
            records(&handshake(1, &b), 512)
        }),
        ("invalid cipher suite list", {
            let mut b = vec![3, 3];
            b.extend([0u8; 33]);
            b.extend([0, 3, 0x13, 1, 0, 1, 0]);
            records(&handshake(1, &b), 512)
        }),
        ("empty compression", {
            let mut b = vec![3, 3];
            b.extend([0u8; 33]);
            b.extend([0, 2, 0x13, 1, 0]);
            records(&handshake(1, &b), 512)
        }),
    ];
    for (want, buf) in cases {
        let why = malformed(&buf);
        assert!(why.contains(want), "want {want:?}, got {why:?}");
    }
}

#[test]
fn never_waits_for_more_than_max_peek() {
    // The message is complete after the first record's 200 bytes but the next record claims
    // 16 KiB: refused at once rather than waiting for it.
    let msg = handshake(1, &body(Some(&[sni_ext(&[(0, b"a.example")])])));
    let mut buf = records(&msg[..msg.len() - 1], 512);
    buf.extend([RECORD_HANDSHAKE, 3, 1, 0x40, 0x00]);
    assert!(malformed(&buf).contains("unexpected data"));
}

/// A small deterministic fuzzer: mutated and truncated real hellos and random bytes never
/// panic, and a parsed hello never claims more bytes than it was given.
#[test]
fn survives_mutations() {
    let seeds = [
        client_hello("api.example.com", &[H2, H1]),
        records(&client_hello("a.example", &[H1])[5..], 200),
    ];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut parsed = 0;
    for i in 0..20_000 {
        let mut buf = seeds[i % seeds.len()].clone();
        for _ in 0..1 + next() % 4 {
            let at = (next() as usize) % buf.len();
            buf[at] = next() as u8;
        }
        if next() % 4 == 0 {
            buf.truncate((next() as usize) % buf.len());
        }
        match parse(&buf) {
            Peek::Hello(h) => {
                assert!(h.len <= buf.len());
                parsed += 1;
            }
            Peek::NeedMore { at_least } => assert!(at_least > buf.len() && at_least <= MAX_PEEK),
            Peek::NotTls | Peek::Malformed(_) => {}
        }
    }
    assert!(parsed > 0, "some mutations only touch opaque bytes");
    for _ in 0..5_000 {
        let n = (next() % 300) as usize;
        let mut buf: Vec<u8> = (0..n).map(|_| next() as u8).collect();
        if buf.len() > 3 {
            buf[..3].copy_from_slice(&[0x16, 3, 1]);
        }
        if let Peek::NeedMore { at_least } = parse(&buf) {
            assert!(at_least > buf.len() && at_least <= MAX_PEEK);
        }
    }
}
