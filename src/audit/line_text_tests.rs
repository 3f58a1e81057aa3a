//! Tests of the line's writers: the same bytes as the writers before them wrote.

use super::*;
use crate::config::Mode;
use crate::intent::IntentSource;
use crate::vocab::{ConnectionMode, Scheme, Verdict};

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
            let keep = if frac.is_multiple_of(100) {
                2
            } else if frac.is_multiple_of(10) {
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
        // Clean strings of every length, quoted (the blocks of 16 and 48 bytes, and the rest).
        let clean: String = (0..len)
            .map(|i| match b' ' + (i * 7 % 95) as u8 {
                b'"' | b'\\' => 'q',
                c => char::from(c),
            })
            .collect();
        both(
            &|o| string(o, &clean),
            &|o| before::string(o, &clean),
            &clean,
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
    use super::super::{mode, source};
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
