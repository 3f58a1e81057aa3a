//! The policy: the intent catalog (matched natively) and Rego modules (regorus), compiled once at
//! load into a `PolicySet`; one query answers every request with the decision document.

mod cache;
pub mod catalog;
pub mod input;
pub mod load;
pub mod rego_test;
#[cfg(test)]
mod tests;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use regorus::{Engine, Value};
use serde::Serialize;

use crate::config::{Config, IntentSpec, Mode, OnError};
use crate::identity::Agent;
use crate::intent::Intent;
pub use catalog::{Catalog, ScopeVerdict};
pub use input::{ConnectionFacts, RequestFacts};

/// A policy that could not be loaded; names the file and, where known, the line.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error(transparent)]
    Source(#[from] load::SourceError),
    #[error("{0}")]
    Catalog(String),
    #[error("{file}: {msg}")]
    Rego { file: String, msg: String },
}

/// The answer for one request.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub allow: bool,
    pub mode: Mode,
    /// `allowed`, `intent_violation` or `policy_error`.
    pub code: &'static str,
    pub reasons: Vec<String>,
    pub hint: String,
    /// Headers the decision asks to add to the forwarded request.
    pub headers: Vec<(String, String)>,
    pub scope: ScopeVerdict,
    pub policy_micros: u64,
    /// Answered from the decision cache.
    pub cached: bool,
}

static GENERATION: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// This thread's engine, cloned from the template of the policy generation it serves.
    static ENGINE: RefCell<Option<(u64, Engine)>> = const { RefCell::new(None) };
}

/// Everything needed to decide, compiled once; swapped whole on reload.
pub struct PolicySet {
    catalog: Catalog,
    template: Engine,
    generation: u64,
    revision: String,
    modules: Vec<String>,
    /// (file, text) of each module, kept for the Rego test runner.
    sources: Vec<(String, String)>,
    data_sources: Vec<String>,
    query: String,
    on_error: OnError,
    mode_default: Mode,
    mode_override: Option<Mode>,
    agent: Value,
    strip: Vec<String>,
    /// Why decisions are not cached, or `None` when they are.
    uncacheable: Option<String>,
}

impl PolicySet {
    /// Reads, checks and compiles the policy for `agent` (only its namespace's folders apply).
    pub fn load(cfg: &Config, agent: &Agent) -> Result<Self, PolicyError> {
        Self::load_with(cfg, agent, false)
    }

    /// As `load`, optionally with the `*_test.rego` modules (for `intentgate check`).
    pub fn load_with(cfg: &Config, agent: &Agent, tests: bool) -> Result<Self, PolicyError> {
        let src = load::read(
            cfg.policy.builtin,
            &cfg.policy.paths,
            agent.namespace.as_deref(),
            tests,
        )?;
        // The catalog: the config's own intents plus catalog files; a name is defined once.
        let mut intents: BTreeMap<String, IntentSpec> = cfg.intents.clone();
        for (file, name, spec) in &src.intents {
            if intents.insert(name.clone(), spec.clone()).is_some() {
                return Err(PolicyError::Catalog(format!(
                    "{file}: intent '{name}' is already defined"
                )));
            }
        }
        let catalog = Catalog::compile(&intents).map_err(PolicyError::Catalog)?;

        let mut engine = Engine::new();
        engine.set_rego_v0(false);
        let mut hasher = FNV_OFFSET;
        for (file, text) in &src.modules {
            engine
                .add_policy(file.clone(), text.clone())
                .map_err(|e| PolicyError::Rego {
                    file: file.clone(),
                    msg: e.to_string(),
                })?;
            hash_str(&mut hasher, file);
            hash_str(&mut hasher, text);
        }
        for (file, doc) in &src.data {
            engine
                .add_data(Value::from(doc.clone()))
                .map_err(|e| PolicyError::Rego {
                    file: file.clone(),
                    msg: e.to_string(),
                })?;
            hash_str(&mut hasher, &doc.to_string());
        }
        let catalog_json = serde_json::json!({ "catalog": { "intents": intents } });
        hash_str(&mut hasher, &catalog_json.to_string());
        engine
            .add_data(Value::from(catalog_json))
            .map_err(|e| PolicyError::Rego {
                file: "<catalog>".into(),
                msg: e.to_string(),
            })?;

        let mut set = Self {
            catalog,
            template: engine,
            generation: GENERATION.fetch_add(1, Ordering::Relaxed),
            revision: format!("{:016x}", hasher),
            modules: src.modules.iter().map(|(f, _)| f.clone()).collect(),
            sources: if tests {
                src.modules.clone()
            } else {
                Vec::new()
            },
            data_sources: src
                .data
                .iter()
                .map(|(f, _)| f.clone())
                .chain(src.intents.iter().map(|(f, _, _)| f.clone()))
                .collect(),
            query: cfg.policy.query.clone(),
            on_error: cfg.policy.on_error,
            mode_default: cfg.mode,
            mode_override: cfg.mode_override,
            agent: input::agent_value(agent),
            strip: cfg.headers.strip.clone(),
            uncacheable: if !cfg.policy.decision_cache {
                Some("policy.decision_cache is off".into())
            } else {
                cache::plan(
                    src.modules
                        .iter()
                        .filter(|(f, _)| !f.ends_with("_test.rego"))
                        .map(|(f, t)| (f.as_str(), t.as_str())),
                )
                .err()
            },
        };
        set.data_sources.dedup();
        // Warm up once: the first evaluation does the analysis that clones then share.
        let warm = Intent::none();
        let facts = RequestFacts {
            id: "warm-up",
            protocol: "HTTP/1.1",
            method: "GET",
            scheme: "http",
            host: "warm-up.invalid",
            port: 80,
            path: Some("/"),
            query: None,
            headers: None,
            connection: ConnectionFacts {
                mode: "forward",
                sni: None,
                intercepted: false,
            },
            destination: None,
        };
        let scope = set
            .catalog
            .check(agent, None, "GET", "warm-up.invalid", 80, Some("/"));
        set.template
            .set_input(input::build(&set.agent, &warm, &facts, &scope, &set.strip));
        let _ = set.template.eval_rule(set.query.clone());
        Ok(set)
    }

