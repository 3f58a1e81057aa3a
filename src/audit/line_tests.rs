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

/// The writers as they were before they copied fixed-length blocks (audit40's), to pin the new
/// ones to the same bytes.
mod before {
    pub(super) fn uint(out: &mut Vec<u8>, n: u64) {
        out.extend_from_slice(n.to_string().as_bytes());
    }

    pub(super) fn escaped(out: &mut Vec<u8>, s: &str) {
        for c in s.chars() {
            match c {
                '"' => out.extend_from_slice(b"\\\""),
                '\\' => out.extend_from_slice(b"\\\\"),
                '\n' => out.extend_from_slice(b"\\n"),
                '\r' => out.extend_from_slice(b"\\r"),
                '\t' => out.extend_from_slice(b"\\t"),
                '\u{8}' => out.extend_from_slice(b"\\b"),
                '\u{c}' => out.extend_from_slice(b"\\f"),
                c if u32::from(c) < 0x20 => {
                    out.extend_from_slice(format!("\\u{:04x}", u32::from(c)).as_bytes())
                }
                c => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
            }
        }
    }

    pub(super) fn string(out: &mut Vec<u8>, s: &str) {
        out.push(b'"');
        escaped(out, s);
        out.push(b'"');
    }

    pub(super) fn float(out: &mut Vec<u8>, f: f64) {
        let n = (f * 1000.0 + 0.5) as u64;
        if f.is_sign_positive() && n < 1_000_000_000_000_000 && n as f64 / 1000.0 == f {
            uint(out, n / 1000);
            let frac = n % 1000;
            let digits = [
                b'.',
                b'0' + (frac / 100) as u8,
                b'0' + (frac / 10 % 10) as u8,
                b'0' + (frac % 10) as u8,
            ];
            let keep = if frac % 100 == 0 {
                2
            } else if frac % 10 == 0 {
                3
            } else {
                4
            };
            out.extend_from_slice(&digits[..keep]);
        } else {
            serde_json::to_writer(&mut *out, &f).unwrap();
        }
    }
}

#[test]
fn the_block_writers_write_what_the_writers_before_them_wrote() {
    // Each piece after a prefix (the block is cut back to the piece's end, not the line's).
    let both = |write: &dyn Fn(&mut Vec<u8>), old: &dyn Fn(&mut Vec<u8>), what: &str| {
        let (mut a, mut b) = (b"{\"k\":".to_vec(), b"{\"k\":".to_vec());
        write(&mut a);
        old(&mut b);
        assert_eq!(
            String::from_utf8_lossy(&a),
            String::from_utf8_lossy(&b),
            "{what}"
        );
    };
    let mut nums = vec![0, 1, 9, 10, 99, 100, u64::MAX, u64::MAX - 1, u64::MAX / 10];
    let mut p = 1u64;
    while let Some(next) = p.checked_mul(10) {
        nums.extend([p - 1, p, p + 1, next / 2]);
        p = next;
    }
    for n in nums {
        both(&|o| uint(o, n), &|o| before::uint(o, n), &n.to_string());
    }
    // Every fraction (rounding from below and above) after whole parts of every length.
    for whole in [0u64, 1, 12, 999, 1_000_000, 999_999_999_999] {
        for frac in 0..1000u64 {
            let us = whole * 1000 + frac;
            for f in [
                us as f64 / 1e3,
                (us as f64 + 0.4) / 1e3,
                (us as f64 - 0.4) / 1e3,
            ] {
                both(
                    &|o| float(o, f),
                    &|o| before::float(o, f),
                    &format!("{f:e}"),
                );
            }
        }
    }
    for f in [
        1e-7,
        5e-4,
        4.9999e-4,
        1e15,
        1e21,
        -0.0,
        -1.0,
        f64::MAX,
        f64::MIN_POSITIVE,
    ] {
        both(
            &|o| float(o, f),
            &|o| before::float(o, f),
            &format!("{f:e}"),
        );
    }
    // Every control byte, quote and backslash, and non-ASCII, at every place of every length
    // to 40 (one padded word, one to four words, the copies of 8 and 16 bytes, the long copy).
    let mut odd: Vec<String> = (0u8..0x20).map(|b| char::from(b).to_string()).collect();
    odd.extend(["\"", "\\", "\u{7f}", "é", "日本", "🚀", "\u{2028}"].map(String::from));
    for len in 0..40 {
        both(
            &|o| escaped(o, &"x".repeat(len)),
            &|o| before::escaped(o, &"x".repeat(len)),
            "",
        );
        for at in 0..=len {
            for c in &odd {
                let s = format!("{}{c}{}", "y".repeat(at), "z".repeat(len - at));
                both(&|o| escaped(o, &s), &|o| before::escaped(o, &s), &s);
                both(&|o| string(o, &s), &|o| before::string(o, &s), &s);
            }
        }
    }
    // `put`: every length, as `extend_from_slice`.
    let bytes: Vec<u8> = (0..80u8).collect();
    for len in 0..80 {
        both(
            &|o| put(o, &bytes[..len]),
            &|o| o.extend_from_slice(&bytes[..len]),
            "put",
        );
    }
}

#[test]
fn each_word_is_its_value_s_spelling_quoted() {
    let word = |w: &Word| {
        let mut out = b"x".to_vec();
        w.put(&mut out);
        String::from_utf8(out).unwrap()
    };
    let quoted = |s: &str| format!("x\"{s}\"");
    for c in ConnectionMode::ALL {
        assert_eq!(
            word(&words_of!(ConnectionMode)[*c as usize]),
            quoted(c.as_str())
        );
    }
    for s in Scheme::ALL {
        assert_eq!(word(&words_of!(Scheme)[*s as usize]), quoted(s.as_str()));
    }
    for v in Verdict::ALL {
        assert_eq!(word(&words_of!(Verdict)[*v as usize]), quoted(v.as_str()));
    }
    for s in [
        IntentSource::Header,
        IntentSource::Session,
        IntentSource::Token,
        IntentSource::Default,
        IntentSource::None,
    ] {
        assert_eq!(word(source(Some(s))), quoted(s.as_str()));
    }
    for m in [Mode::Enforce, Mode::Monitor] {
        assert_eq!(word(mode(Some(m))), quoted(m.as_str()));
    }
    assert_eq!(word(source(None)), quoted(""));
    assert_eq!(word(mode(None)), quoted(""));
    assert_eq!(word(&Word::BLANK), quoted(""));
}
