//! The intent catalog compiled at load into a native matcher: per intent, a host index (exact
//! names, then `*.parent` walking up the labels) leading to rules of ports, methods and path
//! patterns. Cost depends on the request, not on the size of the catalog.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use crate::config::{IntentSpec, Mode};
use crate::identity::Agent;

/// The catalog's verdict on one request, handed to Rego as `input.scope`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScopeVerdict {
    pub matched: bool,
    pub intent: Option<String>,
    /// 1-based index of the matching rule within the intent.
    pub rule: Option<usize>,
    pub why: String,
    /// `matched`, `no_intent`, `unknown_intent`, `not_claimable`, `host_not_in_scope`,
    /// `port_not_in_scope`, `method_not_in_scope`, `path_not_in_scope`.
    pub code: &'static str,
}

#[derive(Debug, Clone, PartialEq)]
enum Seg {
    Lit(String),
    One,
    Any,
}

#[derive(Debug, Clone)]
struct Rule {
    ports: Vec<u16>,
    /// Upper-case; `None` = any method.
    methods: Option<Vec<String>>,
    /// `None` = any path.
    paths: Option<Vec<Vec<Seg>>>,
}

#[derive(Debug, Clone)]
struct Compiled {
    agents: Option<HashSet<String>>,
    namespaces: Option<HashSet<String>>,
    mode: Option<Mode>,
    rules: Vec<Rule>,
    /// host → indices of rules naming it exactly.
    exact: HashMap<String, Vec<usize>>,
    /// parent domain (for `*.parent`) → indices of rules.
    wildcard: HashMap<String, Vec<usize>>,
}

/// The compiled catalog.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    intents: HashMap<String, Compiled>,
}

/// How far a request got against an intent's rules, to explain a refusal precisely.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    Host,
    Port,
    Method,
    Path,
}

impl Catalog {
    /// Compiles `intents`; errors name the intent, the rule and the offending pattern.
    pub fn compile(intents: &BTreeMap<String, IntentSpec>) -> Result<Self, String> {
        let mut out = HashMap::with_capacity(intents.len());
        for (name, spec) in intents {
            out.insert(name.clone(), compile_intent(name, spec)?);
        }
        Ok(Self { intents: out })
    }

    pub fn len(&self) -> usize {
        self.intents.len()
    }

    pub fn is_empty(&self) -> bool {
        self.intents.is_empty()
    }

    /// The mode an intent sets for itself, if any.
    pub fn mode_of(&self, intent: &str) -> Option<Mode> {
        self.intents.get(intent).and_then(|c| c.mode)
    }

    /// The intent names, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.intents.keys().map(String::as_str).collect();
        v.sort_unstable();
        v
    }

    pub fn contains(&self, intent: &str) -> bool {
        self.intents.contains_key(intent)
    }

    /// Matches one request against the intent the agent declared.
    pub fn check(
        &self,
        agent: &Agent,
        intent: Option<&str>,
        method: &str,
        host: &str,
        port: u16,
        path: Option<&str>,
    ) -> ScopeVerdict {
        let Some(name) = intent else {
            return verdict(
                false,
                None,
                None,
                "no_intent",
                "no intent was declared for this call".into(),
            );
        };
        let Some(c) = self.intents.get(name) else {
            return verdict(
                false,
                Some(name),
                None,
                "unknown_intent",
                format!("intent '{name}' is not in the catalog"),
            );
        };
        let claimable = c.agents.as_ref().is_none_or(|a| a.contains(&agent.id))
            && c.namespaces
                .as_ref()
                .is_none_or(|n| agent.namespace.as_ref().is_some_and(|ns| n.contains(ns)));
        if !claimable {
            return verdict(
                false,
                Some(name),
                None,
                "not_claimable",
                format!("agent '{}' may not claim intent '{name}'", agent.id),
            );
        }
        let target = match path {
            Some(p) => format!("{method} {host}:{port}{p}"),
            None => format!("{method} {host}:{port}"),
        };
        let mut best = Stage::Host;
        let segments: Option<Vec<&str>> = path.map(|p| {
            p.split('?').next().unwrap_or(p)[1.min(p.len())..]
                .split('/')
                .collect()
        });
        for idx in candidates(c, host) {
            let rule = &c.rules[idx];
            best = best.max(Stage::Port);
            if !rule.ports.contains(&port) {
                continue;
            }
            best = best.max(Stage::Method);
            if let Some(methods) = &rule.methods {
                // A tunnel (CONNECT) is judged on its destination only: method and path rules
                // apply to the requests inside it, when those are visible.
                if method != "CONNECT" && !methods.iter().any(|m| m == method) {
                    continue;
                }
            }
            best = best.max(Stage::Path);
            let path_ok = match (&rule.paths, &segments) {
                (None, _) | (_, None) => true,
                (Some(patterns), Some(segs)) => patterns.iter().any(|p| matches(p, segs)),
            };
            if path_ok {
                return verdict(
                    true,
                    Some(name),
                    Some(idx + 1),
                    "matched",
                    format!("{target} matches rule {} of intent '{name}'", idx + 1),
                );
            }
        }
        let (code, what) = match best {
            Stage::Host => ("host_not_in_scope", "host"),
            Stage::Port => ("port_not_in_scope", "port"),
            Stage::Method => ("method_not_in_scope", "method"),
            Stage::Path => ("path_not_in_scope", "path"),
        };
        verdict(
            false,
            Some(name),
            None,
            code,
            format!("intent '{name}' does not permit {target} (the {what} is not in scope)"),
        )
    }
}

