//! What the report counts, built one record at a time in bounded memory: every table is a
//! `Counter` with a cap (keys past it are counted together as "other"), the timeline coarsens
//! its buckets when it grows, and a record's strings are copied only the first time a key is
//! seen.

use std::collections::{BTreeSet, HashMap, HashSet};

use std::sync::Arc;

use crate::audit::{AuditAgent, AuditIntent, AuditLog, AuditRecord};
use crate::vocab::{ConnectionMode, Verdict};

use super::record::{Decision, Record, epoch_secs};

/// Distinct keys kept per table; more are counted as "other".
const CAP: usize = 5_000;
/// Distinct (series, bucket) pairs kept before the timeline's buckets are made wider.
const TIMELINE_CAP: usize = 100_000;
/// Distinct calls kept for the learn suggestions.
const LEARN_CAP: usize = 20_000;
/// Bucket widths in seconds, each a multiple of the one before (wider ones double).
pub(crate) const WIDTHS: [i64; 8] = [60, 300, 900, 3600, 10_800, 21_600, 86_400, 604_800];
/// Separates the parts of a key.
const SEP: char = '\u{1f}';

/// Counts by a key of several strings, at most `CAP` of them.
pub(crate) struct Counter<T> {
    map: HashMap<Box<str>, T>,
    pub(crate) other: T,
    scratch: String,
}

impl<T: Default> Default for Counter<T> {
    fn default() -> Self {
        Counter {
            map: HashMap::new(),
            other: T::default(),
            scratch: String::new(),
        }
    }
}

impl<T: Default> Counter<T> {
    /// The count of `parts` (of "other" once the table is full).
    pub(crate) fn at(&mut self, parts: &[&str]) -> &mut T {
        self.scratch.clear();
        for (i, p) in parts.iter().enumerate() {
            if i > 0 {
                self.scratch.push(SEP);
            }
            self.scratch.push_str(p);
        }
        if !self.map.contains_key(self.scratch.as_str()) {
            if self.map.len() >= CAP {
                return &mut self.other;
            }
            self.map.insert(self.scratch.as_str().into(), T::default());
        }
        match self.map.get_mut(self.scratch.as_str()) {
            Some(v) => v,
            None => &mut self.other,
        }
    }

    /// Every key (split into its parts) with its count.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (Vec<&str>, &T)> {
        self.map.iter().map(|(k, v)| (k.split(SEP).collect(), v))
    }
}

/// Calls by destination under one intent.
#[derive(Default, Clone, Copy)]
pub(crate) struct DestCount {
    pub(crate) allowed: u64,
    pub(crate) would_deny: u64,
    pub(crate) refused: u64,
}

/// Calls monitor mode let through to one destination, with the first one's path and reason.
#[derive(Default)]
pub(crate) struct WouldDeny {
    pub(crate) calls: u64,
    pub(crate) path: String,
    pub(crate) reason: String,
}

/// Calls per series (agent and intent) per time bucket.
pub(crate) struct Timeline {
    pub(crate) width: i64,
    pub(crate) buckets: HashMap<(u32, u32, i64), u64>,
}

impl Default for Timeline {
    fn default() -> Self {
        Timeline {
            width: WIDTHS[0],
            buckets: HashMap::new(),
        }
    }
}

impl Timeline {
    fn add(&mut self, agent: u32, intent: u32, t: i64) {
        *self
            .buckets
            .entry((agent, intent, t.div_euclid(self.width) * self.width))
            .or_default() += 1;
        if self.buckets.len() > TIMELINE_CAP {
            self.widen();
        }
    }

    fn widen(&mut self) {
        let next = WIDTHS
            .iter()
            .copied()
            .find(|&w| w > self.width)
            .unwrap_or(self.width * 2);
        self.width = next;
        let old = std::mem::take(&mut self.buckets);
        for ((a, i, b), n) in old {
            *self
                .buckets
                .entry((a, i, b.div_euclid(next) * next))
                .or_default() += n;
        }
    }
}

