//! `intentgate run --isolate`: the child runs in a network namespace of its own whose only way out
//! is intentgate. Everything runs inside a test namespace holding the "allowed host" (198.18.0.1,
//! HTTP on 80, a UDP/DNS responder on 53), so no packet can leave the machine. As root, a direct
//! call is redirected to intentgate and decided; without root (uid 65534 through setpriv, in a user
//! namespace) it fails; in both, UDP and DNS fail, calls through the proxy succeed and are audited,
//! and the summary counts what was refused.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::netns::Netns;
use crate::common::tls::TestCa;
use crate::common::*;

const UPSTREAM: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/clients/transparent_upstream.py"
);
const PROBE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/netprobe.py");
const FETCH_JS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/fetch.mjs");
const NO_USERNS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/no_userns.py");
const HOST: &str = "198.18.0.1";

struct World {
    ns: Netns,
    /// World-readable and -writable, for the run as uid 65534.
    dir: tempfile::TempDir,
    config: PathBuf,
    /// Requests the upstream saw (JSON lines, with headers).
    upstream_log: PathBuf,
    /// Datagrams the UDP/DNS responder saw.
    udp_log: PathBuf,
}

fn wait_file(what: &str, path: &Path) {
    eventually(what, Duration::from_secs(20), || {
        path.exists().then_some(())
    });
}

/// A config for an open directory: `GET 198.18.0.1:80/ok/**` under intent `work`.
fn write_config(dir: &Path) -> PathBuf {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "agent: {{id: iso-agent, owner: dev}}\negress: {{allow_cidrs: [198.18.0.0/15]}}\n\
             intents:\n  work:\n    allow:\n      - hosts: [\"{HOST}\"]\n        ports: [80]\n        methods: [GET]\n        paths: [\"/ok/**\"]\n\
             \x20 other:\n    allow:\n      - hosts: [example.invalid]\n"
        ),
    )
    .unwrap();
    config
}

fn world(tag: &str) -> World {
    let mut ns = Netns::new(tag, &[&format!("{HOST}/32")]);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let (cert, key) = TestCa::new("isolate upstream CA").server_pem(&["upstream.test"]);
    let (cert_file, key_file) = (dir.path().join("up.pem"), dir.path().join("up-key.pem"));
    std::fs::write(&cert_file, cert).unwrap();
    std::fs::write(&key_file, key).unwrap();
    let upstream_log = dir.path().join("upstream.log");
    let ready = dir.path().join("upstream.ready");
    ns.spawn(
        "python3",
        &[
            UPSTREAM,
            upstream_log.to_str().unwrap(),
            ready.to_str().unwrap(),
            cert_file.to_str().unwrap(),
            key_file.to_str().unwrap(),
        ],
    );
    wait_file("the upstream in the namespace", &ready);
    let udp_log = dir.path().join("udp.log");
    let ready = dir.path().join("udp.ready");
    ns.spawn(
        "python3",
        &[
            PROBE,
            "serve-udp",
            HOST,
            "53",
            udp_log.to_str().unwrap(),
            ready.to_str().unwrap(),
        ],
    );
    wait_file("the UDP responder in the namespace", &ready);
    World {
        ns,
        dir,
        config,
        upstream_log,
        udp_log,
    }
}

