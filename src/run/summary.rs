//! The summary `run` prints when the agent exits: per intent and destination, calls allowed,
//! blocked, would-block (monitor) and failed (let go, but the upstream side gave no answer:
//! 502/504), with the first reason for each one not allowed; who the
//! agent's owner is and where that came from; and warnings when calls went around the proxy
//! (where that can be seen: `--isolate` counts them) or no call came through at all.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::audit::{AuditRecord, Outcome};
use crate::identity::{Agent, OwnerSource};
use crate::vocab::ErrorCode;

/// How `--isolate` ran the command (see `run::isolate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Isolation {
    /// A network namespace; TCP that ignores the proxy is redirected to it.
    Root,
    /// A user + network namespace; whatever ignores the proxy has no route.
    Rootless,
}

/// What `run` knows besides the audit records.
#[derive(Debug, Default)]
pub struct Context {
    /// The agent the calls were made as.
    pub agent: Option<Agent>,
    pub isolation: Option<Isolation>,
    /// Under `--isolate`: packets that had no way out (not through the proxy).
    pub refused: Option<u64>,
}

/// Counts for one intent and destination.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Line {
    pub allowed: usize,
    pub blocked: usize,
    pub would_block: usize,
    pub failed: usize,
    /// The reason the first call not allowed (blocked, would-block or failed) got.
    pub first_reason: Option<String>,
}

/// The whole run.
#[derive(Debug, Default, Serialize)]
pub struct Summary {
    pub command: Vec<String>,
    pub exit_code: i32,
    pub audit_log: String,
    pub calls: usize,
    pub allowed: usize,
    pub blocked: usize,
    pub would_block: usize,
    /// Calls the decision let go that the upstream side failed (no answer: 502/504).
    pub failed: usize,
    /// intent → "host:port" → counts.
    pub intents: BTreeMap<String, BTreeMap<String, Line>>,
    pub agent: Option<String>,
    pub owner: Option<String>,
    pub owner_source: Option<OwnerSource>,
    pub isolation: Option<Isolation>,
    /// Calls that ignored the proxy variables and reached intentgate only because `--isolate`
    /// (as root) redirected them (`connection: transparent`).
    pub redirected: usize,
    /// Under `--isolate`: connection attempts, datagrams and DNS queries refused for not going
    /// through the proxy (the kernel's `OutNoRoutes` in the child's namespace).
    pub refused_outside_proxy: Option<u64>,
    pub warnings: Vec<String>,
}

impl Summary {
    /// Aggregates this run's audit records (the CONNECT of an intercepted tunnel is not a call:
    /// the requests inside are).
    pub fn from_records(records: &[AuditRecord]) -> Self {
        let mut s = Summary::default();
        for r in records.iter().filter(|r| !r.opened_tunnel()) {
            let intent = r.intent.name.as_deref().unwrap_or("(none)").to_string();
            let dest = crate::hostport::HostPort(&r.host, r.port).to_string();
            let line = s
                .intents
                .entry(intent)
                .or_default()
                .entry(dest)
                .or_default();
            s.calls += 1;
            if r.connection == Some(crate::vocab::ConnectionMode::Transparent) {
                s.redirected += 1;
            }
            let outcome = r.outcome();
            let (mine, all) = match outcome {
                Outcome::Allowed => (&mut line.allowed, &mut s.allowed),
                Outcome::WouldBlock => (&mut line.would_block, &mut s.would_block),
                Outcome::Blocked => (&mut line.blocked, &mut s.blocked),
                Outcome::Failed => (&mut line.failed, &mut s.failed),
            };
            *mine += 1;
            *all += 1;
            if outcome != Outcome::Allowed && line.first_reason.is_none() {
                let reason = r.reasons.first().map(String::as_str);
                let code = r.error.map(ErrorCode::as_str);
                // A failure's own code says more than the decision's reason that let it go.
                let reason = match outcome {
                    Outcome::Failed => code.or(reason),
                    _ => reason.or(code),
                };
                line.first_reason = Some(reason.unwrap_or("refused").to_string());
            }
        }
        s
    }

    /// Adds who the agent is and what isolation saw, and the warnings that follow from it.
    pub fn add_context(&mut self, ctx: Context) {
        if let Some(a) = &ctx.agent {
            self.agent = Some(a.id.clone());
            self.owner.clone_from(&a.owner);
            self.owner_source = a.owner_source;
        }
        self.isolation = ctx.isolation;
        self.refused_outside_proxy = ctx.refused;
        let refused = ctx.refused.unwrap_or(0);
        if refused > 0 {
            self.warnings.push(format!(
                "{refused} connection attempts, datagrams or DNS queries did not go through \
                 intentgate and were refused by --isolate (they had no route out)"
            ));
        }
        if self.redirected > 0 {
            self.warnings.push(format!(
                "{} calls ignored the proxy variables; --isolate redirected them to intentgate, \
                 which decided them (connection: transparent)",
                self.redirected
            ));
        }
        if self.calls == 0 {
            self.warnings.push(match (ctx.isolation, refused) {
                (Some(_), 0) => "the command made no network call at all".to_string(),
                (Some(_), _) => "no call went through intentgate: the command's calls ignored \
                                 the proxy variables and were refused"
                    .to_string(),
                (None, _) => "no call went through intentgate: if the command made network \
                              calls, they ignored the proxy variables (e.g. Node.js before 24) \
                              and went around it, unseen; --isolate would stop and count them"
                    .to_string(),
            });
        }
    }

    /// The text printed to stderr.
    pub fn render(&self) -> String {
        let mut out = format!(
            "intentgate: `{}` exited with {}; {} calls: {} allowed, {} blocked, {} would-block, \
             {} failed\n",
            self.command.join(" "),
            self.exit_code,
            self.calls,
            self.allowed,
            self.blocked,
            self.would_block,
            self.failed
        );
        if let Some(agent) = &self.agent {
            let owner = match (&self.owner, self.owner_source) {
                (Some(o), Some(from)) => format!("owner {o} ({})", from.describe()),
                _ => "no owner".to_string(),
            };
            out.push_str(&format!("  agent {agent}, {owner}\n"));
        }
        for w in &self.warnings {
            out.push_str(&format!("  warning: {w}\n"));
        }
        for (intent, dests) in &self.intents {
            out.push_str(&format!("  intent {intent}\n"));
            for (dest, l) in dests {
                out.push_str(&format!(
                    "    {dest:<32} allowed {:<4} blocked {:<4} would-block {:<4} failed {:<4}",
                    l.allowed, l.blocked, l.would_block, l.failed
                ));
                if let Some(r) = &l.first_reason {
                    out.push_str(&format!(" first: {r}"));
                }
                out.push('\n');
            }
        }
        out.push_str(&format!("  audit log: {}\n", self.audit_log));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::Verdict;

    #[test]
    fn destinations_print_ipv6_hosts_in_brackets() {
        let rec = |host: &str| AuditRecord {
            method: "GET".into(),
            host: host.into(),
            port: 8080,
            decision: Some(Verdict::Allow),
            ..AuditRecord::default()
        };
        let s = Summary::from_records(&[rec("::1"), rec("127.0.0.1")]);
        let dests: Vec<_> = s.intents["(none)"].keys().cloned().collect();
        assert_eq!(dests, ["127.0.0.1:8080", "[::1]:8080"]);
    }
}
