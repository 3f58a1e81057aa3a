//! Where a request came from (`Entry`: the proxy listener's client connection, an intercepted
//! tunnel, a transparent connection) and where it goes (`Target`, its canonical destination).

use super::sender::Affinity;
use super::{intercept, transparent};
use crate::conn::guard::InFlight;
use crate::target::Authority;
use crate::vocab::{ConnectionMode, Scheme};

/// One client connection of the proxy listener, as its requests share it.
pub struct ClientConn {
    /// Its guard's view (src/conn/guard.rs): open tunnels, the framing flag.
    pub(super) in_flight: InFlight,
    /// The upstream connections its requests reuse.
    pub(super) kept: Affinity,
}

impl ClientConn {
    pub fn new(in_flight: InFlight) -> Self {
        Self {
            in_flight,
            kept: Affinity::default(),
        }
    }
}

/// Where a request came from: the proxy listener (absolute-form or CONNECT), or an intercepted
/// tunnel (origin-form, its destination fixed by the CONNECT).
pub(super) enum Entry<'a> {
    Listener(&'a ClientConn),
    Tunnel(&'a intercept::TunnelInfo),
    /// Plain HTTP on a connection redirected to the transparent listener.
    Transparent(&'a transparent::Redirected),
}

impl Entry<'_> {
    /// Whether the raw request stream of the client connection turned ambiguous (a head with
    /// Content-Length and Transfer-Encoding, src/conn/framing.rs).
    pub(super) fn ambiguous_framing(&self) -> bool {
        match self {
            Entry::Listener(c) => c.in_flight.ambiguous_framing(),
            Entry::Tunnel(t) => t.in_flight.ambiguous_framing(),
            Entry::Transparent(r) => r.in_flight.ambiguous_framing(),
        }
    }
}

/// The canonical destination of a forwarded request, and how it arrived.
pub(super) struct Target {
    pub(super) authority: Authority,
    pub(super) path: String,
    pub(super) query: Option<String>,
    pub(super) scheme: Scheme,
    pub(super) mode: ConnectionMode,
    pub(super) sni: Option<String>,
}
