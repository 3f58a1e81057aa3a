//! Refusals as agents see them through the LLM SDKs they use: the real `openai` and `anthropic`
//! Python packages call a local HTTPS upstream through intentgate, which intercepts (the client
//! trusts intentgate's CA); the exception a refused call raises carries the reason and the hint.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::common::tls::TestCa;
use crate::common::*;

/// intentgate intercepting with a CA of its own (`ca init`) and trusting the upstream's test CA;
/// the intent `models` allows only GET /v1/models and is the default intent.
struct Setup {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    up: Upstream,
    proxy: ProxyProc,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("ca");
    let (code, out, err) = run_cli(&["ca", "init", "--out", ca_dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    let test_ca = TestCa::new("upstream test CA");
    let up_ca = test_ca.write_pem(dir.path());
    let up = Upstream::start_tls(test_ca.server_config(&["localhost"]));
    let proxy = ProxyProc::start(&format!(
        "agent: {{id: sdk-agent, owner: o}}\nintent: models\n\
         tls: {{ca_cert: \"{}\", ca_key: \"{}\", upstream_ca: \"{}\"}}\n\
         intents:\n  models:\n    allow:\n      - hosts: [localhost]\n        ports: [{}]\n        methods: [GET]\n        paths: [\"/v1/models\"]\n",
        ca_dir.join("ca.pem").display(),
        ca_dir.join("ca-key.pem").display(),
        up_ca.display(),
        up.addr.port(),
    ));
    Setup {
        ca: ca_dir.join("ca.pem"),
        _dir: dir,
        up,
        proxy,
    }
}

/// Runs tests/clients/sdk.py with `sdk`: given the proxy and CA as an http_client, or (`env`)
/// through HTTPS_PROXY and SSL_CERT_FILE.
fn sdk(s: &Setup, sdk: &str, env: bool) -> Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/sdk.py");
    // The OpenAI SDK's paths are relative to /v1, Anthropic's carry it.
    let v1 = if sdk == "openai" { "/v1" } else { "" };
    let base = format!("https://localhost:{}{v1}", s.up.addr.port());
    let ca = s.ca.to_str().unwrap();
    let proxy = s.proxy.url();
    let mut cmd = Command::new("python3");
    cmd.arg(script).args([sdk, &base, ca]);
    for k in [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
    ] {
        cmd.env_remove(k);
    }
    for k in ["NO_PROXY", "no_proxy", "SSL_CERT_FILE", "SSL_CERT_DIR"] {
        cmd.env_remove(k);
    }
    if env {
        cmd.arg("--env")
            .env("HTTPS_PROXY", &proxy)
            .env("SSL_CERT_FILE", ca);
    } else {
        cmd.arg(&proxy);
    }
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .expect("python3 runs (scripts/test installs openai and anthropic)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "{sdk} failed ({e}): {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn sdk_exceptions_carry_the_reason_and_the_hint() {
    let s = setup();
    let p = s.up.addr.port();
    let mut calls = 0;
    for (name, path) in [
        ("openai", "/v1/chat/completions"),
        ("anthropic", "/v1/messages"),
    ] {
        for env in [false, true] {
            let what = format!("{name} (env: {env})");
            let out = sdk(&s, name, env);
            // The allowed call went through interception, tagged.
            assert_eq!(out["allowed"]["status"], 200, "{what}: {out}");
            let seen = &out["allowed"]["seen"]["headers"];
            assert_eq!(seen["intentgate-intent"], "models", "{what}: {out}");
            calls += 1;
            // The refused one raised the SDK's 403 exception, whose message is intentgate's
            // reason and hint, and whose type and code are intentgate's.
            let r = &out["refused"];
            assert_eq!(r["class"], "PermissionDeniedError", "{what}: {out}");
            assert_eq!(r["status"], 403, "{what}: {out}");
            let body = &r["body"];
            assert_eq!(error_code(body), "intent_violation", "{what}: {out}");
            let (reason, hint) = (
                body["reason"].as_str().unwrap(),
                body["hint"].as_str().unwrap(),
            );
            assert!(
                reason.contains(&format!("does not permit POST localhost:{p}{path}")),
                "{what}: {out}"
            );
            assert!(hint.contains("intent 'models'"), "{what}: {out}");
            let message = r["message"].as_str().unwrap();
            assert!(
                message.contains(reason) && message.contains(hint),
                "{what}: the exception's message lacks the reason or the hint: {message}"
            );
            assert_eq!(r["type"], "intent_violation", "{what}: {out}");
            if name == "openai" {
                assert_eq!(r["code"], "intent_violation", "{what}: {out}");
            } else {
                let api = r["api_message"].as_str().unwrap_or_default();
                assert!(
                    api.starts_with(reason) && api.ends_with(hint),
                    "{what}: {out}"
                );
            }
        }
    }
    // Only the allowed calls reached the upstream.
    assert_eq!(s.up.requests(), calls);
}
