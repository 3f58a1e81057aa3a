//! The upstream connections one client connection (or one intercepted tunnel) keeps between its
//! requests: its next request to the same destination reuses one with no pool checkout, no
//! idle-list bookkeeping and no extra task. Another one may borrow an idle one meanwhile
//! (`Slot::lend`); when it ends they go to the shared registry (src/proxy/sender/idle.rs) for
//! whoever needs them next.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::conn::{Conn, Idle, Key};
use super::idle::Registry;
use crate::target::Authority;

/// What a client connection or an intercepted tunnel hands to `Upstreams::send` so that its
/// requests go over the connections its earlier ones used, each bounded by the upstream response
/// timeout with the timer the earlier ones used (src/proxy/sender/deadline.rs).
#[derive(Default)]
pub(crate) struct Affinity(pub(super) Arc<Slot>, pub(crate) super::ResponseTimer);

#[derive(Default)]
pub(super) struct Slot(Mutex<Held>);

#[derive(Default)]
struct Held {
    /// Oldest first; at most `limits.pool_max_idle_per_host` (at least one).
    list: Vec<Idle>,
    /// Where they go when the slot ends: set with the first one kept.
    home: Option<Arc<Registry>>,
    /// The destinations the registry lists this slot for (as one that may lend a connection).
    listed: Vec<Arc<Key>>,
}

/// What a slot asked by the registry for an idle connection answers (`Slot::lend`).
pub(super) struct Lent {
    pub idle: Option<Idle>,
    /// It still keeps a connection to the destination; else it is no longer listed for it.
    pub listed: bool,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(held) = self.0.get_mut() {
            if let Some(home) = held.home.take() {
                home.adopt(std::mem::take(&mut held.list));
            }
        }
    }
}

impl Slot {
    /// A kept connection to `authority`. `sequential` (an HTTP/1 client: its next request
    /// comes after the last response) takes the newest HTTP/1 one even if the last response is
    /// still finishing, and the caller waits for it; otherwise only one that is ready now. An
    /// HTTP/2 one is shared (it stays listed). An expired one chosen is closed on the way
    /// (idle since before `now - max_idle`; `now`: the caller's clock read, not another).
    pub fn take(
        &self,
        authority: &Authority,
        tls: bool,
        max_idle: Duration,
        sequential: bool,
        now: Instant,
    ) -> Option<Idle> {
        let mut held = self.0.lock().ok()?;
        loop {
            let at = held.list.iter().rposition(|i| {
                i.key.is(authority, tls)
                    && match &i.conn {
                        Conn::H1(s, _) => sequential || s.is_ready(),
                        Conn::H2(_) => true,
                    }
            })?;
            // Only the one chosen is looked at: the reaper closes the others in time, and a
            // client connection that talked to many hosts keeps a long list.
            if held.list[at].expired(now, max_idle) {
                drop(held.list.remove(at));
                continue;
            }
            return share_or_remove(&mut held.list, at);
        }
    }

    /// Lends the registry an idle, fresh connection to `key`'s destination for another client
    /// connection; never waits for the slot's own one. A slot left with none to lend there is
    /// unlisted (its own request may have its connection out: `put` lists it again).
    pub fn lend(&self, key: &Key, max_idle: Duration) -> Lent {
        let Ok(mut held) = self.0.try_lock() else {
            return Lent {
                idle: None,
                listed: true,
            };
        };
        let idle = held
            .list
            .iter()
            .rposition(|i| *i.key == *key && i.conn.is_idle() && i.fresh(max_idle))
            .and_then(|at| share_or_remove(&mut held.list, at));
        let listed = held
            .list
            .iter()
            .any(|i| *i.key == *key && !i.conn.is_closed());
        if !listed {
            held.listed.retain(|k| **k != *key);
        }
        Lent { idle, listed }
    }

    /// Keeps `idle` for the next request, its idle time starting `now` (the caller's clock
    /// read). An open HTTP/2 connection already listed for its destination stays the one listed
    /// (a closed one is replaced); over the limit, the oldest goes to the registry.
    pub fn put(self: &Arc<Self>, mut idle: Idle, home: &Arc<Registry>, now: Instant) {
        let Ok(mut held) = self.0.lock() else {
            return;
        };
        if matches!(idle.conn, Conn::H2(_)) {
            let listed = held
                .list
                .iter()
                .position(|i| matches!(i.conn, Conn::H2(_)) && i.key == idle.key);
            match listed {
                Some(at) if held.list[at].conn.is_closed() => drop(held.list.remove(at)),
                Some(_) => return,
                None => {}
            }
        }
        idle.since = now;
        if held.home.is_none() {
            held.home = Some(home.clone());
        }
        let evicted = (held.list.len() >= home.max_per_host().max(1)).then(|| held.list.remove(0));
        // Listed already, nearly always: the one destination this client talks to, the same `Arc`.
        let unlisted = !held.listed.contains(&idle.key);
        let key = unlisted.then(|| idle.key.clone());
        held.list.push(idle);
        drop(held);
        if let Some(old) = evicted {
            home.adopt([old]);
        }
        if let Some(key) = key {
            home.list(&key, self);
        }
    }

    /// Records that the registry lists this slot for `key`; false if it did already.
    pub fn listed_for(&self, key: &Arc<Key>) -> bool {
        let Ok(mut held) = self.0.lock() else {
            return false;
        };
        if held.listed.contains(key) {
            return false;
        }
        held.listed.push(key.clone());
        true
    }

    /// Closes the expired connections (the reaper calls it; skipped while a request holds the
    /// slot).
    pub fn expire(&self, max_idle: Duration) {
        if let Ok(mut held) = self.0.try_lock() {
            let now = Instant::now();
            held.list.retain(|i| !i.expired(now, max_idle));
        }
    }
}

/// The HTTP/2 connection at `at` shared (its idle time restarts), or the HTTP/1 one taken out.
fn share_or_remove(list: &mut Vec<Idle>, at: usize) -> Option<Idle> {
    let i = &mut list[at];
    if let Conn::H2(s) = &i.conn {
        i.since = Instant::now();
        return Some(Idle {
            key: i.key.clone(),
            conn: Conn::H2(s.clone()),
            since: i.since,
        });
    }
    Some(list.remove(at))
}
