//! The one door to intentgate itself: a plain-HTTP request sent through the proxy to the admin
//! listener's own address and port (the agent's `INTENTGATE_ADMIN_URL`, which HTTP clients that
//! ignore `NO_PROXY` for IP hosts send through the proxy) is answered in-process by the
//! agent-facing admin endpoints, never forwarded. Every other admin endpoint, every other
//! spelling of our addresses and every CONNECT to them stay refused (src/egress.rs). The admin
//! API sits above the proxy: it hands its endpoints in as an `AdminDoor`.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;

use http::{Method, Request, Response};
use hyper::body::Incoming;

use super::{Outcome, Proxy};
use crate::audit::AuditRecord;
use crate::error::{Body, ProxyError};
use crate::target::Authority;
use crate::vocab::{ConnectionMode, Scheme, Verdict};

/// The admin endpoints an agent may reach through the proxy (implemented by src/admin.rs).
pub(crate) trait AdminDoor: Send + Sync {
    /// Whether `method path` is one of them (`/v1/intent`, `/v1/explain`).
    fn serves(&self, method: &Method, path: &str) -> bool;

    /// Answers `req` as the admin listener would answer `peer` (the proxy client), with
    /// `decision_id` (the request's audit record's) in an error body.
    fn answer(
        &self,
        req: Request<Incoming>,
        peer: IpAddr,
        decision_id: &str,
    ) -> Pin<Box<dyn Future<Output = Response<Body>> + Send>>;
}

/// The door: where it is, and who answers there.
pub(super) struct Door {
    at: SocketAddr,
    /// `at` as a URL names it (`127.0.0.1:15701`, `[::1]:15701`): the door is that spelling only.
    written: String,
    endpoints: Arc<dyn AdminDoor>,
}

impl Door {
    /// The door for an admin listener bound to `admin`: at its address, or, for a listener bound
    /// to `0.0.0.0`/`[::]`, at the loopback address of its family (where a local agent calls it).
    pub(super) fn new(admin: SocketAddr, endpoints: Arc<dyn AdminDoor>) -> Self {
        let ip = match admin.ip() {
            IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        let at = SocketAddr::new(ip, admin.port());
        Self {
            at,
            written: at.to_string(),
            endpoints,
        }
    }

    /// Whether a request target names the door exactly: its canonical `authority` and the
    /// authority as `written` in the URL (`[::ffff:127.0.0.1]` is canonically `127.0.0.1` but
    /// not the door). Costs a port comparison unless the port is the admin listener's.
    pub(super) fn is_at(&self, authority: &Authority, written: Option<&str>) -> bool {
        authority.port == self.at.port() && written == Some(self.written.as_str())
    }
}

impl Proxy {
    /// Lets the agent-facing admin endpoints answer at the admin listener's address through the
    /// proxy (once, at start).
    pub(crate) fn open_admin_door(&self, admin: SocketAddr, endpoints: Arc<dyn AdminDoor>) {
        let _ = self.door.set(Door::new(admin, endpoints));
    }

    /// The door, when the request target (`authority`, as `written`) names it.
    pub(super) fn door_at(&self, authority: &Authority, written: Option<&str>) -> Option<&Door> {
        self.door.get().filter(|d| d.is_at(authority, written))
    }

    /// Answers a request at the door: an agent-facing endpoint in-process, anything else 403
    /// `destination_forbidden`. Recorded as a request to the admin address, never forwarded.
    pub(super) async fn through_door(
        &self,
        door: &Door,
        req: Request<Incoming>,
        rec: &mut AuditRecord,
        path: &str,
        peer: Option<IpAddr>,
    ) -> Result<Outcome, ProxyError> {
        rec.connection = Some(ConnectionMode::Forward);
        rec.scheme = Some(Scheme::Http);
        rec.host = door.at.ip().to_string();
        rec.port = door.at.port();
        rec.path = path.to_string();
        if !door.endpoints.serves(req.method(), path) {
            return Err(ProxyError::Ourselves(format!(
                "{} {path}: the destination is intentgate itself; through the proxy its admin API \
                 answers /v1/intent and /v1/explain only",
                req.method()
            )));
        }
        rec.decision = Some(Verdict::Allow);
        rec.reasons
            .push("answered by intentgate's admin API in-process (never forwarded)".into());
        // No peer known (not from the proxy listener): judged as a remote one (fail closed).
        let peer = peer.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let id = rec.decision_id.clone();
        Ok(Outcome::Done(door.endpoints.answer(req, peer, &id).await))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Nobody;

    impl AdminDoor for Nobody {
        fn serves(&self, _: &Method, _: &str) -> bool {
            false
        }
        fn answer(
            &self,
            _: Request<Incoming>,
            _: IpAddr,
            _: &str,
        ) -> Pin<Box<dyn Future<Output = Response<Body>> + Send>> {
            unreachable!()
        }
    }

    /// Whether the door is at the target of `url`, as the pipeline reads it.
    fn opens(door: &Door, url: &str) -> bool {
        let uri: http::Uri = url.parse().unwrap();
        let (authority, _, _) = crate::target::absolute_target(&uri).unwrap();
        door.is_at(&authority, uri.authority().map(|a| a.as_str()))
    }

    #[test]
    fn the_door_is_the_admin_address_as_written_only() {
        let door = Door::new("127.0.0.1:15701".parse().unwrap(), Arc::new(Nobody));
        assert!(opens(&door, "http://127.0.0.1:15701/v1/intent"));
        for url in [
            "http://127.0.0.1:15700/v1/intent",
            "http://127.0.0.2:15701/",
            "http://[::ffff:127.0.0.1]:15701/",
            "http://[::ffff:7f00:1]:15701/",
            "http://0.0.0.0:15701/",
            "http://localhost:15701/",
            "http://[::1]:15701/",
        ] {
            assert!(!opens(&door, url), "{url}");
        }
        // A wildcard listener's door is loopback of its family.
        let v4 = Door::new("0.0.0.0:9".parse().unwrap(), Arc::new(Nobody));
        assert!(opens(&v4, "http://127.0.0.1:9/") && !opens(&v4, "http://0.0.0.0:9/"));
        let v6 = Door::new("[::]:9".parse().unwrap(), Arc::new(Nobody));
        assert!(opens(&v6, "http://[::1]:9/") && !opens(&v6, "http://127.0.0.1:9/"));
    }
}
