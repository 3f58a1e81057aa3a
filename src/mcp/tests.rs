//! Tests of the JSON-RPC (MCP) message parser.

use serde_json::json;

use super::scope::glob;
use super::*;

fn call(body: &str) -> Result<Call, Unreadable> {
    parse(body.as_bytes(), true, Some("application/json"))
}

#[test]
fn reads_a_tool_call_its_arguments_and_a_resource_read() {
    let c = call(
        r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"refund","arguments":{"amount":12}}}"#,
    )
    .unwrap();
    assert!(!c.batch);
    let m = &c.messages[0];
    assert_eq!(m.id, Some(json!(7)));
    assert_eq!(m.method.as_deref(), Some("tools/call"));
    assert_eq!(m.tool.as_deref(), Some("refund"));
    assert_eq!(m.arguments, Some(json!({"amount": 12})));
    let c = call(
        r#"{"jsonrpc":"2.0","id":"a","method":"resources/read","params":{"uri":"file:///x"}}"#,
    )
    .unwrap();
    assert_eq!(c.messages[0].uri.as_deref(), Some("file:///x"));
    let v = c.to_json();
    assert_eq!(v["method"], "resources/read");
    assert_eq!(v["batch"], false);
    assert_eq!(v["messages"][0]["uri"], "file:///x");
}

#[test]
fn reads_batches_notifications_and_responses() {
    let c = call(
        r#" [{"jsonrpc":"2.0","method":"notifications/initialized"},
             {"jsonrpc":"2.0","id":1,"result":{}},
             {"jsonrpc":"2.0","id":2,"method":"tools/list"}]"#,
    )
    .unwrap();
    assert!(c.batch);
    assert_eq!(c.messages.len(), 3);
    assert_eq!(c.messages[0].id, None);
    assert_eq!(c.messages[1].method, None);
    assert_eq!(
        c.first().and_then(|m| m.method.as_deref()),
        Some("notifications/initialized")
    );
}

#[test]
fn refuses_what_is_not_json_rpc() {
    for (body, want) in [
        ("", "EOF"),
        ("[]", "an empty batch"),
        ("not json", "expected"),
        (r#"{"id":1,"method":"x"}"#, "\"jsonrpc\" must be \"2.0\""),
        (
            r#"{"jsonrpc":"1.0","id":1,"method":"x"}"#,
            "\"jsonrpc\" must be",
        ),
        (
            r#"{"jsonrpc":"2.0","id":{},"method":"x"}"#,
            "\"id\" must be",
        ),
        (r#"{"jsonrpc":"2.0","id":1}"#, "needs a \"method\""),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#,
            "tools/call needs \"params\"",
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":3}}"#,
            "params.name",
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":[1]}}"#,
            "must be an object",
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"x","method":"y"}"#,
            "duplicate field",
        ),
        (r#"[{"jsonrpc":"2.0","id":1,"method":"x"}, 3]"#, "expected"),
        (
            r#"[{"jsonrpc":"2.0","id":1,"method":"x"},{"jsonrpc":"2.0"}]"#,
            "message 2 of the batch",
        ),
    ] {
        match call(body) {
            Err(Unreadable::Malformed(m)) => assert!(m.contains(want), "{body}: {m}"),
            other => panic!("{body}: {other:?}"),
        }
    }
    let e = parse(b"x=1", false, Some("application/x-www-form-urlencoded")).unwrap_err();
    assert!(
        e.to_string()
            .contains("'application/x-www-form-urlencoded'"),
        "{e}"
    );
}

#[test]
fn a_batch_is_in_scope_only_if_every_message_is() {
    let tools = vec!["read_*".to_string()];
    let s = Scope::compile(None, Some(&tools), None).unwrap();
    let one =
        call(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_ticket"}}"#)
            .unwrap();
    assert_eq!(s.check(&one), Ok(()));
    let mixed = call(
        r#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_ticket"}},
            {"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"delete_customer"}}]"#,
    )
    .unwrap();
    let miss = s.check(&mixed).unwrap_err();
    assert_eq!(
        miss.to_string(),
        "MCP tool 'delete_customer' (message 2 of the batch) is not in scope (allowed: read_*)"
    );
    let methods = vec!["initialize".to_string(), "tools/*".to_string()];
    let s = Scope::compile(Some(&methods), None, None).unwrap();
    let list =
        call(r#"{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"p"}}"#).unwrap();
    assert_eq!(s.check(&list).unwrap_err().what, "method");
    assert!(s.permits_tool("anything"));
}

#[test]
fn globs_match_runs_of_characters() {
    for (p, s, want) in [
        ("read_ticket", "read_ticket", true),
        ("read_ticket", "read_tickets", false),
        ("read_*", "read_", true),
        ("*", "", true),
        ("*_customer", "delete_customer", true),
        ("a*a", "a", false),
        ("file:///docs/*", "file:///docs/a/b", true),
        ("*x*y*", "axbyc", true),
        ("*x*y*", "aybxc", false),
    ] {
        assert_eq!(glob(p, s), want, "{p} {s}");
    }
}

#[test]
fn refusals_answer_tool_calls_as_tool_errors_and_others_as_json_rpc_errors() {
    let c = call(
        r#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"}},
            {"jsonrpc":"2.0","method":"notifications/initialized"},
            {"jsonrpc":"2.0","id":"b","method":"resources/read","params":{"uri":"u"}}]"#,
    )
    .unwrap();
    let (ct, body) = c
        .reply(None)
        .unwrap()
        .render("no — ask", "d1", "intent_violation");
    assert_eq!(ct, "application/json");
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        v,
        json!([
            {"jsonrpc": "2.0", "id": 1, "result": {"content": [{"type": "text", "text": "no — ask"}], "isError": true}},
            {"jsonrpc": "2.0", "id": "b", "error": {"code": reply::REFUSED, "message": "no — ask",
                "data": {"decision_id": "d1", "code": "intent_violation"}}}
        ])
    );
    let (ct, body) = c
        .reply(Some("text/event-stream, application/json;q=0.5"))
        .unwrap()
        .render("no", "d1", "intent_violation");
    assert_eq!(ct, "text/event-stream");
    let text = String::from_utf8(body).unwrap();
    assert_eq!(text.matches("event: message\ndata: {").count(), 2, "{text}");
    let only_notes = call(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).unwrap();
    assert_eq!(only_notes.reply(None), None);
}

#[test]
fn sse_only_when_accept_ranks_it_first() {
    assert!(!reply::prefers_sse("application/json, text/event-stream"));
    assert!(reply::prefers_sse("text/event-stream"));
    assert!(reply::prefers_sse(
        "application/json;q=0.1, text/event-stream"
    ));
    assert!(!reply::prefers_sse("text/event-stream;q=0"));
    assert!(!reply::prefers_sse("*/*"));
}