fn verdict(
    matched: bool,
    intent: Option<&str>,
    rule: Option<usize>,
    code: &'static str,
    why: String,
) -> ScopeVerdict {
    ScopeVerdict {
        matched,
        intent: intent.map(str::to_string),
        rule,
        why,
        code,
    }
}

/// Rule indices whose host patterns cover `host`, exact names first, then each parent domain.
fn candidates<'a>(c: &'a Compiled, host: &'a str) -> impl Iterator<Item = usize> + 'a {
    let exact = c.exact.get(host).into_iter().flatten().copied();
    let parents = host
        .match_indices('.')
        .filter_map(move |(i, _)| c.wildcard.get(&host[i + 1..]))
        .flatten()
        .copied();
    exact.chain(parents)
}

/// Whether path segments match a pattern (`*` one segment, `**` any number, including none).
fn matches(pattern: &[Seg], segs: &[&str]) -> bool {
    match pattern.split_first() {
        None => segs.is_empty(),
        Some((Seg::Any, rest)) => (0..=segs.len()).any(|k| matches(rest, &segs[k..])),
        Some((Seg::One, rest)) => !segs.is_empty() && matches(rest, &segs[1..]),
        Some((Seg::Lit(l), rest)) => {
            segs.first().is_some_and(|s| s == l) && matches(rest, &segs[1..])
        }
    }
}

fn compile_intent(name: &str, spec: &IntentSpec) -> Result<Compiled, String> {
    let mut c = Compiled {
        agents: spec
            .claimable_by
            .agents
            .as_ref()
            .map(|v| v.iter().cloned().collect()),
        namespaces: spec
            .claimable_by
            .namespaces
            .as_ref()
            .map(|v| v.iter().cloned().collect()),
        mode: spec.mode,
        rules: Vec::with_capacity(spec.allow.len()),
        exact: HashMap::new(),
        wildcard: HashMap::new(),
    };
    for (i, r) in spec.allow.iter().enumerate() {
        let at = format!("intents.{name}.allow[{i}]");
        if r.hosts.is_empty() {
            return Err(format!("{at}.hosts: a rule needs at least one host"));
        }
        for h in &r.hosts {
            let h = h.trim().trim_end_matches('.').to_ascii_lowercase();
            match h.strip_prefix("*.") {
                Some(parent) if valid_host(parent) => {
                    c.wildcard.entry(parent.to_string()).or_default().push(i)
                }
                None if valid_host(&h) => c.exact.entry(h).or_default().push(i),
                _ => {
                    return Err(format!(
                        "{at}.hosts: '{h}' is not a host name or a leading '*.' wildcard (other wildcards are refused)"
                    ));
                }
            }
        }
        let ports = r.ports.clone().unwrap_or_else(|| vec![80, 443]);
        if ports.contains(&0) {
            return Err(format!("{at}.ports: 0 is not a port"));
        }
        let methods = match &r.methods {
            Some(m) if m.is_empty() => {
                return Err(format!(
                    "{at}.methods: an empty list permits nothing; omit it for any method"
                ));
            }
            Some(m) => Some(m.iter().map(|m| m.trim().to_ascii_uppercase()).collect()),
            None => None,
        };
        let paths = match &r.paths {
            Some(ps) => Some(
                ps.iter()
                    .map(|p| compile_path(p).map_err(|e| format!("{at}.paths: {e}")))
                    .collect::<Result<_, _>>()?,
            ),
            None => None,
        };
        c.rules.push(Rule {
            ports,
            methods,
            paths,
        });
    }
    Ok(c)
}

fn valid_host(h: &str) -> bool {
    !h.is_empty()
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        || h.parse::<std::net::IpAddr>().is_ok()
}

