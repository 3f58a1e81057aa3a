//! Loading Rego: the embedded default policy, user modules and data (global and per namespace),
//! compiled once into a warmed engine. Namespace modules must live in `package
//! intentgate.namespace` (or below), so they can add denies but never touch the decision rule.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use std::num::NonZeroU32;
use std::time::Duration;

use regorus::utils::limits::ExecutionTimerConfig;
use regorus::{Engine, Value};
use serde::Deserialize;

use super::PolicyError;
use crate::bundle::Bundle;
use crate::config::{Config, IntentSpec};

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

/// The longest one evaluation may run before it is abandoned as a policy error.
pub const EVAL_TIME_LIMIT: Duration = Duration::from_millis(250);

/// The package a namespace module must declare (or a package below it).
pub const NAMESPACE_PACKAGE: &str = "data.intentgate.namespace";

/// Where a module or data file applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Builtin,
    Global,
    Namespace,
}

/// One Rego module's source.
#[derive(Debug, Clone)]
pub struct Module {
    pub file: String,
    pub text: String,
    pub scope: Scope,
    /// A `*_test.rego` file: loaded only to run tests.
    pub test: bool,
}

/// Everything read for one agent namespace, before compiling.
#[derive(Debug, Default)]
pub struct Sources {
    pub modules: Vec<Module>,
    /// Data documents, already placed where they go (namespace data under
    /// `data.intentgate.namespace`).
    pub data: Vec<(String, Value)>,
    /// Intent catalogs with where they were written.
    pub catalogs: Vec<(String, BTreeMap<String, IntentSpec>)>,
    /// Bytes that make up the revision.
    pub digest: u64,
}

/// A data file: an optional `intents:` catalog, the rest is Rego data.
#[derive(Deserialize)]
struct DataFile<V> {
    #[serde(default)]
    intents: Option<BTreeMap<String, IntentSpec>>,
    #[serde(flatten)]
    rest: BTreeMap<String, V>,
}

/// FNV-1a, stable across builds (the revision is logged and compared).
fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

fn read(path: &Path) -> Result<String, PolicyError> {
    std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
        file: path.display().to_string(),
        source,
    })
}

/// Files of `dir`, recursively and sorted, skipping the `namespaces/` folder at its top.
fn files_under(dir: &Path, top: bool, out: &mut Vec<PathBuf>) -> Result<(), PolicyError> {
    let rd = std::fs::read_dir(dir).map_err(|source| PolicyError::Read {
        file: dir.display().to_string(),
        source,
    })?;
    let mut entries: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for p in entries {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with('.') {
            continue;
        }
        if p.is_dir() {
            if !(top && name == "namespaces") {
                files_under(&p, false, out)?;
            }
        } else {
            out.push(p);
        }
    }
    Ok(())
}

