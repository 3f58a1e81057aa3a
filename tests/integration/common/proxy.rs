//! Starts the real `intentgate` binary with a config written by the test, on ephemeral ports.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use super::eventually;

pub const BIN: &str = env!("CARGO_BIN_EXE_intentgate");

/// A running intentgate process; killed when dropped.
pub struct ProxyProc {
    child: Child,
    pub addr: SocketAddr,
    pub admin: Option<SocketAddr>,
    pub dir: tempfile::TempDir,
}

impl ProxyProc {
    /// Starts `serve` with `yaml` (listeners on 127.0.0.1:0 unless the YAML sets `listen`).
    pub fn start(yaml: &str) -> Self {
        Self::start_with(yaml, &[], &[])
    }

    /// Starts `serve` with extra CLI arguments and environment variables.
    pub fn start_with(yaml: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut text = String::new();
        if !yaml.contains("listen:") {
            text.push_str("listen: {proxy: 127.0.0.1:0, admin: 127.0.0.1:0}\n");
        }
        // An owner, so the lifecycle check passes (tests of that check set their own agent).
        if !yaml.contains("agent:") {
            text.push_str("agent: {id: test-agent, owner: test-owner}\n");
        }
        // Proxy-core tests run without a catalog: monitor mode forwards and records would-deny.
        if !yaml.contains("mode:") && !yaml.contains("intents:") {
            text.push_str("mode: monitor\n");
        }
        // The audit log goes to a file the test can read.
        if !yaml.contains("audit:") {
            text.push_str(&format!(
                "audit: {{path: \"{}\"}}\n",
                dir.path().join("audit.log").display()
            ));
        }
        // Test upstreams live on loopback, which is forbidden by default.
        if !yaml.contains("egress:") {
            text.push_str("egress: {allow_cidrs: [127.0.0.0/8, \"::1/128\"]}\n");
        }
        text.push_str(yaml);
        let config = dir.path().join("config.yaml");
        std::fs::write(&config, text).expect("write config");
        let ready = dir.path().join("ready.json");
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .arg("--config")
            .arg(&config)
            .arg("--ready-file")
            .arg(&ready)
            .args(args)
            .env("INTENTGATE_LOG", "info,intentgate=debug")
            .env_remove("HTTP_PROXY")
            .env_remove("http_proxy")
            .stdin(Stdio::null())
            .stdout(file(dir.path(), "stdout"))
            .stderr(file(dir.path(), "stderr"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn intentgate");
        let info: serde_json::Value = eventually(
            "intentgate to write its ready file",
            Duration::from_secs(20),
            || {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "intentgate exited early with {status}: {}",
                        std::fs::read_to_string(dir.path().join("stderr")).unwrap_or_default()
                    );
                }
                std::fs::read_to_string(&ready)
                    .ok()
                    .and_then(|t| serde_json::from_str(&t).ok())
            },
        );
        let addr = info["proxy"]
            .as_str()
            .expect("proxy addr")
            .parse()
            .expect("addr");
        let admin = info["admin"]
            .as_str()
            .map(|a| a.parse().expect("admin addr"));
        Self {
            child,
            addr,
            admin,
            dir,
        }
    }

    /// `http://127.0.0.1:PORT`, for `curl -x`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let child = &mut self.child;
        eventually("intentgate to exit", timeout, || {
            child.try_wait().expect("try_wait")
        })
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default()
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stdout")).unwrap_or_default()
    }

    /// Peak resident memory (VmHWM) of the process, in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        self.status_kib("VmHWM:")
    }

    /// The proxy's resident memory now (VmRSS), in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS:")
    }

    /// A `/proc/PID/status` field in KiB (0 when it cannot be read).
    fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// The audit records written so far (the default audit file of the harness).
    /// A line still being written (no newline yet) is left for the next read.
    pub fn audit(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.path("audit.log"))
            .unwrap_or_default()
            .split_inclusive('\n')
            .filter_map(|l| l.strip_suffix('\n'))
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("audit line is not JSON ({e}): {l}"))
            })
            .collect()
    }

    /// Waits until `n` audit records are written, and returns them.
    pub fn audit_n(&self, n: usize) -> Vec<serde_json::Value> {
        eventually(
            &format!("{n} audit records"),
            Duration::from_secs(10),
            || {
                let a = self.audit();
                (a.len() >= n).then_some(a)
            },
        )
    }

    /// `http://ADMIN{path}`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin.expect("admin listener"), path)
    }

    /// The value of one Prometheus sample (`name{labels}` exactly as exposed), 0 when absent.
    pub fn metric(&self, series: &str) -> f64 {
        let out = super::curl(&[&self.admin_url("/metrics")]);
        out.body
            .lines()
            .find_map(|l| {
                l.strip_prefix(series)
                    .and_then(|rest| rest.strip_prefix(' '))
            })
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for ProxyProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn file(dir: &Path, name: &str) -> Stdio {
    Stdio::from(std::fs::File::create(dir.join(name)).expect("create log file"))
}

/// Runs the binary to completion (for `check`, `explain`, …): (exit code, stdout, stderr).
pub fn run_cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run intentgate");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `serve --config CONFIG` (ephemeral listeners, `--ready-file`) until it exits or is
/// listening: its exit code (`None` when it listened: it accepted the configuration) and stderr.
pub fn serve_outcome(config: &std::path::Path, ready: &std::path::Path) -> (Option<i32>, String) {
    let mut child = std::process::Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .arg("--config")
        .arg(config)
        .arg("--ready-file")
        .arg(ready)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let exited = eventually(
        "serve to exit or listen",
        Duration::from_secs(20),
        || match child.try_wait().unwrap() {
            Some(status) => Some(Some(status)),
            None => ready.exists().then_some(None),
        },
    );
    let _ = child.kill();
    let err = child.wait_with_output().unwrap().stderr;
    (
        exited.and_then(|s| s.code()),
        String::from_utf8_lossy(&err).into_owned(),
    )
}

/// Makes intentgate's interception CA in `dir/ca` (`ca init`); its output.
pub fn init_ca(dir: &std::path::Path) -> String {
    let out = dir.join("ca");
    let (code, o, e) = run_cli(&["ca", "init", "--out", out.to_str().unwrap()]);
    assert_eq!(code, 0, "{o}{e}");
    o
}

/// A temporary directory with intentgate's interception CA: (dir, ca.pem, ca-key.pem).
pub fn ca() -> (tempfile::TempDir, String, String) {
    let dir = tempfile::tempdir().unwrap();
    init_ca(dir.path());
    let p = |f: &str| dir.path().join("ca").join(f).display().to_string();
    let (cert, key) = (p("ca.pem"), p("ca-key.pem"));
    (dir, cert, key)
}
