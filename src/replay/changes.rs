//! What a replay found: the calls whose decision the candidate changes, grouped by agent, intent,
//! destination and the two answers, with counts; printed as text, JSON or Markdown.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;

use crate::audit::AuditRecord;
use crate::vocab::Verdict;

/// `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
    Markdown,
}

/// One side's answer to a call.
pub(super) struct Side {
    pub verdict: Verdict,
    pub code: Option<&'static str>,
    pub reason: String,
}

/// An answer as calls are grouped by it: the verdict and code (reasons often name the call's
/// own path, so one reason of the group is kept as its example).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Answer {
    verdict: Verdict,
    code: Option<&'static str>,
}

impl Answer {
    fn allows(self) -> bool {
        self.verdict == Verdict::Allow
    }

    fn json(self, reason: &str) -> serde_json::Value {
        json!({"decision": self.verdict.as_str(), "code": self.code, "reason": reason})
    }

    fn text(self, reason: &str) -> String {
        match self.code {
            None => self.verdict.as_str().to_string(),
            Some(c) => format!("{} {c}: {reason}", self.verdict.as_str()),
        }
    }
}

/// How the candidate changes a call's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Change {
    /// Allowed before, not allowed by the candidate (denied, or would-denied in monitor mode).
    NewDenial,
    /// Not allowed before, allowed by the candidate.
    NewGrant,
}

/// Calls changed the same way for the same agent, intent and destination.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    change: Change,
    agent: String,
    intent: Option<std::sync::Arc<str>>,
    host: String,
    port: u16,
    before: Answer,
    after: Answer,
}

struct Group {
    calls: u64,
    /// One call of the group, `METHOD path`, and its reasons before and after.
    example: String,
    reasons: [String; 2],
}

/// Everything a replay counted.
pub(super) struct Changes {
    candidate: PathBuf,
    base: Option<PathBuf>,
    /// Calls decided on both sides.
    pub decided: u64,
    /// Records of calls refused before the policy was asked (they have no decision to replay).
    pub not_decided: u64,
    /// Lines that are no audit record.
    pub unreadable: u64,
    /// Decisions answered from the decision cache, and evaluated.
    pub cache: (u64, u64),
    /// Calls a policy could decide only from fields records lack, and those fields.
    undecidable: u64,
    lacking: BTreeSet<&'static str>,
    /// Groups by a hash of their key (looked up without building the key: most calls of a
    /// replay that changes much fall into a group that exists).
    groups: HashMap<u64, Vec<(Key, Group)>>,
}

impl Changes {
    pub fn new(candidate: &Path, base: Option<&Path>) -> Self {
        Changes {
            candidate: candidate.to_path_buf(),
            base: base.map(Path::to_path_buf),
            decided: 0,
            not_decided: 0,
            unreadable: 0,
            cache: (0, 0),
            undecidable: 0,
            lacking: BTreeSet::new(),
            groups: HashMap::new(),
        }
    }

    pub fn undecidable(&mut self, fields: Vec<&'static str>) {
        self.undecidable += 1;
        self.lacking.extend(fields);
    }

    pub fn add(&mut self, rec: &AuditRecord, before: Side, after: Side) {
        self.decided += 1;
        let answer = |s: &Side| Answer {
            verdict: s.verdict,
            code: s.code,
        };
        let (b, a) = (answer(&before), answer(&after));
        let change = match (b.allows(), a.allows()) {
            (true, false) => Change::NewDenial,
            (false, true) => Change::NewGrant,
            _ => return,
        };
        let mut h = DefaultHasher::new();
        (
            change,
            &rec.agent.id,
            &rec.intent.name,
            &rec.host,
            rec.port,
            b,
            a,
        )
            .hash(&mut h);
        let bucket = self.groups.entry(h.finish()).or_default();
        let same = |k: &Key| {
            (k.change, k.port, k.before, k.after) == (change, rec.port, b, a)
                && k.agent == rec.agent.id
                && k.intent == rec.intent.name
                && k.host == rec.host
        };
        if let Some((_, g)) = bucket.iter_mut().find(|(k, _)| same(k)) {
            g.calls += 1;
            return;
        }
        let key = Key {
            change,
            agent: rec.agent.id.clone(),
            intent: rec.intent.name.clone(),
            host: rec.host.clone(),
            port: rec.port,
            before: b,
            after: a,
        };
        let group = Group {
            calls: 1,
            example: format!("{} {}", rec.method, rec.path),
            reasons: [before.reason, after.reason],
        };
        bucket.push((key, group));
    }

    /// Calls changed this way.
    pub fn count(&self, change: Change) -> u64 {
        self.of(change).map(|(_, g)| g.calls).sum()
    }

    /// The groups changed this way, the largest first.
    fn of(&self, change: Change) -> impl Iterator<Item = (&Key, &Group)> {
        let mut groups: Vec<_> = self
            .groups
            .values()
            .flatten()
            .filter(|(k, _)| k.change == change)
            .map(|(k, g)| (k, g))
            .collect();
        groups.sort_by(|(ka, ga), (kb, gb)| gb.calls.cmp(&ga.calls).then_with(|| ka.cmp(kb)));
        groups.into_iter()
    }

