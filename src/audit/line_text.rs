//! The pieces of an audit line (`line`): JSON strings escaped as serde_json escapes them,
//! unsigned integers, durations and vocabulary words, written without a `memcpy` call where they
//! are short. A short piece is copied as a block of a fixed length (8, 16, 20 or 24 bytes: an
//! inlined copy, no call) and the line cut back to its length (`block`); a long one as before.

/// Appends the first `len` bytes of `bytes` (all of it copied, the rest cut off again).
#[inline(always)]
fn block<const N: usize>(out: &mut Vec<u8>, bytes: &[u8; N], len: usize) {
    debug_assert!(len <= N);
    let end = out.len() + len;
    out.extend_from_slice(bytes);
    out.truncate(end);
}

/// Appends `s`: up to 32 bytes as two overlapping blocks (or one padded word), longer ones with
/// `extend_from_slice`.
#[inline]
pub(super) fn put(out: &mut Vec<u8>, s: &[u8]) {
    let n = s.len();
    if n < 8 {
        return block(out, &short_word(s).to_le_bytes(), n);
    }
    let end = out.len() + n;
    if n < 16 {
        if let (Some(a), Some(b)) = (s.first_chunk::<8>(), s.last_chunk::<8>()) {
            out.extend_from_slice(a);
            out.truncate(end - 8);
            return out.extend_from_slice(b);
        }
    } else if n <= 32 {
        if let (Some(a), Some(b)) = (s.first_chunk::<16>(), s.last_chunk::<16>()) {
            out.extend_from_slice(a);
            out.truncate(end - 16);
            return out.extend_from_slice(b);
        }
    }
    out.extend_from_slice(s);
}

/// A string shorter than eight bytes as a little-endian word, padded with `a`s (which JSON does
/// not escape), read without a loop or a copy call: two overlapping halves, or its first, middle
/// and last bytes.
fn short_word(s: &[u8]) -> u64 {
    const PAD: u64 = 0x6161_6161_6161_6161;
    let n = s.len();
    debug_assert!(n < 8);
    let data = match (s.first_chunk::<4>(), s.last_chunk::<4>()) {
        (Some(a), Some(b)) => {
            u64::from(u32::from_le_bytes(*a)) | u64::from(u32::from_le_bytes(*b)) << ((n - 4) * 8)
        }
        _ => match (s.first(), s.get(n / 2), s.last()) {
            (Some(&a), Some(&m), Some(&z)) => {
                u64::from(a) | u64::from(m) << (n / 2 * 8) | u64::from(z) << ((n - 1) * 8)
            }
            _ => 0,
        },
    };
    // The padding fills the bytes from `n` up (`n * 8` is at most 56).
    data | PAD << (n * 8)
}