/// One agent as its records describe it (the latest record's owner, service account, expiry).
#[derive(Default)]
pub(crate) struct AgentInfo {
    pub(crate) id: String,
    pub(crate) owner: Option<String>,
    pub(crate) namespace: Option<String>,
    pub(crate) service_account: Option<String>,
    pub(crate) expires: Option<String>,
    pub(crate) intents: BTreeSet<u32>,
    pub(crate) first: i64,
    pub(crate) last: i64,
    pub(crate) calls: u64,
    pub(crate) refused: u64,
    pub(crate) would_deny: u64,
}

/// Strings numbered in the order first seen.
#[derive(Default)]
pub(crate) struct Names {
    ids: HashMap<Box<str>, u32>,
    pub(crate) names: Vec<Box<str>>,
}

impl Names {
    fn id(&mut self, s: &str) -> u32 {
        if let Some(&i) = self.ids.get(s) {
            return i;
        }
        let i = u32::try_from(self.names.len()).unwrap_or(u32::MAX);
        self.ids.insert(s.into(), i);
        self.names.push(s.into());
        i
    }

    pub(crate) fn name(&self, i: u32) -> &str {
        self.names.get(i as usize).map_or("", |s| s)
    }
}

/// Everything the report shows, as counted so far.
#[derive(Default)]
pub(crate) struct Stats {
    pub(crate) records: u64,
    /// Records that are calls (not the CONNECT of an intercepted tunnel), by decision.
    pub(crate) allowed: u64,
    pub(crate) would_deny: u64,
    pub(crate) denied: u64,
    pub(crate) errors: u64,
    /// Lines that are not audit records, and where the first one was.
    pub(crate) unreadable: u64,
    pub(crate) first_unreadable: Option<String>,
    pub(crate) first: Option<i64>,
    pub(crate) last: Option<i64>,
    pub(crate) agent_names: Names,
    pub(crate) intent_names: Names,
    pub(crate) agents: Vec<AgentInfo>,
    pub(crate) timeline: Timeline,
    /// [code, reason] → refused calls.
    pub(crate) refusals: Counter<u64>,
    /// [intent, host:port] → calls.
    pub(crate) dests: Counter<DestCount>,
    /// [intent, agent, method, host:port] → calls monitor mode let through.
    pub(crate) would: Counter<WouldDeny>,
    learn_seen: HashSet<Box<str>>,
    learn_key: String,
    dest_buf: String,
    pub(crate) learn_records: AuditLog,
    pub(crate) learn_skipped: u64,
}

/// The intent name of calls that declared none (as `learn` names them).
pub(crate) const NO_INTENT: &str = crate::learn::UNNAMED;

impl Stats {
    /// Calls counted (every decision).
    pub(crate) fn calls(&self) -> u64 {
        self.allowed + self.would_deny + self.denied + self.errors
    }

    /// A line that is not an audit record (`at`: file:line).
    pub(crate) fn unreadable(&mut self, at: impl FnOnce() -> String) {
        self.unreadable += 1;
        if self.first_unreadable.is_none() {
            self.first_unreadable = Some(at());
        }
    }

    /// Counts one record.
    pub(crate) fn add(&mut self, r: &Record<'_>, at: impl FnOnce() -> String) {
        let Some(t) = epoch_secs(&r.time) else {
            return self.unreadable(at);
        };
        self.records += 1;
        if r.is_tunnel_setup() {
            return;
        }
        self.first = Some(self.first.map_or(t, |f| f.min(t)));
        self.last = Some(self.last.map_or(t, |l| l.max(t)));
        let intent = r.intent.name.as_deref().unwrap_or(NO_INTENT);
        let (agent_id, intent_id) = (
            self.agent_names.id(&r.agent.id),
            self.intent_names.id(intent),
        );
        self.timeline.add(agent_id, intent_id, t);
        self.agent(agent_id, r, t, intent_id);
        let mut buf = std::mem::take(&mut self.dest_buf);
        let port_at = write_dest(&mut buf, &r.host, r.port);
        let dest = buf.as_str();
        let d = self.dests.at(&[intent, dest]);
        match r.decision {
            Decision::Allow => {
                d.allowed += 1;
                self.allowed += 1;
            }
            Decision::WouldDeny => {
                d.would_deny += 1;
                self.would_deny += 1;
                let w = self.would.at(&[intent, &r.agent.id, &r.method, dest]);
                if w.calls == 0 {
                    w.path = r.path.to_string();
                    w.reason = r.first_reason().to_string();
                }
                w.calls += 1;
            }
            Decision::Deny | Decision::Error => {
                d.refused += 1;
                if r.decision == Decision::Deny {
                    self.denied += 1;
                } else {
                    self.errors += 1;
                }
                *self.refusals.at(&[r.refusal_code(), r.first_reason()]) += 1;
            }
        }
        self.learn(r, intent, &dest[port_at..]);
        self.dest_buf = buf;
    }

