//! Rego unit tests, like `opa test`: every rule named `test_*` in the loaded modules is evaluated;
//! it passes when it is true.

use regorus::Value;

use super::load::package_of;

/// One test's outcome.
#[derive(Debug, Clone)]
pub struct TestResult {
    pub file: String,
    pub name: String,
    pub passed: bool,
    pub error: Option<String>,
}

/// The `test_*` rules of a module: (package, rule name), found at the start of a line.
fn tests_in(text: &str) -> Vec<String> {
    let mut names: Vec<String> = text
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("test_")?;
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            Some(format!("test_{}", &rest[..end]))
        })
        .collect();
    names.dedup();
    names
}

/// Runs every test rule of `modules` on `engine` (which has them all loaded).
pub fn run(engine: &mut regorus::Engine, modules: &[(String, String)]) -> Vec<TestResult> {
    let mut out = Vec::new();
    for (file, text) in modules {
        let Some((_, pkg)) = package_of(text) else {
            continue;
        };
        for name in tests_in(text) {
            let rule = format!("data.{pkg}.{name}");
            let (passed, error) = match engine.eval_rule(rule) {
                Ok(Value::Bool(true)) => (true, None),
                Ok(Value::Undefined) | Ok(Value::Bool(false)) => (false, None),
                Ok(other) => (false, Some(format!("not a boolean: {other}"))),
                Err(e) => (false, Some(e.to_string())),
            };
            out.push(TestResult {
                file: file.clone(),
                name: format!("{pkg}.{name}"),
                passed,
                error,
            });
        }
    }
    out
}
