//! LLM API awareness (issue 24): the real `openai` and `anthropic` SDKs, and raw Gemini calls
//! (Python `requests`), through intentgate intercepting to a local HTTPS upstream that speaks
//! their wire formats (tests/clients/llm_upstream.py). A model or token bound outside the
//! intent's `protocol: llm` rule is refused readably in the SDK's exception and never reaches
//! the upstream; allowed calls, streamed or not, carry their token usage into the audit record
//! and `intentgate_llm_tokens_total`; a stream reaches the client event by event.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use crate::common::tls::TestCa;
use crate::common::*;

/// The Python upstream; killed when dropped.
struct LlmUpstream {
    child: Child,
    api: u16,
    control: String,
}

impl Drop for LlmUpstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl LlmUpstream {
    /// The calls it received.
    fn calls(&self) -> Vec<Value> {
        let out = curl(&[&format!("{}/calls", self.control)]);
        out.json().as_array().cloned().unwrap_or_default()
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    up: LlmUpstream,
    proxy: ProxyProc,
}

/// intentgate intercepting (its own CA) with the intent `chat`: the upstream's port, as an LLM
/// API bounded to three model families and 1000 output tokens; a policy module that refuses a
/// call declaring the tool `shell` (input.llm).
fn setup() -> Setup {
    setup_with("")
}

/// `setup`, with `extra` appended to the intent `chat` (indented as its keys).
fn setup_with(extra: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("ca");
    let (code, out, err) = run_cli(&["ca", "init", "--out", ca_dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    let test_ca = TestCa::new("llm upstream test CA");
    let up_ca = test_ca.write_pem(dir.path());
    let (cert, key) = test_ca.server_pem(&["localhost"]);
    let (cert_file, key_file) = (dir.path().join("up.pem"), dir.path().join("up-key.pem"));
    std::fs::write(&cert_file, cert).unwrap();
    std::fs::write(&key_file, key).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/llm_upstream.py");
    let mut child = Command::new("python3")
        .args([
            script,
            cert_file.to_str().unwrap(),
            key_file.to_str().unwrap(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let ports: Value = serde_json::from_str(&line).expect("the upstream prints its ports");
    let up = LlmUpstream {
        child,
        api: ports["api"].as_u64().unwrap() as u16,
        control: format!("http://127.0.0.1:{}", ports["control"]),
    };
    let policy = dir.path().join("tools.rego");
    std::fs::write(
        &policy,
        "package intentgate\nimport rego.v1\n\
         deny contains \"the tool 'shell' is not for chat\" if { some t in input.llm.tools; t == \"shell\" }\n",
    )
    .unwrap();
    let proxy = ProxyProc::start(&format!(
        "agent: {{id: llm-agent, owner: o}}\nintent: chat\n\
         tls: {{ca_cert: \"{}\", ca_key: \"{}\", upstream_ca: \"{}\"}}\n\
         policy: {{paths: [\"{}\"]}}\n\
         intents:\n  chat:\n    allow:\n      - hosts: [localhost]\n        ports: [{}]\n\
         \x20       protocol: llm\n\
         \x20       llm: {{models: [gpt-4o-mini, \"claude-3-5-haiku-*\", gemini-2.0-flash], max_tokens: 1000}}\n{extra}",
        ca_dir.join("ca.pem").display(),
        ca_dir.join("ca-key.pem").display(),
        up_ca.display(),
        policy.display(),
        up.api,
    ));
    Setup {
        ca: ca_dir.join("ca.pem"),
        _dir: dir,
        up,
        proxy,
    }
}

/// Runs tests/clients/llm_sdk.py with `sdk` through the proxy.
fn sdk(s: &Setup, sdk: &str) -> Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/llm_sdk.py");
    let v1 = if sdk == "openai" { "/v1" } else { "" };
    let base = format!("https://localhost:{}{v1}", s.up.api);
    let mut cmd = Command::new("python3");
    cmd.args([
        script,
        sdk,
        &base,
        s.ca.to_str().unwrap(),
        &s.proxy.url(),
        &s.up.control,
    ]);
    for k in [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "NO_PROXY",
        "no_proxy",
    ] {
        cmd.env_remove(k);
    }
    let out = cmd.stdin(Stdio::null()).output().expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "{sdk} failed ({e}): {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The value of the `intentgate_llm_tokens_total` series with these label values.
fn tokens(proxy: &ProxyProc, model: &str, kind: &str) -> f64 {
    let out = curl(&[&proxy.admin_url("/metrics")]);
    let want = [
        "agent=\"llm-agent\"".to_string(),
        "intent=\"chat\"".into(),
        format!("model=\"{model}\""),
        format!("kind=\"{kind}\""),
    ];
    out.body
        .lines()
        .filter(|l| l.starts_with("intentgate_llm_tokens_total{"))
        .find(|l| want.iter().all(|w| l.contains(w.as_str())))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// The records of allowed calls to `path`, once `n` are written.
fn allowed(proxy: &ProxyProc, path: &str, n: usize) -> Vec<Value> {
    eventually(
        &format!("{n} allowed records of {path}"),
        std::time::Duration::from_secs(30),
        || {
            let v: Vec<Value> = proxy
                .audit()
                .into_iter()
                .filter(|r| r["path"] == path && r["decision"] == "allow")
                .collect();
            (v.len() >= n).then_some(v)
        },
    )
}

/// A refusal as the SDK raised it: 403, `llm_not_in_scope`, the reason and the hint (naming
/// what the rule allows) in the exception's message.
fn assert_refused(what: &str, r: &Value, reason_part: &str) {
    assert_eq!(r["class"], "PermissionDeniedError", "{what}: {r}");
    assert_eq!(r["status"], 403, "{what}: {r}");
    let body = &r["body"];
    assert_eq!(error_code(body), "llm_not_in_scope", "{what}: {r}");
    let (reason, hint) = (
        body["reason"].as_str().unwrap(),
        body["hint"].as_str().unwrap(),
    );
    assert!(reason.contains(reason_part), "{what}: {reason}");
    assert!(
        hint.contains(
            "models: gpt-4o-mini, claude-3-5-haiku-*, gemini-2.0-flash; max_tokens at most 1000"
        ),
        "{what}: {hint}"
    );
    let message = r["message"].as_str().unwrap();
    assert!(
        message.contains(reason) && message.contains(hint),
        "{what}: {message}"
    );
}

#[test]
fn openai_and_anthropic_sdks_are_bounded_counted_and_streamed() {
    let s = setup();
    for (name, path, model, refused_model, (input, output), first) in [
        (
            "openai",
            "/v1/chat/completions",
            "gpt-4o-mini",
            "gpt-4o",
            (11, 7),
            "Hel",
        ),
        (
            "anthropic",
            "/v1/messages",
            "claude-3-5-haiku-20241022",
            "claude-opus-4-1",
            (25, 15),
            "message_start",
        ),
    ] {
        let out = sdk(&s, name);
        // Allowed, not streamed and streamed: the SDK reads the upstream's answer whole.
        assert_eq!(out["plain"]["text"], "Hello", "{name}: {out}");
        let st = &out["stream"];
        assert_eq!(st["first"], first, "{name}: {out}");
        assert_eq!(
            format!(
                "{}{}",
                st["first"].as_str().unwrap(),
                st["rest"].as_str().unwrap()
            ),
            if name == "openai" {
                "Hello"
            } else {
                "message_startHello"
            },
            "{name}: {out}"
        );
        // Refused: the model, then the token bound; readable in the SDK's exception.
        assert_refused(
            name,
            &out["model"],
            &format!("model '{refused_model}' is not in scope"),
        );
        assert_refused(
            name,
            &out["tokens"],
            "max_tokens 4000 is over the bound of 1000",
        );
        // Each record of an allowed call names the model and carries the usage.
        let recs = allowed(&s.proxy, path, 2);
        for (rec, stream) in recs.iter().zip([false, true]) {
            let l = &rec["llm"];
            assert_eq!(l["provider"], name, "{rec}");
            assert_eq!(l["model"], model, "{rec}");
            assert_eq!(l["stream"], stream, "{rec}");
            assert_eq!(l["input_tokens"], input, "{rec}");
            assert_eq!(l["output_tokens"], output, "{rec}");
        }
        assert_eq!(tokens(&s.proxy, model, "input"), f64::from(2 * input));
        assert_eq!(tokens(&s.proxy, model, "output"), f64::from(2 * output));
    }
    // The upstream saw only the allowed calls; each streamed one had to wait for the client's
    // signal, which the client gave only after it had the first event: no stream was held back.
    let calls = s.up.calls();
    let models: Vec<&str> = calls.iter().map(|c| c["model"].as_str().unwrap()).collect();
    assert_eq!(
        models,
        [
            "gpt-4o-mini",
            "gpt-4o-mini",
            "claude-3-5-haiku-20241022",
            "claude-3-5-haiku-20241022"
        ]
    );
    let released: Vec<&Value> = calls.iter().map(|c| &c["released"]).collect();
    assert_eq!(
        released,
        [
            &Value::Null,
            &Value::Bool(true),
            &Value::Null,
            &Value::Bool(true)
        ]
    );
}

/// Python `requests` speaking Gemini's wire format through the proxy: prints one JSON line
/// with each call's status and body (a streamed one's `data:` lines).
const GEMINI: &str = r#"
import json, sys, requests
proxy, ca, base, control = sys.argv[1:5]
s = requests.Session()
s.trust_env = False
s.proxies = {"https": proxy}
s.verify = ca
def call(model, verb, body, query=""):
    r = s.post(f"{base}/v1beta/models/{model}:{verb}{query}", json=body, stream=True, timeout=60)
    if verb == "streamGenerateContent" and r.status_code == 200:
        lines = r.iter_lines()
        first = next(l for l in lines if l)
        requests.get(control + "/go", proxies={"http": None, "https": None}, timeout=30)
        rest = [l.decode() for l in lines if l]
        return {"status": 200, "events": [first.decode()] + rest}
    return {"status": r.status_code, "body": r.json()}
gen = {"contents": [{"parts": [{"text": "hi"}]}], "generationConfig": {"maxOutputTokens": 64}}
out = {
    "plain": call("gemini-2.0-flash", "generateContent", gen),
    "stream": call("gemini-2.0-flash", "streamGenerateContent", gen, "?alt=sse"),
    "model": call("gemini-1.5-pro", "generateContent", gen),
    "unbounded": call("gemini-2.0-flash", "generateContent", {"contents": []}),
    "tool": call("gemini-2.0-flash", "generateContent", dict(gen, tools=[{"functionDeclarations": [{"name": "shell"}]}])),
    "huge": call("gemini-2.0-flash", "generateContent", dict(gen, pad="x" * 70000)),
}
print(json.dumps(out))
"#;

#[test]
fn gemini_raw_calls_are_bounded_counted_and_read_by_rego() {
    let s = setup();
    let base = format!("https://localhost:{}", s.up.api);
    let out = Command::new("python3")
        .args([
            "-c",
            GEMINI,
            &s.proxy.url(),
            s.ca.to_str().unwrap(),
            &base,
            &s.up.control,
        ])
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .stdin(Stdio::null())
        .output()
        .expect("python3 runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let out: Value = serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "gemini failed ({e}): {text} {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(out["plain"]["status"], 200, "{out}");
    assert_eq!(
        out["plain"]["body"]["usageMetadata"]["candidatesTokenCount"],
        10
    );
    let events = out["stream"]["events"].as_array().unwrap();
    assert_eq!(events.len(), 2, "{out}");
    // Refusals: each a 403 with its own code and a reason saying why.
    for (case, code, why) in [
        (
            "model",
            "llm_not_in_scope",
            "model 'gemini-1.5-pro' is not in scope",
        ),
        (
            "unbounded",
            "llm_not_in_scope",
            "the call sets no max_tokens (at most 1000)",
        ),
        (
            "tool",
            "intent_violation",
            "the tool 'shell' is not for chat",
        ),
        (
            "huge",
            "llm_not_in_scope",
            "longer than limits.inspect_body_bytes",
        ),
    ] {
        let r = &out[case];
        assert_eq!(r["status"], 403, "{case}: {r}");
        assert_eq!(error_code(&r["body"]), code, "{case}: {r}");
        let reason = r["body"]["reason"].as_str().unwrap();
        assert!(reason.contains(why), "{case}: {reason}");
    }
    let path = "/v1beta/models/gemini-2.0-flash:generateContent";
    let rec = &allowed(&s.proxy, path, 1)[0];
    assert_eq!(rec["llm"]["provider"], "gemini", "{rec}");
    assert_eq!(rec["llm"]["model"], "gemini-2.0-flash", "{rec}");
    assert_eq!(rec["llm"]["input_tokens"], 4, "{rec}");
    assert_eq!(rec["llm"]["output_tokens"], 10, "{rec}");
    let path = "/v1beta/models/gemini-2.0-flash:streamGenerateContent";
    let rec = &allowed(&s.proxy, path, 1)[0];
    assert_eq!(rec["llm"]["stream"], true, "{rec}");
    assert_eq!(rec["llm"]["output_tokens"], 10, "{rec}");
    assert_eq!(tokens(&s.proxy, "gemini-2.0-flash", "output"), 20.0);
    // Two allowed calls reached the upstream; the streamed one was released by the client.
    let calls = s.up.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[1]["released"], true, "{calls:?}");
}

#[test]
fn llm_tokens_count_against_the_intents_budget() {
    let s = setup_with("    budget: {llm_tokens: 20}\n");
    let url = format!(
        "https://localhost:{}/v1beta/models/gemini-2.0-flash:generateContent",
        s.up.api
    );
    let body =
        r#"{"contents":[{"parts":[{"text":"hi"}]}],"generationConfig":{"maxOutputTokens":100}}"#;
    let ca = s.ca.to_str().unwrap();
    let call = || {
        let h = "content-type: application/json";
        curl(&[
            "-x",
            &s.proxy.url(),
            "--cacert",
            ca,
            "-H",
            h,
            "-d",
            body,
            &url,
        ])
    };
    let used = || {
        let out = curl(&[&s.proxy.admin_url("/v1/budgets")]);
        out.json()["budgets"][0]["used"]["llm_tokens"].as_u64()
    };
    // Each answer reports 4 + 10 tokens: the first two calls start under 20, the third not.
    for (i, after) in [(1, 14), (2, 28)] {
        let out = call();
        assert_eq!(out.status, 200, "call {i}: {out:?}");
        eventually(
            "the tokens charged",
            std::time::Duration::from_secs(10),
            || (used() == Some(after)).then_some(()),
        );
    }
    let out = call();
    assert_eq!(out.status, 429, "{out:?}");
    let j = out.json();
    assert_eq!(error_code(&j), "budget_exhausted", "{j}");
    assert!(j["reason"].as_str().unwrap().contains("20"), "{j}");
    assert_eq!(
        s.up.calls().len(),
        2,
        "the refused call never reached the upstream"
    );
}
