//! `mcp.filter_tools_list`: an MCP server's answer to `tools/list` cut down to the tools the
//! matched rule permits, so the model is not offered tools it may not call. A JSON answer is one
//! document, read whole (bounded); an SSE stream is filtered event by event as it arrives, never
//! buffered whole. Answers that are not to the `tools/list` request pass unchanged.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body as HttpBody, Frame};
use serde_json::Value;

use super::{Call, Scope, TOOLS_LIST};

/// The most a JSON answer, or one SSE event, may hold to be filtered; beyond it the answer is
/// replaced by a JSON-RPC error (fail closed: an unfiltered list is never passed on).
pub const MAX_ANSWER: usize = 4 << 20;

/// What to filter: the ids of the call's `tools/list` requests, and the scope that decides.
#[derive(Debug, Clone)]
pub struct ToolsFilter {
    ids: Vec<Value>,
    scope: Scope,
}

impl ToolsFilter {
    /// A filter for `call`'s answers, when it asks `tools/list` and `scope` names its tools.
    pub fn of(call: &Call, scope: &Scope) -> Option<Self> {
        let ids: Vec<Value> = call
            .messages
            .iter()
            .filter(|m| m.method.as_deref() == Some(TOOLS_LIST))
            .filter_map(|m| m.id.clone())
            .collect();
        (!ids.is_empty() && scope.names_tools()).then(|| ToolsFilter {
            ids,
            scope: scope.clone(),
        })
    }

    /// Wraps an answer body; `sse` when its `Content-Type` is `text/event-stream`.
    pub fn wrap<B>(self, inner: B, sse: bool) -> Filtered<B> {
        Filtered {
            inner,
            f: self,
            sse,
            buf: BytesMut::new(),
            done: false,
        }
    }

    /// Removes the tools out of scope from a JSON-RPC answer (or a batch of them) in place;
    /// whether anything is to be written back.
    fn answer(&self, v: &mut Value) -> bool {
        match v {
            Value::Array(all) => all.iter_mut().fold(false, |c, v| self.answer(v) | c),
            Value::Object(o) if o.get("id").is_some_and(|id| self.ids.contains(id)) => {
                match o.get_mut("result").and_then(|r| r.get_mut("tools")) {
                    Some(Value::Array(tools)) => {
                        tools.retain(|t| {
                            t.get("name")
                                .and_then(Value::as_str)
                                .is_some_and(|n| self.scope.permits_tool(n))
                        });
                        true
                    }
                    _ => false,
                }
            }
            _ => false,
        }
    }

    /// The answer that replaces one too large to filter.
    fn too_large(&self) -> Vec<u8> {
        let id = self.ids.first().cloned().unwrap_or(Value::Null);
        let v = serde_json::json!({"jsonrpc": "2.0", "id": id, "error": {
            "code": super::reply::REFUSED,
            "message": format!("the tools/list answer is over the {MAX_ANSWER} bytes intentgate \
                                filters (mcp.filter_tools_list); ask for fewer tools per page")}});
        serde_json::to_vec(&v).unwrap_or_default()
    }

    /// One SSE event (its lines, without the blank line ending it) with its data filtered.
    fn event(&self, ev: &[u8], out: &mut Vec<u8>) {
        let text = String::from_utf8_lossy(ev);
        let data: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(|d| d.strip_prefix(' ').unwrap_or(d))
            .collect();
        let mut parsed = serde_json::from_str::<Value>(&data.join("\n")).ok();
        let changed = parsed.as_mut().is_some_and(|v| self.answer(v));
        match parsed.filter(|_| changed) {
            Some(v) => {
                for l in text.lines().filter(|l| !l.starts_with("data:")) {
                    out.extend_from_slice(l.as_bytes());
                    out.push(b'\n');
                }
                out.extend_from_slice(b"data: ");
                let _ = serde_json::to_writer(&mut *out, &v);
                out.push(b'\n');
            }
            _ => out.extend_from_slice(ev),
        }
    }
}

/// An answer body being filtered.
pub struct Filtered<B> {
    inner: B,
    f: ToolsFilter,
    sse: bool,
    /// JSON: the answer so far; SSE: the start of an event not yet ended.
    buf: BytesMut,
    done: bool,
}

/// Where the first event in `buf` ends: (end of its lines, start of the next event).
fn event_end(buf: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while i + 1 < buf.len() {
        match (buf[i], buf[i + 1]) {
            (b'\n', b'\n') => return Some((i + 1, i + 2)),
            (b'\r', b'\n') if buf[i + 2..].starts_with(b"\r\n") => return Some((i + 2, i + 4)),
            _ => {}
        }
        i += 1;
    }
    None
}

impl<B: HttpBody<Data = Bytes> + Unpin> Filtered<B> {
    /// The complete SSE events in `buf`, filtered.
    fn events(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some((end, next)) = event_end(&self.buf) {
            let ev = self.buf.split_to(next);
            self.f.event(&ev[..end], &mut out);
            out.extend_from_slice(&ev[end..]);
        }
        out
    }

    /// The answer to send instead of one too large to filter; the body ends after it.
    fn overflow(&mut self) -> Bytes {
        self.done = true;
        self.buf.clear();
        let mut out = Vec::new();
        let body = self.f.too_large();
        if self.sse {
            out.extend_from_slice(b"event: message\ndata: ");
            out.extend_from_slice(&body);
            out.extend_from_slice(b"\n\n");
        } else {
            out = body;
        }
        Bytes::from(out)
    }
}

impl<B: HttpBody<Data = Bytes> + Unpin> HttpBody for Filtered<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(f))) => {
                    let Ok(d) = f.into_data() else { continue };
                    this.buf.extend_from_slice(&d);
                    if this.buf.len() > MAX_ANSWER {
                        // SSE: events already sent are complete; this one is too large.
                        let o = this.overflow();
                        return Poll::Ready(Some(Ok(Frame::data(o))));
                    }
                    if this.sse {
                        let out = this.events();
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
                        }
                    }
                }
                Poll::Ready(None) => {
                    this.done = true;
                    let rest = std::mem::take(&mut this.buf);
                    if this.sse || rest.is_empty() {
                        // An event the stream did not end: passed as it came.
                        return Poll::Ready(
                            (!rest.is_empty()).then(|| Ok(Frame::data(rest.freeze()))),
                        );
                    }
                    let mut parsed = serde_json::from_slice::<Value>(&rest).ok();
                    let changed = parsed.as_mut().is_some_and(|v| this.f.answer(v));
                    let out = match parsed.filter(|_| changed) {
                        Some(v) => Bytes::from(serde_json::to_vec(&v).unwrap_or_default()),
                        None => rest.freeze(),
                    };
                    return Poll::Ready(Some(Ok(Frame::data(out))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

#[cfg(test)]
#[path = "filter_tests.rs"]
mod tests;
