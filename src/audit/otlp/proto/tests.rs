//! The protobuf encoder's pieces against the nested messages they stand for.

use super::*;

#[test]
fn a_nested_message_carries_its_minimal_length_whatever_room_was_kept() {
    for len in [0usize, 1, 127, 128, 300, 16_383, 16_384, 70_000] {
        let mut want = vec![9, 2 << 3 | 2];
        varint(&mut want, len as u64);
        assert_eq!(want.len() - 2, varint_len(len as u64), "{len}");
        want.resize(want.len() + len, 7);
        for width in 1..=3 {
            let mut out = vec![9];
            message(&mut out, 2, width, |out| out.resize(out.len() + len, 7));
            assert_eq!(out, want, "{len} in {width}");
        }
    }
}

#[test]
fn an_attribute_is_a_key_value_with_its_key_prebuilt() {
    let mut out = vec![];
    text(&mut out, 9, key!("url.path"), Some("/x"));
    let mut want = vec![9 << 3 | 2, 16, 1 << 3 | 2, 8];
    want.extend_from_slice(b"url.path");
    want.extend_from_slice(&[2 << 3 | 2, 4, 1 << 3 | 2, 2, b'/', b'x']);
    assert_eq!(out, want);
    // Lengths past one varint byte, an integer value, and nothing for an empty value.
    let long = "p".repeat(200);
    out.clear();
    text(&mut out, 6, key!("url.path"), Some(&long));
    text(&mut out, 6, key!("url.scheme"), Some(""));
    int(&mut out, 6, key!("server.port"), 8080);
    let mut want = vec![6 << 3 | 2];
    varint(&mut want, 10 + 3 + 203);
    want.extend_from_slice(&[1 << 3 | 2, 8]);
    want.extend_from_slice(b"url.path");
    want.extend_from_slice(&[2 << 3 | 2, 203, 1, 1 << 3 | 2, 200, 1]);
    want.extend_from_slice(long.as_bytes());
    want.extend_from_slice(&[6 << 3 | 2, 13 + 2 + 3, 1 << 3 | 2, 11]);
    want.extend_from_slice(b"server.port");
    want.extend_from_slice(&[2 << 3 | 2, 3, 3 << 3, 0x90, 0x3f]);
    assert_eq!(out, want);
}

#[test]
fn an_attribute_of_any_length_is_the_nested_messages_it_stands_for() {
    let (key, value) = (b"url.path", "v".repeat(300));
    for len in 0..300 {
        let v = &value[..len];
        let mut want = vec![];
        if len > 0 {
            message(&mut want, 6, 1, |kv| {
                bytes(kv, 1, key);
                message(kv, 2, 1, |any| bytes(any, 1, v.as_bytes()));
            });
        }
        let mut out = vec![];
        text(&mut out, 6, key!("url.path"), Some(v));
        assert_eq!(out, want, "{len}");
    }
    for n in [0, 1, 127, 128, u64::from(u16::MAX), u64::MAX] {
        let mut want = vec![];
        message(&mut want, 9, 1, |kv| {
            bytes(kv, 1, b"server.port");
            message(kv, 2, 1, |any| uint(any, 3, n));
        });
        let mut out = vec![];
        int(&mut out, 9, key!("server.port"), n);
        assert_eq!(out, want, "{n}");
    }
}

#[test]
fn a_log_records_body_is_its_audit_line() {
    let rec = AuditRecord {
        decision_id: "d1".into(),
        path: "/\"quoted\"".into(),
        ..AuditRecord::default()
    };
    let mut line = vec![];
    line::write(&rec, &mut line);
    let mut out = vec![];
    log_record(&mut out, (&rec, None), 7, None);
    let mut body = vec![5 << 3 | 2];
    varint(
        &mut body,
        (1 + varint_len(line.len() as u64) + line.len()) as u64,
    );
    bytes(&mut body, 1, &line);
    assert!(
        out.windows(body.len()).any(|w| w == body.as_slice()),
        "{out:?}"
    );
    // The writer's line, handed over, is the body as it is.
    let mut handed = vec![];
    log_record(&mut handed, (&rec, Some(&line)), 7, None);
    assert_eq!(handed, out);
}

#[test]
fn the_envelope_is_the_nested_messages_written_in_place() {
    let rec = AuditRecord {
        boot_id: "b00t".into(),
        ..AuditRecord::default()
    };
    for len in [0usize, 100, 200, 20_000, 3_000_000] {
        let items = |out: &mut Vec<u8>| out.resize(out.len() + len, 7);
        let mut want = Vec::new();
        message(&mut want, 1, 1, |out| {
            resource(out, "svc", &rec);
            message(out, 2, 1, |out| {
                scope(out);
                items(out);
            });
        });
        let mut out = vec![1, 2, 3];
        let at = envelope(&mut out, "svc", &rec, items);
        assert!(out[at..] == want[..], "{len}");
    }
}
