//! Where client connections and tunnels find each other's idle upstream connections. Each keeps
//! its own (src/proxy/sender/kept.rs); this registry knows which of them hold one for which
//! destination, so a new one takes an idle connection instead of dialling (as a pool would),
//! keeps the connections of ended ones for the next, and a reaper closes those idle for longer
//! than `limits.pool_idle_timeout_ms`. It is touched when a connection is dialled or changes
//! hands, not on every request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use super::conn::{Idle, Key};
use super::kept::Slot;
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
    holders: HashMap<Arc<Key>, Vec<Weak<Slot>>>,
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
    /// holds and is not using.
    pub fn take(&self, authority: &Authority, tls: bool, me: &Arc<Slot>) -> Option<Idle> {
        // The holders are upgraded under the lock but used (and released) after it: releasing
        // the last reference to a slot hands its connections back here (`Slot::drop`).
        let holders: Vec<Arc<Slot>> = {
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
            list.retain(|w| w.strong_count() > 0);
            list.iter().rev().filter_map(Weak::upgrade).collect()
        };
        holders
            .iter()
            .filter(|s| !Arc::ptr_eq(s, me))
            .find_map(|s| s.take_idle(authority, tls, self.max_idle))
    }

    /// Records that `slot` now holds a connection for `key`.
    pub fn holds(self: &Arc<Self>, key: &Arc<Key>, slot: &Arc<Slot>) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let list = inner.holders.entry(key.clone()).or_default();
        list.retain(|w| w.strong_count() > 0);
        if !list
            .iter()
            .any(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(slot)))
        {
            list.push(Arc::downgrade(slot));
        }
        self.reap_soon(&mut inner);
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

/// Sweeps every half idle timeout while any connection is held, then ends (`holds` and `adopt`
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