impl World {
    /// `intentgate run --intent work FLAGS -- CMD` inside the namespace, as root or as uid 65534.
    fn run(&self, nobody: bool, flags: &[&str], cmd: &[&str]) -> (i32, String, String) {
        let mut args: Vec<&str> = Vec::new();
        if nobody {
            args.extend(["--reuid=65534", "--regid=65534", "--clear-groups", BIN]);
        }
        args.extend([
            "run",
            "--config",
            self.config.to_str().unwrap(),
            "--intent",
            "work",
        ]);
        args.extend(flags);
        args.push("--");
        args.extend(cmd);
        let out = if nobody {
            self.ns.run("setpriv", &args)
        } else {
            self.ns.run(BIN, &args)
        };
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn probe(&self, nobody: bool, flags: &[&str], plan: &Value) -> (Vec<Value>, String) {
        let plan = plan.to_string();
        let (code, stdout, stderr) = self.run(nobody, flags, &["python3", PROBE, "probe", &plan]);
        assert_eq!(code, 0, "{stdout}\n{stderr}");
        let results: Vec<Value> = serde_json::from_str(stdout.trim())
            .unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));
        (results, stderr)
    }

    /// The paths the upstream saw, with the decision id intentgate tagged them with (if any).
    fn upstream_saw(&self) -> Vec<(String, Option<String>)> {
        std::fs::read_to_string(&self.upstream_log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .map(|r| {
                (
                    r["path"].as_str().unwrap_or_default().to_string(),
                    r["headers"]["intentgate-decision-id"]
                        .as_str()
                        .map(str::to_string),
                )
            })
            .collect()
    }

    fn datagrams(&self) -> usize {
        std::fs::read_to_string(&self.udp_log)
            .unwrap_or_default()
            .lines()
            .count()
    }

    fn audit(&self, file: &Path) -> Vec<Value> {
        std::fs::read_to_string(file)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

fn error_of(v: &Value) -> &str {
    v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("expected an error: {v}"))
}

/// The plan both modes run: a direct call (proxy variables ignored), the same call through the
/// proxy, a direct call out of scope, a UDP datagram and a raw DNS query to the allowed host.
fn plan() -> Value {
    json!([
        {"http": format!("http://{HOST}/ok/direct"), "proxy": false},
        {"http": format!("http://{HOST}/ok/proxied")},
        {"http": format!("http://{HOST}/secret"), "proxy": false},
        {"udp": [HOST, 53]},
        {"dns": [HOST, 53, "example.com"]},
    ])
}

#[test]
fn without_isolation_direct_calls_udp_and_dns_get_out_unseen() {
    // The control: the same plan under plain `run` reaches the upstream directly (no tag) and
    // the UDP/DNS responder answers — what --isolate has to stop.
    let w = world("isc");
    let (r, _) = w.probe(false, &[], &plan());
    assert_eq!(r[0]["status"], 200, "{r:?}");
    assert_eq!(r[1]["status"], 200, "{r:?}");
    assert_eq!(
        r[2]["status"], 200,
        "out of scope, but straight to the upstream: {r:?}"
    );
    assert_eq!(
        (r[3].as_str(), r[4].as_str()),
        (Some("reply"), Some("answer"))
    );
    let saw = w.upstream_saw();
    assert!(
        saw.contains(&("/ok/direct".into(), None)),
        "untagged: {saw:?}"
    );
    assert!(saw.contains(&("/secret".into(), None)), "untagged: {saw:?}");
    assert_eq!(w.datagrams(), 2);
}

#[test]
fn isolate_as_root_redirects_direct_calls_to_intentgate_and_refuses_udp_and_dns() {
    let w = world("isr");
    let audit = w.dir.path().join("audit.log");
    let report = w.dir.path().join("report.json");
    let mut steps = plan().as_array().unwrap().clone();
    // The admin API is reachable inside (the agent changes its session intent), and a session
    // intent applies to redirected calls too.
    steps.push(json!({"set_intent": "other"}));
    steps.push(json!({"http": format!("http://{HOST}/ok/after"), "proxy": false}));
    let flags = [
        "--isolate",
        "--audit",
        audit.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
    ];
    let (r, stderr) = w.probe(false, &flags, &Value::Array(steps));
    // Direct: redirected to the transparent listener, decided, forwarded with intentgate's tags.
    assert_eq!(r[0]["status"], 200, "{r:?}\n{stderr}");
    assert_eq!(r[1]["status"], 200, "{r:?}");
    assert_eq!(r[2]["status"], 403, "decided like any call: {r:?}");
    assert_eq!(error_of(&r[3]), "Network is unreachable", "UDP: {r:?}");
    assert_eq!(error_of(&r[4]), "Network is unreachable", "DNS: {r:?}");
    assert_eq!(r[5], 200, "{r:?}");
    assert_eq!(r[6]["status"], 403, "{r:?}");
    assert_eq!(w.datagrams(), 0, "no datagram left the namespace");
    let saw = w.upstream_saw();
    let paths: Vec<&str> = saw.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(paths, ["/ok/direct", "/ok/proxied"], "{saw:?}");
    assert!(
        saw.iter().all(|(_, id)| id.is_some()),
        "nothing untagged: {saw:?}"
    );
    let records = w.audit(&audit);
    let conn = |path: &str| {
        records
            .iter()
            .find(|r| r["path"] == path)
            .map(|r| (r["connection"].clone(), r["decision"].clone()))
    };
    assert_eq!(
        conn("/ok/direct"),
        Some((json!("transparent"), json!("allow")))
    );
    assert_eq!(
        conn("/ok/proxied"),
        Some((json!("forward"), json!("allow")))
    );
    assert_eq!(conn("/secret"), Some((json!("transparent"), json!("deny"))));
    let rep: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(rep["isolation"], "root");
    assert_eq!(rep["redirected"], 3, "{rep}");
    assert_eq!(
        rep["refused_outside_proxy"], 2,
        "the UDP datagram and the DNS query: {rep}"
    );
    assert!(
        stderr.contains("2 connection attempts, datagrams or DNS queries did not go through intentgate and were refused by --isolate"),
        "{stderr}"
    );
    assert!(
        stderr.contains("3 calls ignored the proxy variables"),
        "{stderr}"
    );

    // Node.js 20 ignores the proxy variables; under --isolate as root its fetch is caught anyway.
    let (code, stdout, stderr) = w.run(
        false,
        &["--isolate"],
        &["node", FETCH_JS, &format!("http://{HOST}/ok/node")],
    );
    assert_eq!((code, stdout.trim()), (0, "200"), "{stderr}");
    assert!(
        !stderr.contains("ignores HTTP_PROXY"),
        "nothing to warn about: {stderr}"
    );
    let saw = w.upstream_saw();
    assert!(
        saw.iter().any(|(p, id)| p == "/ok/node" && id.is_some()),
        "tagged by intentgate: {saw:?}"
    );
}

#[test]
fn isolate_without_root_fails_direct_calls_and_forwards_proxied_ones() {
    let w = world("isu");
    let audit = w.dir.path().join("audit.log");
    let mut steps = plan().as_array().unwrap().clone();
    steps.push(json!({"set_intent": "other"}));
    steps.push(json!({"http": format!("http://{HOST}/ok/after")}));
    let flags = ["--isolate", "--audit", audit.to_str().unwrap()];
    let (r, stderr) = w.probe(true, &flags, &Value::Array(steps));
    assert_eq!(
        error_of(&r[0]),
        "[Errno 101] Network is unreachable",
        "{r:?}\n{stderr}"
    );
    assert_eq!(r[1]["status"], 200, "{r:?}");
    assert_eq!(
        error_of(&r[2]),
        "[Errno 101] Network is unreachable",
        "{r:?}"
    );
    assert_eq!(error_of(&r[3]), "Network is unreachable", "UDP: {r:?}");
    assert_eq!(error_of(&r[4]), "Network is unreachable", "DNS: {r:?}");
    assert_eq!(r[5], 200, "the admin API inside: {r:?}");
    assert_eq!(r[6]["status"], 403, "under the new session intent: {r:?}");
    assert_eq!(w.datagrams(), 0);
    let saw = w.upstream_saw();
    assert!(
        matches!(saw.as_slice(), [(p, Some(_))] if p == "/ok/proxied"),
        "only the proxied call, tagged: {saw:?}"
    );
    let records = w.audit(&audit);
    assert!(
        records
            .iter()
            .any(|r| r["path"] == "/ok/proxied" && r["decision"] == "allow"),
        "{records:?}"
    );
    assert!(
        stderr.contains("4 connection attempts, datagrams or DNS queries did not go through intentgate and were refused by --isolate"),
        "two direct calls, the datagram and the query: {stderr}"
    );

    // Exit codes pass through the helper; Node.js 20 is warned about, and its fetch fails.
    assert_eq!(
        w.run(true, &["--isolate", "-q"], &["sh", "-c", "exit 3"]).0,
        3
    );
    let (code, stdout, stderr) = w.run(
        true,
        &["--isolate"],
        &["node", FETCH_JS, &format!("http://{HOST}/ok/node")],
    );
    assert_eq!((code, stdout.trim()), (0, "error ENETUNREACH"), "{stderr}");
    assert!(
        stderr.contains("ignores HTTP_PROXY/HTTPS_PROXY")
            && stderr.contains("under --isolate without root they fail"),
        "{stderr}"
    );
    assert!(
        stderr.contains("no call went through intentgate: the command's calls ignored the proxy variables and were refused"),
        "{stderr}"
    );
}

#[test]
fn isolate_exits_2_and_runs_nothing_when_the_kernel_refuses_user_namespaces() {
    // uid 65534 inside a user namespace whose limit on new user namespaces is 0.
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let marker = dir.path().join("ran");
    let out = std::process::Command::new("python3")
        .args([
            NO_USERNS,
            BIN,
            "run",
            "--config",
            config.to_str().unwrap(),
            "--isolate",
            "--",
            "touch",
            marker.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--isolate: cannot create a user and network namespace")
            && stderr.contains("user.max_user_namespaces")
            && stderr.contains("the command was not run"),
        "{stderr}"
    );
    assert!(!marker.exists(), "never run without isolation");
}
