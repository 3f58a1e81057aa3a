//! The `file` and `env` sources. A file (a mounted Kubernetes Secret) is read at start and then
//! checked every `poll_ms` by a background task (nothing on the request path): a new value
//! replaces the old one only once it reads cleanly (readable, UTF-8, not empty), so a rotation
//! half-written or a file briefly missing keeps the last good value. An env variable of
//! intentgate's own process is read once.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use tracing::{info, warn};

use super::Secret;
use crate::metrics::Metrics;

/// Reads a secret file: its content, trimmed of surrounding whitespace (a trailing newline).
pub(super) fn read_clean(path: &Path) -> Result<Box<str>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| format!("{} is not UTF-8 text", path.display()))?
        .trim();
    if text.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    if text.bytes().any(|b| b.is_ascii_control()) {
        return Err(format!(
            "{} holds control characters (one line expected)",
            path.display()
        ));
    }
    Ok(text.into())
}

/// What tells a changed file from the same one: modification time, length, inode.
fn stamp(path: &Path) -> Option<(SystemTime, u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    // Through a symlink (Kubernetes swaps `..data`): the file it points at now.
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len(), m.ino()))
}

/// A `file` source: read now (an unreadable file is refused at start), then polled.
pub(super) fn file(
    name: &str,
    path: &Path,
    poll_ms: u64,
    metrics: &Arc<Metrics>,
) -> Result<Arc<ArcSwapOption<Secret>>, String> {
    let value = read_clean(path).map_err(|m| format!("credentials.{name}.file: {m}"))?;
    let cell = Arc::new(ArcSwapOption::from_pointee(Secret::new(name, value, 1)));
    metrics.credential_refreshed(name, true);
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        let poll = Poll {
            name: name.to_string(),
            path: path.to_path_buf(),
            every: Duration::from_millis(poll_ms),
            cell: Arc::downgrade(&cell),
            metrics: metrics.clone(),
        };
        rt.spawn(poll.run());
    }
    Ok(cell)
}

struct Poll {
    name: String,
    path: PathBuf,
    every: Duration,
    /// Ends the task once the store is gone (a reload, shutdown).
    cell: Weak<ArcSwapOption<Secret>>,
    metrics: Arc<Metrics>,
}

impl Poll {
    async fn run(self) {
        let mut seen = stamp(&self.path);
        let mut version = 1;
        let mut failing = false;
        loop {
            tokio::time::sleep(self.every).await;
            let Some(cell) = self.cell.upgrade() else {
                return;
            };
            let now = stamp(&self.path);
            if now == seen && !failing {
                continue;
            }
            // Not a blocking read on the runtime's thread: a secret file is small, but the file
            // system may not be.
            let path = self.path.clone();
            let read = tokio::task::spawn_blocking(move || read_clean(&path))
                .await
                .unwrap_or_else(|e| Err(e.to_string()));
            let current = cell.load();
            match read {
                Ok(v) if current.as_ref().is_some_and(|c| c.value == v) => {
                    seen = now;
                    failing = false;
                }
                Ok(v) => {
                    version += 1;
                    cell.store(Some(Arc::new(Secret::new(&self.name, v, version))));
                    self.metrics.credential_refreshed(&self.name, true);
                    info!(credential = %self.name, version, "credential file changed: new value in use");
                    seen = now;
                    failing = false;
                }
                Err(why) => {
                    if !failing {
                        self.metrics.credential_refreshed(&self.name, false);
                        warn!(credential = %self.name, error = %why, "credential file unreadable: the last good value stays in use");
                    }
                    failing = true;
                }
            }
        }
    }
}

/// An `env` source: the variable of intentgate's own process, read once.
pub(super) fn env(name: &str, var: &str) -> Result<Arc<ArcSwapOption<Secret>>, String> {
    let value = std::env::var(var)
        .ok()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            format!("credentials.{name}.env: the environment variable {var} is not set or empty")
        })?;
    Ok(Arc::new(ArcSwapOption::from_pointee(Secret::new(
        name,
        value.into(),
        1,
    ))))
}