fn compile_path(p: &str) -> Result<Vec<Seg>, String> {
    let rest = p
        .strip_prefix('/')
        .ok_or_else(|| format!("'{p}' must start with '/'"))?;
    rest.split('/')
        .map(|s| match s {
            "**" => Ok(Seg::Any),
            "*" => Ok(Seg::One),
            s if s.contains('*') => Err(format!(
                "'{p}': only whole-segment '*' and '**' wildcards are supported"
            )),
            s => Ok(Seg::Lit(s.to_string())),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ClaimableBy, ScopeRule};

    fn agent(id: &str, ns: Option<&str>) -> Agent {
        let cfg = crate::config::AgentConfig {
            id: Some(id.into()),
            namespace: ns.map(Into::into),
            owner: Some("o".into()),
            ..Default::default()
        };
        Agent::from_config(&cfg, &|_| None).unwrap()
    }

    fn catalog() -> Catalog {
        let yaml = r#"
triage:
  claimable_by: {agents: [bot], namespaces: [support]}
  allow:
    - hosts: [api.zendesk.com, "*.zendesk.com"]
      ports: [443]
      methods: [GET, put]
      paths: ["/api/v2/tickets/**", "/api/v2/users/*/profile"]
    - hosts: [llm.example]
open:
  allow:
    - hosts: ["*.example.org"]
"#;
        Catalog::compile(&serde_yaml::from_str(yaml).unwrap()).unwrap()
    }

    #[test]
    fn hosts_ports_methods_paths() {
        let c = catalog();
        let a = agent("bot", Some("support"));
        let ok = |m, h, port, p| c.check(&a, Some("triage"), m, h, port, Some(p)).code;
        assert_eq!(
            ok("GET", "api.zendesk.com", 443, "/api/v2/tickets"),
            "matched"
        );
        assert_eq!(
            ok("PUT", "eu.zendesk.com", 443, "/api/v2/tickets/1/comments"),
            "matched"
        );
        assert_eq!(
            ok("GET", "a.b.zendesk.com", 443, "/api/v2/users/7/profile"),
            "matched"
        );
        assert_eq!(
            ok("GET", "zendesk.com", 443, "/api/v2/tickets"),
            "host_not_in_scope"
        );
        assert_eq!(
            ok("GET", "evil-zendesk.com", 443, "/api/v2/tickets"),
            "host_not_in_scope"
        );
        assert_eq!(
            ok("GET", "api.zendesk.com", 80, "/api/v2/tickets"),
            "port_not_in_scope"
        );
        assert_eq!(
            ok("DELETE", "api.zendesk.com", 443, "/api/v2/tickets/1"),
            "method_not_in_scope"
        );
        assert_eq!(
            ok("GET", "api.zendesk.com", 443, "/api/v2/users/7/8/profile"),
            "path_not_in_scope"
        );
        assert_eq!(
            ok("GET", "api.zendesk.com", 443, "/api/v2/ticketsx"),
            "path_not_in_scope"
        );
        // Default ports 80/443, any method, any path.
        assert_eq!(ok("POST", "llm.example", 80, "/v1/chat"), "matched");
        assert_eq!(
            ok("POST", "llm.example", 8080, "/v1/chat"),
            "port_not_in_scope"
        );
        // A tunnel is judged by destination only.
        assert_eq!(
            c.check(&a, Some("triage"), "CONNECT", "api.zendesk.com", 443, None)
                .code,
            "matched"
        );
        let v = c.check(
            &a,
            Some("triage"),
            "GET",
            "api.zendesk.com",
            443,
            Some("/api/v2/tickets/9"),
        );
        assert_eq!((v.rule, v.intent.as_deref()), (Some(1), Some("triage")));
        assert!(v.why.contains("rule 1 of intent 'triage'"));
    }

    #[test]
    fn claimability_and_unknown() {
        let c = catalog();
        let check = |a: &Agent, i| c.check(a, i, "GET", "x.example.org", 443, Some("/")).code;
        assert_eq!(
            check(&agent("bot", Some("support")), Some("triage")),
            "host_not_in_scope"
        );
        assert_eq!(
            check(&agent("other", Some("support")), Some("triage")),
            "not_claimable"
        );
        assert_eq!(
            check(&agent("bot", Some("sales")), Some("triage")),
            "not_claimable"
        );
        assert_eq!(check(&agent("bot", None), Some("triage")), "not_claimable");
        assert_eq!(check(&agent("anyone", None), Some("open")), "matched");
        assert_eq!(
            check(&agent("anyone", None), Some("nope")),
            "unknown_intent"
        );
        assert_eq!(check(&agent("anyone", None), None), "no_intent");
    }

    #[test]
    fn bad_patterns_are_refused_at_load() {
        for (hosts, paths) in [
            (vec!["api.*.com"], None),
            (vec!["*"], None),
            (vec!["api*.example.com"], None),
            (vec!["ok.example"], Some(vec!["/v1/*.json"])),
            (vec!["ok.example"], Some(vec!["relative"])),
        ] {
            let spec = IntentSpec {
                claimable_by: ClaimableBy::default(),
                allow: vec![ScopeRule {
                    hosts: hosts.iter().map(|s| s.to_string()).collect(),
                    paths: paths.map(|v| v.iter().map(|s| s.to_string()).collect()),
                    ..Default::default()
                }],
                ..Default::default()
            };
            let err = Catalog::compile(&BTreeMap::from([("i".to_string(), spec)])).unwrap_err();
            assert!(err.starts_with("intents.i.allow[0]"), "{err}");
        }
    }
}
