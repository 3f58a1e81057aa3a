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
use super::decision::{self, Decision, Parsed, Reason};
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
    /// Where a request's key is written (kept: no allocation for a key that is found).
    key: Vec<u8>,
    /// The key last answered and its decision: a request with the same key (an agent's calls
    /// to one intent, mostly) is answered without hashing it (SipHash, ~190 instructions).
    last_key: Vec<u8>,
    last: Option<Rc<Parsed>>,
}

thread_local! {
    /// This worker's engine: no lock around evaluation.
    static ENGINE: RefCell<Vec<Slot>> = const { RefCell::new(Vec::new()) };
}

impl PolicySet {
    /// Decides; writes the input into `doc` too when `want_input` (never served from the cache
    /// then). Without `sentence`, the catalog's sentence of a match (`scope.why`) is written
    /// only when the decision uses it (a module reads it, a reason is it): the proxy's calls.
    /// The decision alone is returned, so that it is built where the caller keeps it (not in a
    /// pair with the input, then copied out of it).
    pub(super) fn run(
        &self,
        agent: &Agent,
        intent: &Intent,
        req: &RequestFacts<'_>,
        (want_input, doc): (bool, &mut Option<Value>),
        sentence: bool,
    ) -> Decision {
        if req.opens_tunnel() {
            return self.decide_tunnel(intent, req);
        }
        let start = Instant::now();
        // The facts with the host as the catalog and the input read it (lowercase, no trailing
        // dot): a copy of the facts only when the host is not written so already.
        let (host_owned, lowered);
        let req = if req.host.bytes().any(|b| b.is_ascii_uppercase()) || req.host.ends_with('.') {
            host_owned = req.host.trim_end_matches('.').to_ascii_lowercase();
            lowered = RequestFacts {
                host: &host_owned,
                ..*req
            };
            &lowered
        } else {
            req
        };
        let host = req.host;
        // The path's segments are read where they are needed (a path pattern other than the
        // path's own text, an input that is built), not for every request.
        let q = ScopeQuery {
            method: req.method,
            host,
            port: req.port,
            path: req.path.unwrap_or(""),
            destination_only: req.path.is_none()
                || (req.method.eq_ignore_ascii_case("CONNECT") && !req.connection.intercepted),
            mcp: req.mcp,
            llm: req.llm,
        };
        const WHY: u64 = input::bit("scope.why");
        let sentence = sentence || want_input || self.reads & WHY != 0;
        let mut scope = self.catalog.verdict_with(agent, intent, &q, sentence);
        // The clock is read for an input that is built (not for a cached decision).
        let build = |reads: u64| {
            let now_unix = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            const AGENT: u64 = input::bit("agent");
            let agent_value = if reads & AGENT == 0 {
                Value::Null
            } else if *agent == self.agent {
                self.agent_value.clone()
            } else {
                input::agent_value(agent)
            };
            let segments = super::pattern::PathSegments::of(q.path);
            input::build(
                &agent_value,
                intent,
                req,
                segments.get(),
                &scope,
                &self.strip,
                now_unix,
                reads,
            )
        };
        *doc = want_input.then(|| build(u64::MAX));
        let mode = self.mode_override.unwrap_or(scope.mode);
        if self.enforce_lifecycle {
            if let Some(why) = agent.lifecycle_violation(SystemTime::now) {
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
                return d;
            }
        }
        // Claiming an intent the agent may not claim is an identity failure, not a scope
        // question: refused in every mode (`--mode monitor` too) before any Rego, which cannot
        // overrule it. Monitor only softens scope decisions of an intent the agent may hold.
        if scope.code == ScopeCode::NotClaimable {
            // (Not a match: its sentence is written.)
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
            return d;
        }
        let result = if agent.namespace != self.namespace {
            Err(format!(
                "this policy set was loaded for namespace {:?}, not {:?}",
                self.namespace, agent.namespace
            ))
        } else {
            // The agent is constant in the key: another agent's call (replay) is cached only
            // when no module reads `input.agent`.
            const AGENT: u64 = input::bit("agent");
            let key = |buf: &mut Vec<u8>| {
                !want_input
                    && (self.reads & AGENT == 0 || *agent == self.agent)
                    && match &self.cache_plan {
                        cache::Plan::Key(leaves) => cache::key(leaves, intent, req, &scope, buf),
                        cache::Plan::Disabled(_) => false,
                    }
            };
            self.eval(key, || match &*doc {
                Some(d) => d.clone(),
                None => build(self.reads),
            })
        };
        // The sentence of a match, where the decision's reasons use it after all.
        if let Ok((p, _)) = &result {
            let scope_reason = p.reasons.iter().any(|r| matches!(r, Reason::Scope));
            if !sentence && (scope_reason || (!p.allow && p.reasons.is_empty())) {
                self.catalog.matched_why(&mut scope, &q);
            }
        }
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
                // Most decisions add no header and give no reason: nothing to copy then
                // (`clone_from` and `collect` cost ~0.1k a request even for none).
                if !p.headers.is_empty() {
                    d.headers.clone_from(&p.headers);
                }
                if p.credential.is_some() {
                    d.credential.clone_from(&p.credential);
                }
                if !p.reasons.is_empty() {
                    d.reasons = p.reasons.iter().map(|r| r.render(&d.scope)).collect();
                }
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
        d
    }

