//! Token usage read from an LLM response as it passes, never holding it back: every frame goes
//! on to the client as it arrives, unchanged, and nothing is searched while it passes. The
//! providers put their counts at the ends of a response: OpenAI's final chunk
//! (`stream_options.include_usage`) and `response.completed`, Anthropic's `message_start` (first)
//! and `message_delta` (last), Gemini's `usageMetadata` (cumulative, the last one final), a JSON
//! response's `usage`. So a response's last `EDGE` bytes or more (and an Anthropic stream's
//! first) are kept: short frames copied into a buffer of the scanner's own (so hyper's read
//! buffer is never pinned), a frame of `EDGE` bytes or more by reference, alone. When the body
//! ends, the last whole `data:` line among them that carries a usage object gives the counts.
//! The response body that writes the audit record (src/proxy/audited.rs) holds the `Scanner`:
//! one body type for every response, an LLM call's or not.

use std::sync::Arc;

use bytes::Bytes;
use prometheus::IntCounter;

use super::counts::{last_line_counts, usage_counts};
use super::{AuditLlm, Usage};

/// How much of each end of a response is kept to find its usage in.
const EDGE: usize = 16 * 1024;

/// What an LLM call's response body is watched with as it passes: its frames go to `data`, and
/// `finish` reads the usage when the body ends or is dropped, before the audit record is written.
pub(crate) struct Scanner {
    usage: Arc<Usage>,
    sse: bool,
    /// An Anthropic stream's first frames, copied while under `EDGE` bytes (its last usage line
    /// lacks the input count, which is in the first: `message_start`); no other response's.
    head: Option<Vec<u8>>,
    /// The response's last `EDGE` bytes (or all, while fewer passed), copied from its short
    /// frames into a ring.
    tail: Ring,
    /// The last frame when it was `EDGE` bytes or more: kept by reference, alone.
    long: Bytes,
    /// Bytes were dropped before what is kept: its first line may be partial.
    cut: bool,
    /// `intentgate_llm_tokens_total` for input and output, counted when the body ends.
    counters: [IntCounter; 2],
}

/// The scanner of an LLM call's (`llm`) response when it is an event stream or JSON; `None` for
/// any other. Boxed: the body that holds it stays one pointer larger for every other response.
#[cold]
pub(crate) fn scan(
    llm: &AuditLlm,
    content_type: Option<&http::HeaderValue>,
    counters: impl FnOnce(&AuditLlm) -> [IntCounter; 2],
) -> Option<Box<Scanner>> {
    let sse = event_stream(content_type.map_or(&b""[..], |v| v.as_bytes()))?;
    let head = sse && llm.provider == super::LlmProvider::Anthropic;
    Some(Box::new(Scanner::new(
        Arc::clone(llm.usage()),
        sse,
        head,
        counters(llm),
    )))
}

/// Whether a response of Content-Type `ct` is an event stream (`Some(true)`) or JSON
/// (`Some(false)`); `None` for anything else. The two exact spellings are compared first (what
/// the providers send), then the type without its parameters, case-blind.
fn event_stream(ct: &[u8]) -> Option<bool> {
    match ct {
        b"text/event-stream" => return Some(true),
        b"application/json" => return Some(false),
        _ => {}
    }
    let ct = ct
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    if ct.eq_ignore_ascii_case(b"text/event-stream") {
        Some(true)
    } else {
        ct.eq_ignore_ascii_case(b"application/json")
            .then_some(false)
    }
}

impl Scanner {
    /// Nothing allocated: the tail grows with the first short frame, the head (kept when
    /// `head`: an Anthropic stream) with the first frame.
    fn new(usage: Arc<Usage>, sse: bool, head: bool, counters: [IntCounter; 2]) -> Self {
        Scanner {
            usage,
            sse,
            head: head.then(Vec::new),
            tail: Ring::default(),
            long: Bytes::new(),
            cut: false,
            counters,
        }
    }

    /// A frame passes. A short one is copied into the ring (bytes of our own): a reference to
    /// hyper's frame would pin the connection's read buffer, and hyper would allocate a new one
    /// for its next read (+5.7 % of a response streamed in one frame per event). A long one is
    /// kept by reference, alone.
    pub(crate) fn data(&mut self, d: &Bytes) {
        if let Some(head) = self.head.as_mut().filter(|h| h.len() < EDGE) {
            head.extend_from_slice(d);
        }
        if d.len() >= EDGE {
            self.cut |= !self.long.is_empty() || !self.tail.bytes.is_empty();
            self.tail.clear();
            self.long = d.clone();
            return;
        }
        if !self.long.is_empty() {
            // The long frame before this one: its last `EDGE` bytes start the tail.
            let long = std::mem::take(&mut self.long);
            self.cut |= long.len() > EDGE;
            self.tail.push(&long[long.len() - EDGE..], false);
        }
        self.cut |= self.tail.push(d, self.sse);
    }

