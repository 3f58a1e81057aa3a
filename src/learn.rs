//! Learn mode: from audit records (of one `run --learn` or `serve --learn`, or collected across a
//! fleet), the intent catalog that would have allowed exactly the calls that were forwarded —
//! per intent as declared at the time, one rule per host:port and method set with the paths seen
//! with exactly those methods. Denied calls are listed as comments, never granted; paths are
//! generalised (`/tickets/*`) only when asked (`--generalise`). A reviewed starting point.

mod paths;
mod render;
mod rules;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::audit::{AuditLog, AuditRecord, Outcome};
use crate::config::IntentSpec;
use rules::{Dest, Rule, rules};

/// The intent name given to calls that declared none.
pub const UNNAMED: &str = "learned";

/// How to learn.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Options {
    /// `--generalise MIN`: an id-like path segment (numeric, UUID, long hex) becomes `*` where at
    /// least MIN distinct paths of the same shape were seen. `None`: paths exactly as seen.
    pub(crate) generalise: Option<u32>,
}

/// What was seen under one intent.
#[derive(Default)]
struct Seen {
    calls: usize,
    agents: BTreeSet<String>,
    dests: BTreeMap<(String, u16), Dest>,
}

/// A call that was not forwarded, listed in the output and never granted.
#[derive(Default)]
struct Refused {
    calls: usize,
    /// The first reason (or error code) given.
    reason: String,
}

/// One learned intent.
struct Learned {
    calls: usize,
    agents: BTreeSet<String>,
    rules: Vec<Rule>,
}

/// Everything learned from a set of records.
pub(crate) struct Catalog {
    intents: BTreeMap<String, Learned>,
    /// intent → (method, host:port, path) → the calls refused.
    refused: BTreeMap<String, BTreeMap<(String, String, String), Refused>>,
    /// Records that are not audit records of a call (missing fields, unknown words, no decision).
    unreadable: usize,
    opts: Options,
}

impl Catalog {
    /// Learns from `log`: rules from the calls that were forwarded, the rest listed.
    pub(crate) fn learn(log: &AuditLog, opts: Options) -> Self {
        let mut seen: BTreeMap<String, Seen> = BTreeMap::new();
        let mut refused: BTreeMap<String, BTreeMap<_, Refused>> = BTreeMap::new();
        let mut unreadable = log.unreadable;
        for r in &log.records {
            // The CONNECT of an intercepted tunnel: its requests are the calls.
            if r.opened_tunnel() {
                continue;
            }
            if r.decision.is_none() {
                unreadable += 1;
                continue;
            }
            let intent = r.intent.name.as_deref().unwrap_or(UNNAMED).to_string();
            // What the decision let go is learned (an upstream's failure included: the call was
            // made); what was refused, before or after the decision, is listed.
            match r.outcome() {
                Outcome::Allowed | Outcome::WouldBlock | Outcome::Failed => {
                    let s = seen.entry(intent).or_default();
                    s.calls += 1;
                    s.agents.insert(r.agent.id.clone());
                    let d = s.dests.entry((r.host.clone(), r.port)).or_default();
                    if let Some(m) = &r.mcp {
                        let tools = d.mcp_tools.get_or_insert_with(BTreeSet::new);
                        tools.extend(m.tool.iter().cloned());
                    }
                    if r.method == "CONNECT" || r.path.is_empty() {
                        d.opaque += 1;
                    } else {
                        d.paths
                            .entry(r.path.clone())
                            .or_default()
                            .insert(r.method.clone());
                    }
                }
                Outcome::Blocked => {
                    let key = (r.method.clone(), dest(&r.host, r.port), r.path.clone());
                    let e = refused.entry(intent).or_default().entry(key).or_default();
                    if e.calls == 0 {
                        e.reason = r
                            .reasons
                            .first()
                            .map(String::as_str)
                            .or(r.error.map(|c| c.as_str()))
                            .unwrap_or("refused")
                            .to_string();
                    }
                    e.calls += 1;
                }
            }
        }
        let intents = seen
            .into_iter()
            .map(|(name, s)| {
                let rules = s
                    .dests
                    .into_iter()
                    .flat_map(|(dest, d)| rules(dest, d, opts))
                    .collect();
                let l = Learned {
                    calls: s.calls,
                    agents: s.agents,
                    rules,
                };
                (name, l)
            })
            .collect();
        Catalog {
            intents,
            refused,
            unreadable,
            opts,
        }
    }