    /// Runs the `test_*` rules of the loaded modules (load with tests for `check`).
    pub fn run_tests(&mut self) -> Vec<rego_test::TestResult> {
        let modules = self.sources.clone();
        rego_test::run(&mut self.template, &modules)
    }

    pub fn revision(&self) -> &str {
        &self.revision
    }

    pub fn modules(&self) -> &[String] {
        &self.modules
    }

    /// Why decisions are not cached (`None`: they are).
    pub fn uncacheable(&self) -> Option<&str> {
        self.uncacheable.as_deref()
    }

    pub fn data_sources(&self) -> &[String] {
        &self.data_sources
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The mode in force for an intent: the --mode flag, else the intent's, else the default.
    pub fn mode_for(&self, intent: Option<&str>) -> Mode {
        self.mode_override
            .or_else(|| intent.and_then(|i| self.catalog.mode_of(i)))
            .unwrap_or(self.mode_default)
    }

    /// Decides one request.
    pub fn decide(&self, agent: &Agent, intent: &Intent, req: &RequestFacts<'_>) -> Decision {
        self.evaluate(agent, intent, req, false).0
    }

    /// Decides one request and returns the input it evaluated (for `explain`).
    pub fn explain(
        &self,
        agent: &Agent,
        intent: &Intent,
        req: &RequestFacts<'_>,
    ) -> (Decision, serde_json::Value) {
        let (d, input) = self.evaluate(agent, intent, req, true);
        (d, input.unwrap_or(serde_json::Value::Null))
    }

    fn evaluate(
        &self,
        agent: &Agent,
        intent: &Intent,
        req: &RequestFacts<'_>,
        want_input: bool,
    ) -> (Decision, Option<serde_json::Value>) {
        let start = Instant::now();
        let key = (self.uncacheable.is_none() && !want_input).then(|| cache::key(intent, req));
        if let Some(mut d) = key.as_deref().and_then(|k| cache::get(self.generation, k)) {
            d.cached = true;
            d.policy_micros = start.elapsed().as_micros() as u64;
            return (d, None);
        }
        let scope = self.catalog.check(
            agent,
            intent.name.as_deref(),
            req.method,
            req.host,
            req.port,
            req.path,
        );
        let mode = self.mode_for(intent.name.as_deref());
        let input = input::build(&self.agent, intent, req, &scope, &self.strip);
        let shown =
            want_input.then(|| serde_json::to_value(&input).unwrap_or(serde_json::Value::Null));
        let result = ENGINE.with(|cell| {
            let mut slot = cell.borrow_mut();
            if slot.as_ref().is_none_or(|(g, _)| *g != self.generation) {
                *slot = Some((self.generation, self.template.clone()));
            }
            match slot.as_mut() {
                Some((_, engine)) => {
                    engine.set_input(input);
                    engine
                        .eval_rule(self.query.clone())
                        .map_err(|e| e.to_string())
                }
                None => Err("no engine".to_string()),
            }
        });
        let mut d = self.interpret(result, scope, mode, intent);
        if let Some(k) = key.filter(|_| d.code != "policy_error") {
            cache::put(self.generation, k, &d);
        }
        d.policy_micros = start.elapsed().as_micros() as u64;
        (d, shown)
    }

    /// Turns the query's value into a decision, failing closed on anything unexpected.
    fn interpret(
        &self,
        result: Result<Value, String>,
        scope: ScopeVerdict,
        mode: Mode,
        intent: &Intent,
    ) -> Decision {
        let doc = match result {
            Ok(Value::Undefined) => Err(format!("{} is undefined", self.query)),
            Ok(v) => Ok(v),
            Err(e) => Err(e),
        };
        let parsed = doc.and_then(|v| {
            let allow = match v["allow"] {
                Value::Bool(b) => b,
                _ => return Err(format!("{} has no boolean 'allow'", self.query)),
            };
            let reasons: Vec<String> = match &v["reasons"] {
                Value::Array(a) => a
                    .iter()
                    .filter_map(|r| r.as_string().ok().map(|s| s.to_string()))
                    .collect(),
                Value::Set(s) => s
                    .iter()
                    .filter_map(|r| r.as_string().ok().map(|s| s.to_string()))
                    .collect(),
                _ => Vec::new(),
            };
            let headers = match &v["headers"] {
                Value::Object(o) => o
                    .iter()
                    .filter_map(|(k, v)| {
                        Some((
                            k.as_string().ok()?.to_string(),
                            v.as_string().ok()?.to_string(),
                        ))
                    })
                    .collect(),
                _ => Vec::new(),
            };
            let mode = match (
                &self.mode_override,
                v["mode"].as_string().ok().map(|s| s.as_ref()),
            ) {
                (Some(m), _) => *m,
                (None, Some("monitor")) => Mode::Monitor,
                (None, Some("enforce")) => Mode::Enforce,
                _ => mode,
            };
            Ok((allow, reasons, headers, mode))
        });
        let intent_name = intent.name.as_deref().unwrap_or("");
        match parsed {
            Ok((true, _, headers, mode)) => Decision {
                allow: true,
                mode,
                code: "allowed",
                reasons: Vec::new(),
                hint: String::new(),
                headers,
                scope,
                policy_micros: 0,
                cached: false,
            },
            Ok((false, reasons, headers, mode)) => {
                let mut reasons: Vec<String> = reasons
                    .into_iter()
                    .map(|r| if r == "scope" { scope.why.clone() } else { r })
                    .collect();
                if reasons.is_empty() {
                    reasons.push(scope.why.clone());
                }
                Decision {
                    allow: false,
                    mode,
                    code: "intent_violation",
                    reasons,
                    hint: hint_for(&scope, intent_name),
                    headers,
                    scope,
                    policy_micros: 0,
                    cached: false,
                }
            }
            Err(e) => {
                let allow = self.on_error == OnError::Allow;
                tracing::warn!(error = %e, "policy evaluation failed; {}", if allow { "allowing (policy.on_error: allow)" } else { "denying" });
                Decision {
                    allow,
                    mode,
                    code: "policy_error",
                    reasons: vec![format!("policy evaluation failed: {e}")],
                    hint: "the policy could not be evaluated; ask the platform team to fix it (see `intentgate check`)".into(),
                    headers: Vec::new(),
                    scope,
                    policy_micros: 0,
                    cached: false,
                }
            }
        }
    }
}

/// What an agent should do next, by why the catalog did not match.
fn hint_for(scope: &ScopeVerdict, intent: &str) -> String {
    match scope.code {
        "no_intent" => "declare an intent: send the header 'intentgate-intent: NAME' (with 'intentgate-task: REF' if you have one), or set a session intent with PUT /v1/intent on the admin API".into(),
        "unknown_intent" => format!("intent '{intent}' does not exist; declare one of the intents in the catalog (GET /v1/policy lists them)"),
        "not_claimable" => format!("this agent may not claim intent '{intent}'; declare an intent it may claim, or ask the platform team"),
        _ => format!("declare an intent that permits this call, or ask the platform team to extend intent '{intent}'"),
    }
}

/// The policy revision is a stable FNV-1a (64 bit) hash of every source.
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

fn hash_str(h: &mut u64, s: &str) {
    for b in s.bytes().chain(std::iter::once(0xff)) {
        *h = (*h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
}
