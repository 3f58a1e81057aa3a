//! Where client connections find each other's idle upstream connections. Each client connection
//! keeps its own (src/proxy/reuse.rs); this registry knows which client connections hold one for
//! which destination, so a new client connection takes an idle one instead of dialling (as a
//! pool would), and a reaper closes those idle for longer than `limits.pool_idle_timeout_ms`.
//! It is touched when a connection is dialled or changes hands, not on every request. The TLS
//! connections intercepted tunnels keep (src/proxy/kept_tls.rs) are reaped here too, and wait
//! here for the next tunnel to the same host:port when theirs ends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use hyper::client::conn::http1;

use super::audited::Counted;
use super::inspect::Replay;
use super::kept_tls::{Idle, TlsSender, TunnelUpstream};
use super::target::Authority;

pub(super) type Sender = http1::SendRequest<Counted<Replay>>;

/// One client connection's kept upstream connection, if any.
#[derive(Default)]
pub(super) struct Slot(Mutex<Option<Kept>>);

struct Kept {
    host: String,
    port: u16,
    sender: Sender,
    idle_since: Instant,
    /// Where the connection goes when its client connection ends.
    home: Arc<IdleUpstreams>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(Some(k)) = self.0.get_mut().map(Option::take) {
            k.home.clone().adopt(k);
        }
    }
}

impl Slot {
    /// The kept sender if it was dialled for `host:port` and has not idled too long. One kept
    /// for another destination is handed to the registry for whoever needs it next (a client
    /// alternating between two hosts does not redial each time); a stale one is dropped (closed).
    pub fn take(&self, host: &str, port: u16, max_idle: Duration) -> Option<Sender> {
        let kept = self.0.lock().ok()?.take()?;
        if kept.host == host && kept.port == port && kept.idle_since.elapsed() <= max_idle {
            return Some(kept.sender);
        }
        kept.home.clone().adopt(kept);
        None
    }

    /// Takes the kept sender only if it is for `host:port`, idle (ready) and fresh; never waits
    /// for the slot's own client connection.
    fn take_idle(&self, host: &str, port: u16, max_idle: Duration) -> Option<Sender> {
        let mut slot = self.0.try_lock().ok()?;
        let fits = slot.as_ref().is_some_and(|k| {
            k.host == host
                && k.port == port
                && k.sender.is_ready()
                && k.idle_since.elapsed() <= max_idle
        });
        if fits {
            slot.take().map(|k| k.sender)
        } else {
            None
        }
    }

    pub fn put(&self, host: &str, port: u16, sender: Sender, home: &Arc<IdleUpstreams>) {
        if let Ok(mut slot) = self.0.lock() {
            let host = match slot.take() {
                // Reuse the allocation when the destination is the same (the usual case).
                Some(k) if k.host == host => k.host,
                _ => host.to_string(),
            };
            *slot = Some(Kept {
                host,
                port,
                sender,
                idle_since: Instant::now(),
                home: home.clone(),
            });
        }
    }

    /// Closes the kept connection if it is idle and stale.
    fn expire(&self, max_idle: Duration) {
        let Ok(mut slot) = self.0.try_lock() else {
            return;
        };
        if slot
            .as_ref()
            .is_some_and(|k| k.sender.is_ready() && k.idle_since.elapsed() > max_idle)
        {
            *slot = None;
        }
    }
}

/// The client connections that hold an upstream connection, by its destination.
/// Connections whose client connection ended wait in `orphans` (at most `max_per_host` per
/// destination).
pub struct IdleUpstreams {
    inner: Mutex<Inner>,
    max_idle: Duration,
    max_per_host: usize,
}

#[derive(Default)]
struct Inner {
    holders: HashMap<(String, u16), Vec<Weak<Slot>>>,
    orphans: HashMap<(String, u16), Vec<(Sender, Instant)>>,
    /// Intercepted tunnels that dialled an upstream TLS connection, and the idle connections
    /// of ended ones.
    tunnels: Vec<Weak<TunnelUpstream>>,
    tls_orphans: HashMap<(String, u16), Vec<Idle>>,
    reaping: bool,
}

impl IdleUpstreams {
    pub fn new(max_idle: Duration, max_per_host: usize) -> Self {
        Self {
            inner: Mutex::default(),
            max_idle,
            max_per_host,
        }
    }

