//! Tests of the audit line writer: the same bytes as serde_json for every kind of record.

use super::*;
use crate::audit::{AuditAgent, AuditIntent, Durations, Ended};
use crate::config::Mode;
use crate::intent::IntentSource;
use crate::vocab::{ConnectionMode, ErrorCode, Scheme, Verdict};

fn record(text: &str, n: u64) -> AuditRecord {
    AuditRecord {
        time: "2026-12-06T01:40:10.421491Z".into(),
        seq: n,
        boot_id: format!("{n:016x}"),
        decision_id: text.into(),
        agent: std::sync::Arc::new(AuditAgent {
            id: text.into(),
            namespace: (n.is_multiple_of(2)).then(|| text.to_string()),
            spiffe_id: (n.is_multiple_of(3)).then(|| format!("spiffe://x/{text}")),
            service_account: (n % 4 == 1).then(|| text.to_string()),
            owner: (n % 2 == 1).then(|| format!("team-{text}")),
            expires: (n % 3 == 2).then(|| text.to_string()),
        }),
        intent: AuditIntent {
            name: (n % 2 == 1).then(|| text.into()),
            task: (n.is_multiple_of(5)).then(|| text.to_string()),
            source: [None, Some(IntentSource::Header), Some(IntentSource::None)]
                [(n % 3) as usize],
            verified: n.is_multiple_of(2),
        },
        connection: [
            None,
            Some(ConnectionMode::Forward),
            Some(ConnectionMode::Transparent),
        ][(n % 3) as usize],
        method: "GET".into(),
        scheme: (n.is_multiple_of(2)).then_some(Scheme::Https),
        host: text.into(),
        port: u16::try_from(n % 65536).unwrap(),
        path: format!("/{text}"),
        decision: [None, Some(Verdict::Deny), Some(Verdict::WouldDeny)][(n % 3) as usize],
        mode: (n % 2 == 1).then_some(Mode::Monitor),
        reasons: (0..n % 4).map(|i| format!("{text}{i}")).collect(),
        error: (n % 3 == 1).then_some(ErrorCode::PolicyError),
        code: (n % 4 == 2).then_some(ErrorCode::IntentViolation),
        credential: (!n.is_multiple_of(3)).then(|| {
            std::sync::Arc::new(crate::audit::AuditCredential {
                name: text.into(),
                version: n,
                expires: (n.is_multiple_of(2)).then(|| text.to_string()),
            })
        }),
        policy_revision: text.into(),
        status: 403,
        bytes_in: n * 1_000_003,
        bytes_out: u64::MAX - n,
        ended: [
            None,
            Some(Ended::Closed),
            Some(Ended::Idle),
            Some(Ended::Error),
            Some(Ended::Shutdown),
        ][(n % 5) as usize],
        durations: Durations {
            policy_us: n,
            upstream_ms: n as f64 / 7.0,
            total_ms: [0.0, 0.318_764, 1e-7, 1e21, f64::NAN, 123.456][(n % 6) as usize],
        },
        shadow: (n % 4 == 3).then(|| {
            Box::new(crate::audit::Shadow {
                decision: Verdict::Allow,
                code: (n % 8 == 7).then_some(ErrorCode::IntentViolation),
                reasons: (0..n % 3).map(|i| format!("{text}{i}")).collect(),
            })
        }),
        trace: (!n.is_multiple_of(3)).then(|| crate::audit::Trace {
            trace_id: [n as u8; 16],
            span_id: [0xab; 8],
            parent: (n.is_multiple_of(2)).then_some([0x0f; 8]),
            flags: 1,
        }),
        mcp: (n.is_multiple_of(3)).then(|| crate::mcp::Noted {
            method: text.into(),
            tool: (n.is_multiple_of(2)).then(|| text.to_string()),
        }),
        llm: (n % 3 == 1).then(|| {
            let model = serde_json::to_string(text).unwrap();
            let l = format!(
                r#"{{"provider":"openai","model":{model},"stream":true,"input_tokens":{n},"output_tokens":null}}"#
            );
            serde_json::from_str(&l).unwrap()
        }),
        at: None,
        budget: None,
        charge: None,
        decision_header: (n.is_multiple_of(2)).then(|| http::HeaderValue::from_static("not written")),
    }
}

