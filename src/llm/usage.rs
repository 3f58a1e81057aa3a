//! Token usage read from an LLM response as it passes, never holding it back: every frame goes
//! on to the client as it arrives, unchanged. A server-sent event stream is read line by line
//! (a line longer than `MAX_LINE` is skipped, so memory stays bounded per event) and each `data:`
//! line that carries a usage object updates the counts: OpenAI's final chunk
//! (`stream_options.include_usage`) and `response.completed`, Anthropic's `message_start` and
//! `message_delta`, Gemini's `usageMetadata`. A JSON response keeps only its last `TAIL` bytes,
//! where the providers write `usage`, and reads them when it ends.

use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use memchr::memmem;
use prometheus::IntCounter;
use serde::Deserialize;

use super::{AuditLlm, Usage};

/// The longest server-sent event line read for usage.
const MAX_LINE: usize = 64 * 1024;
/// How much of the end of a JSON response is kept to find its usage in.
const TAIL: usize = 16 * 1024;

/// A response body, watched for token usage when it answers an LLM call.
pub struct Scanned<B> {
    inner: B,
    scan: Option<Box<Scanner>>,
}

struct Scanner {
    usage: Arc<Usage>,
    sse: bool,
    /// SSE: the line begun in an earlier frame. JSON: the response's last bytes.
    buf: Vec<u8>,
    /// SSE: the current line is over `MAX_LINE` and skipped up to its end.
    skipping: bool,
    /// `intentgate_llm_tokens_total` for input and output, counted when the body ends.
    counters: [IntCounter; 2],
}

/// Wraps `body`: watched when `llm` is set and the response is an event stream or JSON.
pub(crate) fn scan<B>(
    body: B,
    llm: Option<&AuditLlm>,
    content_type: Option<&http::HeaderValue>,
    counters: impl FnOnce(&AuditLlm) -> [IntCounter; 2],
) -> Scanned<B> {
    let scan = llm.and_then(|l| {
        let ct = content_type.and_then(|v| v.to_str().ok()).unwrap_or("");
        let ct = ct.split(';').next().unwrap_or("").trim();
        let sse = ct.eq_ignore_ascii_case("text/event-stream");
        let json = ct.eq_ignore_ascii_case("application/json");
        (sse || json).then(|| {
            Box::new(Scanner {
                usage: Arc::clone(l.usage()),
                sse,
                buf: Vec::new(),
                skipping: false,
                counters: counters(l),
            })
        })
    });
    Scanned { inner: body, scan }
}

impl Scanner {
    fn data(&mut self, mut d: &[u8]) {
        if !self.sse {
            self.buf.extend_from_slice(d);
            if self.buf.len() > 2 * TAIL {
                self.buf.drain(..self.buf.len() - TAIL);
            }
            return;
        }
        while let Some(n) = memchr::memchr(b'\n', d) {
            let (line, rest) = (&d[..n], &d[n + 1..]);
            if self.skipping {
                self.skipping = false;
            } else if self.buf.is_empty() {
                self.line(line);
            } else {
                let mut whole = std::mem::take(&mut self.buf);
                whole.extend_from_slice(line);
                self.line(&whole);
                whole.clear();
                self.buf = whole;
            }
            d = rest;
        }
        if !self.skipping {
            if self.buf.len() + d.len() > MAX_LINE {
                self.buf.clear();
                self.skipping = true;
            } else {
                self.buf.extend_from_slice(d);
            }
        }
    }

    fn line(&self, line: &[u8]) {
        if let Some(data) = line.strip_prefix(b"data:") {
            if let Some(obj) = usage_object(data, false) {
                self.report(obj);
            }
        }
    }

    fn report(&self, obj: &[u8]) {
        if let Ok(c) = serde_json::from_slice::<Counts>(obj) {
            self.usage.report(
                c.prompt_tokens.or(c.input_tokens).or(c.prompt_token_count),
                c.completion_tokens
                    .or(c.output_tokens)
                    .or(c.candidates_token_count),
            );
        }
    }

    /// The body ended (or was dropped): a JSON response's usage is read, the metric counted.
    fn finish(&mut self) {
        if !self.sse {
            if let Some(obj) = usage_object(&self.buf, true) {
                self.report(obj);
            }
        }
        self.buf = Vec::new();
        self.usage.settle();
        for (c, n) in self
            .counters
            .iter()
            .zip([self.usage.input(), self.usage.output()])
        {
            if let Some(n) = n {
                c.inc_by(n);
            }
        }
    }
}

/// The counts of the three providers' usage objects.
#[derive(Deserialize)]
struct Counts {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    #[serde(rename = "promptTokenCount")]
    prompt_token_count: Option<u64>,
    #[serde(rename = "candidatesTokenCount")]
    candidates_token_count: Option<u64>,
}

/// The object value of a `"usage"` or `"usageMetadata"` key in `text` (the first, or with
/// `last` the last one whose object is whole), found without parsing the rest. A key inside
/// a string is escaped (`\"usage\"`) and so never taken.
fn usage_object(text: &[u8], last: bool) -> Option<&[u8]> {
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
        let rest = trim(rest).strip_prefix(b":").map(trim);
        let Some(rest) = rest.filter(|r| r.first() == Some(&b'{')) else {
            continue;
        };
        if let Some(obj) = balanced(rest) {
            found = Some(obj);
            if !last {
                break;
            }
        }
    }
    found
}

/// The searcher for `"usage`, made once: `memmem::find` builds one per call, which cost more
/// than the search itself on every line of a stream.
static USAGE_KEY: LazyLock<memmem::Finder<'static>> =
    LazyLock::new(|| memmem::Finder::new(b"\"usage"));

fn trim(s: &[u8]) -> &[u8] {
    let n = s
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(s.len());
    &s[n..]
}

/// The JSON object `s` starts with, up to its closing brace (strings skipped).
fn balanced(s: &[u8]) -> Option<&[u8]> {
    let (mut depth, mut in_str, mut esc) = (0usize, false, false);
    for (i, &b) in s.iter().enumerate() {
        if in_str {
            match (esc, b) {
                (true, _) => esc = false,
                (false, b'\\') => esc = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(&s[..=i]);
                }
            }
            _ => {}
        }
    }
    None
}

impl<B: HttpBody<Data = Bytes> + Unpin> HttpBody for Scanned<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_frame(cx);
        if let Some(s) = &mut this.scan {
            if let Poll::Ready(Some(Ok(f))) = &r {
                if let Some(d) = f.data_ref() {
                    s.data(d);
                }
            }
            // A body of known length ends with its last frame: hyper polls no further and
            // drops it, so the usage must be read before the audit record is written.
            if matches!(r, Poll::Ready(None)) || this.inner.is_end_stream() {
                s.finish();
                this.scan = None;
            }
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for Scanned<B> {
    fn drop(&mut self) {
        if let Some(s) = &mut self.scan {
            s.finish();
        }
    }
}

#[cfg(test)]
#[path = "usage_tests.rs"]
mod tests;
