//! The intent catalog compiled at load into a native matcher: intent by name, then a host index
//! (exact name, then `*.parent` walking up the labels), then ports, methods and path patterns.
//! Cost per request does not grow with the number of intents.

mod compact;
mod compile;
mod known;
mod llm;
mod mcp;
mod names;
mod narrow;
mod why;

use std::fmt::Write as _;

use super::pattern::PathSegments;
use super::pattern::text_matches;
use crate::config::Mode;
use crate::identity::Agent;
use crate::intent::Intent;
pub use crate::intent::Known;
use compact::{HostIndex, Methods, Tried};
use why::req_text;

/// The catalog's answer for one request: the matched rule, or why nothing matched.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ScopeVerdict {
    pub matched: bool,
    pub intent: Option<std::sync::Arc<str>>,
    /// The matched rule: 1-based position in the intent's `allow` list (as in `why`).
    pub rule: Option<usize>,
    pub why: String,
    pub code: ScopeCode,
    /// The intent's mode, else the top-level mode.
    pub mode: Mode,
    /// `llm_not_in_scope`: what the rule allows (models, token bound), for the hint.
    #[serde(skip)]
    pub llm_allows: Option<String>,
    /// The intent's place in the catalog that made the verdict (`Catalog::know`).
    #[serde(skip)]
    pub known: Option<Known>,
}

crate::vocab::words! {
    /// `input.scope.code`: how the catalog matched a request, or why it did not.
    pub enum ScopeCode {
        Matched = "matched",
        NoIntent = "no_intent",
        UnknownIntent = "unknown_intent",
        NotClaimable = "not_claimable",
        HostNotInScope = "host_not_in_scope",
        PortNotInScope = "port_not_in_scope",
        MethodNotInScope = "method_not_in_scope",
        PathNotInScope = "path_not_in_scope",
        /// A `protocol: mcp` rule's `mcp:` scope does not permit the call's method, tool or
        /// resource.
        McpNotInScope = "mcp_not_in_scope",
        /// A `protocol: llm` rule's `llm:` bounds do not permit the call's model or token bound.
        LlmNotInScope = "llm_not_in_scope",
    }
}

/// A catalog entry that cannot be compiled.
#[derive(Debug, thiserror::Error)]
#[error("{origin}: intent '{intent}'{}: {msg}", rule.map(|r| format!(" rule {r}")).unwrap_or_default())]
pub struct CatalogError {
    /// Where the intent was written (config file or catalog file).
    pub origin: String,
    pub intent: String,
    /// The rule: 1-based position in the intent's `allow` list, as decisions number it.
    pub rule: Option<usize>,
    pub msg: String,
}

/// What the catalog looks at in a request.
#[derive(Debug, Clone, Copy)]
pub struct ScopeQuery<'a> {
    pub method: &'a str,
    /// Lowercase, no trailing dot, punycode.
    pub host: &'a str,
    pub port: u16,
    /// Its segments are read when a rule's path pattern needs them (`matches_path`).
    pub path: &'a str,
    /// A tunnel that is not intercepted: only the destination (host, port) can be matched.
    pub destination_only: bool,
    /// The JSON-RPC message(s) of a call to an MCP server (src/mcp/).
    pub mcp: Option<&'a crate::mcp::Call>,
    /// The LLM API call the request is, read under a `protocol: llm` rule (src/llm/).
    pub llm: Option<&'a crate::llm::LlmCall>,
}

/// Whether the path of `q` matches the path pattern written `raw`. A pattern written as the
/// path itself matches it whatever its wildcards (each segment matches its own text: a literal
/// itself, `*` one segment, `**` one or more): the text compared first, the path's segments read
/// (into `segments`, once for all the patterns of a request) only when it differs.
fn matches_path<'a>(
    raw: &str,
    q: &ScopeQuery<'a>,
    segments: &mut Option<PathSegments<'a>>,
) -> bool {
    raw == q.path
        || text_matches(
            raw,
            segments
                .get_or_insert_with(|| PathSegments::of(q.path))
                .get(),
        )
}

#[derive(Debug)]
struct Rule {
    // Boxed slices, not vectors: exact size, no spare capacity, a smaller header (20,000 rules
    // in a 1,000-intent catalog).
    /// `None` = 80 and 443.
    ports: Option<Box<[u16]>>,
    /// `None` = any.
    methods: Option<Methods>,
    /// Path patterns as written (checked at load, their segments read per match); `None` = any
    /// path.
    paths: Option<Box<[Box<str>]>>,
    /// Which body-less methods may carry a body here (`body_methods`), as `BODYLESS` bits.
    body_methods: u8,
    /// `protocol: mcp`: the rule's `mcp:` scope.
    mcp: Option<Box<crate::mcp::Scope>>,
    /// `protocol: llm`: the models and token bound its LLM calls must keep to.
    llm: Option<Box<crate::llm::LlmRule>>,
    /// The credential injected into the requests it allows (src/cred/).
    inject: Option<std::sync::Arc<crate::config::Binding>>,
}

