//! Isolated network namespaces for tests whose targets are not loopback: the namespace has only a
//! loopback interface, so even a bug cannot send a packet off the machine. Needs root (CI is root).

use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use super::{BIN, eventually};

/// A namespace, deleted (with the processes started in it) on drop.
pub struct Netns {
    pub name: String,
    children: Vec<Child>,
    dir: tempfile::TempDir,
}

impl Netns {
    /// A new namespace with `lo` up (and `extra` addresses on it, e.g. `198.18.0.1/32`).
    pub fn new(tag: &str, extra: &[&str]) -> Self {
        let name = format!("ig{tag}{}", std::process::id());
        let ip = |args: &[&str]| Command::new("ip").args(args).status().unwrap().success();
        assert!(
            ip(&["netns", "add", &name]),
            "ip netns add {name} (tests run as root)"
        );
        let ns = Self {
            name,
            children: Vec::new(),
            dir: tempfile::tempdir().unwrap(),
        };
        assert!(ip(&["-n", &ns.name, "link", "set", "lo", "up"]));
        for addr in extra {
            assert!(ip(&["-n", &ns.name, "addr", "add", addr, "dev", "lo"]));
        }
        ns
    }

    fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]).args(args);
        c
    }

    /// Runs a program inside the namespace to completion.
    pub fn run(&self, program: &str, args: &[&str]) -> Output {
        self.command(program, args).output().unwrap()
    }

    /// Starts a program inside the namespace; it is killed when the namespace is dropped.
    pub fn spawn(&mut self, program: &str, args: &[&str]) {
        let child = self
            .command(program, args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.children.push(child);
    }

    /// Starts `intentgate serve` with `yaml` inside the namespace; its ready-file JSON.
    pub fn intentgate(&mut self, yaml: &str) -> serde_json::Value {
        let cfg = self
            .dir
            .path()
            .join(format!("c{}.yaml", self.children.len()));
        let ready = self
            .dir
            .path()
            .join(format!("ready{}.json", self.children.len()));
        std::fs::write(&cfg, yaml).unwrap();
        self.spawn(
            BIN,
            &[
                "serve",
                "--config",
                cfg.to_str().unwrap(),
                "--ready-file",
                ready.to_str().unwrap(),
            ],
        );
        eventually("intentgate's ready file", Duration::from_secs(20), || {
            std::fs::read_to_string(&ready)
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
        })
    }

    /// curl inside the namespace: its stdout (with `-w` output if asked).
    pub fn curl(&self, args: &[&str]) -> String {
        let mut all = vec!["-s", "--max-time", "10"];
        all.extend(args);
        String::from_utf8_lossy(&self.run("curl", &all).stdout).into_owned()
    }

    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .status();
    }
}
