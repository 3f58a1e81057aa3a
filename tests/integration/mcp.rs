//! MCP awareness through interception, with the official `mcp` Python SDK on both sides: an
//! MCPServer (streamable HTTP over TLS, tools `read_ticket` and `delete_customer`) behind
//! intentgate, and the SDK's client reaching it through HTTPS_PROXY with intentgate's CA. A
//! refused tool call reaches the client as a tool result (`isError`, our reason and hint), and
//! the server never sees it (its log of request bodies). curl drives the wire-level cases.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::tls::TestCa;
use crate::common::*;

const SERVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/mcp_server.py");
const CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/mcp_client.py");

/// The SDK's MCP server on 127.0.0.1 over TLS (a certificate for `localhost` from a test CA).
pub struct McpServer {
    child: Child,
    pub port: u16,
    log: PathBuf,
    /// The test CA's certificate (intentgate's `tls.upstream_ca`).
    pub ca: PathBuf,
}

impl Drop for McpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl McpServer {
    pub fn start(dir: &Path, json_response: bool) -> Self {
        let test_ca = TestCa::new("mcp upstream CA");
        let ca = test_ca.write_pem(dir);
        let (cert, key) = test_ca.server_pem(&["localhost"]);
        let (cert_file, key_file) = (dir.join("mcp-cert.pem"), dir.join("mcp-key.pem"));
        std::fs::write(&cert_file, cert).unwrap();
        std::fs::write(&key_file, key).unwrap();
        let (port_file, log) = (dir.join("mcp-port"), dir.join("mcp-log"));
        let mut cmd = Command::new("python3");
        cmd.arg(SERVER)
            .args([&cert_file, &key_file, &port_file, &log]);
        if json_response {
            cmd.arg("--json");
        }
        let stderr = std::fs::File::create(dir.join("mcp-stderr")).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("python3 runs (scripts/test installs mcp)");
        let port = eventually("the MCP server", Duration::from_secs(60), || {
            std::fs::read_to_string(&port_file)
                .ok()?
                .trim()
                .parse()
                .ok()
        });
        McpServer {
            child,
            port,
            log,
            ca,
        }
    }