/// Methods whose requests carry no body, unless a rule's `body_methods` allows one.
pub const BODYLESS: [http::Method; 4] = [
    http::Method::GET,
    http::Method::HEAD,
    http::Method::OPTIONS,
    http::Method::DELETE,
];

/// The bit of a body-less method in `Rule::body_methods`.
fn bodyless_bit(method: &str) -> Option<u8> {
    BODYLESS
        .iter()
        .position(|m| m.as_str() == method)
        .map(|i| 1 << i)
}

#[derive(Debug)]
struct Compiled {
    /// The intent's name, lent to each request's intent (`Catalog::know`): no copy a request.
    name: std::sync::Arc<str>,
    /// The name as the upstream tag's value (`headers.intent`), made once (none when it cannot
    /// be one).
    tag: Option<http::HeaderValue>,
    agents: Option<Vec<String>>,
    namespaces: Option<Vec<String>>,
    mode: Option<Mode>,
    exact: HostIndex,
    /// `*.zendesk.com` is stored under `zendesk.com`.
    wildcard: HostIndex,
    rules: Vec<Rule>,
    /// `requires_token`, `attest` (src/policy/catalog/narrow.rs).
    requires_token: bool,
    attest: bool,
    /// `budget:` (src/budget/).
    budget: Option<std::sync::Arc<crate::budget::Limits>>,
}

/// The compiled catalog.
#[derive(Debug, Default)]
pub struct Catalog {
    /// The intents; their place here is `Catalog::index_of`'s (and `Known`'s) number.
    entries: Vec<Compiled>,
    /// Each intent's place in `entries`, by name.
    intents: names::NameMap<usize>,
    /// This catalog's number among those compiled (`Known`).
    id: u64,
    default_mode: Mode,
    /// The hosts `protocol: mcp` rules name: requests to them are read as MCP.
    mcp_hosts: mcp::McpHosts,
    /// The hosts of `protocol: llm` rules (src/policy/catalog/llm.rs).
    llm_hosts: llm::LlmHosts,
    /// Some rule says `protocol: mcp` or `protocol: llm`: only then can a request's host make it
    /// an MCP or LLM API call (the one test a plain request pays for them).
    protocols: bool,
}

