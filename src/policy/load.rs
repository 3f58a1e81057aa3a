//! Finding and reading policy sources: the embedded default, `policy.paths` (files or
//! directories), and per-namespace folders (`namespaces/<NS>/`) applied only to that namespace.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::config::IntentSpec;

/// The embedded default policy and its tests.
pub const BUILTIN: [(&str, &str); 2] = [
    (
        "<builtin>/intentgate.rego",
        include_str!("../../config/policy/intentgate.rego"),
    ),
    (
        "<builtin>/intentgate_test.rego",
        include_str!("../../config/policy/intentgate_test.rego"),
    ),
];

/// Everything read from disk, before compilation.
#[derive(Debug, Default)]
pub struct Sources {
    /// (file name, text) of each Rego module.
    pub modules: Vec<(String, String)>,
    /// (file name, data document) of each data file that is not a catalog.
    pub data: Vec<(String, serde_json::Value)>,
    /// Intents from catalog files, with the file each came from.
    pub intents: Vec<(String, String, IntentSpec)>,
}

/// A policy source that could not be used.
#[derive(Debug, thiserror::Error)]
#[error("{file}{}: {msg}", line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct SourceError {
    pub file: String,
    pub line: Option<usize>,
    pub msg: String,
}

fn err(file: &Path, line: Option<usize>, msg: impl Into<String>) -> SourceError {
    SourceError {
        file: file.display().to_string(),
        line,
        msg: msg.into(),
    }
}

/// Reads the builtin policy (if wanted), every path in `paths`, and the folders of `namespace`.
/// Test modules (`*_test.rego`) are read only when `tests` is set.
pub fn read(
    builtin: bool,
    paths: &[PathBuf],
    namespace: Option<&str>,
    tests: bool,
) -> Result<Sources, SourceError> {
    let mut src = Sources::default();
    if builtin {
        for (name, text) in BUILTIN {
            if tests || !name.ends_with("_test.rego") {
                src.modules.push((name.to_string(), text.to_string()));
            }
        }
    }
    for p in paths {
        let meta = std::fs::metadata(p).map_err(|e| err(p, None, format!("cannot read: {e}")))?;
        if meta.is_dir() {
            read_dir(p, false, tests, &mut src)?;
            if let Some(ns) = namespace {
                let nsdir = p.join("namespaces").join(ns);
                if nsdir.is_dir() {
                    read_dir(&nsdir, true, tests, &mut src)?;
                }
            }
        } else {
            read_file(p, false, tests, &mut src)?;
        }
    }
    Ok(src)
}

fn read_dir(
    dir: &Path,
    namespaced: bool,
    tests: bool,
    src: &mut Sources,
) -> Result<(), SourceError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| err(dir, None, format!("cannot list: {e}")))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    for f in files {
        read_file(&f, namespaced, tests, src)?;
    }
    Ok(())
}

fn read_file(
    f: &Path,
    namespaced: bool,
    tests: bool,
    src: &mut Sources,
) -> Result<(), SourceError> {
    let name = f.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let ext = f.extension().and_then(|e| e.to_str()).unwrap_or_default();
    if !matches!(ext, "rego" | "json" | "yaml" | "yml") || name.starts_with('.') {
        return Ok(());
    }
    let text = std::fs::read_to_string(f).map_err(|e| err(f, None, format!("cannot read: {e}")))?;
    if ext == "rego" {
        if name.ends_with("_test.rego") && !tests {
            return Ok(());
        }
        // Test modules are loaded only by `check` and never at serve time, so they may use any package.
        if namespaced && !name.ends_with("_test.rego") {
            let (line, pkg) =
                package_of(&text).ok_or_else(|| err(f, None, "no package declaration"))?;
            if pkg != "intentgate.namespace" && !pkg.starts_with("intentgate.namespace.") {
                return Err(err(
                    f,
                    Some(line),
                    format!(
                        "namespace modules must be in package intentgate.namespace (or below), not '{pkg}': a namespace may narrow, never override, the global policy"
                    ),
                ));
            }
        }
        src.modules.push((f.display().to_string(), text));
        return Ok(());
    }
    let doc: serde_json::Value = if ext == "json" {
        serde_json::from_str(&text).map_err(|e| err(f, Some(e.line()), e.to_string()))?
    } else {
        serde_yaml::from_str(&text)
            .map_err(|e| err(f, e.location().map(|l| l.line()), e.to_string()))?
    };
    match doc.as_object().and_then(|o| o.get("intents")) {
        Some(intents) => {
            let map: BTreeMap<String, IntentSpec> = serde_json::from_value(intents.clone())
                .map_err(|e| {
                    err(
                        f,
                        crate::config::locate(&text, "intents"),
                        format!("intents: {e}"),
                    )
                })?;
            for (k, v) in map {
                src.intents.push((f.display().to_string(), k, v));
            }
            if doc.as_object().is_some_and(|o| o.len() > 1) {
                return Err(err(
                    f,
                    None,
                    "a catalog file holds only `intents:`; put other data in its own file",
                ));
            }
        }
        None if namespaced => {
            return Err(err(
                f,
                None,
                "namespace folders hold Rego modules and intent catalogs (`intents:`) only",
            ));
        }
        None => src.data.push((f.display().to_string(), doc)),
    }
    Ok(())
}

/// The package a module declares, and its line.
pub fn package_of(text: &str) -> Option<(usize, String)> {
    text.lines().enumerate().find_map(|(i, l)| {
        let l = l.trim();
        l.strip_prefix("package ")
            .map(|p| (i + 1, p.trim().to_string()))
    })
}
