//! The command line: the embedded default, `check`, config errors with file and line, `--help`.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;

#[test]
fn serve_runs_with_the_embedded_default_config() {
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready.json");
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--ready-file",
        ])
        .arg(&ready)
        .env_remove("INTENTGATE_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let info: serde_json::Value = eventually("ready file", Duration::from_secs(20), || {
        std::fs::read_to_string(&ready)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
    });
    let admin = info["admin"].as_str().unwrap();
    let out = curl(&[&format!("http://{admin}/healthz")]);
    assert_eq!(out.status, 200);
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("<embedded config/default.yaml>"));
}

#[test]
fn check_accepts_good_and_rejects_bad_configs_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.yaml");
    std::fs::write(&good, "mode: monitor\nlimits: {connect_timeout_ms: 500}\n").unwrap();
    let (code, stdout, _) = run_cli(&["check", "--config", good.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}");

    let cases = [
        (
            "unknown.yaml",
            "mode: enforce\nlisten:\n  proxy: 127.0.0.1:1\n  porxy: 2\n",
            ":4",
            "porxy",
        ),
        (
            "type.yaml",
            "limits:\n  max_headers: many\n",
            ":2",
            "max_headers",
        ),
        ("mode.yaml", "mode: lenient\n", ":1", "lenient"),
        // Policy is never fetched in clear text, and a bundle is the only policy source.
        (
            "bundle.yaml",
            "policy:\n  bundle_url: http://ctl/bundles/ns\n",
            ":2",
            "https://",
        ),
        (
            "bundle-paths.yaml",
            "policy:\n  bundle_url: https://ctl/bundles/ns\n  paths: [x]\n",
            ":3",
            "policy.paths",
        ),
        (
            "parent.yaml",
            "\nupstream:\n  proxy: socks5://x:1\n",
            ":3",
            "upstream.proxy",
        ),
        (
            "syntax.yaml",
            "mode: enforce\nlisten: {proxy: [unclosed\n",
            ":",
            "syntax.yaml",
        ),
    ];
    for (name, text, line, field) in cases {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        let (code, _, stderr) = run_cli(&["check", "--config", p.to_str().unwrap()]);
        assert_eq!(code, 2, "{name}: {stderr}");
        assert!(
            stderr.contains(&format!("{name}{line}")),
            "{name}: {stderr}"
        );
        assert!(stderr.contains(field), "{name}: {stderr}");
        // serve refuses the same file the same way.
        let (code, _, stderr2) = run_cli(&["serve", "--config", p.to_str().unwrap()]);
        assert_eq!(code, 2, "{stderr2}");
    }
    let (code, _, stderr) = run_cli(&["check", "--config", "/nonexistent/intentgate.yaml"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("/nonexistent/intentgate.yaml"), "{stderr}");
}

#[test]
fn help_describes_the_commands() {
    let (code, stdout, _) = run_cli(&["--help"]);
    assert_eq!(code, 0);
    for word in ["serve", "check"] {
        assert!(stdout.contains(word), "{stdout}");
    }
    let (_, stdout, _) = run_cli(&["serve", "--help"]);
    for flag in [
        "--config",
        "--listen",
        "--admin",
        "--agent",
        "--namespace",
        "--owner",
        "--intent",
        "--mode",
    ] {
        assert!(stdout.contains(flag), "{flag}: {stdout}");
    }
    // The listen addresses are serve's: check, explain and run neither list nor take them.
    for cmd in ["check", "explain", "run"] {
        let (code, stdout, _) = run_cli(&[cmd, "--help"]);
        assert_eq!(code, 0, "{cmd}");
        assert!(stdout.contains("--agent"), "{cmd}: {stdout}");
        for flag in ["--listen", "--admin"] {
            assert!(!stdout.contains(flag), "{cmd} {flag}: {stdout}");
        }
    }
    let (code, _, stderr) = run_cli(&["check", "--listen", "127.0.0.1:0"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--listen"), "{stderr}");
}

#[test]
fn check_runs_rego_tests_and_fails_on_a_failing_one() {
    let dir = tempfile::tempdir().unwrap();
    let pol = dir.path().join("policy");
    std::fs::create_dir(&pol).unwrap();
    std::fs::write(pol.join("rules.rego"), "package intentgate\nimport rego.v1\ndeny contains \"no\" if input.request.method == \"DELETE\"\n").unwrap();
    std::fs::write(
        pol.join("rules_test.rego"),
        "package rules_test\nimport rego.v1\ntest_delete_denied if { not data.intentgate.decision.allow with input as {\"request\": {\"method\": \"DELETE\"}, \"scope\": {\"matched\": true}} }\n",
    )
    .unwrap();
    let cfg = dir.path().join("c.yaml");
    std::fs::write(&cfg, "policy: {paths: [policy]}\n").unwrap();
    let (code, stdout, stderr) = run_cli(&["check", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("PASS rules_test.test_delete_denied"),
        "{stdout}"
    );
    assert!(stdout.contains("passed, 0 failed"), "{stdout}");

    std::fs::write(
        pol.join("wrong_test.rego"),
        "package wrong_test\nimport rego.v1\ntest_delete_allowed if { data.intentgate.decision.allow with input as {\"request\": {\"method\": \"DELETE\"}, \"scope\": {\"matched\": true}} }\n",
    )
    .unwrap();
    let (code, stdout, _) = run_cli(&["check", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains("FAIL wrong_test.test_delete_allowed"),
        "{stdout}"
    );
    assert!(stdout.contains("1 failed"), "{stdout}");

    // A policy that does not compile is invalid (exit 2) and the message names the file and line.
    std::fs::write(
        pol.join("broken.rego"),
        "package intentgate\nimport rego.v1\n\ndeny contains if {\n",
    )
    .unwrap();
    let (code, _, stderr) = run_cli(&["check", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("broken.rego"), "{stderr}");
}

#[test]
fn explain_prints_the_decision_and_input() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.yaml");
    std::fs::write(
        &cfg,
        "agent: {id: bot, owner: me}\nintents:\n  read:\n    allow:\n      - hosts: [api.example.com]\n        methods: [GET]\n",
    )
    .unwrap();
    let c = cfg.to_str().unwrap();
    let (code, stdout, _) = run_cli(&[
        "explain",
        "--config",
        c,
        "--intent",
        "read",
        "GET",
        "https://api.example.com/v1/things?page=2",
    ]);
    assert_eq!(code, 0, "{stdout}");
    let j: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(j["decision"]["allow"], true);
    assert_eq!(j["input"]["request"]["host"], "api.example.com");
    assert_eq!(j["input"]["request"]["query"]["page"][0], "2");
    assert_eq!(j["input"]["scope"]["rule"], 1);
    let (code, stdout, _) = run_cli(&[
        "explain",
        "--config",
        c,
        "--intent",
        "read",
        "DELETE",
        "https://api.example.com/v1/things",
    ]);
    assert_eq!(code, 1, "{stdout}");
    let j: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(j["decision"]["allow"], false);
    assert!(
        j["decision"]["reasons"][0]
            .as_str()
            .unwrap()
            .contains("method is not in scope")
    );
    let (code, _, stderr) = run_cli(&["explain", "--config", c, "GET", "ftp://x/"]);
    assert_eq!(code, 2, "{stderr}");
}

#[test]
fn every_example_loads_and_its_policy_tests_pass() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(&root).unwrap() {
        let cfg = entry.unwrap().path().join("config.yaml");
        if !cfg.exists() {
            continue;
        }
        seen += 1;
        let (code, stdout, stderr) = run_cli(&["check", "--config", cfg.to_str().unwrap()]);
        assert_eq!(code, 0, "{}: {stdout}{stderr}", cfg.display());
        assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
        assert!(!stdout.contains("FAIL"), "{stdout}");
    }
    assert!(seen >= 3, "expected at least three examples, found {seen}");
    // The platform example as seen from the billing namespace.
    let cfg = root.join("platform/config.yaml");
    let (code, stdout, _) = run_cli(&[
        "check",
        "--config",
        cfg.to_str().unwrap(),
        "--namespace",
        "billing",
        "--agent",
        "invoicer",
    ]);
    assert_eq!(code, 0, "{stdout}");
}