impl Catalog {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The intent names, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.intents.keys().map(String::as_str).collect();
        v.sort_unstable();
        v
    }

    /// Matches one request of `agent` under the intent named `intent`.
    pub fn verdict(&self, agent: &Agent, intent: Option<&str>, q: &ScopeQuery<'_>) -> ScopeVerdict {
        let intent = Intent {
            name: intent.map(std::sync::Arc::from),
            ..Intent::none()
        };
        self.verdict_with(agent, &intent, q, true)
    }

    /// `verdict`; without `sentence`, the `why` of a match is left empty (a decision that needs
    /// it writes it then, `matched_why`): an allowed request's decision rarely reads it.
    pub(crate) fn verdict_with(
        &self,
        agent: &Agent,
        intent: &Intent,
        q: &ScopeQuery<'_>,
        sentence: bool,
    ) -> ScopeVerdict {
        let mut v = ScopeVerdict {
            matched: false,
            intent: intent.name.clone(),
            rule: None,
            why: String::new(),
            code: ScopeCode::NoIntent,
            mode: self.default_mode,
            llm_allows: None,
            known: None,
        };
        let Some(name) = intent.name.as_deref() else {
            v.why = req_text("no intent declared for ", q, 0);
            return v;
        };
        let Some((known, c)) = self.entry(name, intent.known) else {
            v.code = ScopeCode::UnknownIntent;
            v.why = format!("intent '{name}' is not in the catalog");
            return v;
        };
        v.mode = c.mode.unwrap_or(self.default_mode);
        v.known = Some(known);
        let agent_ok = c.agents.as_ref().is_none_or(|a| a.contains(&agent.id));
        let ns_ok = c.namespaces.as_ref().is_none_or(|ns| {
            agent
                .namespace
                .as_ref()
                .is_some_and(|n| ns.iter().any(|x| x == n))
        });
        if !(agent_ok && ns_ok) {
            v.code = ScopeCode::NotClaimable;
            v.why = format!("agent '{}' may not claim intent '{name}'", agent.id);
            if !ns_ok {
                let _ = write!(
                    v.why,
                    " (it is claimable in namespaces {:?}; this agent's namespace is {})",
                    c.namespaces.as_deref().unwrap_or_default(),
                    agent
                        .namespace
                        .as_deref()
                        .map_or("not set".to_string(), |n| format!("'{n}'"))
                );
            }
            return v;
        }
        // Candidate rules: exact host, then `*.parent` for every parent. `closest`: the furthest
        // stage any rule got (1 host, 2 port, 3 method, 4 path) and the first rule that got there.
        // `tried`: rules already checked (one can be listed under the exact name and a parent),
        // not checked twice. On the stack: checking a rule again changes nothing (it reaches
        // the same stage, and it did not match), so past its size it only costs time.
        let mut closest = (0u8, 0usize);
        let mut tried = Tried::default();
        let mut segments = None;
        let mut check = |index: &HostIndex, host: &str, tried: &mut Tried| -> Option<usize> {
            for i in index.get(host) {
                if !tried.first(i) {
                    continue;
                }
                let r = &c.rules[i];
                let mut reached = |stage: u8| {
                    if stage > closest.0 {
                        closest = (stage, i);
                    }
                };
                reached(1);
                let port_ok = match &r.ports {
                    None => q.port == 80 || q.port == 443,
                    Some(ps) => ps.contains(&q.port),
                };
                if !port_ok {
                    continue;
                }
                reached(2);
                if q.destination_only {
                    return Some(i);
                }
                if !r.methods.as_ref().is_none_or(|ms| ms.contains(q.method)) {
                    continue;
                }
                reached(3);
                if !r
                    .paths
                    .as_ref()
                    .is_none_or(|ps| ps.iter().any(|p| matches_path(p, q, &mut segments)))
                {
                    continue;
                }
                reached(4);
                // An MCP call also needs the rule's `mcp:` scope (src/mcp/scope.rs), an LLM call
                // its `llm:` bounds (src/policy/catalog/llm.rs).
                if mcp::miss(r, q).is_none()
                    && r.llm.as_ref().is_none_or(|l| l.check(q.llm).is_ok())
                {
                    return Some(i);
                }
            }
            None
        };
        let mut found = check(&c.exact, q.host, &mut tried);
        let mut rest = q.host;
        while found.is_none() {
            match rest.split_once('.') {
                Some((_, parent)) if !parent.is_empty() => {
                    found = check(&c.wildcard, parent, &mut tried);
                    rest = parent;
                }
                _ => break,
            }
        }
        if let Some(i) = found {
            v.matched = true;
            v.rule = Some(i + 1);
            v.code = ScopeCode::Matched;
            if q.destination_only {
                let mut w = req_text("", q, 120);
                let _ = write!(
                    w,
                    " matches the destination of rule {} of intent '{name}' \
                     (methods and paths are not visible in a tunnel that is not intercepted)",
                    i + 1
                );
                v.why = w;
            } else if sentence {
                self.matched_why(&mut v, q);
            }
            return v;
        }
        let mut why = req_text(&format!("intent '{name}' does not permit "), q, 64);
        why.push_str(": the ");
        // What the rule that came closest allows, named as decisions number rules.
        let (stage, i) = closest;
        let n = i + 1;
        match (stage, c.rules.get(i)) {
            (0, _) | (_, None) => {
                v.code = ScopeCode::HostNotInScope;
                why.push_str("host is not in scope");
            }
            (1, Some(r)) => {
                v.code = ScopeCode::PortNotInScope;
                let allowed = r.ports.as_deref().unwrap_or(&[80, 443]);
                let _ = write!(why, "port is not in scope (rule {n} allows: {allowed:?})");
            }
            (2, Some(r)) => {
                v.code = ScopeCode::MethodNotInScope;
                let allowed = r.methods.as_ref().map(Methods::names).unwrap_or_default();
                let _ = write!(why, "method is not in scope (rule {n} allows: {allowed})");
            }
            (4, Some(r)) if r.llm.is_none() => {
                v.code = ScopeCode::McpNotInScope;
                mcp::why_not(&mut why, r, q, n);
            }
            (4, Some(r)) => {
                v.code = ScopeCode::LlmNotInScope;
                if let Some(l) = &r.llm {
                    let why_not = l.check(q.llm).err().unwrap_or_default();
                    let allows = l.allows();
                    let _ = write!(
                        why,
                        "LLM call is not in scope: {why_not} (rule {n} allows {allows})"
                    );
                    v.llm_allows = Some(allows);
                }
            }
            (_, Some(r)) => {
                v.code = ScopeCode::PathNotInScope;
                let _ = write!(
                    why,
                    "path is not in scope (rule {n} allows: {})",
                    r.paths.as_deref().unwrap_or_default().join(", ")
                );
            }
        }
        v.why = why;
        v
    }
}

#[cfg(test)]
#[path = "catalog_tests.rs"]
mod tests;
