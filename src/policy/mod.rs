//! Policy: the intent catalog matched natively, the input document built as a regorus `Value`,
//! and the Rego decision evaluated on a per-thread engine compiled once at load.
//!
//! Flow of `PolicySet::decide`: lifecycle check → catalog verdict (`catalog`) → input (`input`)
//! → `data.intentgate.decision` on this thread's warmed engine (`engine`) → `Decision`
//! (`decision`), failing closed on errors unless `policy.on_error: allow`.

mod cache;
pub mod catalog;
mod decide;
mod decision;
pub mod engine;
mod facts;
pub mod input;
mod pattern;
pub mod rego_test;
mod sources;
mod tunnel;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use regorus::{Engine, Value};

pub use catalog::{Catalog, CatalogError, ScopeCode, ScopeQuery, ScopeVerdict};
pub use decision::{CredentialChoice, Decision};
pub use facts::{BodyFacts, ConnectionFacts, RequestFacts};

use crate::bundle::Bundle;
use crate::config::{Config, Mode, OnError};
use crate::identity::Agent;
use crate::intent::Intent;
use crate::vocab::ErrorCode;

/// Policies that cannot be loaded. Every variant names the file; Rego errors carry the line.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}{}: {msg}", line.map(|l| format!(":{l}")).unwrap_or_default())]
    Compile {
        file: String,
        line: Option<usize>,
        msg: String,
    },
    #[error("{file}{}: {msg}", line.map(|l| format!(":{l}")).unwrap_or_default())]
    Data {
        file: String,
        line: Option<usize>,
        msg: String,
    },
    #[error(
        "{file}: a namespace module must declare `package intentgate.namespace` (or a package \
         below it) so it can only narrow the global policy; it declares `{package}`"
    )]
    NamespacePackage { file: String, package: String },
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("policy query `{query}`: {msg}")]
    Query { query: String, msg: String },
}

/// Why an agent may not hold an intent (the session API refuses it up front; a request declaring
/// it is refused as well).
#[derive(Debug)]
pub struct ClaimRefusal {
    pub kind: ClaimFailure,
    pub reason: String,
    pub hint: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimFailure {
    /// No intent of that name in the catalog.
    UnknownIntent,
    /// The intent's `claimable_by` does not admit the agent.
    NotClaimable,
}

impl ClaimFailure {
    /// The error code a refusal carries.
    pub fn code(self) -> ErrorCode {
        match self {
            ClaimFailure::UnknownIntent => ErrorCode::UnknownIntent,
            ClaimFailure::NotClaimable => ErrorCode::IntentNotClaimable,
        }
    }

    /// The status of a refusal: 403 for an intent the agent may not claim, 422 for a name that
    /// is not an intent.
    pub fn status(self) -> http::StatusCode {
        match self {
            ClaimFailure::UnknownIntent => http::StatusCode::UNPROCESSABLE_ENTITY,
            ClaimFailure::NotClaimable => http::StatusCode::FORBIDDEN,
        }
    }
}

/// Every load gets a new generation; per-thread engines are keyed by it.
static GENERATION: AtomicU64 = AtomicU64::new(1);

/// Decision cache counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
}

/// The loaded policy for one agent (its namespace's modules and catalog): compiled catalog,
/// warmed engines and revision. Lives in an `Arc`, swapped on reload.
pub struct PolicySet {
    catalog: Catalog,
    template: Engine,
    /// Engines built separately at load (they scale better than clones sharing counters);
    /// each worker thread takes one on its first decision, then clones of `template`.
    spare: Mutex<Vec<Engine>>,
    query: String,
    /// Shared: every audit record carries it without a copy.
    revision: Arc<str>,
    generation: u64,
    /// Held while this set lives: a worker's engine slot for it (src/policy/decide.rs) is
    /// dropped once it is gone.
    alive: Arc<()>,
    modules: Vec<String>,
    namespace: Option<String>,
    agent: Agent,
    agent_value: Value,
    on_error: OnError,
    mode_override: Option<Mode>,
    /// `egress.connect_ports`: ports an intercepted tunnel may open to besides those the
    /// catalog's rules name (`tunnel`).
    connect_ports: Vec<u16>,
    enforce_lifecycle: bool,
    strip: Vec<String>,
    cache_plan: cache::Plan,
    /// The input fields the policy modules can read (`cache::reads`): decisions get only
    /// those; `explain` shows the whole input.
    reads: u64,
    data_sources: Vec<String>,
    /// With `load_with(.., true)`: an engine that also holds the `*_test.rego` modules, and the
    /// `(file, package, text)` of the modules whose tests `run_tests` runs.
    tests: Option<(Engine, Vec<rego_test::TestModule>)>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl std::fmt::Debug for PolicySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicySet")
            .field("revision", &self.revision)
            .field("modules", &self.modules)
            .field("intents", &self.catalog.len())
            .finish_non_exhaustive()
    }
}