    fn agent(&mut self, id: u32, r: &Record<'_>, t: i64, intent: u32) {
        let i = id as usize;
        if i >= self.agents.len() {
            self.agents.push(AgentInfo {
                id: r.agent.id.to_string(),
                first: t,
                last: t,
                ..AgentInfo::default()
            });
        }
        let Some(a) = self.agents.get_mut(i) else {
            return;
        };
        a.intents.insert(intent);
        a.calls += 1;
        match r.decision {
            Decision::Allow => {}
            Decision::WouldDeny => a.would_deny += 1,
            Decision::Deny | Decision::Error => a.refused += 1,
        }
        a.first = a.first.min(t);
        if t >= a.last {
            a.last = t;
            let ag = &r.agent;
            update(&mut a.owner, ag.owner.as_deref());
            update(&mut a.namespace, ag.namespace.as_deref());
            update(&mut a.service_account, ag.service_account.as_deref());
            update(&mut a.expires, ag.expires.as_deref());
        }
    }

    /// Keeps each distinct call once (as the fields `learn` reads) for the suggestions.
    fn learn(&mut self, r: &Record<'_>, intent: &str, port: &str) {
        let forwarded = matches!(r.decision, Decision::Allow | Decision::WouldDeny);
        let k = &mut self.learn_key;
        k.clear();
        for p in [
            intent,
            &r.agent.id,
            &r.connection,
            &r.method,
            &r.host,
            port,
            &r.path,
        ] {
            k.push_str(p);
            k.push(SEP);
        }
        k.push(if forwarded { 'f' } else { 'r' });
        if self.learn_seen.contains(k.as_str()) {
            return;
        }
        if self.learn_seen.len() >= LEARN_CAP {
            self.learn_skipped += 1;
            return;
        }
        self.learn_seen.insert(k.as_str().into());
        let decision = if forwarded {
            Verdict::Allow
        } else {
            Verdict::Deny
        };
        let connection = ConnectionMode::ALL
            .iter()
            .copied()
            .find(|c| c.as_str() == r.connection);
        self.learn_records.records.push(AuditRecord {
            agent: Arc::new(AuditAgent {
                id: r.agent.id.to_string(),
                ..AuditAgent::default()
            }),
            intent: AuditIntent {
                name: r.intent.name.as_deref().map(Into::into),
                ..AuditIntent::default()
            },
            connection,
            method: r.method.to_string(),
            host: r.host.to_string(),
            port: r.port,
            path: r.path.to_string(),
            decision: Some(decision),
            reasons: vec![r.first_reason().to_string()],
            ..AuditRecord::default()
        });
    }
}

/// Replaces `slot` with `v` when they differ (no copy when they are the same).
fn update(slot: &mut Option<String>, v: Option<&str>) {
    if slot.as_deref() != v {
        *slot = v.map(str::to_string);
    }
}

/// `host:port` (an IPv6 address in brackets) into `buf`; returns where the port starts.
fn write_dest(buf: &mut String, host: &str, port: u16) -> usize {
    use std::fmt::Write;
    buf.clear();
    if host.contains(':') {
        buf.push('[');
        buf.push_str(host);
        buf.push(']');
    } else {
        buf.push_str(host);
    }
    buf.push(':');
    let at = buf.len();
    let _ = write!(buf, "{port}");
    at
}
