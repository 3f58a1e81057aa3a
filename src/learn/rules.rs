//! The rules learned for one host:port: one per set of methods, naming the paths seen with exactly
//! those methods, with the notes a reviewer reads above each.

use std::collections::{BTreeMap, BTreeSet};

use super::{Options, paths};
use crate::config::ScopeRule;

/// What was seen of one host:port under one intent.
#[derive(Default)]
pub(super) struct Dest {
    /// Calls in tunnels that were not intercepted: their methods and paths are unknown.
    pub(super) opaque: usize,
    /// Path as seen → the methods seen on it.
    pub(super) paths: BTreeMap<String, BTreeSet<String>>,
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
    let rule = |methods: Option<Vec<String>>, paths: Option<Vec<String>>| ScopeRule {
        hosts: vec![host.clone()],
        ports: Some(vec![port]),
        methods,
        paths,
        body_methods: None,
        inject: None,
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