/// The namespaces that have a folder under any policy directory.
pub fn namespaces(cfg: &Config) -> Vec<String> {
    let mut out = Vec::new();
    for p in &cfg.policy.paths {
        if let Ok(rd) = std::fs::read_dir(p.join("namespaces")) {
            for e in rd.flatten() {
                if e.path().is_dir() {
                    if let Some(n) = e.file_name().to_str() {
                        out.push(n.to_string());
                    }
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

impl Sources {
    /// Reads the builtin policy (if enabled), the global files of every policy path and the
    /// folder of `namespace`.
    pub fn collect(cfg: &Config, namespace: Option<&str>) -> Result<Self, PolicyError> {
        let mut s = Sources {
            digest: FNV_START,
            ..Sources::default()
        };
        if cfg.policy.builtin {
            for (file, text) in BUILTIN {
                s.add_module(file.to_string(), text.to_string(), Scope::Builtin);
            }
        }
        if !cfg.intents.is_empty() {
            let json = serde_json::to_string(&cfg.intents).unwrap_or_default();
            s.digest = fnv(s.digest, json.as_bytes());
            s.catalogs
                .push(("config `intents`".into(), cfg.intents.clone()));
        }
        if let Some(ns) = namespace {
            if ns.is_empty() || ns.contains(['/', '\\']) || ns == "." || ns == ".." {
                return Err(PolicyError::Data {
                    file: "agent.namespace".into(),
                    line: None,
                    msg: format!("'{ns}' is not a valid namespace name"),
                });
            }
        }
        for p in &cfg.policy.paths {
            if !p.exists() {
                return Err(PolicyError::Read {
                    file: p.display().to_string(),
                    source: std::io::Error::from(std::io::ErrorKind::NotFound),
                });
            }
            let mut global = Vec::new();
            if p.is_dir() {
                files_under(p, true, &mut global)?;
            } else {
                global.push(p.clone());
            }
            for f in global {
                s.add_file(&f, Scope::Global)?;
            }
            if let Some(ns) = namespace {
                let dir = p.join("namespaces").join(ns);
                if dir.is_dir() {
                    let mut files = Vec::new();
                    files_under(&dir, false, &mut files)?;
                    for f in files {
                        s.add_file(&f, Scope::Namespace)?;
                    }
                }
            }
        }
        if let Some(b) = &cfg.policy.bundle {
            s.add_bundle(b, namespace)?;
        }
        Ok(s)
    }

    /// A bundle's files, named `bundle:NS@REV/PATH`: global ones, and its namespace's, which
    /// must be this agent's (checked again here, not only when it arrived).
    fn add_bundle(&mut self, b: &Bundle, namespace: Option<&str>) -> Result<(), PolicyError> {
        if namespace != Some(b.namespace.as_str()) {
            return Err(PolicyError::Data {
                file: "policy.bundle_url".into(),
                line: None,
                msg: format!(
                    "the bundle is for namespace '{}', the agent's namespace is {}",
                    b.namespace,
                    namespace.map_or("unset".into(), |n| format!("'{n}'"))
                ),
            });
        }
        let own = format!("namespaces/{}/", b.namespace);
        let short = b.revision.get(..12).unwrap_or(&b.revision);
        for f in &b.files {
            let scope = if f.path.starts_with(&own) {
                Scope::Namespace
            } else if f.path.starts_with("namespaces/") {
                return Err(PolicyError::Data {
                    file: f.path.clone(),
                    line: None,
                    msg: "another namespace's file in the bundle".into(),
                });
            } else {
                Scope::Global
            };
            let name = format!("bundle:{}@{short}/{}", b.namespace, f.path);
            self.add_text(name, f.text.clone(), scope)?;
        }
        Ok(())
    }

    fn add_module(&mut self, file: String, text: String, scope: Scope) {
        self.digest = fnv(fnv(self.digest, file.as_bytes()), text.as_bytes());
        let test = file.ends_with("_test.rego");
        self.modules.push(Module {
            file,
            text,
            scope,
            test,
        });
    }

    fn add_file(&mut self, path: &Path, scope: Scope) -> Result<(), PolicyError> {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if matches!(ext, "rego" | "json" | "yaml" | "yml") {
            self.add_text(path.display().to_string(), read(path)?, scope)?;
        }
        // READMEs and other files beside the policies are ignored.
        Ok(())
    }

    /// Adds a module or data file by name; `file` is only a name (a bundle's files are not on disk).
    fn add_text(&mut self, file: String, text: String, scope: Scope) -> Result<(), PolicyError> {
        let ext = file.rsplit('.').next().unwrap_or("").to_string();
        match ext.as_str() {
            "rego" => {
                self.add_module(file, text, scope);
            }
            "json" | "yaml" | "yml" => {
                self.digest = fnv(fnv(self.digest, file.as_bytes()), text.as_bytes());
                let data_err = |line: Option<usize>, msg: String| PolicyError::Data {
                    file: file.clone(),
                    line,
                    msg,
                };
                let (intents, rest): (_, BTreeMap<String, Value>) = if ext == "json" {
                    let d: DataFile<serde_json::Value> = serde_json::from_str(&text)
                        .map_err(|e| data_err(Some(e.line()), e.to_string()))?;
                    (
                        d.intents,
                        d.rest
                            .into_iter()
                            .map(|(k, v)| (k, Value::from(v)))
                            .collect(),
                    )
                } else if text.trim().is_empty() {
                    (None, BTreeMap::new())
                } else {
                    let d: DataFile<serde_json::Value> = serde_yaml::from_str(&text)
                        .map_err(|e| data_err(e.location().map(|l| l.line()), e.to_string()))?;
                    (
                        d.intents,
                        d.rest
                            .into_iter()
                            .map(|(k, v)| (k, Value::from(v)))
                            .collect(),
                    )
                };
                if let Some(i) = intents {
                    self.catalogs.push((file.clone(), i));
                }
                if !rest.is_empty() {
                    let mut doc = regorus::value::Object::new();
                    for (k, v) in rest {
                        doc.insert(Value::from(k), v);
                    }
                    let mut doc = doc.into_value();
                    if scope == Scope::Namespace {
                        for key in ["namespace", "intentgate"] {
                            let mut o = regorus::value::Object::new();
                            o.insert(Value::from(key), doc);
                            doc = o.into_value();
                        }
                    }
                    self.data.push((file, doc));
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The revision: a stable hash of every source.
    pub fn revision(&self) -> String {
        format!("{:016x}", self.digest)
    }
}

/// Builds an engine from the sources (with or without `*_test.rego` modules) and `data`.
/// Returns it with the loaded module names. Not yet prepared: evaluate once to warm it.
pub fn build(
    src: &Sources,
    catalog_data: &Value,
    with_tests: bool,
) -> Result<(Engine, Vec<(String, String)>), PolicyError> {
    let mut e = Engine::new();
    e.set_rego_v0(false);
    // A runaway policy (a namespace's loop over a huge range) fails closed instead of stalling
    // a worker: the interpreter checks its clock every 64 units of work.
    e.set_execution_timer_config(ExecutionTimerConfig {
        limit: EVAL_TIME_LIMIT,
        check_interval: NonZeroU32::MIN.saturating_add(63),
    });
    let mut names = Vec::new();
    for m in src.modules.iter().filter(|m| with_tests || !m.test) {
        let package = e
            .add_policy(m.file.clone(), m.text.clone())
            .map_err(|err| rego_error(&m.file, &err.to_string()))?;
        if m.scope == Scope::Namespace
            && !m.test
            && package != NAMESPACE_PACKAGE
            && !package.starts_with(&format!("{NAMESPACE_PACKAGE}."))
        {
            return Err(PolicyError::NamespacePackage {
                file: m.file.clone(),
                package,
            });
        }
        names.push((m.file.clone(), package));
    }
    for (file, doc) in &src.data {
        e.add_data(doc.clone()).map_err(|err| PolicyError::Data {
            file: file.clone(),
            line: None,
            msg: err.to_string(),
        })?;
    }
    e.add_data(catalog_data.clone())
        .map_err(|err| PolicyError::Data {
            file: "intent catalog".into(),
            line: None,
            msg: err.to_string(),
        })?;
    Ok((e, names))
}

/// The catalog as Rego data: `data.intents`.
pub fn catalog_data(src: &Sources) -> Value {
    // The catalog is matched natively; as Rego data it only costs memory (a copy per engine,
    // ~30 MiB per copy at 1,000 intents x 20 rules) unless a module can read it.
    if !src.modules.iter().any(|m| reads_catalog(&m.text)) {
        return Value::new_object();
    }
    let mut all = serde_json::Map::new();
    for (_, entries) in &src.catalogs {
        for (name, spec) in entries {
            all.insert(name.clone(), serde_json::to_value(spec).unwrap_or_default());
        }
    }
    let mut o = regorus::value::Object::new();
    o.insert(
        Value::from("intents"),
        Value::from(serde_json::Value::Object(all)),
    );
    o.into_value()
}

/// Whether a module can read `data.intents`: it names it, or uses `data` other than as
/// `data.NAME` (e.g. `data[x]`, `x := data`). Comments are ignored.
fn reads_catalog(text: &str) -> bool {
    let code: String = text
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    if code.contains("data.intents") {
        return true;
    }
    let bytes = code.as_bytes();
    code.match_indices("data").any(|(i, _)| {
        let before = i.checked_sub(1).map(|j| bytes[j]);
        let after = bytes.get(i + 4).copied();
        let word_start =
            before.is_none_or(|b| !(b.is_ascii_alphanumeric() || b == b'_' || b == b'.'));
        let word_end = after.is_none_or(|b| !(b.is_ascii_alphanumeric() || b == b'_'));
        word_start && word_end && after != Some(b'.')
    })
}

/// Prepares an engine (analysis and scheduling, once, so clones share it) and proves that the
/// query names a rule. The warm-up input is empty: a policy that fails only on some requests
/// loads, and fails closed on those requests.
pub fn warm(e: &mut Engine, query: &str) -> Result<(), PolicyError> {
    // Preparing (analysis and scheduling) surfaces conflicts and unsafe variables.
    e.eval_query("true".into(), false)
        .map_err(|err| rego_error("policy", &err.to_string()))?;
    e.set_input(Value::new_object());
    e.eval_rule(query.to_string())
        .map(|_| ())
        .map_err(|err| PolicyError::Query {
            query: query.to_string(),
            msg: err.to_string(),
        })
}

/// A regorus error as `Compile`: the file and line from its `--> FILE:LINE:COL` marker (else
/// `file`), the message first and the source excerpt after it.
pub(crate) fn rego_error(file: &str, err: &str) -> PolicyError {
    let mut at = None;
    let mut message = None;
    let mut excerpt = Vec::new();
    for l in err.lines() {
        let t = l.trim();
        if let Some(loc) = t.strip_prefix("-->") {
            let mut parts = loc.trim().rsplitn(3, ':');
            let _col = parts.next();
            let line = parts.next().and_then(|n| n.parse::<usize>().ok());
            if let (Some(line), Some(f)) = (line, parts.next()) {
                at = Some((f.to_string(), line));
            }
        } else if let Some(m) = t.strip_prefix("error:") {
            message = Some(m.trim().to_string());
        } else if !t.is_empty() {
            excerpt.push(l.to_string());
        }
    }
    let excerpt: Vec<String> = excerpt
        .into_iter()
        .filter(|l| l.trim() != format!("{file}:"))
        .collect();
    let msg = match message {
        Some(m) if excerpt.is_empty() => m,
        Some(m) => format!("{m}\n{}", excerpt.join("\n")),
        None => one_line(err),
    };
    let (file, line) = at.map_or((file.to_string(), None), |(f, l)| (f, Some(l)));
    PolicyError::Compile { file, line, msg }
}

pub fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod catalog_data_tests {
    use super::reads_catalog;

    #[test]
    fn the_catalog_is_rego_data_only_when_a_module_can_read_it() {
        assert!(!reads_catalog(
            "package x\ndecision := {\"allow\": input.scope.matched} # data anywhere"
        ));
        assert!(!reads_catalog(
            "package x\ndeny contains \"n\" if data.intentgate.namespace.deny[_]"
        ));
        assert!(reads_catalog("package x\nn := count(data.intents)"));
        assert!(reads_catalog("package x\nd := data\nn := count(d.intents)"));
        assert!(reads_catalog("package x\nn := data[k]"));
    }
}
