//! Deciding one request: lifecycle, catalog verdict (an intent the agent may not claim is refused
//! here), input, evaluation on this worker thread's engine (or its decision cache), and the
//! decision, failing closed on errors. The CONNECT of an intercepted tunnel is decided by the
//! tunnel rule alone (src/policy/tunnel.rs).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use regorus::{Engine, Value};

use super::catalog::{ScopeCode, ScopeQuery};
use super::decision::{self, Decision, Parsed};
use super::{PolicySet, RequestFacts, cache, engine, input};
use crate::config::{Mode, OnError};
use crate::identity::Agent;
use crate::intent::Intent;
use crate::vocab::ErrorCode;

/// Decisions cached per worker thread before the cache is emptied.
const CACHE_ENTRIES: usize = 4096;

/// Policy sets a worker thread keeps an engine for at once: in the proxy the live one and,
/// while requests of the last reload finish, the one before; in `replay`, one per agent
/// namespace of the records.
const SLOTS: usize = 64;

/// A worker thread's engine and decision cache, for one policy generation.
struct Slot {
    generation: u64,
    /// Gone once its policy set is dropped (the slot is then freed).
    alive: std::sync::Weak<()>,
    engine: Engine,
    /// Decisions already read from their documents, by cache key.
    cache: HashMap<Vec<u8>, Rc<Parsed>>,
}

thread_local! {
    /// This worker's engine: no lock around evaluation.
    static ENGINE: RefCell<Vec<Slot>> = const { RefCell::new(Vec::new()) };
}

impl PolicySet {
    /// Decides; returns the input too when `want_input` (never served from the cache then).
    pub(super) fn run(
        &self,
        agent: &Agent,
        intent: &Intent,
        req: &RequestFacts<'_>,
        want_input: bool,
    ) -> (Decision, Option<Value>) {
        if req.opens_tunnel() {
            return (self.decide_tunnel(intent, req), None);
        }
        let start = Instant::now();
        let now = SystemTime::now();
        let host_owned;
        let host = if req.host.bytes().any(|b| b.is_ascii_uppercase()) || req.host.ends_with('.') {
            host_owned = req.host.trim_end_matches('.').to_ascii_lowercase();
            host_owned.as_str()
        } else {
            req.host
        };
        let segments = input::segments(req.path.unwrap_or(""));
        let q = ScopeQuery {
            method: req.method,
            host,
            port: req.port,
            path: req.path.unwrap_or(""),
            segments: &segments,
            destination_only: req.path.is_none()
                || (req.method.eq_ignore_ascii_case("CONNECT") && !req.connection.intercepted),
            mcp: req.mcp,
            llm: req.llm,
        };
        let scope = self.catalog.verdict(agent, intent.name.as_deref(), &q);
        let now_unix = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let req = RequestFacts { host, ..*req };
        let build = |reads: u64| {
            const AGENT: u64 = input::bit("agent");
            let agent_value = if reads & AGENT == 0 {
                Value::Null
            } else if *agent == self.agent {
                self.agent_value.clone()
            } else {
                input::agent_value(agent)
            };
            input::build(
                &agent_value,
                intent,
                &req,
                &segments,
                &scope,
                &self.strip,
                now_unix,
                reads,
            )
        };
        let doc = want_input.then(|| build(u64::MAX));
        let mode = self.mode_override.unwrap_or(scope.mode);
        if self.enforce_lifecycle {
            if let Some(why) = agent.lifecycle_violation(now) {
                let d = Decision {
                    allow: false,
                    mode: Mode::Enforce,
                    reasons: vec![why],
                    headers: Vec::new(),
                    code: Some(ErrorCode::AgentRefused),
                    hint: "ask the agent's owner to set agent.owner or renew agent.expires".into(),
                    scope,
                    policy_micros: micros(start),
                    cached: false,
                    credential: None,
                };
                return (d, doc);
            }
        }
        // Claiming an intent the agent may not claim is an identity failure, not a scope
        // question: refused in every mode (`--mode monitor` too) before any Rego, which cannot
        // overrule it. Monitor only softens scope decisions of an intent the agent may hold.
        if scope.code == ScopeCode::NotClaimable {
            let d = Decision {
                allow: false,
                mode: Mode::Enforce,
                reasons: vec![scope.why.clone()],
                headers: Vec::new(),
                code: Some(ErrorCode::IntentNotClaimable),
                hint: decision::hint_for(&scope),
                scope,
                policy_micros: micros(start),
                cached: false,
                credential: None,
            };
            return (d, doc);
        }
        let result = if agent.namespace != self.namespace {
            Err(format!(
                "this policy set was loaded for namespace {:?}, not {:?}",
                self.namespace, agent.namespace
            ))
        } else {
            let mut key = Vec::new();
            // The agent is constant in the key: another agent's call (replay) is cached only
            // when no module reads `input.agent`.
            const AGENT: u64 = input::bit("agent");
            let cacheable = !want_input
                && (self.reads & AGENT == 0 || *agent == self.agent)
                && match &self.cache_plan {
                    cache::Plan::Key(leaves) => cache::key(leaves, intent, &req, &scope, &mut key),
                    cache::Plan::Disabled(_) => false,
                };
            let key = cacheable.then_some(key.as_slice());
            self.eval(key, || match &doc {
                Some(d) => d.clone(),
                None => build(self.reads),
            })
        };
        let mut d = Decision {
            allow: false,
            mode,
            reasons: Vec::new(),
            headers: Vec::new(),
            code: Some(ErrorCode::IntentViolation),
            hint: String::new(),
            scope,
            policy_micros: 0,
            cached: false,
            credential: None,
        };
        match result {
            Ok((p, hit)) => {
                d.cached = hit;
                d.allow = p.allow;
                d.mode = self.mode_override.or(p.mode).unwrap_or(d.scope.mode);
                d.headers.clone_from(&p.headers);
                d.credential.clone_from(&p.credential);
                d.reasons = p.reasons.iter().map(|r| r.render(&d.scope)).collect();
                if p.allow {
                    d.code = None;
                } else {
                    if d.reasons.is_empty() {
                        d.reasons.push(format!("denied by policy: {}", d.scope.why));
                    }
                    d.hint = decision::hint_for(&d.scope);
                    if d.scope.code == ScopeCode::LlmNotInScope {
                        d.code = Some(ErrorCode::LlmNotInScope);
                    }
                }
            }
            Err(msg) => {
                tracing::warn!(error = %msg, revision = %self.revision, decision_id = req.id, "policy evaluation failed");
                d.allow = self.on_error == OnError::Allow;
                d.code = Some(ErrorCode::PolicyError);
                d.reasons.push(format!(
                    "policy evaluation failed: {}",
                    engine::one_line(&msg)
                ));
                d.hint = "the policy could not decide this request; ask the platform team to \
                          fix it (`intentgate check` runs the policy tests)"
                    .into();
            }
        }
        d.policy_micros = micros(start);
        (d, doc)
    }

