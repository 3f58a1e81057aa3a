//! Token usage read from an LLM response as it passes, never holding it back: every frame goes
//! on to the client as it arrives, unchanged, and nothing is searched while it passes. The
//! providers put their counts at the ends of a response: OpenAI's final chunk
//! (`stream_options.include_usage`) and `response.completed`, Anthropic's `message_start` (first)
//! and `message_delta` (last), Gemini's `usageMetadata` (cumulative, the last one final), a JSON
//! response's `usage`. So the frames holding a response's last `EDGE` bytes (and an Anthropic
//! stream's first) are kept (reference-counted, not copied), and when the body ends the whole
//! `data:` lines among them that carry a usage object update the counts: looked for in the end
//! frame alone first (nothing copied when it holds the line whole, as it nearly always does),
//! then in the kept frames joined. A frame of `EDGE` bytes or more is kept alone, with no list.
//! The response body that writes the audit record (src/proxy/audited.rs) holds the `Scanner`:
//! one body type for every response, an LLM call's or not.

use std::collections::VecDeque;
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
    /// An Anthropic stream's frames of its first `EDGE` bytes (its last usage line lacks the
    /// input count, which is in the first: `message_start`); no other response's.
    head: Vec<Bytes>,
    /// `EDGE` from the start when no head is kept.
    head_len: usize,
    /// The frames before `last`, oldest first, while they and `last` are under `EDGE` bytes
    /// without the oldest (so at least `EDGE` bytes together when there were that many).
    tail: VecDeque<Bytes>,
    tail_len: usize,
    /// The last frame (empty before the first).
    last: Bytes,
    /// Frames were dropped from the front of `tail`: its first line may be partial.
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
    /// Nothing allocated: the lists grow only when a response comes in frames shorter than
    /// `EDGE` (or, `head`, it is an Anthropic stream).
    fn new(usage: Arc<Usage>, sse: bool, head: bool, counters: [IntCounter; 2]) -> Self {
        Scanner {
            usage,
            sse,
            head: Vec::new(),
            head_len: if head { 0 } else { EDGE },
            tail: VecDeque::new(),
            tail_len: 0,
            last: Bytes::new(),
            cut: false,
            counters,
        }
    }

    /// A frame passes: a reference count for the head while it is short, one for the tail.
    pub(crate) fn data(&mut self, d: &Bytes) {
        if self.head_len < EDGE {
            self.head.push(d.clone());
            self.head_len += d.len();
        }
        let prev = std::mem::replace(&mut self.last, d.clone());
        if d.len() >= EDGE {
            // The frame alone is the tail: a length check, no list.
            self.cut |= !prev.is_empty() || !self.tail.is_empty();
            self.tail.clear();
            self.tail_len = 0;
            return;
        }
        if !prev.is_empty() {
            self.tail_len += prev.len();
            self.tail.push_back(prev);
        }
        while let Some(front) = self.tail.front() {
            if self.tail_len + d.len() - front.len() < EDGE {
                break;
            }
            self.tail_len -= front.len();
            self.tail.pop_front();
            self.cut = true;
        }
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

    /// The counts of the last (`last`) or first whole usage line in `frames` (consecutive, the
    /// stream's start unless `cut`): the end frame alone is read first, in place; only when the
    /// line is not whole in it are the frames joined (a copy).
    fn counts_in(frames: &[Bytes], cut: bool, last: bool) -> Option<(Option<u64>, Option<u64>)> {
        let end = if last { frames.last() } else { frames.first() }?;
        // Its first line is whole if it starts the stream or the frame before it ended a line.
        let whole_start = match frames.len() {
            1 => !cut,
            n if last => frames[n - 2].ends_with(b"\n"),
            _ => !cut,
        };
        let read = match last {
            true => last_line_counts,
            false => Self::first_counts,
        };
        if let Some(c) = read(lines(end, !whole_start)) {
            return Some(c);
        }
        if frames.len() == 1 {
            return None;
        }
        let mut joined = Vec::with_capacity(frames.iter().map(Bytes::len).sum());
        for f in frames {
            joined.extend_from_slice(f);
        }
        read(lines(&joined, cut))
    }

    /// The body ended (or was dropped): the usage in its ends is read, the metric counted.
    pub(crate) fn finish(mut self) {
        let tail = match self.tail.is_empty() {
            true => std::slice::from_ref(&self.last),
            false => {
                self.tail.push_back(std::mem::take(&mut self.last));
                self.tail.make_contiguous()
            }
        };
        if self.sse {
            // The last counts are final; a count they lack (Anthropic's input tokens, in
            // `message_start`) is the first line's.
            let (mut input, output) = Self::counts_in(tail, self.cut, true).unwrap_or_default();
            if input.is_none() {
                input = Self::counts_in(&self.head, false, false).and_then(|c| c.0);
            }
            self.usage.report(input, output);
        } else {
            // A JSON body: its tail read in place when it is one frame, else joined (a copy).
            let counts = match tail {
                [one] => usage_counts(one),
                _ => {
                    let mut joined = Vec::with_capacity(tail.iter().map(Bytes::len).sum());
                    for f in tail.iter() {
                        joined.extend_from_slice(f);
                    }
                    usage_counts(&joined)
                }
            };
            if let Some((input, output)) = counts {
                self.usage.report(input, output);
            }
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
