//! Reading policy sources: the embedded default policy, the files of `policy.paths` (global at
//! the top, `namespaces/NS/` per namespace) and a policy bundle's files, hashed into a revision.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use regorus::Value;
use serde::Deserialize;

use super::PolicyError;
use super::engine::BUILTIN;
use crate::bundle::Bundle;
use crate::config::{Config, IntentSpec};

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
pub struct Sources<'a> {
    pub modules: Vec<Module>,
    /// Data documents, already placed where they go (namespace data under
    /// `data.intentgate.namespace`).
    pub data: Vec<(String, Value)>,
    /// Intent catalogs with where they were written (the config's borrowed, not copied: with
    /// 1,000 intents it is megabytes).
    pub catalogs: Vec<(String, Cow<'a, BTreeMap<String, IntentSpec>>)>,
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

/// FNV-1a over everything written to it.
struct Fnv(u64);

impl std::io::Write for Fnv {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 = fnv(self.0, buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
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
#[cfg(test)]
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

impl<'a> Sources<'a> {
    /// Reads the builtin policy (if enabled), the global files of every policy path and the
    /// folder of `namespace`, and the policy `bundle` in force.
    pub fn collect(
        cfg: &'a Config,
        bundle: Option<&Bundle>,
        namespace: Option<&str>,
    ) -> Result<Self, PolicyError> {
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
            // Hashed as it is serialised: no copy of the whole catalog as one string.
            let mut h = Fnv(s.digest);
            let _ = serde_json::to_writer(&mut h, &cfg.intents);
            s.digest = h.0;
            s.catalogs
                .push(("config `intents`".into(), Cow::Borrowed(&cfg.intents)));
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
        if let Some(b) = bundle {
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
                    self.catalogs.push((file.clone(), Cow::Owned(i)));
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