    /// The counts of the first whole `data:` line of `text` with a usage object (an Anthropic
    /// stream's head): its lines are read from the start, so the rest is never read.
    fn first_counts(text: &[u8]) -> Option<(Option<u64>, Option<u64>)> {
        // Only lines ended by a newline are whole.
        let mut rest = &text[..last_newline(text)?];
        loop {
            let (line, more) = match memchr::memchr(b'\n', rest) {
                Some(n) => (&rest[..n], Some(&rest[n + 1..])),
                None => (rest, None),
            };
            // Only a JSON object (`{…}`) can hold one: `[DONE]` and the like are not searched.
            if let Some(c) = (line.strip_prefix(b"data:"))
                .filter(|data| data.trim_ascii_end().ends_with(b"}"))
                .and_then(usage_counts)
            {
                return Some(c);
            }
            rest = more?;
        }
    }

    /// An event stream's last usage line: looked for among the ring's newest bytes first (from
    /// their second line: the first may have begun before them), where it nearly always is, so
    /// the ring is put in order only when it is not.
    fn last_line_counts(&mut self) -> Option<(Option<u64>, Option<u64>)> {
        if !self.long.is_empty() {
            return last_line_counts(lines(&self.long, self.cut));
        }
        let newest = self.tail.newest();
        (newest.len() < self.tail.bytes.len())
            .then(|| last_line_counts(lines(newest, true)))
            .flatten()
            .or_else(|| last_line_counts(lines(self.tail.in_order(), self.cut)))
    }

    /// The body ended (or was dropped): the usage in its ends is read, the metric counted.
    pub(crate) fn finish(mut self) {
        if self.sse {
            // The last counts are final; a count they lack (Anthropic's input tokens, in
            // `message_start`) is the first line's.
            let (mut input, output) = self.last_line_counts().unwrap_or_default();
            if input.is_none() {
                input = self
                    .head
                    .as_deref()
                    .and_then(Self::first_counts)
                    .and_then(|c| c.0);
            }
            self.usage.report(input, output);
        } else if let Some((input, output)) = usage_counts(match self.long.is_empty() {
            true => self.tail.in_order(),
            false => &self.long[..],
        }) {
            // A JSON body: its usage object is near its end.
            self.usage.report(input, output);
        }
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

/// The last `EDGE` bytes pushed (or all, while fewer were), in one buffer of at most `EDGE`
/// bytes: filled from its start, then overwritten from its oldest byte on, so no byte is moved
/// while frames pass (a buffer of twice that from which the older half was cut, moved 16 KiB
/// every 16 KiB); put in order once, when the body ends.
#[derive(Default)]
struct Ring {
    bytes: Vec<u8>,
    /// Where the oldest byte is once the buffer is full (where the next one goes).
    at: usize,
}

impl Ring {
    fn clear(&mut self) {
        self.bytes.clear();
        self.at = 0;
    }

    /// `d` (`EDGE` bytes at most) goes in; whether older bytes were overwritten. Once full
    /// (most of a stream's frames), one copy over the oldest bytes, two where it wraps.
    #[inline]
    fn push(&mut self, d: &[u8], whole: bool) -> bool {
        if self.bytes.len() < EDGE {
            return self.fill(d, whole);
        }
        let end = self.at + d.len();
        match self.bytes.get_mut(self.at..end) {
            Some(over) => over.copy_from_slice(d),
            None => {
                let (first, wrapped) = d.split_at(EDGE - self.at);
                self.bytes[self.at..].copy_from_slice(first);
                self.bytes[..wrapped.len()].copy_from_slice(wrapped);
            }
        }
        self.at = end % EDGE;
        true
    }

    /// `d` goes in while the buffer is not yet full: appended, the rest (if it fills it) into
    /// the ring. The buffer grows by doubling, never past `EDGE`; a stream's (`whole`) is
    /// allocated at that size at once, no growth copies.
    #[cold]
    fn fill(&mut self, d: &[u8], whole: bool) -> bool {
        let len = self.bytes.len();
        let (now, rest) = d.split_at(d.len().min(EDGE - len));
        if self.bytes.capacity() < len + now.len() {
            let cap = match whole {
                true => EDGE,
                false => (2 * self.bytes.capacity()).clamp(len + now.len(), EDGE),
            };
            self.bytes.reserve_exact(cap - len);
        }
        self.bytes.extend_from_slice(now);
        !rest.is_empty() && self.push(rest, whole)
    }

    /// The newest bytes, in order: those after the wrap point (all of them when it has none).
    fn newest(&self) -> &[u8] {
        match self.at {
            0 => &self.bytes,
            at => &self.bytes[..at],
        }
    }

    /// The bytes, oldest first.
    fn in_order(&mut self) -> &[u8] {
        self.bytes.rotate_left(self.at);
        self.at = 0;
        &self.bytes
    }
}

/// Where `text`'s last newline is: without a search when it ends with one, as an event (its
/// blank line) does.
fn last_newline(text: &[u8]) -> Option<usize> {
    match text.last() {
        Some(b'\n') => Some(text.len() - 1),
        _ => memchr::memrchr(b'\n', text),
    }
}

/// `text` from its first whole line: after its first newline when `partial`.
fn lines(text: &[u8], partial: bool) -> &[u8] {
    match partial {
        true => memchr::memchr(b'\n', text).map_or(&[], |n| &text[n + 1..]),
        false => text,
    }
}

#[cfg(test)]
#[path = "usage_tests.rs"]
mod tests;
