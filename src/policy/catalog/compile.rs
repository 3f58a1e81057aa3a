//! Compiling the catalog as written (config and data files) into the matcher's index, refusing
//! what cannot be matched with the place it was written.

use std::collections::{BTreeMap, HashMap};

use super::super::pattern::{host_pattern, path_pattern};
use super::{Catalog, CatalogError, Compiled, HostIndex, Methods, Rule, bodyless_bit};
use crate::config::{IntentSpec, Mode, RuleProtocol};

impl Catalog {
    /// Compiles catalogs, each with the place it was written (for errors). An intent defined
    /// twice is refused.
    pub fn compile<M: std::borrow::Borrow<BTreeMap<String, IntentSpec>>>(
        sources: &[(String, M)],
        default_mode: Mode,
    ) -> Result<Self, CatalogError> {
        let mut intents = HashMap::new();
        let mut mcp_hosts = super::mcp::McpHosts::default();
        let mut llm_hosts = super::llm::LlmHosts::default();
        let mut origin_of: HashMap<&str, &str> = HashMap::new();
        for (origin, entries) in sources {
            for (name, spec) in entries.borrow() {
                let err = |rule, msg| CatalogError {
                    origin: origin.clone(),
                    intent: name.clone(),
                    rule,
                    msg,
                };
                if let Some(first) = origin_of.insert(name, origin) {
                    return Err(err(None, format!("already defined in {first}")));
                }
                if name.trim().is_empty() {
                    return Err(err(None, "an intent needs a name".into()));
                }
                let (mut exact, mut wildcard) = (Vec::new(), Vec::new());
                let mut c = Compiled {
                    agents: spec.claimable_by.agents.clone(),
                    namespaces: spec.claimable_by.namespaces.clone(),
                    mode: spec.mode,
                    exact: HostIndex::default(),
                    wildcard: HostIndex::default(),
                    rules: Vec::with_capacity(spec.allow.len()),
                    requires_token: spec.requires_token,
                    attest: spec.attest,
                    budget: match &spec.budget {
                        None => None,
                        Some(b) => Some(std::sync::Arc::new(
                            crate::budget::Limits::compile(b).map_err(|m| err(None, m))?,
                        )),
                    },
                };
                for (i, r) in spec.allow.iter().enumerate() {
                    // Rules are counted from 1, as decisions name them ("rule 2").
                    let at = Some(i + 1);
                    if r.hosts.is_empty() {
                        return Err(err(at, "a rule needs at least one host".into()));
                    }
                    let llm = match r.protocol {
                        Some(RuleProtocol::Llm) => Some(Box::new(
                            crate::llm::LlmRule::new(r.provider, r.llm.as_deref())
                                .map_err(|m| err(at, m))?,
                        )),
                        _ if r.provider.is_some() || r.llm.is_some() => {
                            return Err(err(
                                at,
                                "`provider` and `llm` need `protocol: llm` on the rule".into(),
                            ));
                        }
                        _ => None,
                    };
                    for h in &r.hosts {
                        let (wild, name) = host_pattern(h).map_err(|m| err(at, m))?;
                        if llm.is_some() {
                            llm_hosts.add(wild, &name, r.provider);
                        }
                        let index = if wild { &mut wildcard } else { &mut exact };
                        index.push((name.into_boxed_str(), i));
                    }
                    for p in r.paths.iter().flatten() {
                        path_pattern(p).map_err(|m| err(at, m))?;
                    }
                    if let Some(ms) = &r.methods {
                        if let Some(bad) = ms
                            .iter()
                            .find(|m| http::Method::from_bytes(m.as_bytes()).is_err())
                        {
                            return Err(err(at, format!("'{bad}' is not an HTTP method")));
                        }
                    }
                    let mut body_methods = 0;
                    for m in r.body_methods.iter().flatten() {
                        let m = m.trim().to_ascii_uppercase();
                        let bit = bodyless_bit(&m).ok_or_else(|| {
                            err(
                                Some(i),
                                format!(
                                    "body_methods: '{m}' is not one of GET, HEAD, OPTIONS, DELETE \
                                     (other methods may always carry a body)"
                                ),
                            )
                        })?;
                        if r.methods
                            .as_ref()
                            .is_some_and(|ms| !ms.iter().any(|x| x.trim().eq_ignore_ascii_case(&m)))
                        {
                            return Err(err(
                                Some(i),
                                format!("body_methods: '{m}' is not among the rule's methods"),
                            ));
                        }
                        body_methods |= bit;
                    }
                    let inject = match &r.inject {
                        Some(spec) => {
                            Some(std::sync::Arc::new(spec.compile().map_err(|m| err(at, m))?))
                        }
                        None => None,
                    };
                    c.rules.push(Rule {
                        inject,
                        ports: r.ports.as_deref().map(Box::from),
                        methods: r.methods.as_ref().map(|ms| {
                            let upper: Vec<String> =
                                ms.iter().map(|m| m.trim().to_ascii_uppercase()).collect();
                            Methods::new(upper.iter().map(String::as_str))
                        }),
                        paths: r
                            .paths
                            .as_ref()
                            .map(|ps| ps.iter().map(|p| p.as_str().into()).collect()),
                        body_methods,
                        mcp: super::mcp::compile_rule(r, &mut mcp_hosts).map_err(|m| err(at, m))?,
                        llm,
                    });
                }
                c.exact = HostIndex::new(exact);
                c.wildcard = HostIndex::new(wildcard);
                intents.insert(name.clone(), c);
            }
        }
        Ok(Catalog {
            intents,
            default_mode,
            mcp_hosts,
            llm_hosts,
        })
    }
}