impl PolicySet {
    /// Loads the catalog and policies that apply to `agent` (global, plus its namespace's).
    pub fn load(cfg: &Config, agent: &Agent) -> Result<Self, PolicyError> {
        Self::load_with(cfg, None, agent, false)
    }

    /// As `load`, with the policy `bundle` in force (`policy.bundle_url`) added to the sources;
    /// with `tests`, also compiles the `*_test.rego` modules for `run_tests`.
    pub fn load_with(
        cfg: &Config,
        bundle: Option<&Bundle>,
        agent: &Agent,
        tests: bool,
    ) -> Result<Self, PolicyError> {
        let src = engine::Sources::collect(cfg, bundle, agent.namespace.as_deref())?;
        let catalog = Catalog::compile(&src.catalogs, cfg.mode)?;
        let agent_value = input::agent_value(agent);
        let query = cfg.policy.query.trim().to_string();
        let cache_plan = if cfg.policy.decision_cache {
            cache::plan(
                src.modules
                    .iter()
                    .filter(|m| !m.test)
                    .map(|m| m.text.as_str()),
            )
        } else {
            cache::Plan::Disabled("policy.decision_cache is false".into())
        };
        let reads = cache::reads(
            src.modules
                .iter()
                .filter(|m| !m.test)
                .map(|m| m.text.as_str()),
        );
        let (mut template, names) = engine::build(&src, &engine::catalog_data(&src), false)?;
        engine::warm(&mut template, &query)?;
        let workers = cfg.limits.worker_threads();
        let mut spare = Vec::with_capacity(workers);
        for _ in 0..workers {
            let (mut e, _) = engine::build(&src, &engine::catalog_data(&src), false)?;
            engine::warm(&mut e, &query)?;
            spare.push(e);
        }
        let tests = if tests {
            let (mut e, packages) = engine::build(&src, &engine::catalog_data(&src), true)?;
            e.eval_query("true".into(), false)
                .map_err(|err| engine::rego_error("policy", &err.to_string()))?;
            let modules = src
                .modules
                .iter()
                .filter(|m| m.scope != engine::Scope::Builtin)
                .filter_map(|m| {
                    let (_, package) = packages.iter().find(|(f, _)| *f == m.file)?;
                    Some((m.file.clone(), package.clone(), m.text.clone()))
                })
                .collect();
            Some((e, modules))
        } else {
            None
        };
        let mut data_sources: Vec<String> = src
            .data
            .iter()
            .map(|(f, _)| f.clone())
            .chain(
                src.catalogs
                    .iter()
                    .skip(usize::from(!cfg.intents.is_empty()))
                    .map(|(f, _)| f.clone()),
            )
            .collect();
        data_sources.sort();
        data_sources.dedup();
        Ok(PolicySet {
            catalog,
            data_sources,
            tests,
            template,
            spare: Mutex::new(spare),
            query,
            revision: src.revision().into(),
            generation: GENERATION.fetch_add(1, Ordering::Relaxed),
            alive: Arc::new(()),
            modules: names.into_iter().map(|(file, _)| file).collect(),
            namespace: agent.namespace.clone(),
            agent: agent.clone(),
            agent_value,
            on_error: cfg.policy.on_error,
            mode_override: cfg.mode_override,
            connect_ports: cfg.egress.connect_ports.clone(),
            enforce_lifecycle: cfg.agent.enforce_lifecycle,
            // The intent token is a credential: never in the input (nor `explain`).
            strip: (cfg.headers.strip.iter())
                .chain([&cfg.intent_tokens.header])
                .cloned()
                .collect(),
            cache_plan,
            reads,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        })
    }

    /// Whether a loaded module reads `input.request.body`: only then are bodies inspected.
    pub fn reads_body(&self) -> bool {
        cache::reads_body(self.reads)
    }

    /// Whether a loaded module reads `input.destination`: only then is a name resolved before
    /// the decision.
    pub fn reads_destination(&self) -> bool {
        const DEST: u64 = input::bit("destination.ip") | input::bit("destination.class");
        self.reads & DEST != 0
    }

