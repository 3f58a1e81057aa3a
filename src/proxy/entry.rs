//! Where a request came from (`Source`: the proxy listener's client connection, an intercepted
//! tunnel, a transparent connection) and where it goes (`Target`, its canonical destination).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use http::Response;

use super::sender::Affinity;
use super::{intercept, transparent};
use crate::conn::guard::InFlight;
use crate::error::Body;
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

/// One request's handling, boxed. hyper allocates room for its service's future once per
/// connection and keeps it while the connection is open, idle or not; the whole handling is
/// several KiB, a box is one pointer (the handling then lives only as long as its request).
pub type Handled = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

/// Where a request came from: the proxy listener (absolute-form or CONNECT), an intercepted
/// tunnel (origin-form, its destination fixed by the CONNECT), or the transparent listener. Held
/// by the request's boxed future (`Proxy::run`, no `async` block around it: each level of future
/// copies the request into its room once more) and lent to the pipeline.
pub(super) enum Source {
    Listener(Arc<ClientConn>),
    Tunnel(Arc<intercept::TunnelInfo>),
    /// Plain HTTP on a connection redirected to the transparent listener.
    Transparent(Arc<transparent::Redirected>),
}

impl Source {
    /// Whether the raw request stream of the client connection turned ambiguous (a head with
    /// Content-Length and Transfer-Encoding, src/conn/framing.rs).
    pub(super) fn ambiguous_framing(&self) -> bool {
        match self {
            Source::Listener(c) => c.in_flight.ambiguous_framing(),
            Source::Tunnel(t) => t.in_flight.ambiguous_framing(),
            Source::Transparent(r) => r.in_flight.ambiguous_framing(),
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

#[cfg(test)]
mod tests {
    use super::super::Proxy;

    /// The size of what `f` returns, without calling it.
    fn returned<F: FnOnce(A, B, C) -> R, A, B, C, R>(_: F) -> usize {
        std::mem::size_of::<R>()
    }

    #[test]
    fn every_service_future_is_a_pointer() {
        for size in [
            returned(Proxy::handle),
            returned(Proxy::handle_inner),
            returned(Proxy::handle_transparent),
        ] {
            assert!(size <= 16, "a service future of {size} bytes");
        }
    }

    /// What is boxed and copied for every request: rare steps (dialling, a key set fetch) are
    /// boxed where they are awaited, so they do not swell it (14,208 bytes before, in a debug
    /// build; 6,224 after).
    #[test]
    fn a_request_s_future_stays_small() {
        let size = returned(Proxy::run);
        assert!(size <= 8 * 1024, "a request's future of {size} bytes");
    }
}
