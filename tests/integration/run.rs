//! `intentgate run -- CMD` wrapping real programs (curl, a Python agent using requests and httpx),
//! summaries, exit codes, signals, session intents from the child, and learn mode.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::tls::TestCa;
use crate::common::*;

const AGENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/agent.py");

pub(crate) struct World {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) up: Upstream,
    tls_up: Upstream,
    pub(crate) config: std::path::PathBuf,
}

/// Two upstreams (HTTP and HTTPS) and a config allowing `GET /echo/ok/**` on both for `work`.
pub(crate) fn world(extra: &str) -> World {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("run upstream CA");
    let ca_file = ca.write_pem(dir.path());
    let up = Upstream::start();
    let tls_up = Upstream::start_tls(ca.server_config(&["localhost"]));
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "agent: {{id: dev-agent, owner: dev}}\negress: {{allow_cidrs: [127.0.0.0/8, \"::1/128\"]}}\ntls: {{upstream_ca: \"{}\"}}\n\
             intents:\n  work:\n    allow:\n      - hosts: [127.0.0.1, localhost]\n        ports: [{}, {}]\n        methods: [GET]\n        paths: [\"/echo/ok/**\"]\n{extra}",
            ca_file.display(),
            up.addr.port(),
            tls_up.addr.port()
        ),
    )
    .unwrap();
    World {
        dir,
        up,
        tls_up,
        config,
    }
}

pub(crate) fn run(w: &World, flags: &[&str], cmd: &[&str]) -> (i32, String, String) {
    let mut args = vec!["run", "--config", w.config.to_str().unwrap()];
    args.extend(flags);
    args.push("--");
    args.extend(cmd);
    run_cli(&args)
}

fn plan(steps: serde_json::Value) -> String {
    steps.to_string()
}

#[test]
fn run_wraps_curl_and_python_and_summarises_exactly() {
    let w = world("");
    let report = w.dir.path().join("report.json");
    let http_ok = w.up.url("/echo/ok/1");
    let https_ok = format!("https://localhost:{}/echo/ok/2", w.tls_up.addr.port());
    let https_no = format!("https://localhost:{}/echo/secret", w.tls_up.addr.port());
    let steps = plan(serde_json::json!([
        {"lib": "requests", "method": "GET", "url": http_ok},
        {"lib": "requests", "method": "GET", "url": https_ok},
        {"lib": "httpx", "method": "GET", "url": https_ok},
        {"lib": "requests", "method": "GET", "url": https_no},
        {"lib": "httpx", "method": "POST", "url": http_ok},
    ]));
    let (code, stdout, stderr) = run(
        &w,
        &["--intent", "work", "--report", report.to_str().unwrap()],
        &["python3", AGENT, &steps],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(stdout.trim(), "[200, 200, 200, 403, 403]", "{stderr}");
    assert!(
        stderr.contains("5 calls: 3 allowed, 2 blocked, 0 would-block"),
        "{stderr}"
    );
    assert!(stderr.contains("audit log: "), "{stderr}");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(
        (
            r["calls"].as_u64(),
            r["allowed"].as_u64(),
            r["blocked"].as_u64()
        ),
        (Some(5), Some(3), Some(2))
    );
    let tls_dest = format!("localhost:{}", w.tls_up.addr.port());
    assert_eq!(r["intents"]["work"][&tls_dest]["allowed"], 2);
    assert!(
        r["intents"]["work"][&tls_dest]["first_reason"]
            .as_str()
            .unwrap()
            .contains("path is not in scope")
    );
    assert_eq!(w.up.requests() + w.tls_up.requests(), 3);

    // curl, with the CA bundle and proxy variables run set (no -x, no --cacert).
    let (code, stdout, stderr) = run(
        &w,
        &["--intent", "work"],
        &[
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &https_ok,
        ],
    );
    assert_eq!((code, stdout.as_str()), (0, "200"), "{stderr}");
    let (_, stdout, _) = run(&w, &["--intent", "work", "-q"], &["curl", "-s", &https_no]);
    assert!(has_error_code(&stdout, "intent_violation"), "{stdout}");
}

#[test]
fn run_passes_exit_codes_and_signals_through() {
    let w = world("");
    assert_eq!(run(&w, &["-q"], &["sh", "-c", "exit 0"]).0, 0);
    assert_eq!(run(&w, &["-q"], &["sh", "-c", "exit 3"]).0, 3);
    assert_eq!(run(&w, &["-q"], &["sh", "-c", "kill -9 $$"]).0, 128 + 9);
    assert_eq!(run(&w, &["-q"], &["/nonexistent/agent"]).0, 127);

    // SIGTERM to `run` reaches the child, whose own exit code comes back.
    let ready = w.dir.path().join("ready");
    let marker = w.dir.path().join("signal");
    let steps = plan(
        serde_json::json!([{"touch": ready.to_str().unwrap()}, {"sleep_until_file": "/nonexistent/never"}]),
    );
    let mut child = Command::new(BIN)
        .args([
            "run",
            "-q",
            "--config",
            w.config.to_str().unwrap(),
            "--",
            "python3",
            AGENT,
            &steps,
        ])
        .env("AGENT_SIGNAL_FILE", &marker)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    eventually("the agent to start", Duration::from_secs(20), || {
        ready.exists().then_some(())
    });
    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let status = eventually("run to exit", Duration::from_secs(20), || {
        child.try_wait().unwrap()
    });
    assert_eq!(status.code(), Some(7));
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "TERM");
}

