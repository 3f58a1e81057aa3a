//! Where client connections and tunnels find each other's idle upstream connections. Each keeps
//! its own (src/proxy/sender/kept.rs); this registry knows which of them hold one for which
//! destination, so a new one takes an idle connection instead of dialling (as a pool would),
//! keeps the connections of ended ones for the next, and a reaper closes those idle for longer
//! than `limits.pool_idle_timeout_ms`. It is touched when a connection is dialled or changes
//! hands, not on every request. A slot is listed while it keeps a connection to the
//! destination, oldest first, and unlisted when one is taken from it and it has no other: a
//! search looks at the slots that may have one to lend, not at every client connection that ever
//! had one (10,000 idle keep-alive clients, each request on another of them: each search went
//! through all 10,000).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use super::conn::{Idle, Key};
use super::kept::{Lent, Slot};
use crate::target::Authority;

/// The slots that hold an upstream connection, by its destination, and the connections of
/// ended ones (at most `max_per_host` per destination).
pub(super) struct Registry {
    inner: Mutex<Inner>,
    max_idle: Duration,
    max_per_host: usize,
}

#[derive(Default)]
struct Inner {
    /// Oldest first.
    holders: HashMap<Arc<Key>, VecDeque<Weak<Slot>>>,
    orphans: HashMap<Arc<Key>, Vec<Idle>>,
    reaping: bool,
}

impl Registry {
    pub fn new(max_idle: Duration, max_per_host: usize) -> Self {
        Self {
            inner: Mutex::default(),
            max_idle,
            max_per_host,
        }
    }

    pub fn max_idle(&self) -> Duration {
        self.max_idle
    }

    pub fn max_per_host(&self) -> usize {
        self.max_per_host
    }

    /// Keeps the fresh connections of a slot that ended (or let them go), for the next one.
    pub fn adopt(self: &Arc<Self>, list: impl IntoIterator<Item = Idle>) {
        if self.max_per_host == 0 {
            return;
        }
        let mut list = list
            .into_iter()
            .filter(|i| i.fresh(self.max_idle))
            .peekable();
        if list.peek().is_none() {
            return;
        }
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        for idle in list {
            let kept = inner.orphans.entry(idle.key.clone()).or_default();
            if kept.len() >= self.max_per_host {
                kept.remove(0);
            }
            kept.push(idle);
        }
        self.reap_soon(&mut inner);
    }

    /// An idle connection to `authority`: one whose slot ended, else one that another slot
    /// keeps and is not using (the slots asked oldest first; those with none to lend any more
    /// are unlisted on the way).
    pub fn take(&self, authority: &Authority, tls: bool, me: &Arc<Slot>) -> Option<Idle> {
        // The slots asked are released only after the lock: releasing the last reference to a
        // slot hands its connections back here (`Slot::drop`).
        let mut asked: Vec<Arc<Slot>> = Vec::new();
        let mut inner = self.inner.lock().ok()?;
        let key = Key::new(authority, tls);
        if let Some(list) = inner.orphans.get_mut(&key) {
            while let Some(idle) = list.pop() {
                if idle.fresh(self.max_idle) {
                    return Some(idle);
                }
            }
        }
        let list = inner.holders.get_mut(&key)?;
        let mut at = 0;
        let found = loop {
            let Some(slot) = list.get(at).map(Weak::upgrade) else {
                break None;
            };
            let Some(slot) = slot else {
                list.remove(at);
                continue;
            };
            let lent = if Arc::ptr_eq(&slot, me) {
                Lent {
                    idle: None,
                    listed: true,
                }
            } else {
                slot.lend(&key, self.max_idle)
            };
            asked.push(slot);
            if lent.listed {
                at += 1;
            } else {
                list.remove(at);
            }
            if lent.idle.is_some() {
                break lent.idle;
            }
        };
        drop(inner);
        drop(asked);
        found
    }

    /// Lists `slot` as one that keeps a connection to `key`'s destination (once).
    pub fn list(self: &Arc<Self>, key: &Arc<Key>, slot: &Arc<Slot>) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        // Under the registry's lock, so that the slot's note and this list agree.
        if slot.listed_for(key) {
            inner
                .holders
                .entry(key.clone())
                .or_default()
                .push_back(Arc::downgrade(slot));
            self.reap_soon(&mut inner);
        }
    }

    /// How many slots are listed, for every destination.
    #[cfg(test)]
    fn listed(&self) -> usize {
        self.inner
            .lock()
            .map_or(0, |inner| inner.holders.values().map(VecDeque::len).sum())
    }

    fn reap_soon(self: &Arc<Self>, inner: &mut Inner) {
        if !inner.reaping {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                inner.reaping = true;
                rt.spawn(reap(self.clone()));
            }
        }
    }

    /// Closes expired connections and forgets ended slots; whether any remain.
    fn sweep(&self) -> bool {
        let max_idle = self.max_idle;
        let holders: Vec<Arc<Slot>> = {
            let Ok(mut inner) = self.inner.lock() else {
                return false;
            };
            inner.orphans.retain(|_, list| {
                list.retain(|i| i.fresh(max_idle));
                !list.is_empty()
            });
            inner
                .holders
                .values()
                .flatten()
                .filter_map(Weak::upgrade)
                .collect()
        };
        // Outside the lock, for the same reason as in `take`. A slot that holds nothing right
        // now stays listed: it may be in the middle of a request and keep its connection again.
        for s in &holders {
            s.expire(max_idle);
        }
        drop(holders);
        let Ok(mut inner) = self.inner.lock() else {
            return false;
        };
        inner.holders.retain(|_, list| {
            list.retain(|w| w.strong_count() > 0);
            !list.is_empty()
        });
        inner.reaping = !inner.holders.is_empty() || !inner.orphans.is_empty();
        inner.reaping
    }
}

/// Sweeps every half idle timeout while any connection is held, then ends (`list` and `adopt`
/// restart it).
async fn reap(registry: Arc<Registry>) {
    let every = (registry.max_idle / 2).max(Duration::from_millis(50));
    loop {
        tokio::time::sleep(every).await;
        if !registry.sweep() {
            return;
        }
    }
}

#[cfg(test)]
#[path = "idle_tests.rs"]
mod tests;
