//! OpenTelemetry export (`telemetry.otlp`): the real proxy exports one span and one log record
//! per call to an OTLP/HTTP receiver built on the official protobuf definitions
//! (tests/clients/otlp_receiver.py refuses anything they do not define). The agent's
//! `traceparent` is honoured (the span's trace and parent) and propagated (the upstream's parent
//! is the span); a call without one starts a trace. The audit log is off (the export needs none)
//! but in the test that the log records' bodies are the lines written to it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::common::*;

const RECEIVER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/clients/otlp_receiver.py"
);

struct Receiver {
    child: Child,
    port: u16,
    out: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Receiver {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("received.jsonl");
        let mut child = Command::new("python3")
            .args([RECEIVER, out.to_str().unwrap()])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("receiver port: {line:?}"));
        Receiver {
            child,
            port,
            out,
            _dir: dir,
        }
    }

    fn received(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The spans and log records received once there are at least `n` of each (any refused
    /// export fails the test).
    fn exported(&self, n: usize) -> (Vec<Value>, Vec<Value>) {
        eventually(
            &format!("{n} spans and {n} log records"),
            Duration::from_secs(20),
            || {
                let got = self.received();
                if let Some(e) = got.iter().find(|g| g.get("error").is_some()) {
                    panic!("the receiver refused an export: {e}");
                }
                let of = |path: &str, outer: &str, scope: &str, items: &str| -> Vec<Value> {
                    got.iter()
                        .filter(|g| g["path"] == path)
                        .flat_map(|g| g["msg"][outer].as_array().cloned().unwrap_or_default())
                        .flat_map(|r| r[scope].as_array().cloned().unwrap_or_default())
                        .flat_map(|s| s[items].as_array().cloned().unwrap_or_default())
                        .collect()
                };
                let spans = of("/v1/traces", "resourceSpans", "scopeSpans", "spans");
                let logs = of("/v1/logs", "resourceLogs", "scopeLogs", "logRecords");
                (spans.len() >= n && logs.len() >= n).then_some((spans, logs))
            },
        )
    }
}

/// A proxy exporting to `rx` with `extra` keys in `telemetry.otlp`, and an upstream it may call.
fn exporting(rx: &Receiver, extra: &str) -> (ProxyProc, Upstream) {
    let up = Upstream::start();
    let proxy = ProxyProc::start(&format!(
        "agent: {{id: bot, owner: team}}\naudit: {{path: \"off\"}}\n\
         telemetry: {{otlp: {{endpoint: \"http://127.0.0.1:{}\"{extra}}}}}\n\
         intents:\n  read:\n    allow: [{{hosts: [localhost], ports: [{}]}}]\n",
        rx.port,
        up.addr.port()
    ));
    (proxy, up)
}

fn call(proxy: &ProxyProc, up: &Upstream) {
    let url = format!("http://localhost:{}/x", up.addr.port());
    let r = curl(&["-x", &proxy.url(), "-H", "intentgate-intent: read", &url]);
    assert_eq!(r.status, 200, "{r:?}");
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The attributes of a span or log record as a map.
fn attrs(v: &Value) -> serde_json::Map<String, Value> {
    v["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let val = &a["value"];
            (
                a["key"].as_str().unwrap().to_string(),
                val.get("stringValue")
                    .or(val.get("intValue"))
                    .unwrap()
                    .clone(),
            )
        })
        .collect()
}

#[test]
fn calls_are_exported_as_spans_in_the_agents_trace_and_as_log_records() {
    let rx = Receiver::start();
    let up = Upstream::start();
    let p = up.addr.port();
    let proxy = ProxyProc::start(&format!(
        "agent: {{id: bot, namespace: support, owner: team}}\naudit: {{path: \"off\"}}\n\
         telemetry: {{otlp: {{endpoint: \"http://127.0.0.1:{}\", service_name: sidecar}}}}\n\
         intents:\n  read:\n    allow: [{{hosts: [localhost], ports: [{p}], methods: [GET]}}]\n",
        rx.port
    ));
    let url = format!("http://localhost:{p}/tickets/1");
    let agent_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let agent_span = "00f067aa0ba902b7";
    let tp = format!("traceparent: 00-{agent_trace}-{agent_span}-01");
    let ok = curl(&[
        "-x",
        &proxy.url(),
        "-H",
        "intentgate-intent: read",
        "-H",
        &tp,
        &url,
    ]);
    assert_eq!(ok.status, 200, "{ok:?}");
    let denied = curl(&[
        "-x",
        &proxy.url(),
        "-H",
        "intentgate-intent: read",
        "-X",
        "DELETE",
        &url,
    ]);
    assert_eq!(denied.status, 403, "{denied:?}");

    // Propagated: the upstream's parent is a new span of the agent's trace.
    let seen = up.seen();
    let upstream_tp = seen[0].header("traceparent").unwrap().to_string();
    let parts: Vec<&str> = upstream_tp.split('-').collect();
    assert_eq!(
        (parts[0], parts[1], parts[3]),
        ("00", agent_trace, "01"),
        "{upstream_tp}"
    );
    assert_ne!(parts[2], agent_span, "{upstream_tp}");

    let (spans, logs) = rx.exported(2);
    let got = rx.received();
    // Protobuf, OTLP/HTTP's default encoding (the receiver parsed it with the definitions).
    assert!(got.iter().all(|g| g["encoding"] == "protobuf"), "{got:?}");
    let resource = &got[0]["msg"]["resourceSpans"][0]["resource"];
    assert!(resource.to_string().contains("sidecar"), "{resource}");

    let (allowed, refused) = (&spans[0], &spans[1]);
    // Honoured: the agent's trace and its span as parent; our span is the upstream's parent.
    assert_eq!(allowed["traceId"], agent_trace, "{allowed}");
    assert_eq!(allowed["parentSpanId"], agent_span, "{allowed}");
    assert_eq!(allowed["spanId"], parts[2], "{allowed}");
    assert_eq!(allowed["kind"], "SPAN_KIND_SERVER", "{allowed}");
    let a = attrs(allowed);
    assert_eq!(a["intentgate.agent"], "bot");
    assert_eq!(a["intentgate.intent"], "read");
    assert_eq!(a["intentgate.decision"], "allow");
    assert_eq!(a["server.address"], "localhost");
    assert_eq!(a["http.response.status_code"], "200");
    assert!(
        a.contains_key("intentgate.decision_id") && a.contains_key("intentgate.policy_revision"),
        "{a:?}"
    );
    assert!(
        allowed
            .get("status")
            .is_none_or(|s| s.get("code").is_none()),
        "{allowed}"
    );
    // A call without a traceparent starts a trace; a refusal is an error span.
    assert!(refused.get("parentSpanId").is_none(), "{refused}");
    assert_ne!(refused["traceId"], agent_trace);
    assert_eq!(refused["status"]["code"], "STATUS_CODE_ERROR", "{refused}");
    let r = attrs(refused);
    assert_eq!(
        (&r["intentgate.decision"], &r["intentgate.code"]),
        (&"deny".into(), &"intent_violation".into())
    );

    // The log records are the audit lines, linked to their spans.
    let record: Value =
        serde_json::from_str(logs[1]["body"]["stringValue"].as_str().unwrap()).unwrap();
    assert_eq!(record["decision"], "deny", "{record}");
    assert_eq!(logs[1]["traceId"], refused["traceId"]);
    assert_eq!(logs[1]["severityText"], "WARN");
    assert_eq!(attrs(&logs[1]), r, "{}", logs[1]);
    assert_eq!(record["trace"]["span_id"], refused["spanId"], "{record}");
    // The exporter counts an export once the receiver has answered: after we saw it arrive.
    eventually("two exports counted", Duration::from_secs(10), || {
        (proxy.metric("intentgate_otlp_calls_total{result=\"exported\"}") >= 2.0).then_some(())
    });
}

#[test]
fn an_otlp_endpoint_that_is_not_http_is_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.yaml");
    std::fs::write(
        &cfg,
        "telemetry: {otlp: {endpoint: \"https://collector:4318\"}}\n",
    )
    .unwrap();
    let (code, _, err) = run_cli(&["check", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("telemetry.otlp.endpoint") && err.contains("c.yaml"),
        "{err}"
    );
}

#[test]
fn the_json_encoding_is_kept_as_an_option() {
    let rx = Receiver::start();
    let (proxy, up) = exporting(&rx, ", encoding: json");
    call(&proxy, &up);
    let (spans, logs) = rx.exported(1);
    let got = rx.received();
    assert!(got.iter().all(|g| g["encoding"] == "json"), "{got:?}");
    assert_eq!(attrs(&spans[0])["intentgate.intent"], "read");
    assert_eq!(logs[0]["traceId"], spans[0]["traceId"]);
}

#[test]
fn batches_are_posted_over_one_kept_connection() {
    let rx = Receiver::start();
    // A batch per call: three calls, six posts.
    let (proxy, up) = exporting(&rx, ", batch: 1");
    for _ in 0..3 {
        call(&proxy, &up);
    }
    rx.exported(3);
    let got = rx.received();
    let ports: std::collections::BTreeSet<_> =
        got.iter().map(|g| g["peer_port"].as_u64()).collect();
    assert_eq!(got.len(), 6, "{got:?}");
    assert_eq!(ports.len(), 1, "{got:?}");
}

#[test]
fn with_the_audit_log_on_each_log_body_is_the_line_written_to_it() {
    let rx = Receiver::start();
    let up = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let proxy = ProxyProc::start(&format!(
        "agent: {{id: bot, owner: team}}\naudit: {{path: \"{}\"}}\n\
         telemetry: {{otlp: {{endpoint: \"http://127.0.0.1:{}\"}}}}\n\
         intents:\n  read:\n    allow: [{{hosts: [localhost], ports: [{}]}}]\n",
        log.display(),
        rx.port,
        up.addr.port()
    ));
    for _ in 0..3 {
        call(&proxy, &up);
    }
    let (_, logs) = rx.exported(3);
    let written = eventually("3 audit lines", Duration::from_secs(20), || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        (lines.len() >= 3).then_some(lines)
    });
    for l in &logs {
        let body = l["body"]["stringValue"].as_str().unwrap();
        assert!(written.iter().any(|w| w == body), "{body}\n{written:?}");
    }
}
