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
}
