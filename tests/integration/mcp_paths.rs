//! The MCP paths beyond a `protocol: mcp` rule's tools, against the real proxy: `mcp.detect:
//! auto` (an MCP server under a plain rule, recognised by its headers, its `tools/call` decided by
//! Rego on `input.mcp`), `resources:` URI patterns read with the official SDK client, and a
//! `tools/list` answer that comes back compressed although the filter asked for none.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use super::mcp::{McpServer, Setup, setup};
use crate::common::*;

#[test]
fn detect_auto_reads_an_mcp_server_under_a_plain_rule_and_rego_decides_its_tool_calls() {
    let (dir, ca, ca_key) = ca();
    let server = McpServer::start(dir.path(), false);
    let policy = dir.path().join("tools.rego");
    std::fs::write(
        &policy,
        "package intentgate\nimport rego.v1\n\
         deny contains \"deleting customers needs a person\" if { some m in input.mcp.messages; m.tool == \"delete_customer\" }\n",
    )
    .unwrap();
    let proxy = ProxyProc::start(&format!(
        "agent: {{id: mcp-agent, owner: o}}\nintent: tickets\n\
         tls: {{ca_cert: \"{ca}\", ca_key: \"{ca_key}\", upstream_ca: \"{}\"}}\n\
         policy: {{paths: [\"{}\"]}}\nmcp: {{detect: auto}}\n\
         intents:\n  tickets:\n    allow:\n      - hosts: [localhost]\n        ports: [{}]\n",
        server.ca.display(),
        policy.display(),
        server.port,
    ));
    let s = Setup {
        _dir: dir,
        server,
        proxy,
        ca,
    };
    let r = s.client(&["read_ticket", "delete_customer"]);
    assert_eq!(r["calls"]["read_ticket"]["isError"], false, "{r}");
    let refused = &r["calls"]["delete_customer"];
    assert_eq!(refused["isError"], true, "{r}");
    assert!(
        refused["text"]
            .as_str()
            .unwrap()
            .contains("deleting customers needs a person"),
        "{r}"
    );
    let seen = s.server.seen();
    assert!(
        seen.contains("read_ticket") && !seen.contains("delete_customer"),
        "{seen}"
    );
    // Recognised as MCP by its headers: the records name method and tool.
    // The writer thread appends the refusal's record after the answer: wait for it.
    let recs = eventually("the refusal's record", Duration::from_secs(10), || {
        let recs = s.proxy.audit();
        recs.iter().any(|r| r["decision"] == "deny").then_some(recs)
    });
    let refusal = recs.iter().find(|r| r["decision"] == "deny");
    let refusal = refusal.unwrap_or_else(|| panic!("a deny record: {recs:?}"));
    assert_eq!(
        refusal["mcp"],
        json!({"method": "tools/call", "tool": "delete_customer"}),
        "{refusal}"
    );
    assert_eq!(refusal["status"], 200, "{refusal}");
}

#[test]
fn resources_read_goes_only_for_uris_the_rule_names_and_the_client_reads_the_refusal() {
    let s = setup("{resources: [\"tickets://*\"]}", "");
    let r = s.client(&["read:tickets://7", "read:customers://7"]);
    let reads = &r["reads"];
    assert!(
        reads["tickets://7"]["text"]
            .as_str()
            .is_some_and(|t| t.contains("printer on fire")),
        "{r}"
    );
    // The refusal is the JSON-RPC error the SDK raises, with our reason, hint and decision id.
    let err = &reads["customers://7"]["error"];
    assert_eq!(err["code"], -32003, "{r}");
    let message = err["message"].as_str().unwrap();
    assert!(
        message.contains("MCP resource 'customers://7' is not in scope")
            && message.contains("tickets://*"),
        "{message}"
    );
    assert_eq!(err["data"]["code"], "intent_violation", "{r}");
    assert!(err["data"]["decision_id"].as_str().is_some(), "{r}");
    let seen = s.server.seen();
    assert!(
        seen.contains("tickets://7") && !seen.contains("customers://7"),
        "{seen}"
    );
}

/// A plain-HTTP MCP upstream that answers every POST with a gzip-compressed `tools/list` result
/// (whatever the request's Accept-Encoding), and notes each request's Accept-Encoding.
fn gzip_upstream() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let noted = Arc::new(Mutex::new(Vec::new()));
    let seen = noted.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut r = BufReader::new(stream);
            let (mut len, mut enc) = (0usize, String::from("(none)"));
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                if let Some(v) = lower.strip_prefix("accept-encoding:") {
                    enc = v.trim().to_string();
                }
            }
            let mut body = vec![0; len];
            if r.read_exact(&mut body).is_err() {
                continue;
            }
            seen.lock().unwrap().push(enc);
            let answer = json!({"jsonrpc": "2.0", "id": 1, "result": {"tools": [
                {"name": "read_ticket", "inputSchema": {"type": "object"}},
                {"name": "delete_customer", "inputSchema": {"type": "object"}}]}});
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(answer.to_string().as_bytes()).unwrap();
            let gz = gz.finish().unwrap();
            let mut out = r.into_inner();
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-encoding: gzip\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                gz.len()
            );
            let _ = out
                .write_all(head.as_bytes())
                .and_then(|()| out.write_all(&gz));
        }
    });
    (port, noted)
}

#[test]
fn a_compressed_tools_list_answer_is_refused_rather_than_passed_on_unfiltered() {
    let (port, encodings) = gzip_upstream();
    let proxy = ProxyProc::start(&format!(
        "intent: tickets\nmcp: {{filter_tools_list: true}}\n\
         intents:\n  tickets:\n    allow:\n      - hosts: [127.0.0.1]\n        ports: [{port}]\n\
         \x20       protocol: mcp\n        mcp: {{tools: [read_ticket]}}\n"
    ));
    let list = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
    let out = curl(&[
        "-x",
        &proxy.url(),
        "-H",
        "content-type: application/json",
        "-H",
        "accept: application/json, text/event-stream",
        "-H",
        "accept-encoding: gzip",
        "--data-binary",
        list,
        &format!("http://127.0.0.1:{port}/mcp"),
    ]);
    // The filter asked the server for an unencoded answer; a server that compresses anyway
    // gets its answer refused (502), never passed on with the tools the intent may not call.
    assert_eq!(encodings.lock().unwrap().as_slice(), ["identity"]);
    assert_eq!(out.status, 502, "{}", out.body);
    let body: Value = out.json();
    assert_eq!(error_code(&body), "upstream_error", "{body}");
    assert!(
        body["reason"]
            .as_str()
            .unwrap()
            .contains("tools/list answer is compressed and cannot be filtered"),
        "{body}"
    );
    assert!(!out.body.contains("delete_customer"), "{}", out.body);
    let rec = eventually("the record", Duration::from_secs(20), || {
        proxy.audit().into_iter().find(|r| r["status"] == 502)
    });
    assert_eq!(rec["mcp"]["method"], "tools/list", "{rec}");
}