    /// Keeps the connection of a client connection that ended, for the next one.
    fn adopt(self: Arc<Self>, k: Kept) {
        if k.sender.is_closed() || k.idle_since.elapsed() > self.max_idle || self.max_per_host == 0
        {
            return;
        }
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let list = inner.orphans.entry((k.host, k.port)).or_default();
        if list.len() >= self.max_per_host {
            list.remove(0);
        }
        list.push((k.sender, k.idle_since));
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

    pub(super) fn max_idle(&self) -> Duration {
        self.max_idle
    }

    pub(super) fn max_per_host(&self) -> usize {
        self.max_per_host
    }

    /// Keeps the idle TLS connections of a tunnel that ended, for the next tunnel.
    pub(super) fn adopt_tls(self: &Arc<Self>, authority: &Authority, list: Vec<Idle>) {
        let max_idle = self.max_idle;
        let mut list: Vec<Idle> = list
            .into_iter()
            .filter(|i| i.fresh(max_idle) && i.sender.is_idle())
            .collect();
        if list.is_empty() || self.max_per_host == 0 {
            return;
        }
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let key = (authority.host.clone(), authority.port);
        let kept = inner.tls_orphans.entry(key).or_default();
        kept.append(&mut list);
        let excess = kept.len().saturating_sub(self.max_per_host);
        kept.drain(..excess);
        self.reap_soon(&mut inner);
    }

    /// An idle TLS connection to `authority` that an ended tunnel left.
    pub(super) fn take_tls(&self, authority: &Authority) -> Option<TlsSender> {
        let mut inner = self.inner.lock().ok()?;
        let list = inner
            .tls_orphans
            .get_mut(&(authority.host.clone(), authority.port))?;
        while let Some(i) = list.pop() {
            if i.fresh(self.max_idle) {
                return Some(i.sender);
            }
        }
        None
    }

    /// Records that `tunnel` keeps a TLS connection, so that the reaper expires it.
    pub(super) fn watch_tunnel(self: &Arc<Self>, tunnel: &Arc<TunnelUpstream>) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        inner.tunnels.retain(|w| w.strong_count() > 0);
        if !inner
            .tunnels
            .iter()
            .any(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(tunnel)))
        {
            inner.tunnels.push(Arc::downgrade(tunnel));
        }
        self.reap_soon(&mut inner);
    }

    /// An idle connection to `host:port`: one whose client connection ended, else one that
    /// another client connection holds and is not using.
    pub(super) fn take(&self, host: &str, port: u16, me: &Arc<Slot>) -> Option<Sender> {
        // The holders are upgraded under the lock but used (and released) after it: releasing
        // the last reference to a slot hands its connection back here (`Slot::drop`).
        let holders: Vec<Arc<Slot>> = {
            let mut inner = self.inner.lock().ok()?;
            let key = (host.to_string(), port);
            if let Some(list) = inner.orphans.get_mut(&key) {
                while let Some((sender, since)) = list.pop() {
                    if !sender.is_closed() && since.elapsed() <= self.max_idle {
                        return Some(sender);
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
            .find_map(|s| s.take_idle(host, port, self.max_idle))
    }

    /// Records that `slot` now holds a connection to `host:port`.
    pub(super) fn holds(self: &Arc<Self>, host: &str, port: u16, slot: &Arc<Slot>) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let list = inner.holders.entry((host.to_string(), port)).or_default();
        list.retain(|w| w.strong_count() > 0);
        if !list
            .iter()
            .any(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(slot)))
        {
            list.push(Arc::downgrade(slot));
        }
        self.reap_soon(&mut inner);
    }

    /// Closes stale idle connections and forgets ended client connections; whether any remain.
    fn sweep(&self) -> bool {
        let max_idle = self.max_idle;
        let (holders, tunnels): (Vec<Arc<Slot>>, Vec<Arc<TunnelUpstream>>) = {
            let Ok(mut inner) = self.inner.lock() else {
                return false;
            };
            inner.orphans.retain(|_, list| {
                list.retain(|(s, since)| !s.is_closed() && since.elapsed() <= max_idle);
                !list.is_empty()
            });
            inner.tls_orphans.retain(|_, list| {
                list.retain(|i| i.fresh(max_idle));
                !list.is_empty()
            });
            let holders = inner
                .holders
                .values()
                .flatten()
                .filter_map(Weak::upgrade)
                .collect();
            let tunnels = inner.tunnels.iter().filter_map(Weak::upgrade).collect();
            (holders, tunnels)
        };
        // Outside the lock, for the same reason as in `take`. A slot that holds nothing right
        // now stays listed: it may be in the middle of a request and keep its connection again.
        for s in &holders {
            s.expire(max_idle);
        }
        for t in &tunnels {
            t.expire(max_idle);
        }
        drop((holders, tunnels));
        let Ok(mut inner) = self.inner.lock() else {
            return false;
        };
        inner.holders.retain(|_, list| {
            list.retain(|w| w.strong_count() > 0);
            !list.is_empty()
        });
        inner.tunnels.retain(|w| w.strong_count() > 0);
        inner.reaping = !inner.holders.is_empty()
            || !inner.orphans.is_empty()
            || !inner.tunnels.is_empty()
            || !inner.tls_orphans.is_empty();
        inner.reaping
    }
}

/// Sweeps every half idle timeout while any connection is held, then ends (`holds` restarts it).
async fn reap(idle: Arc<IdleUpstreams>) {
    let every = (idle.max_idle / 2).max(Duration::from_millis(50));
    loop {
        tokio::time::sleep(every).await;
        if !idle.sweep() {
            return;
        }
    }
}