#[test]
fn the_child_changes_its_intent_through_the_admin_url() {
    let w = world("  other:\n    allow:\n      - hosts: [example.invalid]\n");
    let url = w.up.url("/echo/ok/9");
    let steps = plan(serde_json::json!([
        {"lib": "requests", "method": "GET", "url": url},
        {"set_intent": "work"},
        {"lib": "requests", "method": "GET", "url": url},
        {"set_intent": "other"},
        {"lib": "httpx", "method": "GET", "url": url},
    ]));
    let (code, stdout, stderr) = run(&w, &[], &["python3", AGENT, &steps]);
    assert_eq!(code, 0, "{stderr}");
    // Statuses of: call, set intent, call, set intent, call.
    assert_eq!(stdout.trim(), "[403, 200, 200, 200, 403]", "{stderr}");
    assert_eq!(w.up.requests(), 1);
}

#[test]
fn learn_then_enforce_allows_the_same_calls_and_blocks_a_new_one() {
    let w = world("");
    let learned = w.dir.path().join("learned.yaml");
    let calls = serde_json::json!([
        {"lib": "requests", "method": "GET", "url": w.up.url("/echo/items/101")},
        {"lib": "requests", "method": "GET", "url": w.up.url("/echo/items/102")},
        {"lib": "httpx", "method": "POST", "url": format!("https://localhost:{}/echo/reports", w.tls_up.addr.port())},
    ]);
    // Learn: everything is forwarded (monitor), whatever the catalog says.
    let (code, stdout, stderr) = run(
        &w,
        &[
            "--intent",
            "work",
            "--learn",
            learned.to_str().unwrap(),
            "--generalise",
        ],
        &["python3", AGENT, &calls.to_string()],
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.trim(), "[200, 200, 200]", "{stderr}");
    let text = std::fs::read_to_string(&learned).unwrap();
    assert!(text.contains("/echo/items/*"), "{text}");
    // Enforce the learned catalog: the same calls pass, a new one is blocked.
    let pol = w.dir.path().join("learned-policy");
    std::fs::create_dir(&pol).unwrap();
    std::fs::copy(&learned, pol.join("catalog.yaml")).unwrap();
    let enforced = w.dir.path().join("enforced.yaml");
    let ca_line = std::fs::read_to_string(&w.config)
        .unwrap()
        .lines()
        .find(|l| l.starts_with("tls:"))
        .unwrap()
        .to_string();
    std::fs::write(
        &enforced,
        format!(
            "agent: {{id: dev-agent, owner: dev}}\negress: {{allow_cidrs: [127.0.0.0/8]}}\n{ca_line}\nmode: enforce\npolicy: {{paths: [\"{}\"]}}\n",
            pol.display()
        ),
    )
    .unwrap();
    let mut more = calls.as_array().unwrap().clone();
    more.push(serde_json::json!({"lib": "requests", "method": "DELETE", "url": w.up.url("/echo/items/101")}));
    let (code, stdout, stderr) = run_cli(&[
        "run",
        "--config",
        enforced.to_str().unwrap(),
        "--intent",
        "work",
        "--",
        "python3",
        AGENT,
        &serde_json::Value::Array(more).to_string(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.trim(), "[200, 200, 200, 403]", "{stderr}");
}

#[test]
fn learn_from_audit_files_of_a_fleet() {
    let w = world("");
    let (a1, a2) = (w.dir.path().join("a1.log"), w.dir.path().join("a2.log"));
    let s1 =
        serde_json::json!([{"lib": "requests", "method": "GET", "url": w.up.url("/echo/a/1")}]);
    let s2 =
        serde_json::json!([{"lib": "requests", "method": "PUT", "url": w.up.url("/echo/b/2")}]);
    for (audit, steps, intent) in [(&a1, &s1, "reader"), (&a2, &s2, "writer")] {
        let (code, _, e) = run(
            &w,
            &[
                "-q",
                "--mode",
                "monitor",
                "--intent",
                intent,
                "--audit",
                audit.to_str().unwrap(),
            ],
            &["python3", AGENT, &steps.to_string()],
        );
        assert_eq!(code, 0, "{e}");
    }
    let out = w.dir.path().join("fleet.yaml");
    let (code, _, stderr) = run_cli(&[
        "learn",
        "--from-audit",
        a1.to_str().unwrap(),
        a2.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--generalise",
        "1",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("agent dev-agent, intent reader: 1 calls"),
        "{stderr}"
    );
    assert!(stderr.contains("learned 2 intents"), "{stderr}");
    let catalog: serde_json::Value =
        serde_yaml::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(
        catalog["intents"]["writer"]["allow"][0]["methods"],
        serde_json::json!(["PUT"])
    );
    assert_eq!(
        catalog["intents"]["reader"]["allow"][0]["paths"],
        serde_json::json!(["/echo/a/*"])
    );
}

#[test]
fn serve_learn_writes_the_catalog_at_shutdown() {
    let up = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("learned.yaml");
    let mut proxy = ProxyProc::start_with(
        "mode: enforce\n",
        &["--learn", out.to_str().unwrap(), "--generalise", "1"],
        &[],
    );
    for path in ["/echo/orders/17", "/echo/orders/18/lines"] {
        let o = curl(&[
            "-x",
            &proxy.url(),
            "-H",
            "intentgate-intent: shop",
            &up.url(path),
        ]);
        assert_eq!(o.status, 200, "learn mode forwards everything: {o:?}");
    }
    proxy.signal("TERM");
    assert!(proxy.wait_exit(Duration::from_secs(20)).success());
    let text = std::fs::read_to_string(&out).unwrap();
    let text = format!(
        "{text}\n# audit:\n{}\n# stderr:\n{}",
        proxy.audit().len(),
        proxy.stderr()
    );
    let c: serde_json::Value =
        serde_yaml::from_str(text.split("\n# audit:").next().unwrap()).unwrap();
    assert_eq!(
        c["intents"]["shop"]["allow"][0]["paths"],
        serde_json::json!(["/echo/orders/*", "/echo/orders/*/lines"]),
        "{text}"
    );
    assert_eq!(
        c["intents"]["shop"]["allow"][0]["methods"],
        serde_json::json!(["GET"])
    );
}
