//! intentgate's own listeners as destinations: recognised whatever the spelling of the address
//! (addresses are compared unmapped), and, for a listener bound to `0.0.0.0`/`[::]`, at every
//! address of the host it answers on.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use arc_swap::ArcSwap;
use tracing::warn;

use super::{Class, classify, unmapped};

/// The listeners of this process (proxy, admin, transparent).
#[derive(Debug, Default)]
pub struct OwnListeners {
    /// Listeners bound to one address (unmapped).
    bound: Vec<SocketAddr>,
    /// Ports of listeners bound to the unspecified address: reachable at every local address.
    any_ports: Vec<u16>,
    /// The host's interface addresses (unmapped), read when the first wildcard listener is
    /// added and read again whenever a wildcard port is asked about an address not among them
    /// (an address added since); `None` when they cannot be read (then every address at a
    /// wildcard port counts as ours: fail closed).
    local: ArcSwap<Option<Vec<IpAddr>>>,
}

impl FromIterator<SocketAddr> for OwnListeners {
    fn from_iter<I: IntoIterator<Item = SocketAddr>>(listeners: I) -> Self {
        let mut own = OwnListeners::default();
        for l in listeners {
            if l.ip().is_unspecified() {
                own.any_ports.push(l.port());
            } else {
                own.bound.push(SocketAddr::new(unmapped(l.ip()), l.port()));
            }
        }
        if !own.any_ports.is_empty() {
            own.refresh();
        }
        own
    }
}

impl OwnListeners {
    /// Whether `ip:port` reaches one of our listeners. `ip` must be unmapped. Costs nothing
    /// unless `port` is one of ours.
    pub fn contains(&self, ip: IpAddr, port: u16) -> bool {
        if !self.any_ports.contains(&port) {
            // Connecting to 0.0.0.0 or [::] reaches the local host, a listener on loopback too.
            return self
                .bound
                .iter()
                .any(|b| b.port() == port && (b.ip() == ip || ip.is_unspecified()));
        }
        // A wildcard listener answers at every loopback address (all of 127/8) and at every
        // address of an interface; one not among those read may have been added since. Any
        // non-public address at its port counts too (as before interfaces were read): a
        // cluster-internal address may be NATed back to this pod.
        if ip.is_unspecified()
            || ip.is_loopback()
            || classify(ip) != Class::Public
            || self.is_local(ip)
        {
            return true;
        }
        self.refresh();
        self.is_local(ip)
    }

    fn is_local(&self, ip: IpAddr) -> bool {
        self.local
            .load()
            .as_ref()
            .as_ref()
            .is_none_or(|l| l.contains(&ip))
    }

    /// Reads the host's interface addresses.
    fn refresh(&self) {
        let read = match if_addrs::get_if_addrs() {
            Ok(ifs) => Some(ifs.iter().map(|i| unmapped(i.ip())).collect()),
            Err(e) => {
                warn!(error = %e, "cannot read the interface addresses; every address at the port of a listener bound to 0.0.0.0/[::] is treated as intentgate itself");
                None
            }
        };
        self.local.store(Arc::new(read));
    }
}