#[test]
fn writes_what_serde_json_writes() {
    let mut texts: Vec<String> = vec![
        String::new(),
        "plain".into(),
        "quote \" backslash \\ slash /".into(),
        "é ü 日本 🚀".into(),
        "\u{7f} del, \u{2028} line separator".into(),
    ];
    // Every ASCII byte, alone and between others, control characters included.
    texts.extend((0u8..0x80).map(|b| format!("a{}b", char::from(b))));
    texts.push((0u8..0x80).map(char::from).collect());
    // And at every place of a longer text (the scan tests eight bytes at a time).
    for b in [0u8, 0x08, 0x1f, b' ', b'"', b'\\', b'~', 0x7f] {
        for at in 0..20 {
            let mut t: Vec<char> = "abcdefghijklmnopqrst".chars().collect();
            t[at] = char::from(b);
            texts.push(t.into_iter().collect());
        }
    }
    let mut line = Vec::new();
    for (n, text) in texts.iter().enumerate() {
        let rec = record(text, n as u64);
        line.clear();
        write(&rec, &mut line);
        let want = serde_json::to_vec(&rec).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&line),
            String::from_utf8_lossy(&want),
            "text {text:?}"
        );
    }
    line.clear();
    write(&AuditRecord::default(), &mut line);
    assert_eq!(line, serde_json::to_vec(&AuditRecord::default()).unwrap());
}

#[test]
fn numbers_and_escapes_are_written_as_serde_json_writes_them() {
    let mut out = Vec::new();
    let mut n = 1u64;
    for k in 0..64 {
        for v in [
            0,
            1,
            9,
            10,
            99,
            100,
            101,
            999,
            n - 1,
            n,
            n.saturating_add(1),
            u64::MAX >> k,
            u64::MAX,
        ] {
            out.clear();
            uint(&mut out, v);
            assert_eq!(out, serde_json::to_vec(&v).unwrap(), "{v}");
        }
        n = n.saturating_mul(10);
    }
    // Every length up to 40 with one byte to escape (or none) at every place, and two.
    for len in 0..40 {
        for at in 0..=len {
            for b in [b'"', b'\\', 0, 0x1f, 0x7f, b'a'] {
                let mut t = vec![b'x'; len];
                if at < len {
                    t[at] = b;
                    if at + 3 < len {
                        t[at + 3] = b'\n';
                    }
                }
                let t = String::from_utf8(t).unwrap();
                out.clear();
                string(&mut out, &t);
                assert_eq!(out, serde_json::to_vec(&t).unwrap(), "{t:?}");
            }
        }
    }
}

#[test]
fn durations_are_written_as_serde_json_writes_them() {
    let mut out = Vec::new();
    let mut check = |f: f64| {
        out.clear();
        float(&mut out, f);
        assert_eq!(
            String::from_utf8_lossy(&out),
            serde_json::to_string(&f).unwrap(),
            "{f:e}"
        );
    };
    // Every microsecond of the first two seconds, as `millis` makes them.
    for us in 0..2_000_000u64 {
        check(us as f64 / 1e3);
    }
    // Larger ones up to and past the fast form's bound (10^15 µs), at every scale.
    let mut us = 1u64;
    while us < 1u64 << 58 {
        for v in [us - 1, us, us + 1, us * 3 + 7, us / 7 * 999] {
            check(v as f64 / 1e3);
        }
        us = us * 10 + 1;
    }
    for f in [
        -0.0,
        -1.5,
        1e-7,
        0.000_5,
        0.001,
        1e21,
        f64::NAN,
        f64::INFINITY,
        0.1 + 0.2,
    ] {
        check(f);
    }
    check(crate::audit::millis(std::time::Duration::from_secs(
        86_400 * 365,
    )));
}

#[test]
fn a_record_s_shared_pieces_are_written_as_they_are_now() {
    // The writer keeps the agent, intent name and revision of the last record written; a
    // record with other ones (or the same values in new `Arc`s) is written with its own. Its
    // time and boot id are the stamp's: the line is that of the record holding them.
    let mut repeats = Repeats::default();
    let (mut kept, mut plain) = (Vec::new(), Vec::new());
    for n in 0..40u64 {
        let rec = record(&format!("r{}", n / 3), n);
        // The writer's stamp: the record's own time and boot id left as they are.
        let mut blank = rec.clone();
        let (time, boot_id) = (
            std::mem::take(&mut blank.time),
            std::mem::take(&mut blank.boot_id),
        );
        let stamp = Stamp {
            time: time.as_bytes().try_into().unwrap(),
            boot_id: boot_id.as_bytes().try_into().unwrap(),
        };
        for _ in 0..2 {
            kept.clear();
            repeats.write(&blank, stamp, &mut kept);
            plain.clear();
            write(&rec, &mut plain);
            assert_eq!(
                String::from_utf8_lossy(&kept),
                String::from_utf8_lossy(&plain)
            );
        }
    }
}

#[test]
fn a_written_line_reads_back_as_the_record_it_was() {
    let mut line = Vec::new();
    let mut again = Vec::new();
    for n in 0..30 {
        let rec = record("a \" b \u{1} é", n);
        if !rec.durations.total_ms.is_finite() {
            continue; // written as null, which no f64 reads back (never a real duration)
        }
        line.clear();
        write(&rec, &mut line);
        let back: AuditRecord = serde_json::from_slice(&line).unwrap();
        again.clear();
        write(&back, &mut again);
        assert_eq!(
            String::from_utf8_lossy(&again),
            String::from_utf8_lossy(&line)
        );
    }
}
