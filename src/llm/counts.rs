//! The token counts of a usage object, read in one pass over its bytes where a response holds
//! it (src/llm/usage.rs): no parse of the event or of the object into a value.

/// The (input, output) counts of the last whole usage object in `text`: the value of a
/// `"usage"` or `"usageMetadata"` key, looked for from the end (where every provider puts it,
/// after anything else that may carry such a key, as a tool's schema in OpenAI's
/// `response.completed`), read without parsing the rest. A key inside a string is escaped
/// (`\"usage\"`) and so never taken.
pub(super) fn usage_counts(text: &[u8]) -> Option<(Option<u64>, Option<u64>)> {
    let mut end = text.len();
    while let Some((u, value)) = key_before(text, end) {
        end = u;
        if let Some(c) = read_counts(&text[value..]) {
            return Some(c);
        }
    }
    None
}

/// The counts of the last usage object on a whole `data:` line of `text` (event-stream bytes
/// from a line's start): ONE walk back over the whole text for the key, not line by line; a key
/// found is taken only on a `data:` line that a newline ends, and read no further than that
/// line. A line with no such object leaves the walk to go on before it.
pub(super) fn last_line_counts(text: &[u8]) -> Option<(Option<u64>, Option<u64>)> {
    let mut end = text.len();
    while let Some((u, value)) = key_before(text, end) {
        let start = memchr::memrchr(b'\n', &text[..u]).map_or(0, |n| n + 1);
        let line_end = memchr::memchr(b'\n', &text[value..]).map(|n| value + n);
        match line_end {
            Some(e) if text[start..].starts_with(b"data:") => {
                if let Some(c) = read_counts(&text[value..e]) {
                    return Some(c);
                }
                end = u; // an earlier key on the same line may hold it
            }
            // A line not whole, or not data: none of its keys is taken.
            _ => end = start,
        }
    }
    None
}

/// The last `"usage"`/`"usageMetadata"` key in `text[..end]` followed by a colon: where its `u`
/// is, and where its value starts. Found by walking back over the `u`s (rare in what follows a
/// usage object: numbers, short keys).
fn key_before(text: &[u8], mut end: usize) -> Option<(usize, usize)> {
    while let Some(u) = memchr::memrchr(b'u', &text[..end]) {
        end = u;
        if u == 0 || text[u - 1] != b'"' || (u > 1 && text[u - 2] == b'\\') {
            continue;
        }
        let rest = &text[u + 1..];
        let Some(after) =
            (rest.strip_prefix(b"sage\"")).or_else(|| rest.strip_prefix(b"sageMetadata\""))
        else {
            continue;
        };
        let i = skip_ws(after, 0);
        if after.get(i) != Some(&b':') {
            continue;
        }
        let value = u + 1 + (rest.len() - after.len()) + skip_ws(after, i + 1);
        return Some((u, value));
    }
    None
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

/// The key whose opening quote is at `s[i]`: which of `COUNT_KEYS` it is, and just past it. One
/// of ours is compared in place, picked by its first letter (no pass over it to find its end),
/// each against its constant spelling (a few loads, no call); any other key is passed over.
fn key_at(s: &[u8], i: usize) -> Option<(Option<usize>, usize)> {
    let rest = s.get(i + 1..)?;
    let k = match rest.first() {
        Some(b'p') => ours(rest, 0).or_else(|| ours(rest, 2)),
        Some(b'i') => ours(rest, 1),
        Some(b'c') => ours(rest, 3).or_else(|| ours(rest, 5)),
        Some(b'o') => ours(rest, 4),
        _ => None,
    };
    match k {
        Some(k) => Some((Some(k), i + COUNT_KEYS[k].len() + 2)),
        None => Some((None, string_end(s, i)?)),
    }
}

/// `k` when `rest` starts with `COUNT_KEYS[k]` and its closing quote. Inlined where `k` is a
/// constant, so the compare is of a known length.
#[inline(always)]
fn ours(rest: &[u8], k: usize) -> Option<usize> {
    let key = COUNT_KEYS[k];
    (rest.get(key.len()) == Some(&b'"') && rest.starts_with(key)).then_some(k)
}

/// (input, output) of the usage object `s` starts with, read in one pass over it (no parse
/// into a value): its `COUNT_KEYS`, each an unsigned integer or null (its digits read as they
/// are passed), every other member skipped. `None` when `s` starts with no whole object or a
/// count is not such a number.
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
        let (key, key_end) = key_at(s, i)?;
        i = skip_ws(s, key_end);
        if s.get(i) != Some(&b':') {
            return None;
        }
        i = skip_ws(s, i + 1);
        i = match key {
            Some(k) => {
                let (n, end) = count(s, i)?;
                counts[k] = n;
                end
            }
            None => value_end(s, i)?,
        };
    }
    let first = |c: &[Option<u64>]| c.iter().find_map(|n| *n);
    Some((first(&counts[..3]), first(&counts[3..])))
}

