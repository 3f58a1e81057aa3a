//! Compiling Rego: the sources (`sources`: the embedded default policy, user modules and data,
//! global and per namespace) compiled once into a warmed engine. Namespace modules must live in
//! `package intentgate.namespace` (or below), so they can add denies but never touch the decision
//! rule.

use std::num::NonZeroU32;
use std::time::Duration;

use super::PolicyError;
use regorus::utils::limits::ExecutionTimerConfig;
use regorus::{Engine, Value};

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

#[cfg(test)]
pub use super::sources::namespaces;
pub use super::sources::{Scope, Sources};

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
        for (name, spec) in entries.iter() {
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