/// A JSON string, or `null`.
#[inline(always)]
pub(super) fn opt_string(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => string(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

/// A JSON string: `"` and `\` escaped, control characters as `\n`-style or `\u00XX` escapes
/// (as serde_json writes them); everything else, UTF-8 included, as is.
///
/// Most strings of a line hold nothing to escape and are short (the decision id, the method,
/// the host, the path): up to 32 bytes, one with nothing to escape is written where it is used,
/// quotes included, as one block (of 16 bytes under 8, else 48: one capacity check, no call);
/// any other goes through `quoted`, the general path.
#[inline(always)]
pub(in crate::audit) fn string(out: &mut Vec<u8>, s: &str) {
    let b = s.as_bytes();
    let n = b.len();
    if n < 8 {
        let w = short_word(b);
        if dirty(w) == 0 {
            // The quote, the word's `n` bytes (its padding cut off), the quote.
            let end = (n + 1) * 8;
            let text = (u128::from(w) << 8 & ((1 << end) - 1)) | 0x22 | 0x22 << end;
            return block(out, &text.to_le_bytes(), n + 2);
        }
    } else if let Some(text) = clean_quoted(b) {
        return block(out, &text, n + 2);
    }
    quoted(out, s);
}

/// `b` (8 to 32 bytes) quoted in a block of 48, if nothing in it is to be escaped: its bytes
/// tested as two or four words (the last ones overlapping those before) and copied as two
/// overlapping halves.
#[inline(always)]
fn clean_quoted(b: &[u8]) -> Option<[u8; 48]> {
    let n = b.len();
    let word = |w: Option<&[u8; 8]>| w.map_or(HIGH, |w| dirty(u64::from_le_bytes(*w)));
    let mut text = [0; 48];
    if n < 16 {
        let (a, z) = (b.first_chunk::<8>()?, b.last_chunk::<8>()?);
        if word(Some(a)) | word(Some(z)) != 0 {
            return None;
        }
        text[1..9].copy_from_slice(a);
        text[n - 7..n + 1].copy_from_slice(z);
    } else if n <= 32 {
        let (a, z) = (b.first_chunk::<16>()?, b.last_chunk::<16>()?);
        let m = word(a.first_chunk::<8>())
            | word(a.last_chunk::<8>())
            | word(z.first_chunk::<8>())
            | word(z.last_chunk::<8>());
        if m != 0 {
            return None;
        }
        text[1..17].copy_from_slice(a);
        text[n - 15..n + 1].copy_from_slice(z);
    } else {
        return None;
    }
    text[0] = b'"';
    text[n + 1] = b'"';
    Some(text)
}

/// `string`'s general path: any length, escapes written.
#[inline(never)]
fn quoted(out: &mut Vec<u8>, s: &str) {
    out.reserve(s.len() + 2);
    out.push(b'"');
    escaped(out, s);
    out.push(b'"');
}

/// `string` without its quotes.
pub(in crate::audit) fn escaped(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    if bytes.len() < 8 {
        let w = short_word(bytes);
        if dirty(w) == 0 {
            return block(out, &w.to_le_bytes(), bytes.len());
        }
    }
    let mut start = 0;
    while let Some(n) = to_escape(&bytes[start..]) {
        let i = start + n;
        put(out, &bytes[start..i]);
        escape(out, bytes[i]);
        start = i + 1;
    }
    put(out, &bytes[start..]);
}

/// Where the first byte JSON must escape (`"`, `\`, a control character) is, tested eight bytes
/// at a time (most strings hold none: ids, names, paths); a string's last bytes are tested as
/// its last eight (overlapping those before), or, in a string shorter than eight, padded.
pub(super) fn to_escape(bytes: &[u8]) -> Option<usize> {
    let mut at = 0;
    while let Some(word) = bytes.get(at..).and_then(|b| b.first_chunk::<8>()) {
        let m = dirty(u64::from_le_bytes(*word));
        if m != 0 {
            return Some(at + first(m));
        }
        at += 8;
    }
    if at == bytes.len() {
        return None;
    }
    // The bytes before `at` are clean, so the first one found is at `at` or after.
    let (from, m) = match bytes.last_chunk::<8>() {
        Some(last) => (bytes.len() - 8, dirty(u64::from_le_bytes(*last))),
        None => (0, dirty(short_word(bytes))),
    };
    (m != 0).then(|| from + first(m))
}

/// The bytes of `x` (eight, little-endian) JSON must escape, as their high bits. Exact as a
/// whole (zero when none is); of the bits set, the lowest is the first such byte (a borrow only
/// moves up).
fn dirty(x: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    // A byte below 0x20, or equal to '"' or '\' (zero once xored with it), with its high bit
    // clear (`!x`: the xors keep the high bit).
    let low = x.wrapping_sub(ONES * 0x20);
    let quote = (x ^ (ONES * 0x22)).wrapping_sub(ONES);
    let backslash = (x ^ (ONES * 0x5c)).wrapping_sub(ONES);
    (low | quote | backslash) & !x & HIGH
}

/// The high bit of each of a word's eight bytes.
const HIGH: u64 = 0x8080_8080_8080_8080;

/// The position in its word of the lowest byte `dirty` found.
fn first(m: u64) -> usize {
    (m.trailing_zeros() / 8) as usize
}

fn escape(out: &mut Vec<u8>, b: u8) {
    let short = match b {
        b'"' => b'"',
        b'\\' => b'\\',
        b'\n' => b'n',
        b'\r' => b'r',
        b'\t' => b't',
        0x08 => b'b',
        0x0c => b'f',
        _ => {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
            return;
        }
    };
    out.push(b'\\');
    out.push(short);
}

/// The two-digit numbers 00 to 99, written.
const PAIRS: [u8; 200] = {
    let mut t = [0; 200];
    let mut i = 0;
    while i < 100 {
        t[2 * i] = b'0' + (i / 10) as u8;
        t[2 * i + 1] = b'0' + (i % 10) as u8;
        i += 1;
    }
    t
};

/// `n`'s decimal digits written into `buf`, two a step, ending before `END` (20: a `u64` has at
/// most 20 digits). Returns where they start.
fn digits<const N: usize>(buf: &mut [u8; N], mut n: u64) -> usize {
    const END: usize = 20;
    let mut at = END;
    while n >= 100 {
        let i = (n % 100) as usize * 2;
        n /= 100;
        at -= 2;
        buf[at..at + 2].copy_from_slice(&PAIRS[i..i + 2]);
    }
    if n >= 10 {
        let i = n as usize * 2;
        at -= 2;
        buf[at..at + 2].copy_from_slice(&PAIRS[i..i + 2]);
    } else {
        at -= 1;
        buf[at] = b'0' + n as u8;
    }
    at
}

/// `n` in decimal: its digits copied as one block of 20 bytes. Inlined where it is used (six
/// times a line: the call cost a fifth of it).
#[inline(always)]
pub(in crate::audit) fn uint(out: &mut Vec<u8>, n: u64) {
    let mut buf = [0u8; 40];
    let at = digits(&mut buf, n);
    match buf[at..].first_chunk::<20>() {
        Some(b) => block(out, b, 20 - at),
        None => out.extend_from_slice(&buf[at..20]),
    }
}

/// A fraction of a millisecond (0 to 999 µs) as written after the whole milliseconds: `.` and
/// its digits, trailing zeros trimmed but one (`.0`, `.5`, `.25`, `.125`), padded to four bytes,
/// with its length.
const FRACTIONS: [([u8; 4], u8); 1000] = {
    let mut t = [([0; 4], 0); 1000];
    let mut i = 0;
    while i < 1000 {
        let len = if i % 100 == 0 {
            2
        } else if i % 10 == 0 {
            3
        } else {
            4
        };
        let d = [
            b'.',
            b'0' + (i / 100) as u8,
            b'0' + (i / 10 % 10) as u8,
            b'0' + (i % 10) as u8,
        ];
        t[i] = (d, len);
        i += 1;
    }
    t
};

/// As serde_json writes an `f64` (shortest round-trip form; `null` if not finite).
///
/// A duration is whole microseconds in milliseconds (`millis`): `n / 1000`. Below 10^15 its
/// decimal form (trailing zeros trimmed, at least one fraction digit) has at most 15
/// significant digits, so no shorter decimal reads back as the same `f64` (no two decimals of
/// 15 digits or fewer share one) and it is the shortest round-trip form; under 10^12 serde_json
/// writes it without an exponent. Any other value goes through serde_json. The whole
/// milliseconds and the fraction (from `FRACTIONS`, no division a digit) are copied as one
/// block of 24 bytes.
pub(super) fn float(out: &mut Vec<u8>, f: f64) {
    // Rounded half up by truncation (no libm call); the check below is what makes it right.
    let n = (f * 1000.0 + 0.5) as u64;
    if f.is_sign_positive() && n < 1_000_000_000_000_000 && n as f64 / 1000.0 == f {
        let mut buf = [0u8; 48];
        let at = digits(&mut buf, n / 1000);
        let (frac, len) = FRACTIONS[(n % 1000) as usize];
        buf[20..24].copy_from_slice(&frac);
        match buf[at..].first_chunk::<24>() {
            Some(b) => block(out, b, 20 - at + usize::from(len)),
            None => out.extend_from_slice(&buf[at..20 + usize::from(len)]),
        }
    } else if serde_json::to_writer(&mut *out, &f).is_err() {
        out.extend_from_slice(b"null");
    }
}

/// A vocabulary word as a JSON string, its quotes included, in a block of 16 bytes.
#[derive(Clone, Copy)]
pub(super) struct Word {
    text: [u8; 16],
    len: usize,
}

impl Word {
    /// `""`: an optional word not known yet.
    pub(super) const BLANK: Word = Word::of("");

    /// `s` quoted (at most 14 bytes, nothing to escape: checked when the constant is made).
    pub(super) const fn of(s: &str) -> Word {
        let b = s.as_bytes();
        assert!(b.len() + 2 <= 16, "a word too long for its block");
        let mut text = [0; 16];
        text[0] = b'"';
        let mut i = 0;
        while i < b.len() {
            assert!(b[i] >= 0x20 && b[i] != b'"' && b[i] != b'\\' && b[i] < 0x80);
            text[i + 1] = b[i];
            i += 1;
        }
        text[b.len() + 1] = b'"';
        Word {
            text,
            len: b.len() + 2,
        }
    }

    pub(super) fn put(&self, out: &mut Vec<u8>) {
        block(out, &self.text, self.len);
    }
}

/// The `Word`s of a `words!` enum (`crate::vocab`), indexed by the value (`as usize`: its place
/// in `ALL`, checked when the table is made).
macro_rules! words_of {
    ($t:ty) => {{
        const TABLE: [Word; <$t>::ALL.len()] = {
            let mut t = [Word::BLANK; <$t>::ALL.len()];
            let mut i = 0;
            while i < t.len() {
                assert!(<$t>::ALL[i] as usize == i);
                t[i] = Word::of(<$t>::ALL[i].as_str());
                i += 1;
            }
            t
        };
        &TABLE
    }};
}
pub(super) use words_of;

/// A vocabulary word (an enum's name: nothing in it to escape) as a JSON string.
pub(super) fn vocab(out: &mut Vec<u8>, s: &str) {
    debug_assert!(to_escape(s.as_bytes()).is_none(), "{s}");
    out.reserve(s.len() + 2);
    out.push(b'"');
    put(out, s.as_bytes());
    out.push(b'"');
}

#[cfg(test)]
#[path = "line_text_tests.rs"]
mod tests;
