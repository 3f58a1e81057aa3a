//! The catalog's side of MCP awareness (src/mcp/): which hosts `protocol: mcp` rules name (their
//! requests are read as MCP), a rule's `mcp:` scope compiled and matched, and the sentence for a
//! call it does not permit.

use std::collections::HashSet;
use std::fmt::Write as _;

use super::super::pattern::host_pattern;
use super::{Catalog, Rule, ScopeQuery, ScopeVerdict};
use crate::config::{RuleProtocol, ScopeRule};
use crate::mcp::{Miss, Scope};

/// The hosts of `protocol: mcp` rules, of every intent: exact, and `*.parent` under `parent`.
#[derive(Debug, Default)]
pub(super) struct McpHosts {
    exact: HashSet<String>,
    wildcard: HashSet<String>,
}

impl McpHosts {
    /// Adds the hosts of another run of intents (src/policy/catalog/compile.rs).
    pub(super) fn merge(&mut self, other: McpHosts) {
        self.exact.extend(other.exact);
        self.wildcard.extend(other.wildcard);
    }

    pub(super) fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wildcard.is_empty()
    }

    /// Whether `host` (canonical) is one of them.
    fn contains(&self, host: &str) -> bool {
        if self.exact.contains(host) {
            return true;
        }
        let mut rest = host;
        while let Some((_, parent)) = rest.split_once('.') {
            if self.wildcard.contains(parent) {
                return true;
            }
            rest = parent;
        }
        false
    }
}

/// A rule's `mcp:` scope compiled, when it says `protocol: mcp`; its hosts join `hosts`.
pub(super) fn compile_rule(
    r: &ScopeRule,
    hosts: &mut McpHosts,
) -> Result<Option<Box<Scope>>, String> {
    if r.protocol != Some(RuleProtocol::Mcp) {
        return match r.mcp {
            Some(_) => Err("`mcp:` needs `protocol: mcp`".into()),
            None => Ok(None),
        };
    }
    for h in &r.hosts {
        let (wild, name) = host_pattern(h)?;
        if wild {
            hosts.wildcard.insert(name);
        } else {
            hosts.exact.insert(name);
        }
    }
    let s = r.mcp.as_ref();
    Scope::compile(
        s.and_then(|s| s.methods.as_ref()),
        s.and_then(|s| s.tools.as_ref()),
        s.and_then(|s| s.resources.as_ref()),
    )
    .map(|s| Some(Box::new(s)))
}

/// What of the MCP call in `q` the rule's `mcp:` scope does not permit (`None`: all of it, or no
/// MCP call, or not an MCP rule: then its HTTP fields alone decide, as for the GET of the
/// server's event stream and the DELETE that ends a session).
pub(super) fn miss(r: &Rule, q: &ScopeQuery<'_>) -> Option<Miss> {
    match (&r.mcp, q.mcp) {
        (Some(scope), Some(call)) => scope.check(call).err(),
        _ => None,
    }
}

/// The end of the sentence for a call rule `n` came closest to permitting but for its `mcp:`.
pub(super) fn why_not(why: &mut String, r: &Rule, q: &ScopeQuery<'_>, n: usize) {
    match miss(r, q) {
        Some(m) => {
            let _ = write!(why, "{m} (rule {n})");
        }
        None => why.push_str("MCP call is not in scope"),
    }
}

impl Catalog {
    /// Whether requests to `host` (canonical) are read as MCP: a `protocol: mcp` rule names it.
    pub fn speaks_mcp(&self, host: &str) -> bool {
        !self.mcp_hosts.is_empty() && self.mcp_hosts.contains(host)
    }

    /// Whether some rule says `protocol: mcp` or `protocol: llm`: when none does, no request is
    /// read as an MCP or LLM API call by its host (`speaks_mcp`, `llm_api`).
    #[inline]
    pub fn speaks_protocols(&self) -> bool {
        self.protocols
    }

    /// The `mcp:` scope of the rule a verdict matched (`mcp.filter_tools_list`); `None` when
    /// nothing matched or the rule is not a `protocol: mcp` rule.
    pub fn mcp_scope(&self, scope: &ScopeVerdict) -> Option<&Scope> {
        if !scope.matched {
            return None;
        }
        let rule = self
            .entry(scope.intent.as_deref()?, scope.known)?
            .1
            .rules
            .get(scope.rule?.checked_sub(1)?)?;
        rule.mcp.as_deref()
    }
}

#[cfg(test)]
#[path = "mcp_tests.rs"]
mod tests;
