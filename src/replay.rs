//! `intentgate replay`: re-decides recorded calls (audit logs) under a candidate configuration and
//! policy, offline, and reports what the change would newly deny or newly allow, so a CI job can
//! gate a policy pull request. The base is what the records say was decided, or a second
//! configuration (`--base`) decided the same way. Nothing is resolved or sent: destinations are
//! as recorded. A call whose decision could hinge on something records do not carry (its query,
//! headers or body, a resolved address, a token's claims, the clock) is counted as undecidable,
//! never guessed.

mod changes;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use crate::audit::{AuditAgent, AuditRecord};
use crate::config::{self, Config};
use crate::identity::{Agent, OwnerSource};
use crate::intent::{Intent, IntentSource};
use crate::policy::{ConnectionFacts, PolicySet, RequestFacts};
use crate::vocab::{ConnectionMode, Protocol, Scheme, Verdict};

pub use changes::Format;
use changes::{Change, Changes, Side};

/// What `intentgate replay` was asked.
pub struct Options {
    /// Audit logs (JSON lines), `-` for stdin.
    pub audit: Vec<PathBuf>,
    /// The configuration to judge.
    pub candidate: PathBuf,
    /// The configuration to compare with; `None`: the recorded decisions.
    pub base: Option<PathBuf>,
    pub format: Format,
}

/// Input fields records do not carry: a policy reading one may decide a replayed call
/// differently from the live one for that reason alone.
const UNRECORDED: &[&str] = &[
    "intent.claims",
    "intent.token",
    "request.protocol",
    "request.query",
    "request.headers",
    "request.body",
    "request.body_truncated",
    "destination.ip",
    "destination.class",
    "connection.protocol",
    "connection.sni",
    "mcp",
    "llm",
    "time",
];

/// One configuration, its policy compiled per agent namespace (namespace modules differ) on
/// first use.
struct Judge {
    path: PathBuf,
    config: Config,
    sets: HashMap<Option<String>, Loaded>,
}

struct Loaded {
    policy: PolicySet,
    /// The `UNRECORDED` fields its modules read.
    unrecorded: Vec<&'static str>,
}

impl Judge {
    fn open(path: &Path) -> Result<Self, String> {
        let mut loaded = config::load(Some(path)).map_err(|e| e.to_string())?;
        if loaded.config.policy.bundle_url.is_some() {
            return Err(format!(
                "{}: policy.bundle_url: replay decides offline, from local files; point it at a \
                 configuration whose policy.paths hold the bundle's contents",
                path.display()
            ));
        }
        // One engine is enough: replay decides on one thread.
        loaded.config.limits.workers = 1;
        let mut judge = Judge {
            path: path.to_path_buf(),
            config: loaded.config,
            sets: HashMap::new(),
        };
        // The configuration's own namespace compiled now, so a broken policy is reported before
        // any record is read.
        let ns = judge.config.agent.namespace.clone();
        judge.set(ns.as_deref())?;
        Ok(judge)
    }

    fn set(&mut self, namespace: Option<&str>) -> Result<&Loaded, String> {
        let key = namespace.map(str::to_string);
        if !self.sets.contains_key(&key) {
            let agent = Agent {
                id: "replay".into(),
                namespace: key.clone(),
                service_account: None,
                owner: None,
                owner_source: None,
                spiffe_id: None,
                labels: BTreeMap::new(),
                expires: None,
            };
            let policy = PolicySet::load_with(&self.config, None, &agent, false)
                .map_err(|e| format!("{}: invalid policy: {e}", self.path.display()))?;
            let unrecorded = policy
                .reads_fields()
                .filter(|f| UNRECORDED.contains(f))
                .collect();
            self.sets.insert(key.clone(), Loaded { policy, unrecorded });
        }
        self.sets
            .get(&key)
            .ok_or_else(|| "policy set missing".to_string())
    }

    /// The policy's answer to a recorded call, or the unrecorded fields it would need.
    fn decide(&mut self, call: &Recorded<'_>) -> Result<Result<Side, Vec<&'static str>>, String> {
        let set = self.set(call.agent.namespace.as_deref())?;
        if !set.unrecorded.is_empty() {
            return Ok(Err(set.unrecorded.clone()));
        }
        let d = set.policy.decide(call.agent, &call.intent, &call.facts());
        Ok(Ok(Side {
            verdict: d.verdict(),
            code: d.code.filter(|_| !d.allow).map(|c| c.as_str()),
            reason: d.reasons.into_iter().next().unwrap_or_default(),
        }))
    }
}

/// A record turned back into what the proxy decided on.
struct Recorded<'a> {
    rec: &'a AuditRecord,
    agent: &'a Agent,
    intent: Intent,
}

/// The identities of the records seen so far, by agent id (built once per agent, not per call).
#[derive(Default)]
struct Agents(HashMap<String, Agent>);

impl Agents {
    fn of(&mut self, a: &AuditAgent) -> &Agent {
        let known = self.0.get(&a.id).is_some_and(|k| {
            k.namespace == a.namespace
                && k.service_account == a.service_account
                && k.owner == a.owner
                && k.spiffe_id == a.spiffe_id
        });
        if !known {
            let agent = Agent {
                id: a.id.clone(),
                namespace: a.namespace.clone(),
                service_account: a.service_account.clone(),
                owner: a.owner.clone(),
                owner_source: a.owner.as_ref().map(|_| OwnerSource::Config),
                spiffe_id: a.spiffe_id.clone(),
                // Records do not carry labels.
                labels: BTreeMap::new(),
                // Expiry is a matter of when, not of the policy: not replayed.
                expires: None,
            };
            self.0.insert(a.id.clone(), agent);
        }
        &self.0[&a.id]
    }
}