    /// The request bodies the server received, one a line.
    pub fn seen(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The server, and intentgate intercepting with its own CA in front of it: intent `tickets`
/// (the default) allows the MCP endpoint with `mcp_scope` (YAML flow mapping).
pub struct Setup {
    pub _dir: tempfile::TempDir,
    pub server: McpServer,
    pub proxy: ProxyProc,
    pub ca: String,
}

pub fn setup(mcp_scope: &str, extra: &str) -> Setup {
    setup_with(mcp_scope, extra, false)
}

/// `setup` with a server that answers in JSON (`json_response`) rather than SSE.
pub fn setup_with(mcp_scope: &str, extra: &str, json_response: bool) -> Setup {
    let (dir, ca, ca_key) = ca();
    let server = McpServer::start(dir.path(), json_response);
    let proxy = ProxyProc::start(&format!(
        "agent: {{id: mcp-agent, owner: o}}\nintent: tickets\n\
         tls: {{ca_cert: \"{ca}\", ca_key: \"{ca_key}\", upstream_ca: \"{}\"}}\n{extra}\
         intents:\n  tickets:\n    allow:\n      - hosts: [localhost]\n        ports: [{}]\n\
         \x20       protocol: mcp\n        mcp: {mcp_scope}\n",
        server.ca.display(),
        server.port,
    ));
    Setup {
        _dir: dir,
        server,
        proxy,
        ca,
    }
}

impl Setup {
    pub fn url(&self) -> String {
        format!("https://localhost:{}/mcp", self.server.port)
    }

    /// The SDK client: lists the tools, calls each of `tools`; its JSON report.
    pub fn client(&self, tools: &[&str]) -> Value {
        let mut cmd = Command::new("python3");
        cmd.arg(CLIENT).arg(self.url()).args(tools);
        for k in [
            "HTTP_PROXY",
            "http_proxy",
            "ALL_PROXY",
            "NO_PROXY",
            "no_proxy",
        ] {
            cmd.env_remove(k);
        }
        let out = cmd
            .env("HTTPS_PROXY", self.proxy.url())
            .env("SSL_CERT_FILE", &self.ca)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "client failed: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_str(stdout.trim()).unwrap()
    }

    /// One POST to the MCP endpoint with curl through the proxy: (status, content-type, body).
    pub fn post(&self, body: &str, headers: &[&str]) -> (u16, String, String) {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--proxy", &self.proxy.url(), "--cacert", &self.ca])
            .args(["-o", "-", "-w", "\n%{http_code} %{content_type}"])
            .args(["-X", "POST", "--data-binary", "@-"]);
        for h in headers {
            cmd.args(["-H", h]);
        }
        let mut child = cmd
            .arg(self.url())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(body.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, last) = text.rsplit_once('\n').unwrap();
        let (status, ct) = last.split_once(' ').unwrap();
        (status.parse().unwrap(), ct.to_string(), body.to_string())
    }
}

const JSON: &[&str] = &[
    "content-type: application/json",
    "accept: application/json, text/event-stream",
];

#[test]
fn a_refused_tool_call_reaches_the_sdk_client_as_a_tool_error_and_never_the_server() {
    let s = setup("{tools: [read_ticket]}", "");
    let r = s.client(&["read_ticket", "delete_customer"]);
    assert_eq!(r["tools"], json!(["delete_customer", "read_ticket"]), "{r}");
    assert_eq!(r["calls"]["read_ticket"]["isError"], false, "{r}");
    assert!(
        r["calls"]["read_ticket"]["text"]
            .as_str()
            .unwrap()
            .contains("printer on fire")
    );
    let refused = &r["calls"]["delete_customer"];
    assert_eq!(refused["isError"], true, "{r}");
    let text = refused["text"].as_str().unwrap();
    assert!(
        text.contains("MCP tool 'delete_customer' is not in scope (allowed: read_ticket)")
            && text.contains("ask the platform team to extend intent 'tickets'"),
        "{text}"
    );
    let seen = s.server.seen();
    assert!(
        seen.contains("read_ticket") && !seen.contains("delete_customer"),
        "{seen}"
    );
    // The record says deny, with its code, though the answer was an HTTP 200.
    let rec = eventually("the refusal's record", Duration::from_secs(20), || {
        s.proxy
            .audit()
            .into_iter()
            .find(|r| r["decision"] == "deny")
    });
    assert_eq!(rec["code"], "intent_violation", "{rec}");
    assert_eq!(rec["status"], 200, "{rec}");
    assert_eq!(
        rec["mcp"],
        json!({"method": "tools/call", "tool": "delete_customer"}),
        "{rec}"
    );
    // Allowed calls carry their method and tool too; the event stream's GET none.
    let all = s.proxy.audit();
    let noted: Vec<&Value> = all.iter().map(|r| &r["mcp"]).collect();
    assert!(
        noted.contains(&&json!({"method": "initialize", "tool": null}))
            && noted.contains(&&json!({"method": "tools/call", "tool": "read_ticket"})),
        "{noted:?}"
    );
}

#[test]
fn other_refused_methods_get_a_json_rpc_error_in_the_transport_the_client_asked_for() {
    let s = setup(
        "{methods: [initialize, \"notifications/*\", tools/call]}",
        "",
    );
    let list = r#"{"jsonrpc":"2.0","id":"l1","method":"tools/list"}"#;
    let (status, ct, body) = s.post(list, JSON);
    assert_eq!((status, ct.as_str()), (200, "application/json"), "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["id"], "l1", "{v}");
    assert_eq!(v["error"]["code"], -32003, "{v}");
    assert_eq!(v["error"]["data"]["code"], "intent_violation", "{v}");
    assert!(
        v["error"]["data"]["decision_id"].as_str().unwrap().len() > 8,
        "{v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("MCP method 'tools/list' is not in scope"),
        "{v}"
    );
    // An Accept that ranks SSE first gets the answer as an event stream.
    let sse = [
        "content-type: application/json",
        "accept: text/event-stream",
    ];
    let (status, ct, body) = s.post(list, &sse);
    assert_eq!((status, ct.as_str()), (200, "text/event-stream"), "{body}");
    let data = body.strip_prefix("event: message\ndata: ").unwrap();
    let v: Value = serde_json::from_str(data.trim()).unwrap();
    assert_eq!(v["error"]["code"], -32003, "{v}");
    assert!(!s.server.seen().contains("tools/list"));
}

#[test]
fn a_batch_goes_only_if_every_message_may_and_unreadable_bodies_get_a_clear_answer() {
    let s = setup(
        "{tools: [read_ticket]}",
        "limits: {inspect_body_bytes: 2048}\n",
    );
    let call = |id: u32, tool: &str| {
        format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"{tool}","arguments":{{}}}}}}"#
        )
    };
    let batch = format!(
        "[{},{}]",
        call(1, "read_ticket"),
        call(2, "delete_customer")
    );
    let (status, _, body) = s.post(&batch, JSON);
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2, "{v}");
    for (i, a) in v.as_array().unwrap().iter().enumerate() {
        assert_eq!(a["id"], i + 1, "{v}");
        assert_eq!(a["result"]["isError"], true, "{v}");
        let text = a["result"]["content"][0]["text"].as_str().unwrap();
        assert!(
            text.contains("'delete_customer' (message 2 of the batch)"),
            "{text}"
        );
    }
    assert_eq!(
        s.server.seen(),
        "",
        "nothing of the batch reached the server"
    );

    let unreadable = |body: &str, headers: &[&str], status: u16, what: &str| {
        let (got, ct, text) = s.post(body, headers);
        assert_eq!((got, ct.as_str()), (status, "application/json"), "{text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["error"]["code"], "mcp_unreadable", "{v}");
        assert!(v["reason"].as_str().unwrap().contains(what), "{v}");
        assert!(!v["hint"].as_str().unwrap().is_empty(), "{v}");
    };
    unreadable("{\"jsonrpc\":", JSON, 400, "not JSON-RPC 2.0: EOF");
    unreadable(
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#,
        JSON,
        400,
        "tools/call needs \"params\"",
    );
    unreadable(
        "tool=delete_customer",
        &["content-type: application/x-www-form-urlencoded"],
        400,
        "must carry JSON-RPC",
    );
    let big = call(9, &"read_ticket".repeat(200));
    unreadable(&big, JSON, 413, "over the 2048 bytes");
    assert_eq!(s.server.seen(), "", "nothing unreadable reached the server");
}

#[test]
fn tools_list_answers_are_cut_down_to_the_permitted_tools_in_sse_and_json() {
    for json_response in [false, true] {
        let s = setup_with(
            "{tools: [read_ticket]}",
            "mcp: {filter_tools_list: true}\n",
            json_response,
        );
        let r = s.client(&["read_ticket"]);
        assert_eq!(
            r["tools"],
            json!(["read_ticket"]),
            "json {json_response}: {r}"
        );
        assert_eq!(r["calls"]["read_ticket"]["isError"], false, "{r}");
    }
}
