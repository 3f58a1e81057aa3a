//! The bundle server's view of its policy directory. A snapshot is read whole — through the
//! kubelet's `..data` link when there is one, so a ConfigMap update is seen all or nothing —
//! then checked (by the caller: the control deployment builds every namespace's policy) and only
//! then swapped in. A directory that does not read or pass leaves the last good snapshot
//! serving. Archives are packed once per namespace and snapshot.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use tracing::{error, info};

use super::{
    Bundle, BundleError, BundleFile, MAX_BYTES, MAX_FILES, is_policy_file, valid_namespace,
};
use crate::watch::Watched;

/// One namespace's archive and its ETag.
#[derive(Debug)]
pub struct Packed {
    pub etag: String,
    pub gz: Bytes,
}

/// A policy directory as read at one instant.
#[derive(Debug)]
pub struct Snapshot {
    global: Vec<BundleFile>,
    namespaces: BTreeMap<String, Vec<BundleFile>>,
    packed: Mutex<HashMap<String, Arc<Packed>>>,
}

impl Snapshot {
    /// Reads `root`: its policy files outside `namespaces/` are global (dot entries skipped, as
    /// ConfigMap volumes have `..data`), each `namespaces/NS/` belongs to NS.
    pub fn read(root: &Path) -> Result<Self, BundleError> {
        // A ConfigMap or projected volume: its files are in the directory `..data` points at,
        // which the kubelet never changes once written (it writes a new one and swaps the link).
        let data = root.join("..data");
        let linked = std::fs::symlink_metadata(&data).is_ok_and(|m| m.file_type().is_symlink());
        let root = if linked && data.is_dir() {
            std::fs::canonicalize(&data)
                .map_err(|e| BundleError::Read(data.display().to_string(), e))?
        } else {
            root.to_path_buf()
        };
        let mut total = 0u64;
        let mut count = 0usize;
        let mut global = Vec::new();
        collect(&root, "", true, &mut global, &mut total, &mut count)?;
        let mut namespaces = BTreeMap::new();
        let dir = root.join("namespaces");
        if dir.is_dir() {
            let entries = std::fs::read_dir(&dir)
                .map_err(|e| BundleError::Read(dir.display().to_string(), e))?;
            for e in entries.filter_map(Result::ok) {
                let name = e.file_name().to_string_lossy().to_string();
                if name.starts_with('.') || !e.path().is_dir() {
                    continue;
                }
                if !valid_namespace(&name) {
                    return Err(BundleError::Invalid(format!(
                        "namespaces/{name}: not a Kubernetes namespace name"
                    )));
                }
                let mut files = Vec::new();
                let prefix = format!("namespaces/{name}/");
                collect(
                    &e.path(),
                    &prefix,
                    false,
                    &mut files,
                    &mut total,
                    &mut count,
                )?;
                namespaces.insert(name, files);
            }
        }
        Ok(Snapshot {
            global,
            namespaces,
            packed: Mutex::new(HashMap::new()),
        })
    }

    /// The bundle of `namespace`: the global files and its own folder's (none without one).
    pub fn bundle(&self, namespace: &str) -> Result<Bundle, BundleError> {
        if !valid_namespace(namespace) {
            return Err(BundleError::Invalid(format!(
                "'{namespace}' is not a namespace name"
            )));
        }
        let mut files = self.global.clone();
        files.extend(
            self.namespaces
                .get(namespace)
                .into_iter()
                .flatten()
                .cloned(),
        );
        Ok(Bundle::new(namespace, files))
    }

    /// The namespaces with a folder of their own.
    pub fn namespaces(&self) -> impl Iterator<Item = &str> {
        self.namespaces.keys().map(String::as_str)
    }

    /// A namespace name without a folder of its own (for checking the global files alone).
    pub fn folderless(&self) -> String {
        (0..)
            .map(|i| format!("no-folder-{i}"))
            .find(|n| !self.namespaces.contains_key(n))
            .unwrap_or_default()
    }

