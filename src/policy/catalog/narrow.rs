//! What the catalog says about intent tokens: which intents need one (`requires_token`), which
//! attest their requests (`attest`), and whether a token's narrowing claims stay inside what the
//! intent's rules allow (a claim naming more is a *widening* claim, refused).

use super::super::pattern::{Seg, host_pattern, path_pattern};
use super::{Catalog, Compiled};
use crate::intent::Intent;

impl Catalog {
    /// Whether `intent` may only be declared by a verified token.
    pub fn requires_token(&self, intent: &str) -> bool {
        self.get(intent).is_some_and(|c| c.requires_token)
    }

    /// `requires_token` for a request's intent (found once: `Catalog::know`).
    pub fn intent_requires_token(&self, intent: &Intent) -> bool {
        self.entry_of(intent).is_some_and(|c| c.requires_token)
    }

    /// Whether requests under `intent` carry an attestation.
    pub fn attests(&self, intent: &str) -> bool {
        self.get(intent).is_some_and(|c| c.attest)
    }

    /// `attests` for a request's intent (found once: `Catalog::know`).
    pub fn intent_attests(&self, intent: &Intent) -> bool {
        self.entry_of(intent).is_some_and(|c| c.attest)
    }

    /// The first narrowing claim of a token for `intent` that names something no rule of the
    /// intent allows (`None`: every claim only narrows). An intent not in the catalog is the
    /// caller's to refuse first.
    pub fn widening(
        &self,
        intent: &str,
        hosts: Option<&[String]>,
        methods: Option<&[String]>,
        paths: Option<&[String]>,
    ) -> Option<String> {
        let c = self.get(intent)?;
        for h in hosts.unwrap_or_default() {
            let covered = host_pattern(h).is_ok_and(|(wild, name)| covers_host(c, wild, &name));
            if !covered {
                return Some(format!("hosts: '{h}'"));
            }
        }
        for m in methods.unwrap_or_default() {
            let m = m.to_ascii_uppercase();
            let covered = c
                .rules
                .iter()
                .any(|r| r.methods.as_ref().is_none_or(|ms| ms.contains(&m)));
            if !covered {
                return Some(format!("methods: '{m}'"));
            }
        }
        for p in paths.unwrap_or_default() {
            let covered = path_pattern(p).is_ok_and(|claim| {
                c.rules.iter().any(|r| {
                    r.paths.as_ref().is_none_or(|ps| {
                        ps.iter().any(|rule| {
                            path_pattern(rule).is_ok_and(|rule| covers_path(&rule, &claim))
                        })
                    })
                })
            });
            if !covered {
                return Some(format!("paths: '{p}'"));
            }
        }
        None
    }
}

/// A rule host of `c` covers the claimed host (`*.name` when `wild`): the same exact name, or a
/// wildcard at or above it (a claimed wildcard needs a wildcard).
fn covers_host(c: &Compiled, wild: bool, name: &str) -> bool {
    if !wild && c.exact.contains(name) {
        return true;
    }
    // `*.x` covers every name strictly below x; a claimed `*.name` needs `*.name` or above.
    let mut rest = name;
    if wild && c.wildcard.contains(rest) {
        return true;
    }
    while let Some((_, parent)) = rest.split_once('.') {
        if c.wildcard.contains(parent) {
            return true;
        }
        rest = parent;
    }
    false
}

/// Every path the claimed pattern matches is matched by the rule's pattern (conservative: a
/// claimed `*` needs `*` or `**`, a claimed `**` needs `**`).
fn covers_path(rule: &[Seg], claim: &[Seg]) -> bool {
    match (rule.first(), claim.first()) {
        (None, None) => true,
        (Some(Seg::Any), _) => {
            covers_path(&rule[1..], claim) || (!claim.is_empty() && covers_path(rule, &claim[1..]))
        }
        (Some(Seg::One), Some(Seg::Lit(_) | Seg::One)) => covers_path(&rule[1..], &claim[1..]),
        (Some(Seg::Lit(a)), Some(Seg::Lit(b))) if a == b => covers_path(&rule[1..], &claim[1..]),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::config::{IntentSpec, Mode, ScopeRule};

    fn catalog() -> Catalog {
        let mut m = BTreeMap::new();
        m.insert(
            "triage".to_string(),
            IntentSpec {
                allow: vec![
                    ScopeRule {
                        hosts: vec!["api.example.com".into(), "*.svc.example".into()],
                        methods: Some(vec!["GET".into(), "POST".into()]),
                        paths: Some(vec!["/v1/tickets/**".into(), "/v2/*/x".into()]),
                        ..ScopeRule::default()
                    },
                    ScopeRule {
                        hosts: vec!["other.example".into()],
                        methods: Some(vec!["GET".into()]),
                        ..ScopeRule::default()
                    },
                ],
                requires_token: true,
                ..IntentSpec::default()
            },
        );
        Catalog::compile(&[("t.yaml".into(), m)], Mode::Enforce).unwrap()
    }

    fn list(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn claims_inside_the_rules_narrow_and_others_widen() {
        let c = catalog();
        assert!(c.requires_token("triage") && !c.attests("triage"));
        let w = |h: &[&str], m: &[&str], p: &[&str]| {
            c.widening("triage", Some(&list(h)), Some(&list(m)), Some(&list(p)))
        };
        assert_eq!(
            w(
                &[
                    "API.example.com",
                    "a.svc.example",
                    "*.b.svc.example",
                    "other.example"
                ],
                &["get", "POST"],
                &[
                    "/v1/tickets/7",
                    "/v1/tickets/*/c",
                    "/v1/tickets/**",
                    "/v2/q/x",
                    "/v2/*/x"
                ],
            ),
            None
        );
        assert_eq!(
            w(&["evil.com"], &[], &[]).as_deref(),
            Some("hosts: 'evil.com'")
        );
        assert!(w(&["svc.example"], &[], &[]).is_some());
        assert!(w(&["*.example.com"], &[], &[]).is_some());
        assert_eq!(
            w(&[], &["DELETE"], &[]).as_deref(),
            Some("methods: 'DELETE'")
        );
        // Rule 2 allows any path: every path claim is covered by it.
        assert_eq!(w(&[], &[], &["/admin/**"]), None);
    }

    #[test]
    fn path_coverage_is_conservative() {
        fn p(s: &str) -> Vec<Seg<'_>> {
            path_pattern(s).unwrap()
        }
        assert!(covers_path(&p("/a/**"), &p("/a/b/**")));
        assert!(covers_path(&p("/a/*/c"), &p("/a/*/c")));
        assert!(!covers_path(&p("/a/*/c"), &p("/a/**/c")));
        assert!(!covers_path(&p("/a/b"), &p("/a/*")));
        assert!(!covers_path(&p("/a"), &p("/a/b")));
        assert!(covers_path(&p("/**"), &p("/")));
    }
}
