//! Policy bundles: one namespace's view of a policy directory (its global files plus
//! `namespaces/NS/`), packed as a deterministic tar.gz with a `.manifest`, served by
//! `intentgate inject` at `GET /bundles/NS` and polled by sidecars (`fetch`).
//!
//! Unpacking trusts nothing: sizes and entry counts are bounded, only regular files with plain
//! relative paths are accepted, and the manifest's namespace, file count and revision (SHA-256 of
//! the content, also the ETag) must match what arrived.

pub mod auth;
pub mod fetch;
pub mod serve;
pub mod store;

use std::io::Read;

use serde::{Deserialize, Serialize};

/// The largest bundle, unpacked.
pub const MAX_BYTES: u64 = 32 * 1024 * 1024;
/// The most files in a bundle.
pub const MAX_FILES: usize = 4096;
/// The manifest's name inside the archive.
const MANIFEST: &str = ".manifest";

/// A bundle that cannot be built or unpacked.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{0}: cannot read: {1}")]
    Read(String, std::io::Error),
    #[error("invalid bundle: {0}")]
    Invalid(String),
    #[error("bundle is for namespace '{got}', this sidecar's namespace is '{want}'")]
    Namespace { got: String, want: String },
}

/// One policy file; `path` is relative, `/`-separated (`namespaces/NS/x.rego` for the
/// namespace's own files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleFile {
    pub path: String,
    pub text: String,
}

/// The policy one namespace gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    pub namespace: String,
    /// Hex SHA-256 of the namespace and every file (path and text).
    pub revision: String,
    pub files: Vec<BundleFile>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    namespace: String,
    revision: String,
    files: usize,
}

/// Whether `ns` is a Kubernetes namespace name (an RFC 1123 label).
pub fn valid_namespace(ns: &str) -> bool {
    let b = ns.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// Whether a file of a policy directory is policy (modules and data; READMEs are not).
fn is_policy_file(name: &str) -> bool {
    [".rego", ".json", ".yaml", ".yml"]
        .iter()
        .any(|ext| name.ends_with(ext))
}

fn revision(namespace: &str, files: &[BundleFile]) -> String {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for part in std::iter::once(namespace).chain(
        files
            .iter()
            .flat_map(|f| [f.path.as_str(), f.text.as_str()]),
    ) {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part.as_bytes());
    }
    ctx.finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Bundle {
    fn new(namespace: &str, mut files: Vec<BundleFile>) -> Self {
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Bundle {
            namespace: namespace.to_string(),
            revision: revision(namespace, &files),
            files,
        }
    }

    /// The archive: `.manifest` first, then the files in path order, every header fixed
    /// (mode 0644, owner 0, mtime 0), so equal content gives equal bytes.
    pub fn to_tar_gz(&self) -> Result<Vec<u8>, BundleError> {
        let io = |e: std::io::Error| BundleError::Invalid(format!("cannot pack: {e}"));
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        let mut tar = tar::Builder::new(gz);
        let manifest = serde_json::to_vec(&Manifest {
            namespace: self.namespace.clone(),
            revision: self.revision.clone(),
            files: self.files.len(),
        })
        .map_err(|e| BundleError::Invalid(e.to_string()))?;
        let entries = std::iter::once((MANIFEST, manifest.as_slice())).chain(
            self.files
                .iter()
                .map(|f| (f.path.as_str(), f.text.as_bytes())),
        );
        for (path, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_size(data.len() as u64);
            h.set_entry_type(tar::EntryType::Regular);
            tar.append_data(&mut h, path, data).map_err(io)?;
        }
        tar.into_inner().and_then(|gz| gz.finish()).map_err(io)
    }

    /// Unpacks and verifies an archive that must be `namespace`'s bundle.
    pub fn from_tar_gz(bytes: &[u8], namespace: &str) -> Result<Self, BundleError> {
        let bad = |m: String| BundleError::Invalid(m);
        // One byte more than allowed tells "too large" from "exactly at the limit".
        let gz = flate2::read::GzDecoder::new(bytes).take(MAX_BYTES + 64 * 1024 * 4);
        let mut archive = tar::Archive::new(gz);
        let mut manifest: Option<Manifest> = None;
        let mut files: Vec<BundleFile> = Vec::new();
        let mut total = 0u64;
        let entries = archive.entries().map_err(|e| bad(e.to_string()))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| bad(format!("corrupt archive: {e}")))?;
            let kind = entry.header().entry_type();
            let path = entry
                .path()
                .map_err(|e| bad(format!("entry name: {e}")))?
                .to_str()
                .map(str::to_string)
                .ok_or_else(|| bad("an entry name is not UTF-8".into()))?;
            if !kind.is_file() {
                return Err(bad(format!(
                    "{path}: only regular files are allowed (links, directories and devices are refused)"
                )));
            }
            check_path(&path).map_err(|m| bad(format!("{path}: {m}")))?;
            if files.len() >= MAX_FILES {
                return Err(bad(format!("more than {MAX_FILES} files")));
            }
            total += entry.size();
            if total > MAX_BYTES {
                return Err(bad(format!("larger than {MAX_BYTES} bytes unpacked")));
            }
            let mut data = Vec::with_capacity(entry.size().min(MAX_BYTES) as usize);
            entry
                .read_to_end(&mut data)
                .map_err(|e| bad(format!("{path}: {e}")))?;
            if path == MANIFEST {
                if manifest.is_some() {
                    return Err(bad("two manifests".into()));
                }
                manifest = Some(
                    serde_json::from_slice(&data).map_err(|e| bad(format!("{MANIFEST}: {e}")))?,
                );
                continue;
            }
            if files.iter().any(|f| f.path == path) {
                return Err(bad(format!("{path}: appears twice")));
            }
            let text = String::from_utf8(data).map_err(|_| bad(format!("{path}: not UTF-8")))?;
            files.push(BundleFile { path, text });
        }
        let m = manifest.ok_or_else(|| bad(format!("no {MANIFEST}")))?;
        if m.namespace != namespace {
            return Err(BundleError::Namespace {
                got: m.namespace,
                want: namespace.to_string(),
            });
        }
        let own = format!("namespaces/{namespace}/");
        if let Some(f) = files
            .iter()
            .find(|f| f.path.starts_with("namespaces/") && !f.path.starts_with(&own))
        {
            return Err(bad(format!(
                "{}: another namespace's file in the bundle of '{namespace}'",
                f.path
            )));
        }
        if m.files != files.len() {
            return Err(bad(format!(
                "the manifest lists {} files, the archive holds {}",
                m.files,
                files.len()
            )));
        }
        let b = Self::new(namespace, files);
        if b.revision != m.revision {
            return Err(bad(format!(
                "content does not match the manifest's revision {}",
                m.revision
            )));
        }
        Ok(b)
    }

    /// The ETag for this bundle (quoted, as HTTP writes it).
    pub fn etag(&self) -> String {
        format!("\"{}\"", self.revision)
    }
}

/// A path inside a bundle: relative, `/`-separated, plain names only, policy files only.
fn check_path(path: &str) -> Result<(), &'static str> {
    if path == MANIFEST {
        return Ok(());
    }
    if path.starts_with('/') || path.contains('\\') {
        return Err("absolute paths and backslashes are refused");
    }
    for part in path.split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return Err("empty, '.' and '..' path components are refused");
        }
        if part.starts_with('.') {
            return Err("hidden files are refused");
        }
    }
    if !is_policy_file(path) {
        return Err("only .rego, .json, .yaml and .yml files may be in a bundle");
    }
    Ok(())
}

#[cfg(test)]
mod tests;