    fn base_name(&self) -> String {
        self.base.as_ref().map_or_else(
            || "the recorded decisions".to_string(),
            |b| b.display().to_string(),
        )
    }

    pub fn print(&self, format: Format, took: Duration) {
        let out = match format {
            Format::Text => self.text(took),
            Format::Json => serde_json::to_string_pretty(&self.json()).unwrap_or_default() + "\n",
            Format::Markdown => self.markdown(),
        };
        print!("{out}");
    }

    fn summary(&self, took: Duration) -> String {
        let rate = self.decided as f64 / took.as_secs_f64().max(1e-9);
        format!(
            "replayed {} calls under {} against {} in {:.1} s ({:.0} calls/s, {} decisions from the cache, {} evaluated): \
             {} new denials, {} new grants; {} undecidable, {} not decided by policy, {} unreadable lines",
            self.decided,
            self.candidate.display(),
            self.base_name(),
            took.as_secs_f64(),
            rate,
            self.cache.0,
            self.cache.1,
            self.count(Change::NewDenial),
            self.count(Change::NewGrant),
            self.undecidable,
            self.not_decided,
            self.unreadable,
        )
    }

    fn lacking_note(&self) -> Option<String> {
        (self.undecidable > 0).then(|| {
            format!(
                "{} calls not replayed: the policy reads {}, which audit records do not carry",
                self.undecidable,
                self.lacking.iter().copied().collect::<Vec<_>>().join(", ")
            )
        })
    }

    fn text(&self, took: Duration) -> String {
        let mut s = String::new();
        for (change, title) in [
            (Change::NewDenial, "New denials"),
            (Change::NewGrant, "New grants"),
        ] {
            let _ = writeln!(s, "{title}: {} calls", self.count(change));
            for (k, g) in self.of(change) {
                let _ = writeln!(
                    s,
                    "  {} calls  agent {}  intent {}  {}:{}  (e.g. {})\n    before: {}\n    after:  {}",
                    g.calls,
                    k.agent,
                    k.intent.as_deref().unwrap_or("(none)"),
                    k.host,
                    k.port,
                    g.example,
                    k.before.text(&g.reasons[0]),
                    k.after.text(&g.reasons[1])
                );
            }
        }
        if let Some(n) = self.lacking_note() {
            let _ = writeln!(s, "Warning: {n}");
        }
        let _ = writeln!(s, "{}", self.summary(took));
        s
    }

    pub fn json(&self) -> serde_json::Value {
        let groups = |change| {
            self.of(change)
                .map(|(k, g)| {
                    json!({
                        "agent": k.agent, "intent": k.intent, "host": k.host, "port": k.port,
                        "calls": g.calls, "example": g.example,
                        "before": k.before.json(&g.reasons[0]), "after": k.after.json(&g.reasons[1]),
                    })
                })
                .collect::<Vec<_>>()
        };
        json!({
            "candidate": self.candidate.display().to_string(),
            "base": self.base_name(),
            "decided": self.decided,
            "new_denials": {"calls": self.count(Change::NewDenial), "groups": groups(Change::NewDenial)},
            "new_grants": {"calls": self.count(Change::NewGrant), "groups": groups(Change::NewGrant)},
            "undecidable": {"calls": self.undecidable, "lacking": self.lacking},
            "not_decided": self.not_decided,
            "unreadable": self.unreadable,
        })
    }

    fn markdown(&self) -> String {
        let mut s = format!(
            "### intentgate replay: `{}` against {}\n\n",
            self.candidate.display(),
            self.base_name()
        );
        let _ = writeln!(
            s,
            "{} calls replayed: **{} new denials**, **{} new grants**.\n",
            self.decided,
            self.count(Change::NewDenial),
            self.count(Change::NewGrant)
        );
        for (change, title) in [
            (Change::NewDenial, "New denials"),
            (Change::NewGrant, "New grants"),
        ] {
            if self.count(change) == 0 {
                continue;
            }
            let _ = writeln!(
                s,
                "#### {title}\n\n| calls | agent | intent | destination | example | before | after |\n|---:|---|---|---|---|---|---|"
            );
            for (k, g) in self.of(change) {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {}:{} | `{}` | {} | {} |",
                    g.calls,
                    cell(&k.agent),
                    cell(k.intent.as_deref().unwrap_or("(none)")),
                    cell(&k.host),
                    k.port,
                    g.example.replace('`', "'"),
                    cell(&k.before.text(&g.reasons[0])),
                    cell(&k.after.text(&g.reasons[1]))
                );
            }
            s.push('\n');
        }
        if let Some(n) = self.lacking_note() {
            let _ = writeln!(s, "> **Warning:** {n}.\n");
        }
        s
    }
}

/// A Markdown table cell: pipes escaped, one line.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}