    /// Evaluates the query on this thread's engine and reads the decision document, or answers
    /// from its cache of read decisions when `key` is given and known.
    /// The flag says whether the answer came from the cache.
    fn eval(
        &self,
        key: Option<&[u8]>,
        input: impl FnOnce() -> Value,
    ) -> Result<(Rc<Parsed>, bool), String> {
        ENGINE.with(|cell| {
            let Ok(mut slots) = cell.try_borrow_mut() else {
                // Re-entered on this thread (never in practice): use a private clone.
                let mut e = self.template.clone();
                e.set_input(input());
                let v = e.eval_rule(self.query.clone()).map_err(|e| e.to_string())?;
                return decision::parse(&v).map(|p| (Rc::new(p), false));
            };
            // Slots of sets that are gone (after a reload) are freed; past SLOTS, the oldest goes.
            if slots.len() > 1 {
                slots.retain(|s| s.alive.strong_count() > 0);
            }
            let at = match slots.iter().position(|s| s.generation == self.generation) {
                Some(i) => i,
                None => {
                    if slots.len() >= SLOTS {
                        slots.remove(0);
                    }
                    let engine = self
                        .spare
                        .lock()
                        .ok()
                        .and_then(|mut s| s.pop())
                        .unwrap_or_else(|| self.template.clone());
                    slots.push(Slot {
                        generation: self.generation,
                        alive: Arc::downgrade(&self.alive),
                        engine,
                        cache: HashMap::new(),
                    });
                    slots.len() - 1
                }
            };
            let s = &mut slots[at];
            if let Some(k) = key {
                if let Some(p) = s.cache.get(k) {
                    self.hits.fetch_add(1, Ordering::Relaxed);
                    return Ok((Rc::clone(p), true));
                }
                self.misses.fetch_add(1, Ordering::Relaxed);
            }
            s.engine.set_input(input());
            let v = s
                .engine
                .eval_rule(self.query.clone())
                .map_err(|e| e.to_string())?;
            let p = Rc::new(decision::parse(&v)?);
            if let Some(k) = key {
                if s.cache.len() >= CACHE_ENTRIES {
                    s.cache.clear();
                }
                s.cache.insert(k.to_vec(), Rc::clone(&p));
            }
            Ok((p, false))
        })
    }
}

fn micros(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX)
}
