//! A refused MCP call answered in-band, so that it reaches the model instead of dying as an HTTP
//! error the client turns into a transport failure: a refused `tools/call` is a tool result with
//! `isError` (as MCP reports tool execution errors), any other refused request a JSON-RPC error
//! object; HTTP 200, as JSON or as an SSE stream, whichever the client's `Accept` prefers.
//! `src/error.rs` (the one place errors become responses) calls `render`.

use serde_json::{Value, json};

use super::{Call, TOOLS_CALL};

/// The JSON-RPC error code of a refused MCP request (the implementation-defined server range).
pub const REFUSED: i64 = -32003;

/// How a refused call is answered: under the ids of its requests, in the client's transport.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// Each request's id, and whether it was a `tools/call`.
    answers: Vec<(Value, bool)>,
    batch: bool,
    sse: bool,
}

impl Call {
    /// The in-band answer for a refusal of this call, with `accept` the request's `Accept`;
    /// `None` when no message expects an answer (notifications and responses only), which is
    /// then refused as any HTTP request is.
    pub fn reply(&self, accept: Option<&str>) -> Option<Reply> {
        let answers: Vec<(Value, bool)> = self
            .messages
            .iter()
            .filter_map(|m| {
                let id = m.id.clone()?;
                Some((id, m.method.as_deref() == Some(TOOLS_CALL)))
            })
            .collect();
        (!answers.is_empty()).then(|| Reply {
            answers,
            batch: self.batch,
            sse: accept.is_some_and(prefers_sse),
        })
    }
}

impl Reply {
    /// The body and its `Content-Type`: `text` (the reason and the hint) as each request's
    /// answer, with the `decision_id` and stable `code` in JSON-RPC errors' `data`.
    pub fn render(&self, text: &str, decision_id: &str, code: &str) -> (&'static str, Vec<u8>) {
        let one = |(id, tool): &(Value, bool)| {
            if *tool {
                json!({"jsonrpc": "2.0", "id": id, "result": {
                    "content": [{"type": "text", "text": text}], "isError": true}})
            } else {
                json!({"jsonrpc": "2.0", "id": id, "error": {
                    "code": REFUSED, "message": text,
                    "data": {"decision_id": decision_id, "code": code}}})
            }
        };
        if self.sse {
            // One event per answer: MCP streams carry single messages.
            let mut out = Vec::new();
            for a in &self.answers {
                out.extend_from_slice(b"event: message\ndata: ");
                // Serialising a `Value` into a Vec cannot fail.
                let _ = serde_json::to_writer(&mut out, &one(a));
                out.extend_from_slice(b"\n\n");
            }
            return ("text/event-stream", out);
        }
        let v = if self.batch {
            Value::Array(self.answers.iter().map(one).collect())
        } else {
            self.answers.first().map_or(Value::Null, one)
        };
        (
            "application/json",
            serde_json::to_vec(&v).unwrap_or_default(),
        )
    }
}

/// Whether an `Accept` ranks `text/event-stream` above `application/json` (by `q`; the MCP
/// SDKs send both at equal rank, and get JSON).
pub fn prefers_sse(accept: &str) -> bool {
    let (mut json, mut sse) = (-1.0f32, -1.0f32);
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let kind = parts.next().unwrap_or("").trim();
        let q = parts
            .find_map(|p| p.trim().strip_prefix("q="))
            .and_then(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        if kind.eq_ignore_ascii_case("application/json") {
            json = json.max(q);
        } else if kind.eq_ignore_ascii_case("text/event-stream") {
            sse = sse.max(q);
        }
    }
    sse > json && sse > 0.0
}