    /// The archive of `namespace`, packed at its first request in this snapshot.
    pub fn packed(&self, namespace: &str) -> Result<Arc<Packed>, BundleError> {
        if let Some(p) = self
            .packed
            .lock()
            .ok()
            .and_then(|m| m.get(namespace).cloned())
        {
            return Ok(p);
        }
        let b = self.bundle(namespace)?;
        let p = Arc::new(Packed {
            etag: b.etag(),
            gz: Bytes::from(b.to_tar_gz()?),
        });
        if let Ok(mut m) = self.packed.lock() {
            // Callers are authenticated namespaces; the bound only guards memory.
            if m.len() < MAX_FILES {
                m.insert(namespace.to_string(), p.clone());
            }
        }
        Ok(p)
    }
}

/// Whether a snapshot may be served (given by the caller: building policy is not this
/// module's business).
pub type Check = Box<dyn Fn(&Snapshot) -> Result<(), String> + Send + Sync>;

/// The snapshot in force and where it comes from.
pub struct Store {
    root: PathBuf,
    check: Check,
    current: ArcSwapOption<Snapshot>,
    /// The fingerprint of the directory when last read (good or refused).
    seen: Mutex<Option<u64>>,
}

impl Store {
    /// A store for `root` whose snapshots must pass `check`; nothing is served until the first
    /// `refresh` succeeds.
    pub fn new(root: &Path, check: Check) -> Self {
        Store {
            root: root.to_path_buf(),
            check,
            current: ArcSwapOption::empty(),
            seen: Mutex::new(None),
        }
    }

    pub fn current(&self) -> Option<Arc<Snapshot>> {
        self.current.load_full()
    }

    /// Reads and checks the directory again when it changed (blocking: run it off the async
    /// threads). Returns whether a new snapshot is in force.
    pub fn refresh(&self) -> bool {
        let watched = Watched {
            paths: vec![self.root.clone()],
        };
        let before = watched.fingerprint();
        if self.seen.lock().is_ok_and(|s| *s == Some(before)) {
            return false;
        }
        let read = Snapshot::read(&self.root);
        // A plain directory (not a kubelet volume) may change while it is read: read it again
        // at the next tick.
        if watched.fingerprint() != before {
            return false;
        }
        if let Ok(mut seen) = self.seen.lock() {
            *seen = Some(before);
        }
        match read
            .map_err(|e| e.to_string())
            .and_then(|s| (self.check)(&s).map(|()| s))
        {
            Ok(s) => {
                info!(dir = %self.root.display(), namespaces = s.namespaces.len(), "policy directory loaded");
                self.current.store(Some(Arc::new(s)));
                true
            }
            Err(e) => {
                let kept = if self.current.load().is_some() {
                    "the last good policy stays served"
                } else {
                    "no bundles are served until it builds"
                };
                error!(dir = %self.root.display(), error = %e, "policy directory refused; {kept}");
                false
            }
        }
    }
}

/// Adds the policy files under `dir` (recursively, sorted) with `prefix`; at the top of the
/// policy directory, `namespaces/` and dot entries are skipped.
fn collect(
    dir: &Path,
    prefix: &str,
    top: bool,
    out: &mut Vec<BundleFile>,
    total: &mut u64,
    count: &mut usize,
) -> Result<(), BundleError> {
    let read_err = |p: &Path, e| BundleError::Read(p.display().to_string(), e);
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| read_err(dir, e))?
        .filter_map(Result::ok)
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let Some(name) = e.file_name().to_str().map(str::to_string) else {
            continue;
        };
        let path = e.path();
        if name.starts_with('.') || (top && name == "namespaces") {
            continue;
        }
        if path.is_dir() {
            collect(&path, &format!("{prefix}{name}/"), false, out, total, count)?;
        } else if is_policy_file(&name) {
            let text = std::fs::read_to_string(&path).map_err(|e| read_err(&path, e))?;
            *total += text.len() as u64;
            *count += 1;
            if *count > MAX_FILES || *total > MAX_BYTES {
                return Err(BundleError::Invalid(format!(
                    "{}: the policy directory holds more than {MAX_FILES} files or {MAX_BYTES} bytes",
                    dir.display()
                )));
            }
            out.push(BundleFile {
                path: format!("{prefix}{name}"),
                text,
            });
        }
    }
    Ok(())
}

impl Bundle {
    /// The bundle of `namespace` from a policy directory, read now (see `Snapshot::read`).
    pub fn from_dir(root: &Path, namespace: &str) -> Result<Self, BundleError> {
        Snapshot::read(root)?.bundle(namespace)
    }
}
