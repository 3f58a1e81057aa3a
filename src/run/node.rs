//! Is the command a Node.js that cannot be told to use a proxy? Node's `fetch` and `http(s)`
//! honour `HTTP(S)_PROXY` only from 24.0 (and 22.21), and only with `NODE_USE_ENV_PROXY=1`; an
//! older Node sends every call around intentgate, so `run` says so before the agent starts.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// A Node.js that ignores the proxy variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OldNode {
    pub path: PathBuf,
    pub version: String,
}

/// The Node.js `command` runs: the program itself (`node`, `nodejs`), or the interpreter named in
/// its `#!` line (`npx`, `npm`, a script starting `#!/usr/bin/env node`). `None` when it is not
/// Node (a Node started by the agent itself cannot be seen here).
fn node_of(command: &[String]) -> Option<PathBuf> {
    let program = resolve(command.first()?)?;
    if is_node(&program) {
        return Some(program);
    }
    let mut head = [0u8; 256];
    let n = std::io::Read::read(&mut std::fs::File::open(&program).ok()?, &mut head).ok()?;
    let line = head[..n]
        .strip_prefix(b"#!")?
        .split(|b| *b == b'\n')
        .next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut words = line.split_whitespace();
    let interpreter = words.next()?;
    let node = if Path::new(interpreter).file_name()? == "env" {
        words.find(|w| !w.starts_with('-'))?
    } else {
        interpreter
    };
    let node = resolve(node)?;
    is_node(&node).then_some(node)
}

fn is_node(path: &Path) -> bool {
    matches!(
        path.file_name().and_then(|n| n.to_str()),
        Some("node" | "nodejs")
    )
}

/// `name` as the kernel would find it: a path as given, else the first match on `PATH`.
fn resolve(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        return Some(PathBuf::from(name));
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Whether this version (`v22.21.0`) sends its calls through `HTTP(S)_PROXY` when told.
fn honours_proxy_env(version: &str) -> bool {
    let mut parts = version
        .trim()
        .trim_start_matches('v')
        .split('.')
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    major >= 24 || (major == 22 && minor >= 21)
}

/// The old Node.js `command` runs, if it runs one (asks it `--version`: only for Node commands).
pub(crate) async fn old_node(command: &[String]) -> Option<OldNode> {
    let path = node_of(command)?;
    let out = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::process::Command::new(&path)
            .arg("--version")
            .env_remove("NODE_OPTIONS")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .ok()?
    .ok()?;
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !honours_proxy_env(&version)).then_some(OldNode { path, version })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_that_honour_the_proxy_variables() {
        for v in ["v24.0.0", "v24.11.1", "v25.1.0", "v22.21.0", "v22.22.1\n"] {
            assert!(honours_proxy_env(v), "{v}");
        }
        for v in ["v20.20.2", "v22.20.0", "v23.11.0", "v18.0.0", "garbage"] {
            assert!(!honours_proxy_env(v), "{v}");
        }
    }

    #[test]
    fn node_is_found_by_name_and_by_shebang() {
        let dir = tempfile::tempdir().unwrap();
        let fake_node = dir.path().join("node");
        std::fs::write(&fake_node, "#!/bin/sh\n").unwrap();
        let direct = |s: &str| vec![s.to_string()];
        assert_eq!(
            node_of(&direct(fake_node.to_str().unwrap())),
            Some(fake_node.clone())
        );
        let script = dir.path().join("agent.js");
        std::fs::write(
            &script,
            format!("#!{} --max-old-space-size=64\n", fake_node.display()),
        )
        .unwrap();
        assert_eq!(node_of(&direct(script.to_str().unwrap())), Some(fake_node));
        let py = dir.path().join("agent.py");
        std::fs::write(&py, "#!/usr/bin/env python3\n").unwrap();
        assert_eq!(node_of(&direct(py.to_str().unwrap())), None);
        assert_eq!(node_of(&direct("/nonexistent/agent")), None);
    }
}
