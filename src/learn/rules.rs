//! The rules learned for one host:port: one per set of methods, naming the paths seen with exactly
//! those methods, with the notes a reviewer reads above each.

use std::collections::{BTreeMap, BTreeSet};

use super::{Options, paths};
use crate::config::{McpScope, RuleProtocol, ScopeRule};

/// What was seen of one host:port under one intent.
#[derive(Default)]
pub(super) struct Dest {
    /// Calls in tunnels that were not intercepted: their methods and paths are unknown.
    pub(super) opaque: usize,
    /// Path as seen → the methods seen on it.
    pub(super) paths: BTreeMap<String, BTreeSet<String>>,
    /// MCP calls were seen here: the tools they called (`protocol: mcp`, `mcp: {tools}`).
    pub(super) mcp_tools: Option<BTreeSet<String>>,
}

/// One learned rule with the notes shown above it.
pub(super) struct Rule {
    pub(super) rule: ScopeRule,
    pub(super) notes: Vec<String>,
}

/// The rules for one host:port: one per set of methods, naming the paths seen with exactly those
/// methods (so no method seen on one path is granted on another). A tunnel that was not
/// intercepted showed no method or path, so its host:port gets one rule naming neither.
pub(super) fn rules((host, port): (String, u16), d: Dest, opts: Options) -> Vec<Rule> {
    // MCP calls were seen: the rule names exactly the tools they called.
    let mcp = d.mcp_tools.as_ref().map(|tools| {
        Box::new(McpScope {
            tools: Some(tools.iter().cloned().collect()),
            ..McpScope::default()
        })
    });
    let rule = |methods: Option<Vec<String>>, paths: Option<Vec<String>>| ScopeRule {
        hosts: vec![host.clone()],
        ports: Some(vec![port]),
        methods,
        paths,
        body_methods: None,
        protocol: mcp.is_some().then_some(RuleProtocol::Mcp),
        mcp: mcp.clone(),
        ..ScopeRule::default()
    };
    if d.opaque > 0 {
        let seen = d.paths.len();
        let mut notes = vec![format!(
            "{} calls in tunnels that were not intercepted: their methods and paths are unknown, \
             so this rule names host and port only",
            d.opaque
        )];
        if seen > 0 {
            notes.push(format!(
                "(it also covers the {seen} paths seen in intercepted calls)"
            ));
        }
        return vec![Rule {
            rule: rule(None, None),
            notes,
        }];
    }
    let p = paths::patterns(&d.paths, opts.generalise);
    let mut by_methods: BTreeMap<Vec<String>, Vec<String>> = BTreeMap::new();
    for (pattern, methods) in p.patterns {
        by_methods
            .entry(methods.into_iter().collect())
            .or_default()
            .push(pattern);
    }
    let mut out: Vec<Rule> = by_methods
        .into_iter()
        .map(|(methods, patterns)| {
            let notes = p
                .generalised
                .iter()
                .filter(|g| patterns.contains(&g.pattern))
                .map(paths::Generalised::note)
                .collect();
            Rule {
                rule: rule(Some(methods), Some(patterns)),
                notes,
            }
        })
        .collect();
    if let (Some(first), false) = (out.first_mut(), p.inexpressible.is_empty()) {
        first.notes.extend(p.inexpressible.iter().map(|path| {
            format!("not learned: {path} (a '*' in a path cannot be written as a literal pattern)")
        }));
    }
    out
}
