//! Compiling the catalog as written (config and data files) into the matcher's index, refusing
//! what cannot be matched with the place it was written.

use std::collections::{BTreeMap, HashMap};

use super::super::pattern::{host_pattern, path_pattern};
use super::{Catalog, CatalogError, Compiled, HostIndex, Methods, Rule, bodyless_bit};
use crate::config::{IntentSpec, Mode, RuleProtocol};

/// Catalogs with more intents than this are compiled on several threads.
const PARALLEL_MIN: usize = 512;
/// At most this many threads compile at once.
const MAX_THREADS: usize = 4;

/// What compiling a run of intents gives: the intents and the hosts their MCP and LLM rules name.
#[derive(Default)]
struct Part {
    intents: Vec<(String, Compiled)>,
    mcp: super::mcp::McpHosts,
    llm: super::llm::LlmHosts,
}

type Entry<'a> = (&'a String, &'a String, &'a IntentSpec);

impl Catalog {
    /// Compiles catalogs, each with the place it was written (for errors). An intent defined
    /// twice is refused. The first fault in catalog order is the one reported, however many
    /// threads compiled.
    pub fn compile<M: std::borrow::Borrow<BTreeMap<String, IntentSpec>>>(
        sources: &[(String, M)],
        default_mode: Mode,
    ) -> Result<Self, CatalogError> {
        // 1. Every name once and not empty, up to the first that is not.
        let mut origin_of: HashMap<&str, &str> = HashMap::new();
        let mut entries: Vec<Entry> = Vec::new();
        let mut name_fault = None;
        'sources: for (origin, catalog) in sources {
            for (name, spec) in catalog.borrow() {
                let msg = match origin_of.insert(name, origin) {
                    Some(first) => format!("already defined in {first}"),
                    None if name.trim().is_empty() => "an intent needs a name".into(),
                    None => {
                        entries.push((origin, name, spec));
                        continue;
                    }
                };
                name_fault = Some(CatalogError {
                    origin: origin.clone(),
                    intent: name.clone(),
                    rule: None,
                    msg,
                });
                break 'sources;
            }
        }
        // 2. The intents before it compiled; a fault among them comes first.
        let parts = compile_parts(&entries)?;
        if let Some(fault) = name_fault {
            return Err(fault);
        }
        let mut catalog = Catalog {
            entries: Vec::with_capacity(entries.len()),
            intents: super::names::NameMap::with_capacity_and_hasher(
                entries.len(),
                Default::default(),
            ),
            id: super::known::next_id(),
            default_mode,
            mcp_hosts: Default::default(),
            llm_hosts: Default::default(),
            protocols: false,
        };
        for part in parts {
            for (name, c) in part.intents {
                catalog.intents.insert(name, catalog.entries.len());
                catalog.entries.push(c);
            }
            catalog.mcp_hosts.merge(part.mcp);
            catalog.llm_hosts.merge(part.llm);
        }
        catalog.protocols = !(catalog.mcp_hosts.is_empty() && catalog.llm_hosts.is_empty());
        Ok(catalog)
    }
}

/// `entries` compiled in runs of consecutive intents, on up to `MAX_THREADS` threads when there
/// are many; the first fault in catalog order.
fn compile_parts(entries: &[Entry]) -> Result<Vec<Part>, CatalogError> {
    let threads = if entries.len() < PARALLEL_MIN {
        1
    } else {
        MAX_THREADS
    };
    crate::runs::in_runs(entries, threads, "catalog-compile", compile_run)
}

/// One run of intents compiled in order, stopping at the first fault.
fn compile_run(run: &[Entry]) -> Result<Part, CatalogError> {
    let mut part = Part::default();
    for &(origin, name, spec) in run {
        let c = compile_intent(origin, name, spec, &mut part)?;
        part.intents.push((name.clone(), c));
    }
    Ok(part)
}

