//! The in-process counters: 16 shards of a map from the key's hash to its counters (read-locked
//! to find one, write-locked only to add one), each counter behind its own small lock. A call
//! costs one hash, one shared read lock and one uncontended mutex; nothing is allocated once a
//! counter exists.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, RwLock};

use super::limits::Limits;
use super::{Admission, Charge, ChargeTo, Key, Refusal, State, Used};

const SHARDS: usize = 16;
/// A shard holding more counters than this drops those whose window has passed when it adds one.
const SWEEP_AT: usize = 4096;

/// One counter.
#[derive(Debug)]
pub struct Entry {
    agent: Box<str>,
    intent: Box<str>,
    scope: Box<str>,
    counts: Mutex<Counts>,
}

#[derive(Debug)]
struct Counts {
    /// The window the counts are for.
    index: u64,
    used: Used,
    /// The first call's time (for `expires_after`).
    first_ms: Option<u64>,
    /// The limits of the last call (a reload may change them).
    limits: Arc<Limits>,
}

impl Entry {
    fn is(&self, k: &Key<'_>) -> bool {
        *self.agent == *k.agent && *self.intent == *k.intent && *self.scope == *k.scope
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds what a call of window `index` used; nothing once that window has passed.
    pub(super) fn add(&self, index: u64, u: Used) {
        let mut c = self.lock();
        if c.index == index {
            c.used.add(u);
        }
    }

    fn state(&self, c: &Counts, now_ms: u64) -> State {
        State::of(
            (&self.agent, &self.intent, &self.scope),
            &c.limits,
            c.used,
            c.index,
            c.first_ms,
            now_ms,
        )
    }
}

type Shard = RwLock<HashMap<u64, Vec<Arc<Entry>>>>;

/// Every counter of this process.
#[derive(Debug, Default)]
pub struct Local {
    shards: [Shard; SHARDS],
    hasher: RandomState,
}

impl Local {
    /// `Budgets::admit` in process.
    pub fn admit(
        &self,
        key: Key<'_>,
        limits: &Arc<Limits>,
        enforce: bool,
        now_ms: u64,
    ) -> Admission {
        let entry = self.entry(key, limits, now_ms);
        let mut c = entry.lock();
        if !Arc::ptr_eq(&c.limits, limits) {
            c.limits = Arc::clone(limits);
        }
        let index = limits.window_index(now_ms);
        if c.index != index {
            c.index = index;
            c.used = Used::default();
        }
        let first = *c.first_ms.get_or_insert(now_ms);
        let over = limits.over(&c.used, first, now_ms);
        let go = over.is_none() || !enforce;
        if go {
            c.used.calls = c.used.calls.saturating_add(1);
        }
        let refused = over.map(|o| {
            Box::new(Refusal::new(
                o,
                entry.state(&c, now_ms),
                limits.resets_at_ms(index),
                now_ms,
            ))
        });
        drop(c);
        Admission {
            refused,
            charge: go.then_some(Charge(ChargeTo::Local(entry, index))),
        }
    }

    /// Sets the counter of `key` to what the shared store answered (`GET /v1/budgets` with Redis).
    pub fn mirror(
        &self,
        key: Key<'_>,
        limits: &Arc<Limits>,
        used: Used,
        index: u64,
        first_ms: u64,
        now_ms: u64,
    ) {
        let entry = self.entry(key, limits, now_ms);
        let mut c = entry.lock();
        if !Arc::ptr_eq(&c.limits, limits) {
            c.limits = Arc::clone(limits);
        }
        c.index = index;
        c.used = used;
        c.first_ms = Some(first_ms);
    }

    /// The counter of `key`, added when it is new.
    fn entry(&self, key: Key<'_>, limits: &Arc<Limits>, now_ms: u64) -> Arc<Entry> {
        let hash = self.hasher.hash_one((key.agent, key.intent, key.scope));
        let shard = &self.shards[(hash as usize) % SHARDS];
        {
            let map = shard.read().unwrap_or_else(|p| p.into_inner());
            if let Some(e) = map.get(&hash).and_then(|v| v.iter().find(|e| e.is(&key))) {
                return Arc::clone(e);
            }
        }
        let mut map = shard.write().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = map.get(&hash).and_then(|v| v.iter().find(|e| e.is(&key))) {
            return Arc::clone(e);
        }
        if map.len() >= SWEEP_AT {
            sweep(&mut map, now_ms);
        }
        let e = Arc::new(Entry {
            agent: key.agent.into(),
            intent: key.intent.into(),
            scope: key.scope.into(),
            counts: Mutex::new(Counts {
                index: limits.window_index(now_ms),
                used: Used::default(),
                first_ms: None,
                limits: Arc::clone(limits),
            }),
        });
        map.entry(hash).or_default().push(Arc::clone(&e));
        e
    }

    /// Drops the counters whose limits match `which`.
    pub fn forget(&self, which: impl Fn(&Limits) -> bool) {
        for shard in &self.shards {
            let mut map = shard.write().unwrap_or_else(|p| p.into_inner());
            map.retain(|_, v| {
                v.retain(|e| !which(&e.lock().limits));
                !v.is_empty()
            });
        }
    }

    /// Every counter's state.
    pub fn states(&self, now_ms: u64) -> Vec<State> {
        let mut out = Vec::new();
        for shard in &self.shards {
            let map = shard.read().unwrap_or_else(|p| p.into_inner());
            for e in map.values().flatten() {
                let c = e.lock();
                out.push(e.state(&c, now_ms));
            }
        }
        out
    }
}

/// Drops counters that can no longer refuse anything: their window has passed and they have no
/// `expires_after` (their next call starts from zero anyway), and no call in flight holds them.
fn sweep(map: &mut HashMap<u64, Vec<Arc<Entry>>>, now_ms: u64) {
    map.retain(|_, v| {
        v.retain(|e| {
            let c = e.lock();
            let passed = c.limits.window_ms().is_some() && c.limits.window_index(now_ms) != c.index;
            !passed || c.limits.expires_after_ms.is_some() || Arc::strong_count(e) > 1
        });
        !v.is_empty()
    });
}