impl<'a> Recorded<'a> {
    /// `None` for a call refused before the policy was asked (it has no mode).
    fn of(rec: &'a AuditRecord, agents: &'a mut Agents) -> Option<Self> {
        rec.mode?;
        let intent = Intent {
            name: rec.intent.name.clone(),
            task: rec.intent.task.clone(),
            source: rec.intent.source.unwrap_or(IntentSource::None),
            verified: rec.intent.verified,
            claims: serde_json::Map::new(),
            token: None,
            known: None,
        };
        Some(Recorded {
            rec,
            agent: agents.of(&rec.agent),
            intent,
        })
    }

    fn facts(&self) -> RequestFacts<'_> {
        let rec = self.rec;
        let scheme = rec.scheme.unwrap_or(Scheme::Http);
        let mode = rec.connection.unwrap_or(ConnectionMode::Forward);
        let connect = rec.method == "CONNECT";
        RequestFacts {
            id: "replay",
            protocol: match scheme {
                Scheme::Tcp if connect => Protocol::Tcp,
                Scheme::Tls if connect => Protocol::Tls,
                _ => Protocol::Http11,
            },
            method: &rec.method,
            scheme,
            host: &rec.host,
            port: rec.port,
            path: (!connect).then_some(rec.path.as_str()),
            query: None,
            headers: None,
            connection: ConnectionFacts {
                mode,
                sni: None,
                intercepted: mode == ConnectionMode::Intercepted
                    || (!connect && scheme == Scheme::Https),
            },
            destination: None,
            body: None,
            mcp: None,
            llm: None,
        }
    }

    /// What the record says the policy answered.
    fn as_recorded(&self) -> Side {
        let rec = self.rec;
        Side {
            verdict: match rec.code {
                None => Verdict::Allow,
                Some(_) if rec.decision == Some(Verdict::WouldDeny) => Verdict::WouldDeny,
                Some(_) => Verdict::Deny,
            },
            code: rec.code.map(|c| c.as_str()),
            reason: rec.reasons.first().cloned().unwrap_or_default(),
        }
    }
}

/// Runs `intentgate replay`. Exit codes (docs/policy.md "Replay"): 0 no change, 1 new denials,
/// 3 new grants, 4 both, 2 a configuration, policy or log that cannot be used.
pub fn main(opts: &Options) -> ExitCode {
    let started = Instant::now();
    let changes = match replay(opts) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("intentgate: {e}");
            return ExitCode::from(2);
        }
    };
    changes.print(opts.format, started.elapsed());
    match (
        changes.count(Change::NewDenial) > 0,
        changes.count(Change::NewGrant) > 0,
    ) {
        (false, false) => ExitCode::SUCCESS,
        (true, false) => ExitCode::from(1),
        (false, true) => ExitCode::from(3),
        (true, true) => ExitCode::from(4),
    }
}

/// Decides every record of the logs on both sides.
fn replay(opts: &Options) -> Result<Changes, String> {
    let mut candidate = Judge::open(&opts.candidate)?;
    let mut base = opts.base.as_deref().map(Judge::open).transpose()?;
    let mut changes = Changes::new(&opts.candidate, opts.base.as_deref());
    let mut unreadable = 0;
    let mut agents = Agents::default();
    for path in &opts.audit {
        let each = |rec: &AuditRecord| -> Result<(), String> {
            let Some(call) = Recorded::of(rec, &mut agents) else {
                changes.not_decided += 1;
                return Ok(());
            };
            let before = match &mut base {
                None => call.as_recorded(),
                Some(b) => match b.decide(&call)? {
                    Ok(side) => side,
                    Err(fields) => {
                        changes.undecidable(fields);
                        return Ok(());
                    }
                },
            };
            match candidate.decide(&call)? {
                Ok(after) => changes.add(rec, before, after),
                Err(fields) => changes.undecidable(fields),
            }
            Ok(())
        };
        read(path, &mut unreadable, each).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    changes.unreadable = unreadable;
    for judge in std::iter::once(&candidate).chain(base.as_ref()) {
        for set in judge.sets.values() {
            let stats = set.policy.cache_stats();
            changes.cache.0 += stats.hits;
            changes.cache.1 += stats.misses;
        }
    }
    Ok(changes)
}

/// Calls `each` with every record of one log (or stdin for `-`); a line that is no record is
/// counted in `unreadable`.
fn read(
    path: &Path,
    unreadable: &mut u64,
    mut each: impl FnMut(&AuditRecord) -> Result<(), String>,
) -> Result<(), String> {
    let input: Box<dyn Read> = if path == Path::new("-") {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(File::open(path).map_err(|e| format!("cannot read: {e}"))?)
    };
    let mut input = BufReader::with_capacity(1 << 20, input);
    let mut line = Vec::with_capacity(4096);
    loop {
        line.clear();
        let len = input
            .read_until(b'\n', &mut line)
            .map_err(|e| format!("cannot read: {e}"))?;
        if len == 0 {
            return Ok(());
        }
        let text = line.trim_ascii();
        if text.is_empty() {
            continue;
        }
        match serde_json::from_slice::<AuditRecord>(text) {
            Ok(rec) => each(&rec)?,
            Err(_) => *unreadable += 1,
        }
    }
}

#[cfg(test)]
mod tests;