    /// The input fields (`input.` paths) the loaded modules read, as `replay` asks.
    pub fn reads_fields(&self) -> impl Iterator<Item = &'static str> + '_ {
        cache::LEAVES
            .iter()
            .enumerate()
            .filter(|(i, _)| self.reads & (1 << i) != 0)
            .map(|(_, (path, _))| *path)
    }

    /// How decisions are cached (`keyed on input.{...}` or `disabled: why`).
    #[cfg(test)]
    pub fn cache_plan(&self) -> String {
        cache::describe(&self.cache_plan)
    }

    /// Why decisions are not cached, or `None` when they are (for requests that allow it).
    pub fn uncacheable(&self) -> Option<&str> {
        match &self.cache_plan {
            cache::Plan::Disabled(why) => Some(why),
            cache::Plan::Key(_) => None,
        }
    }

    /// Decision cache hits and misses so far.
    pub fn cache_stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }

    /// A stable hash of every policy source, data file and catalog.
    pub fn revision(&self) -> &str {
        &self.revision
    }

    /// The revision as an audit record holds it (a reference count, not a copy).
    pub fn shared_revision(&self) -> Arc<str> {
        Arc::clone(&self.revision)
    }

    /// The loaded Rego modules (file names), for `/v1/policy`.
    pub fn modules(&self) -> &[String] {
        &self.modules
    }

    /// The data and catalog files loaded beside the modules.
    pub fn data_sources(&self) -> &[String] {
        &self.data_sources
    }

    /// Runs the `test_*` rules of the loaded policy modules (not the builtin policy's own);
    /// empty unless loaded with `load_with(.., true)`.
    pub fn run_tests(&mut self) -> Vec<rego_test::TestResult> {
        let ns = self.namespace.clone();
        match &mut self.tests {
            Some((e, modules)) => rego_test::run_modules(e, modules, ns.as_deref()),
            None => Vec::new(),
        }
    }

    /// The mode in force for an intent when the policy does not set one: the `--mode` flag,
    /// else the intent's, else the top-level mode.
    pub fn mode_for(&self, intent: Option<&str>) -> Mode {
        self.mode_override
            .or_else(|| intent.and_then(|i| self.catalog.mode_of(i)))
            .unwrap_or(self.catalog.default_mode())
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Whether `agent` may hold the intent `name`: it is in the catalog and its `claimable_by`
    /// admits the agent. (The catalog checks both before it looks at a destination.) A name not
    /// in the catalog may be held where it would be monitored (learn mode, `--mode monitor`):
    /// its calls are forwarded as would-deny under that name, as they are when a header names
    /// it, and learn mode learns them per intent.
    pub fn claim(&self, agent: &Agent, name: &str) -> Result<(), ClaimRefusal> {
        let q = ScopeQuery {
            method: "CONNECT",
            host: "",
            port: 0,
            path: "",
            destination_only: true,
            mcp: None,
            llm: None,
        };
        let v = self.catalog.verdict(agent, Some(name), &q);
        let kind = match v.code {
            ScopeCode::UnknownIntent if self.mode_for(Some(name)) == Mode::Monitor => {
                return Ok(());
            }
            ScopeCode::UnknownIntent => ClaimFailure::UnknownIntent,
            ScopeCode::NotClaimable => ClaimFailure::NotClaimable,
            _ => return Ok(()),
        };
        Err(ClaimRefusal {
            kind,
            hint: decision::hint_for(&v),
            reason: v.why,
        })
    }

    /// Decides one request.
    pub fn decide(&self, agent: &Agent, intent: &Intent, req: &RequestFacts<'_>) -> Decision {
        self.run(agent, intent, req, (false, &mut None), true)
    }

    /// `decide` for a call the proxy forwards or refuses: the catalog's sentence of a match
    /// (`scope.why`) is left empty unless the decision uses it (a module reads it, a reason
    /// is it). The proxy shows a decision only through its reasons and code.
    pub fn decide_call(&self, agent: &Agent, intent: &Intent, req: &RequestFacts<'_>) -> Decision {
        self.run(agent, intent, req, (false, &mut None), false)
    }

    /// Decides one request and returns the input it evaluated, as JSON.
    pub fn explain(
        &self,
        agent: &Agent,
        intent: &Intent,
        req: &RequestFacts<'_>,
    ) -> (Decision, serde_json::Value) {
        let mut input = None;
        let d = self.run(agent, intent, req, (true, &mut input), true);
        (
            d,
            input.map_or(serde_json::Value::Null, |i| input::to_json(&i)),
        )
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_namespaces;
#[cfg(test)]
mod tests_runtime;