    /// Evaluates the query on this thread's engine and reads the decision document, or answers
    /// from its cache of read decisions when `key` writes a key (returns true) that is known.
    /// The flag says whether the answer came from the cache.
    fn eval(
        &self,
        key: impl FnOnce(&mut Vec<u8>) -> bool,
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
                        key: Vec::new(),
                        last_key: Vec::new(),
                        last: None,
                    });
                    slots.len() - 1
                }
            };
            let Slot {
                engine,
                cache,
                key: buf,
                last_key,
                last,
                ..
            } = &mut slots[at];
            let keyed = key(buf);
            if let Some(p) = last.as_ref().filter(|_| keyed && *last_key == *buf) {
                self.hits.fetch_add(1, Ordering::Relaxed);
                return Ok((Rc::clone(p), true));
            }
            let found = keyed
                .then(|| cache.get(buf.as_slice()).map(Rc::clone))
                .flatten();
            let hit = found.is_some();
            let p = match found {
                Some(p) => {
                    self.hits.fetch_add(1, Ordering::Relaxed);
                    p
                }
                None => {
                    if keyed {
                        self.misses.fetch_add(1, Ordering::Relaxed);
                    }
                    engine.set_input(input());
                    let v = engine
                        .eval_rule(self.query.clone())
                        .map_err(|e| e.to_string())?;
                    let p = Rc::new(decision::parse(&v)?);
                    if keyed {
                        if cache.len() >= CACHE_ENTRIES {
                            cache.clear();
                        }
                        cache.insert(buf.clone(), Rc::clone(&p));
                    }
                    p
                }
            };
            // The only place the last key is kept: the map's answer or the one just inserted.
            if keyed {
                std::mem::swap(buf, last_key);
                *last = Some(Rc::clone(&p));
            }
            Ok((p, hit))
        })
    }
}

fn micros(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::super::tests::*;
    use super::super::{CacheStats, PolicySet};

    /// The key last answered is kept beside the map: alternating keys, repeated keys and a key
    /// seen before the last one are all answered as an uncached policy answers them.
    #[test]
    fn the_last_key_s_decision_answers_only_its_own_key() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "g.rego",
            "package intentgate\n\nimport rego.v1\n\ndeny contains \"no deletes\" if input.request.method == \"DELETE\"\n",
        );
        let a = agent(None);
        let cached = PolicySet::load(&config(&[dir.path()]), &a).unwrap();
        let mut c = config(&[dir.path()]);
        c.policy.decision_cache = false;
        let plain = PolicySet::load(&c, &a).unwrap();
        let methods = ["GET", "DELETE", "DELETE", "GET", "GET", "DELETE", "GET"];
        let mut seen = Vec::new();
        for m in methods {
            let r = req(m, "api.zendesk.com", "/api/v2/tickets");
            let (d, want) = (
                decide(&cached, &a, &intent("triage"), &r),
                decide(&plain, &a, &intent("triage"), &r),
            );
            assert_eq!((d.allow, &d.reasons), (want.allow, &want.reasons), "{m}");
            assert_eq!(d.allow, m == "GET", "{m}");
            assert_eq!(d.cached, seen.contains(&m), "{m}");
            seen.push(m);
        }
        assert_eq!(cached.cache_stats(), CacheStats { hits: 5, misses: 2 });
    }
}