/// One intent compiled; the hosts of its MCP and LLM rules join `hosts`.
fn compile_intent(
    origin: &str,
    name: &str,
    spec: &IntentSpec,
    hosts: &mut Part,
) -> Result<Compiled, CatalogError> {
    let err = |rule, msg| CatalogError {
        origin: origin.to_string(),
        intent: name.to_string(),
        rule,
        msg,
    };
    let (mut exact, mut wildcard) = (Vec::new(), Vec::new());
    let mut c = Compiled {
        name: std::sync::Arc::from(name),
        tag: http::HeaderValue::from_str(name).ok(),
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
                crate::llm::LlmRule::new(r.provider, r.llm.as_deref()).map_err(|m| err(at, m))?,
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
                hosts.llm.add(wild, &name, r.provider);
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
            Some(spec) => Some(std::sync::Arc::new(spec.compile().map_err(|m| err(at, m))?)),
            None => None,
        };
        c.rules.push(Rule {
            inject,
            ports: r.ports.as_deref().map(Box::from),
            methods: r.methods.as_ref().map(|ms| {
                let upper: Vec<String> = ms.iter().map(|m| m.trim().to_ascii_uppercase()).collect();
                Methods::new(upper.iter().map(String::as_str))
            }),
            paths: r
                .paths
                .as_ref()
                .map(|ps| ps.iter().map(|p| p.as_str().into()).collect()),
            body_methods,
            mcp: super::mcp::compile_rule(r, &mut hosts.mcp).map_err(|m| err(at, m))?,
            llm,
        });
    }
    c.exact = HostIndex::new(exact);
    c.wildcard = HostIndex::new(wildcard);
    Ok(c)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use crate::config::{IntentSpec, Mode};
    use crate::llm::LlmProvider;
    use crate::policy::Catalog;

    type Intents = BTreeMap<String, IntentSpec>;

    /// `n` intents `svc-NNNN` (more than `PARALLEL_MIN`: compiled on several threads), each
    /// allowing its own host, with `changes` (name, YAML spec) put in.
    fn many(n: usize, changes: &[(&str, &str)]) -> Intents {
        let mut m: Intents = (0..n)
            .map(|i| {
                let spec = format!("{{allow: [{{hosts: [api.svc-{i:04}.example]}}]}}");
                (format!("svc-{i:04}"), serde_yaml::from_str(&spec).unwrap())
            })
            .collect();
        for (name, spec) in changes {
            m.insert(name.to_string(), serde_yaml::from_str(spec).unwrap());
        }
        m
    }

    fn fault(sources: &[(String, Intents)]) -> String {
        Catalog::compile(sources, Mode::Enforce)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn the_first_fault_in_catalog_order_is_reported_however_many_threads_compile() {
        const { assert!(1200 > super::PARALLEL_MIN) };
        let late = ("svc-1100", "{allow: [{hosts: []}]}");
        let early = ("svc-0900", "{allow: [{hosts: ['a*b.example']}]}");
        let e = fault(&[("a".into(), many(1200, &[early, late]))]);
        assert!(e.contains("svc-0900"), "{e}");
        let e = fault(&[("a".into(), many(1200, &[late]))]);
        assert!(e.contains("svc-1100"), "{e}");
        // A name defined again in a later catalog: after every fault of the earlier one.
        let again = many(1, &[]);
        let e = fault(&[("a".into(), many(1200, &[])), ("b".into(), again.clone())]);
        assert!(e.contains("already defined in a"), "{e}");
        let e = fault(&[("a".into(), many(1200, &[late])), ("b".into(), again)]);
        assert!(e.contains("svc-1100"), "{e}");
    }

    #[test]
    fn hosts_of_mcp_and_llm_rules_in_every_run_are_known() {
        let llm = |host: &str, provider: &str| {
            format!("{{allow: [{{hosts: [{host}], protocol: llm, provider: {provider}}}]}}")
        };
        let (first, last) = (
            llm("early.example", "anthropic"),
            llm("late.example", "anthropic"),
        );
        let other = llm("early.example", "openai");
        let mcp = "{allow: [{hosts: [tools.example], protocol: mcp}]}";
        let c = Catalog::compile(
            &[(
                "a".into(),
                many(
                    1200,
                    &[("svc-0001", &first), ("svc-1150", &last), ("svc-1199", mcp)],
                ),
            )],
            Mode::Enforce,
        )
        .unwrap();
        assert_eq!(c.intents.len(), 1200);
        assert!(c.speaks_mcp("tools.example"));
        let provider = |host: &str| c.llm_api(host, "/v1/messages").map(|(p, _)| p);
        assert_eq!(provider("late.example"), Some(LlmProvider::Anthropic));
        assert_eq!(provider("early.example"), Some(LlmProvider::Anthropic));
        // The same host with two providers in two runs: as when compiled in one run.
        let both = [("svc-0001", first.as_str()), ("svc-1190", other.as_str())];
        let threads = Catalog::compile(&[("a".into(), many(1200, &both))], Mode::Enforce).unwrap();
        let one: Intents = many(1200, &both)
            .into_iter()
            .filter(|(n, _)| both.iter().any(|b| b.0 == n))
            .collect();
        let one = Catalog::compile(&[("a".into(), one)], Mode::Enforce).unwrap();
        for path in ["/v1/messages", "/v1/chat/completions"] {
            let api = |c: &Catalog| c.llm_api("early.example", path);
            assert_eq!(api(&threads), api(&one), "{path}");
        }
        // ... which is not what one provider alone gives (the conflict is seen).
        assert_ne!(
            provider("early.example"),
            one.llm_api("early.example", "/v1/chat/completions")
                .map(|(p, _)| p)
        );
    }
}
