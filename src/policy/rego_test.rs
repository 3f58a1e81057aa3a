//! Rego unit tests for `intentgate check`: finds `test_*` rules in the policy modules (like
//! `opa test`), evaluates each, and reports pass/fail per test with a summary.

use std::collections::BTreeSet;
use std::time::Instant;

use regorus::Engine;

use super::engine;
// For `run`, the whole suite at once (the tests'; `check` runs each policy set's own).
#[cfg(test)]
use {
    super::PolicyError,
    super::engine::{Scope, Sources},
    crate::config::Config,
};

/// One test's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestResult {
    /// `PACKAGE.test_NAME`.
    pub name: String,
    pub file: String,
    /// The namespace whose modules were loaded with the global ones (`None` = global only).
    pub namespace: Option<String>,
    pub passed: bool,
    /// Why it failed: `false`, undefined, or an evaluation error.
    pub error: Option<String>,
    pub micros: u64,
}

/// All results.
#[cfg(test)]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TestReport {
    pub results: Vec<TestResult>,
}

#[cfg(test)]
impl TestReport {
    pub fn passed(&self) -> usize {
        self.results.iter().filter(|r| r.passed).count()
    }

    pub fn failed(&self) -> usize {
        self.results.len() - self.passed()
    }

    pub fn ok(&self) -> bool {
        self.failed() == 0
    }

    /// Lines like `opa test`: `PASS`/`FAIL` per test, then a summary.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for r in &self.results {
            let ns = r
                .namespace
                .as_ref()
                .map(|n| format!(" [namespace {n}]"))
                .unwrap_or_default();
            match &r.error {
                None => out.push_str(&format!(
                    "PASS {} ({}){ns} {}µs\n",
                    r.name, r.file, r.micros
                )),
                Some(f) => out.push_str(&format!("FAIL {} ({}){ns}: {f}\n", r.name, r.file)),
            }
        }
        out.push_str(&format!(
            "{}\nPASS: {}/{}",
            "-".repeat(40),
            self.passed(),
            self.results.len()
        ));
        if self.failed() > 0 {
            out.push_str(&format!("\nFAIL: {}/{}", self.failed(), self.results.len()));
        }
        out.push('\n');
        out
    }
}

/// Names of the `test_*` rules a module defines (rule heads start a line).
fn test_rules(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| l.starts_with("test_"))
        .filter_map(|l| {
            let end = l
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(l.len());
            let name = &l[..end];
            (name.len() > "test_".len()).then(|| name.to_string())
        })
        .collect()
}

/// A module whose tests are run: `(file, package, text)`.
pub type TestModule = (String, String, String);

/// Evaluates the `test_*` rules of `modules` on a prepared engine.
pub fn run_modules(
    e: &mut Engine,
    modules: &[TestModule],
    namespace: Option<&str>,
) -> Vec<TestResult> {
    let mut out = Vec::new();
    for (file, package, text) in modules {
        for rule in test_rules(text) {
            let path = format!("{package}.{rule}");
            let start = Instant::now();
            let outcome = e.eval_rule(path.clone());
            let micros = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
            let error = match outcome {
                Ok(regorus::Value::Bool(true)) => None,
                Ok(regorus::Value::Undefined) => {
                    Some("undefined (a condition did not hold)".into())
                }
                Ok(v) => Some(format!(
                    "evaluated to {}",
                    serde_json::to_string(&v).unwrap_or_default()
                )),
                Err(err) => Some(format!("error: {}", engine::one_line(&err.to_string()))),
            };
            out.push(TestResult {
                name: path.strip_prefix("data.").unwrap_or(&path).to_string(),
                file: file.clone(),
                namespace: namespace.map(str::to_string),
                passed: error.is_none(),
                error,
                micros,
            });
        }
    }
    out
}

/// Runs the tests: those of the global modules (and of the builtin policy when
/// `include_builtin`), then for each namespace folder the tests of its modules, loaded with the
/// global ones. A policy that does not load is an error, not a failed test.
#[cfg(test)]
pub fn run(cfg: &Config, include_builtin: bool) -> Result<TestReport, PolicyError> {
    let mut report = TestReport::default();
    let mut runs: Vec<Option<String>> = vec![None];
    runs.extend(engine::namespaces(cfg).into_iter().map(Some));
    for ns in runs {
        let src = Sources::collect(cfg, None, ns.as_deref())?;
        super::Catalog::compile(&src.catalogs, cfg.mode)?;
        let (mut e, packages) = engine::build(&src, &engine::catalog_data(&src), true)?;
        e.eval_query("true".into(), false)
            .map_err(|err| engine::rego_error("policy", &err.to_string()))?;
        let modules: Vec<TestModule> = src
            .modules
            .iter()
            .filter(|m| match (&ns, m.scope) {
                (None, Scope::Builtin) => include_builtin,
                (None, Scope::Global) => true,
                (Some(_), Scope::Namespace) => true,
                _ => false,
            })
            .filter_map(|m| {
                let (_, package) = packages.iter().find(|(f, _)| *f == m.file)?;
                Some((m.file.clone(), package.clone(), m.text.clone()))
            })
            .collect();
        report
            .results
            .extend(run_modules(&mut e, &modules, ns.as_deref()));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_test_rules_once() {
        let t = "package x\ntest_a if { true }\ntest_a if { 1 == 1 }\n  test_b if true\ntest_ := 1\ntest_c := true\n";
        assert_eq!(
            test_rules(t).into_iter().collect::<Vec<_>>(),
            vec!["test_a", "test_c"]
        );
    }

    #[test]
    fn builtin_policy_tests_pass() {
        let cfg = Config::default();
        let r = run(&cfg, true).unwrap();
        assert!(r.results.len() >= 5, "{}", r.render());
        assert!(r.ok(), "{}", r.render());
    }
}
