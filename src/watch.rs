//! Change detection for hot reload: a fingerprint of the config file and every file under the
//! policy directories (names, sizes, modification times), polled. Polling directories (not single
//! files) also catches Kubernetes ConfigMap updates, which swap a `..data` symlink.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

/// The things whose change triggers a reload.
#[derive(Debug, Clone, Default)]
pub struct Watched {
    pub paths: Vec<PathBuf>,
}

impl Watched {
    /// A value that changes whenever a watched file is added, removed, resized or modified.
    pub fn fingerprint(&self) -> u64 {
        let mut entries = Vec::new();
        for p in &self.paths {
            collect(p, 0, &mut entries);
        }
        entries.sort();
        let mut h = DefaultHasher::new();
        entries.hash(&mut h);
        h.finish()
    }
}

/// (path, size, mtime in ns) of `p` and, for directories, everything below it (symlinks followed,
/// depth-bounded so a link loop cannot hang the watcher).
fn collect(p: &Path, depth: usize, out: &mut Vec<(PathBuf, u64, u128)>) {
    let Ok(meta) = std::fs::metadata(p) else {
        out.push((p.to_path_buf(), u64::MAX, 0));
        return;
    };
    if meta.is_dir() {
        if depth > 8 {
            return;
        }
        if let Ok(rd) = std::fs::read_dir(p) {
            for e in rd.flatten() {
                collect(&e.path(), depth + 1, out);
            }
        }
        return;
    }
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    out.push((p.to_path_buf(), meta.len(), mtime));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_follows_changes_and_symlink_swaps() {
        let dir = tempfile::tempdir().unwrap();
        let w = Watched {
            paths: vec![dir.path().to_path_buf()],
        };
        let f0 = w.fingerprint();
        std::fs::write(dir.path().join("a.rego"), "package a").unwrap();
        let f1 = w.fingerprint();
        assert_ne!(f0, f1);
        assert_eq!(f1, w.fingerprint(), "stable when nothing changes");
        // A ConfigMap-style update: a new data dir, then the `..data` link swapped to it.
        let d1 = dir.path().join("..2026_1");
        let d2 = dir.path().join("..2026_2");
        std::fs::create_dir(&d1).unwrap();
        std::fs::create_dir(&d2).unwrap();
        std::fs::write(d1.join("p.rego"), "package p # v1").unwrap();
        std::fs::write(d2.join("p.rego"), "package p # v2, longer").unwrap();
        let link = dir.path().join("..data");
        std::os::unix::fs::symlink(&d1, &link).unwrap();
        let before = Watched {
            paths: vec![link.clone()],
        }
        .fingerprint();
        std::fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink(&d2, &link).unwrap();
        assert_ne!(before, Watched { paths: vec![link] }.fingerprint());
    }
}