    /// Forwarded calls learned from, and calls refused (listed, not granted).
    pub(crate) fn counts(&self) -> (usize, usize) {
        let learned = self.intents.values().map(|l| l.calls).sum();
        let refused = self
            .refused
            .values()
            .flat_map(BTreeMap::values)
            .map(|r| r.calls)
            .sum();
        (learned, refused)
    }

    /// The catalog as YAML, with comments: what each rule stands for and the calls not granted.
    pub(crate) fn to_yaml(&self, source: &str) -> Result<String, String> {
        render::yaml(self, source)
    }

    /// One line for people: what was learned and where it went.
    pub(crate) fn outcome(&self, out: &Path) -> String {
        let (learned, refused) = self.counts();
        let mut s = format!(
            "learned {} intents from {learned} forwarded calls into {}",
            self.intents.len(),
            out.display()
        );
        if refused > 0 {
            s.push_str(&format!(
                "; {refused} refused calls are listed there as comments, not granted"
            ));
        }
        if self.unreadable > 0 {
            s.push_str(&format!(
                "; {} records were not calls and were skipped",
                self.unreadable
            ));
        }
        s
    }

    /// Writes the catalog to `out`.
    pub(crate) fn write(&self, out: &Path, source: &str) -> Result<(), String> {
        let text = self
            .to_yaml(source)
            .map_err(|e| format!("cannot write the learned catalog as YAML: {e}"))?;
        std::fs::write(out, text).map_err(|e| format!("cannot write {}: {e}", out.display()))
    }
}

impl Learned {
    fn spec(&self) -> IntentSpec {
        IntentSpec {
            description: format!("learned from {} calls; review before enforcing", self.calls),
            allow: self.rules.iter().map(|r| r.rule.clone()).collect(),
            ..IntentSpec::default()
        }
    }
}

/// `host:port`, an IPv6 address in brackets.
fn dest(host: &str, port: u16) -> String {
    crate::hostport::HostPort(host, port).to_string()
}

/// Learns from the records of this process (its `boot_id`) in `audit` and writes the catalog to
/// `out` (`serve --learn`).
pub(crate) fn write_learned(
    audit: &Path,
    out: &Path,
    source: &str,
    opts: Options,
) -> Result<Catalog, String> {
    let log = AuditLog::read(&[audit])?.of_this_process();
    let c = Catalog::learn(&log, opts);
    c.write(out, source)?;
    Ok(c)
}

/// A per-agent, per-intent count of what was seen, for people.
pub fn describe(records: &[AuditRecord]) -> String {
    #[derive(Default)]
    struct Counts {
        forwarded: usize,
        refused: usize,
        dests: BTreeSet<String>,
    }
    let mut counts: BTreeMap<(String, String), Counts> = BTreeMap::new();
    for r in records {
        if r.decision.is_none() || r.opened_tunnel() {
            continue;
        }
        let intent = r.intent.name.as_deref().unwrap_or(UNNAMED).to_string();
        let e = counts.entry((r.agent.id.clone(), intent)).or_default();
        if r.outcome() != Outcome::Blocked {
            e.forwarded += 1;
            e.dests.insert(dest(&r.host, r.port));
        } else {
            e.refused += 1;
        }
    }
    let mut out = String::new();
    for ((agent, intent), c) in counts {
        out.push_str(&format!(
            "  agent {agent}, intent {intent}: {} calls",
            c.forwarded
        ));
        if !c.dests.is_empty() {
            let dests: Vec<String> = c.dests.into_iter().collect();
            out.push_str(&format!(" to {}", dests.join(", ")));
        }
        if c.refused > 0 {
            out.push_str(&format!("; {} refused (not learned)", c.refused));
        }
        out.push('\n');
    }
    out
}
