//! `run`'s details: the config's `audit.path`, the owner when `$USER` is not set (and where the
//! summary and `explain` say it came from), the warning for a run without calls, and logs without
//! colour codes when they go to a file.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;
use crate::run::{run, world};

fn run_env(args: &[&str], remove: &[&str], set: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args).stdin(Stdio::null());
    for k in remove {
        cmd.env_remove(k);
    }
    cmd.envs(set.iter().copied());
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn run_writes_to_the_configured_audit_path() {
    let w = world("");
    let audit = w.dir.path().join("configured-audit.jsonl");
    let config = w.dir.path().join("with-audit.yaml");
    let text = std::fs::read_to_string(&w.config).unwrap();
    std::fs::write(
        &config,
        format!("{text}audit: {{path: \"{}\"}}\n", audit.display()),
    )
    .unwrap();
    let url = w.up.url("/echo/ok/audited");
    let (code, _, stderr) = run_cli(&[
        "run",
        "--config",
        config.to_str().unwrap(),
        "--intent",
        "work",
        "--",
        "curl",
        "-s",
        &url,
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains(&format!("audit log: {}", audit.display())),
        "{stderr}"
    );
    let text = std::fs::read_to_string(&audit).unwrap_or_default();
    assert!(text.contains("/echo/ok/audited"), "{text}");
}

#[test]
fn without_user_the_owner_is_the_account_of_the_uid() {
    let w = world("");
    let config = w.dir.path().join("no-owner.yaml");
    let text = std::fs::read_to_string(&w.config).unwrap();
    std::fs::write(&config, text.replace("owner: dev", "")).unwrap();
    let url = w.up.url("/echo/ok/owner");
    let account = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout)
        .unwrap()
        .trim()
        .to_string();
    let args = [
        "run",
        "--config",
        config.to_str().unwrap(),
        "--intent",
        "work",
        "--",
        "curl",
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &url,
    ];
    // Most containers: no $USER, no $LOGNAME. The call is not refused as "no owner".
    let (code, stdout, stderr) = run_env(&args, &["USER", "LOGNAME"], &[]);
    assert_eq!((code, stdout.as_str()), (0, "200"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "agent dev-agent, owner {account} (the account name of this process's uid)"
        )),
        "{stderr}"
    );
    // explain shows the same, in the policy input.
    let explain = [
        "explain",
        "--config",
        config.to_str().unwrap(),
        "--intent",
        "work",
        "GET",
        &url,
    ];
    let (code, stdout, stderr) = run_env(&explain, &["USER", "LOGNAME"], &[]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let out: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(out["input"]["agent"]["owner"], account.as_str());
    assert_eq!(out["input"]["agent"]["owner_source"], "account");
    let (_, stdout, _) = run_env(&explain, &["LOGNAME"], &[("USER", "alice")]);
    let out: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        (
            &out["input"]["agent"]["owner"],
            &out["input"]["agent"]["owner_source"]
        ),
        (&serde_json::json!("alice"), &serde_json::json!("env_user"))
    );
    // In Kubernetes the uid names no owner: still refused.
    let (code, stdout, stderr) = run_env(&args, &["USER", "LOGNAME"], &[("POD_NAMESPACE", "ns")]);
    assert_eq!((code, stdout.as_str()), (0, "403"), "{stderr}");
    assert!(stderr.contains("has no owner"), "{stderr}");
}

#[test]
fn a_run_without_calls_is_warned_about() {
    let w = world("");
    let (code, _, stderr) = run(&w, &[], &["true"]);
    assert_eq!(code, 0);
    assert!(
        stderr.contains("warning: no call went through intentgate: if the command made network calls, they ignored the proxy variables"),
        "{stderr}"
    );
}

#[test]
fn logs_in_a_file_have_no_colour_codes_and_name_the_admin_address() {
    let proxy = ProxyProc::start("");
    let admin = proxy.admin.unwrap();
    let log = eventually("the start line", Duration::from_secs(20), || {
        let log = proxy.stderr();
        log.contains("intentgate listening").then_some(log)
    });
    assert!(
        !log.contains('\u{1b}'),
        "colour codes in a log file: {log:?}"
    );
    assert!(log.contains(&format!("admin={admin}")), "{log}");
    assert!(!log.contains("Some("), "{log}");
}
