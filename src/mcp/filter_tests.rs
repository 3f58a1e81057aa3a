//! Tests of `tools/list` filtering (JSON and SSE).

use std::collections::VecDeque;
use std::convert::Infallible;

use http_body_util::BodyExt;
use serde_json::json;

use super::*;

/// A body that yields `chunks` one frame each.
struct Chunks(VecDeque<Bytes>);

impl HttpBody for Chunks {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.get_mut().0.pop_front().map(|c| Ok(Frame::data(c))))
    }
}

fn filter() -> ToolsFilter {
    let call = crate::mcp::parse(
        br#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#,
        true,
        None,
    )
    .unwrap();
    let tools = vec!["read_*".to_string()];
    let scope = Scope::compile(None, Some(&tools), None).unwrap();
    ToolsFilter::of(&call, &scope).unwrap()
}

/// The body `chunks` make, filtered, and the frames it came in.
fn run(chunks: &[&str], sse: bool) -> (String, usize) {
    let body = Chunks(chunks.iter().map(|c| Bytes::from(c.to_string())).collect());
    let mut f = filter().wrap(body, sse);
    let (mut out, mut frames) = (Vec::new(), 0);
    block_on(async {
        while let Some(fr) = f.frame().await {
            out.extend_from_slice(&fr.unwrap().into_data().unwrap());
            frames += 1;
        }
    });
    (String::from_utf8(out).unwrap(), frames)
}

fn block_on(f: impl std::future::Future<Output = ()>) {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f);
}

const LIST: &str = r#"{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"read_ticket"},{"name":"delete_customer"}]}}"#;

#[test]
fn a_json_answer_loses_the_tools_out_of_scope() {
    let (half, rest) = LIST.split_at(40);
    let (out, _) = run(&[half, rest], false);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["result"]["tools"], json!([{"name": "read_ticket"}]));
    // Another answer passes byte for byte.
    let other = r#"{"jsonrpc":"2.0","id":3,"result":{"tools":[{"name":"x"}]}}"#;
    assert_eq!(run(&[other], false).0, other);
}

#[test]
fn an_sse_stream_is_filtered_event_by_event() {
    let note =
        "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\n\n";
    let list = format!("event: message\nid: 7\ndata: {LIST}\n\n");
    let (a, b) = list.split_at(30);
    // The first event goes out before the second has arrived whole.
    let (out, frames) = run(&[note, a, b], true);
    assert_eq!(frames, 2, "{out}");
    assert!(out.starts_with(note), "{out}");
    let second = out.strip_prefix(note).unwrap();
    assert!(
        second.starts_with("event: message\nid: 7\ndata: {"),
        "{second}"
    );
    assert!(second.ends_with("}\n\n"), "{second}");
    assert!(
        second.contains("read_ticket") && !second.contains("delete_customer"),
        "{second}"
    );
}

#[test]
fn an_answer_too_large_to_filter_is_replaced_by_an_error() {
    let big = format!("{{\"x\":\"{}\"}}", "a".repeat(MAX_ANSWER));
    let (out, _) = run(&[&big], false);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["id"], 2);
    assert_eq!(v["error"]["code"], crate::mcp::reply::REFUSED);
}
