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

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use prometheus::IntCounter;

use super::counts::{last_line_counts, usage_counts};
use super::{AuditLlm, Usage};

/// How much of each end of a response is kept to find its usage in.
const EDGE: usize = 16 * 1024;

/// A response body, watched for token usage when it answers an LLM call.
pub struct Scanned<B> {
    inner: B,
    /// Inline: the wrapped body is boxed once, whole, by the pipeline.
    scan: Option<Scanner>,
}

struct Scanner {
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

/// Wraps `body`: watched when `llm` is set and the response is an event stream or JSON.
pub(crate) fn scan<B>(
    body: B,
    llm: Option<&AuditLlm>,
    content_type: Option<&http::HeaderValue>,
    counters: impl FnOnce(&AuditLlm) -> [IntCounter; 2],
) -> Scanned<B> {
    let scan = llm.and_then(|l| {
        let sse = event_stream(content_type.map_or(&b""[..], |v| v.as_bytes()))?;
        let head = sse && l.provider == super::LlmProvider::Anthropic;
        Some(Scanner::new(Arc::clone(l.usage()), sse, head, counters(l)))
    });
    Scanned { inner: body, scan }
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
    fn data(&mut self, d: &Bytes) {
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
    fn finish(mut self) {
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
            let mut joined = Vec::with_capacity(tail.iter().map(Bytes::len).sum());
            for f in tail.iter() {
                joined.extend_from_slice(f);
            }
            if let Some((input, output)) = usage_counts(&joined) {
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
                if let Some(s) = this.scan.take() {
                    s.finish();
                }
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
        if let Some(s) = self.scan.take() {
            s.finish();
        }
    }
}

#[cfg(test)]
#[path = "usage_tests.rs"]
mod tests;