/// The count at `s[i]` and just past it: `null`, or an unsigned integer fitting `u64` (as serde
/// would read it: no sign, fraction, exponent or leading zero), read in the pass that finds its
/// end. `None` for anything else; what follows (`.5`, `e3`, the `x` of `nullx`) is the object
/// reader's to refuse, as it is no member's start.
fn count(s: &[u8], i: usize) -> Option<(Option<u64>, usize)> {
    if s[i..].starts_with(b"null") {
        Some((None, i + 4))
    } else {
        let mut n = u64::from(s.get(i)?.checked_sub(b'0').filter(|d| *d <= 9)?);
        let mut j = i + 1;
        while let Some(d) = s
            .get(j)
            .and_then(|b| b.checked_sub(b'0'))
            .filter(|d| *d <= 9)
        {
            if n == 0 {
                return None; // a leading zero
            }
            n = n.checked_mul(10)?.checked_add(u64::from(d))?;
            j += 1;
        }
        Some((Some(n), j))
    }
}

fn skip_ws(s: &[u8], mut i: usize) -> usize {
    while s.get(i).is_some_and(u8::is_ascii_whitespace) {
        i += 1;
    }
    i
}

/// Just past the string whose opening quote is at `s[i]` (a byte loop: a usage object's strings
/// are short, shorter than a search's set-up).
fn string_end(s: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    loop {
        match *s.get(j)? {
            b'"' => return Some(j + 1),
            b'\\' => j += 2,
            _ => j += 1,
        }
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
            let mut j = i;
            while !matches!(
                *s.get(j)?,
                b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'
            ) {
                j += 1;
            }
            Some(j)
        }
    }
}

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

    #[test]
    fn a_count_is_an_unsigned_integer_or_null_read_in_the_same_pass() {
        let read = |n: &str| read_counts(format!(r#"{{"prompt_tokens":{n}}}"#).as_bytes());
        for (n, want) in [
            ("0", Some(0)),
            ("7", Some(7)),
            ("1200 ", Some(1200)),
            ("18446744073709551615", Some(u64::MAX)),
            ("null", None),
            (" null\n", None),
        ] {
            assert_eq!(read(n), Some((want, None)), "{n}");
        }
        for bad in [
            "00",
            "012",
            "1e3",
            "1E3",
            "1.0",
            "-0",
            "+1",
            "nul",
            "nullx",
            "null1",
            "1x",
            "",
            "18446744073709551616",
            "true",
            "[1]",
        ] {
            assert_eq!(read(bad), None, "{bad:?}");
        }
        // A count closing the input (no delimiter after it) is not whole.
        assert_eq!(read_counts(br#"{"output_tokens":15"#), None);
    }

    #[test]
    fn a_key_is_one_of_ours_only_when_it_is_spelled_the_same() {
        let read = |s: &str| read_counts(s.as_bytes());
        // The same length and first letter, or an escape in it: another member, skipped whole.
        assert_eq!(
            read(r#"{"prompt_tokenz":3,"candidatesTokenCounT":4,"output_tokens":5}"#),
            Some((None, Some(5)))
        );
        assert_eq!(
            read(r#"{"prompt\"tokens":{"a":"}"},"prompt\u005ftokens":8,"input_tokens":2}"#),
            Some((Some(2), None))
        );
        assert_eq!(
            read(r#"{"":1,"p":2,"output_tokens":null}"#),
            Some((None, None))
        );
    }

    #[test]
    fn the_last_usage_object_is_taken_looking_from_the_end() {
        let read = |s: &str| usage_counts(s.as_bytes());
        // OpenAI's final chunk, Anthropic's `message_delta`, Gemini's last chunk, OpenAI's
        // `response.completed` (a tool's schema with a `usage` property before the real one).
        let openai = r#"{"id":"c","choices":[],"usage":{"prompt_tokens":42,"completion_tokens":200,"total_tokens":242}}"#;
        assert_eq!(read(openai), Some((Some(42), Some(200))));
        let anthropic = r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":15}}"#;
        assert_eq!(read(anthropic), Some((None, Some(15))));
        let gemini = r#"{"candidates":[{"content":{"parts":[{"text":"use up"}]}}],"usageMetadata" : {"promptTokenCount": 4, "candidatesTokenCount": 10, "totalTokenCount": 14},"modelVersion":"gemini-flash","responseId":"u"}"#;
        assert_eq!(read(gemini), Some((Some(4), Some(10))));
        let responses = r#"{"type":"response.completed","response":{"tools":[{"type":"function","parameters":{"properties":{"usage":{"type":"string"}}}}],"usage":{"input_tokens":9,"output_tokens":3,"output_tokens_details":{"reasoning_tokens":0}},"user":null}}"#;
        assert_eq!(read(responses), Some((Some(9), Some(3))));
        // After the real one: a key inside a string or with a quote in it (escaped), `usage` as
        // a value, a longer key, a usage that is null or no object; before it, an earlier usage.
        let odd = r#"{"usage":{"prompt_tokens":1},"usage":{"prompt_tokens":2,"completion_tokens":3},"s":"\"usage\":{\"prompt_tokens\":9}","\"usage":{"prompt_tokens":7},"kind":"usage","usage_x":{"prompt_tokens":8},"usage":null,"usageMetadata":"u"}"#;
        assert_eq!(read(odd), Some((Some(2), Some(3))));
        // At the very start and the very end of the text, and nowhere.
        assert_eq!(
            read(r#""usage":{"output_tokens":6}"#),
            Some((None, Some(6)))
        );
        assert_eq!(read(r#"{"x":1,"usage"#), None);
        assert_eq!(read(r#"{"usage":{"output_tokens":6"#), None);
        assert_eq!(read("usage"), None);
        assert_eq!(read(""), None);
    }

    #[test]
    fn the_last_usage_line_is_found_by_one_walk_back_over_whole_data_lines() {
        let read = |s: &str| last_line_counts(s.as_bytes());
        let line = |n: u64| {
            format!(
                r#"data: {{"choices":[],"usage":{{"prompt_tokens":{n},"completion_tokens":1}}}}"#
            )
        };
        let (l1, l2) = (line(1), line(2));
        // The last whole data line with one, past `[DONE]` and blank lines.
        assert_eq!(
            read(&format!("{l1}\n\n{l2}\n\ndata: [DONE]\n\n")),
            Some((Some(2), Some(1)))
        );
        // CRLF line ends.
        assert_eq!(read(&format!("{l2}\r\n\r\n")), Some((Some(2), Some(1))));
        // A last line no newline ends is not whole: the one before it is read.
        assert_eq!(read(&format!("{l1}\n\n{l2}")), Some((Some(1), Some(1))));
        // Keys on lines that are no data (a comment, an event name) are never taken.
        let odd = format!("{l1}\n: {l2}\nevent: \"usage\":{{\"prompt_tokens\":5}}\n");
        assert_eq!(read(&odd), Some((Some(1), Some(1))));
        // A usage that reads as no counts: an earlier key of that line, then the lines before.
        assert_eq!(
            read(&format!(
                "{l1}\ndata: {{\"usage\":{{\"prompt_tokens\":8}},\"x\":{{\"usage\":null}}}}\n"
            )),
            Some((Some(8), None))
        );
        assert_eq!(
            read(&format!("{l1}\ndata: {{\"usage\":null}}\n")),
            Some((Some(1), Some(1)))
        );
        // An object is never read past its line's end into the next line.
        assert_eq!(
            read("data: {\"usage\":{\"prompt_tokens\":1\n,\"completion_tokens\":2}}\n"),
            None
        );
        for none in [
            "",
            "\n\n",
            "data: [DONE]\n",
            "\"usage\":{\"output_tokens\":6}\n",
        ] {
            assert_eq!(read(none), None, "{none:?}");
        }
    }
}
