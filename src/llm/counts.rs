//! The token counts of a usage object, read in one pass over its bytes where a response holds
//! it (src/llm/usage.rs): no parse of the event or of the object into a value.

use std::sync::LazyLock;

use memchr::memmem;

/// The (input, output) counts of the first (or, `last`, the last) whole usage object in `text`:
/// the value of a `"usage"` or `"usageMetadata"` key, read without parsing the rest. A key
/// inside a string is escaped (`\"usage\"`) and so never taken.
pub(super) fn usage_counts(text: &[u8], last: bool) -> Option<(Option<u64>, Option<u64>)> {
    const KEY: &[u8] = b"\"usage";
    let mut found = None;
    let mut from = 0;
    while let Some(i) = USAGE_KEY.find(&text[from..]).map(|i| i + from) {
        from = i + KEY.len();
        if i > 0 && text[i - 1] == b'\\' {
            continue;
        }
        let rest = &text[from..];
        let rest = rest
            .strip_prefix(b"\"")
            .or_else(|| rest.strip_prefix(b"Metadata\""));
        let Some(rest) = rest else { continue };
        let rest = rest.trim_ascii_start().strip_prefix(b":");
        let rest = rest.map(<[u8]>::trim_ascii_start);
        if let Some(c) = rest.and_then(read_counts) {
            found = Some(c);
            if !last {
                break;
            }
        }
    }
    found
}

/// The top-level keys of a usage object that carry its counts, under each provider's names:
/// OpenAI chat completions, then OpenAI responses and Anthropic, then Gemini; input first.
const COUNT_KEYS: [&[u8]; 6] = [
    b"prompt_tokens",
    b"input_tokens",
    b"promptTokenCount",
    b"completion_tokens",
    b"output_tokens",
    b"candidatesTokenCount",
];

/// (input, output) of the usage object `s` starts with, read in one pass over it (no parse
/// into a value): its `COUNT_KEYS`, each an unsigned integer or null, every other member
/// skipped. `None` when `s` starts with no whole object or a count is not such a number.
fn read_counts(s: &[u8]) -> Option<(Option<u64>, Option<u64>)> {
    if s.first() != Some(&b'{') {
        return None;
    }
    let mut counts = [None; COUNT_KEYS.len()];
    let mut i = 1;
    loop {
        i = skip_ws(s, i);
        match *s.get(i)? {
            b'}' => break,
            b',' => {
                i += 1;
                continue;
            }
            b'"' => {}
            _ => return None,
        }
        let key_end = string_end(s, i)?;
        let key = &s[i + 1..key_end - 1];
        i = skip_ws(s, key_end);
        if s.get(i) != Some(&b':') {
            return None;
        }
        i = skip_ws(s, i + 1);
        let end = value_end(s, i)?;
        if let Some(k) = COUNT_KEYS.iter().position(|k| *k == key) {
            counts[k] = match &s[i..end] {
                b"null" => None,
                n => Some(unsigned(n)?),
            };
        }
        i = end;
    }
    let first = |c: &[Option<u64>]| c.iter().find_map(|n| *n);
    Some((first(&counts[..3]), first(&counts[3..])))
}

/// A JSON number that is an unsigned integer fitting `u64` (as serde would read it).
fn unsigned(n: &[u8]) -> Option<u64> {
    if n.is_empty() || (n.len() > 1 && n[0] == b'0') {
        return None;
    }
    n.iter().try_fold(0u64, |acc, &b| {
        let d = b.checked_sub(b'0').filter(|d| *d <= 9)?;
        acc.checked_mul(10)?.checked_add(u64::from(d))
    })
}

fn skip_ws(s: &[u8], mut i: usize) -> usize {
    while s.get(i).is_some_and(u8::is_ascii_whitespace) {
        i += 1;
    }
    i
}

/// Just past the string whose opening quote is at `s[i]`.
fn string_end(s: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    loop {
        let k = j + memchr::memchr2(b'"', b'\\', s.get(j..)?)?;
        if s[k] == b'"' {
            return Some(k + 1);
        }
        j = k + 2;
    }
}

/// Just past the JSON value at `s[i]`: a string, an object or array (balanced, strings
/// skipped), or a scalar (up to the next delimiter).
fn value_end(s: &[u8], i: usize) -> Option<usize> {
    match *s.get(i)? {
        b'"' => string_end(s, i),
        b'{' | b'[' => {
            let (mut depth, mut j) = (0usize, i);
            loop {
                match *s.get(j)? {
                    b'"' => {
                        j = string_end(s, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
        }
        _ => {
            let n = s[i..]
                .iter()
                .position(|b| matches!(b, b',' | b'}' | b']') || b.is_ascii_whitespace())?;
            Some(i + n)
        }
    }
}

/// The searcher for `"usage`, made once: `memmem::find` builds one per call, which cost more
/// than the search itself on every line of a stream.
static USAGE_KEY: LazyLock<memmem::Finder<'static>> =
    LazyLock::new(|| memmem::Finder::new(b"\"usage"));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_usage_object_is_read_by_its_own_top_level_counts() {
        let read = |s: &str| read_counts(s.as_bytes());
        // Nested objects, arrays and strings (with escaped quotes and braces) are skipped whole.
        let openai = r#"{ "prompt_tokens" : 9, "prompt_tokens_details": {"cached_tokens": 4, "prompt_tokens": 99},
            "x": ["}", {"completion_tokens": 98}], "s": "a \"}\" b", "completion_tokens": 3, "total_tokens": 12 } tail"#;
        assert_eq!(read(openai), Some((Some(9), Some(3))));
        assert_eq!(
            read(r#"{"promptTokenCount":4,"candidatesTokenCount":null,"totalTokenCount":4}"#),
            Some((Some(4), None))
        );
        // One provider's name first when an object carries two.
        assert_eq!(
            read(r#"{"input_tokens":2,"prompt_tokens":1,"output_tokens":5}"#),
            Some((Some(1), Some(5)))
        );
        assert_eq!(read("{}"), Some((None, None)));
        // A count that is no unsigned integer, or an object not whole: nothing read from it.
        for bad in [
            r#"{"prompt_tokens":1.5}"#,
            r#"{"prompt_tokens":-1}"#,
            r#"{"prompt_tokens":"1"}"#,
            r#"{"prompt_tokens":01}"#,
            r#"{"prompt_tokens":99999999999999999999}"#,
            r#"{"prompt_tokens":1,"x":{"y":2}"#,
            r#"{"prompt_tokens":1"#,
            r#"{"prompt_tokens" 1}"#,
        ] {
            assert_eq!(read(bad), None, "{bad}");
        }
    }
}
