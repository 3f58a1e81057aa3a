//! The upstream sender: `Upstreams::send` takes every forwarded request to its upstream (plain
//! HTTP from the proxy listener or a redirected connection, HTTP or HTTPS inside an intercepted
//! tunnel, directly or through a parent proxy). The request goes over a connection that its
//! client connection or tunnel (its `Affinity`) kept from an earlier request to the same
//! destination, else one another left idle (src/proxy/sender/idle.rs), else a new one.
//!
//! A connection serves only the destination (host, port, TLS or not) it was dialled for, by
//! `Dialer`, which vets every address right before connecting (src/proxy/upstream.rs); HTTPS is
//! verified against the configured roots. It is not reused once idle for longer than
//! `limits.pool_idle_timeout_ms`, and a request that a reused connection closed before sending is
//! retried once on a new one. A connection can be acquired before its request is ready
//! (`Upstreams::acquire`, then `send` with it, or `release` when the request is not sent).

mod conn;
mod deadline;
mod eof;
mod idle;
mod kept;

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, Response, Uri, Version};
use hyper::body::Incoming;

use super::audited::Counted;
use super::inspect::Replay;
use super::upstream::Dialer;
use crate::config::Limits;
use crate::error::ProxyError;
use crate::target::Authority;
use crate::tls::Tls;
pub(crate) use deadline::{Elapsed, ResponseTimer};
pub(crate) use eof::UncleanClose;
pub(crate) use kept::Affinity;

use conn::{Conn, Idle, Key};
use idle::Registry;
use kept::Slot;

/// A request as it goes upstream. Its body boxed: hyper moves a request (and every `Result`
/// that can carry one back for a retry) through its channel to the connection's task byte by
/// byte, ~10 times a request; the request's head is 224 bytes, the body ~190 (the inspected
/// prefix's room, its trailers, hyper's `Incoming`). Boxed, a request is 232 bytes, and a copy
/// of up to 256 bytes costs a third of one of 416 (the size where glibc's `memcpy` turns to
/// its loop).
pub(crate) type Outgoing = Request<OutBody>;
/// The body of an `Outgoing` request.
pub(crate) type OutBody = Box<Counted<Replay>>;

/// An upstream's response, and for HTTPS over HTTP/1.1 its connection's close note.
pub(crate) struct Sent {
    pub resp: Response<Incoming>,
    pub unclean: Option<UncleanClose>,
    /// When the response head came (the clock read that starts the connection's idle time).
    pub at: Instant,
}

/// Where a request goes upstream.
pub(crate) struct Destination<'a> {
    pub authority: &'a Authority,
    /// HTTPS (an intercepted TLS tunnel's requests): verified TLS to `authority`.
    pub tls: bool,
    /// The canonical path and query, sent in origin-form.
    pub path_and_query: String,
}

/// The proxy's upstream connections, and how requests find them.
pub(crate) struct Upstreams {
    dialer: Dialer,
    tls: Arc<Tls>,
    handshake_timeout: Duration,
    registry: Arc<Registry>,
}

impl Upstreams {
    pub(crate) fn new(dialer: Dialer, tls: Arc<Tls>, limits: &Limits) -> Self {
        Self {
            dialer,
            tls,
            handshake_timeout: Duration::from_millis(limits.connect_timeout_ms),
            registry: Arc::new(Registry::new(
                Duration::from_millis(limits.pool_idle_timeout_ms),
                limits.pool_max_idle_per_host,
            )),
        }
    }

    /// Sends the request `req` holds to `to` over `acquired` (see `acquire`), or acquires one
    /// now (`now`: the caller's clock read as it sends). The request is taken out of `req` as it
    /// goes: lent, not moved into this future and the next (a request is ~450 bytes, and each
    /// copy would be room in every request's future).
    pub(crate) async fn send(
        &self,
        from: &Affinity,
        to: Destination<'_>,
        req: &mut Option<Outgoing>,
        acquired: Option<Acquired>,
        now: Instant,
    ) -> Result<Sent, ProxyError> {
        let Destination {
            authority,
            tls,
            path_and_query,
        } = to;
        let Some(r) = req.as_mut() else {
            return Err(closed_before_sent(authority));
        };
        let sequential = is_sequential(r);
        *r.version_mut() = Version::HTTP_11;
        *r.uri_mut() = origin_form(r.uri(), path_and_query)?;
        let slot = &from.0;
        let Acquired { idle, reused } = match acquired {
            Some(a) => a,
            None => {
                self.acquire_at(from, authority, tls, sequential, now)
                    .await?
            }
        };
        // Only a reused connection gives the request back (it closed before it left).
        if let Some(sent) = self.try_send(slot, idle, req, authority, reused).await? {
            return Ok(sent);
        }
        let idle = Box::pin(self.dial(authority, tls)).await?;
        (self.try_send(slot, idle, req, authority, false).await?)
            .ok_or_else(|| closed_before_sent(authority))
    }

    /// A connection for a request to `authority` (`sequential`: see `is_sequential`), not yet
    /// used: one `from` keeps when one fits, else one another client connection or tunnel left
    /// idle, else a new one (vetted addresses dialled, TLS verified), which `from` then keeps.
    pub(crate) async fn acquire(
        &self,
        from: &Affinity,
        authority: &Authority,
        tls: bool,
        sequential: bool,
    ) -> Result<Acquired, ProxyError> {
        self.acquire_at(from, authority, tls, sequential, Instant::now())
            .await
    }

    /// `acquire`, `now` being the caller's clock read (no await since).
    async fn acquire_at(
        &self,
        from: &Affinity,
        authority: &Authority,
        tls: bool,
        sequential: bool,
        now: Instant,
    ) -> Result<Acquired, ProxyError> {
        let slot = &from.0;
        let max_idle = self.registry.max_idle();
        let reused = slot
            .take(authority, tls, max_idle, sequential, now)
            .or_else(|| self.registry.take(authority, tls, slot));
        if let Some(idle) = reused {
            return Ok(Acquired { idle, reused: true });
        }
        let idle = Box::pin(self.dial(authority, tls)).await?;
        Ok(Acquired {
            idle,
            reused: false,
        })
    }

    /// Gives back a connection acquired for a request that is not sent: `from` keeps it idle.
    pub(crate) fn release(&self, from: &Affinity, acquired: Acquired) {
        from.0.put(acquired.idle, &self.registry, Instant::now());
    }

    /// A new connection to `authority` (kept by the slot it is sent for, `try_send`). Callers
    /// box it: dialling (TLS handshake included) is most of a request's future, and rare on kept
    /// connections.
    async fn dial(&self, authority: &Authority, tls: bool) -> Result<Idle, ProxyError> {
        let handshake = tls.then(|| (&self.tls.upstream, self.handshake_timeout));
        let conn = conn::dial(&self.dialer, handshake, authority).await?;
        Ok(Idle::new(Key::new(authority, tls), conn))
    }

    /// Sends the request `req` holds on `idle`'s connection and keeps it in `slot`. `Ok(None)`:
    /// a `reused` connection closed before the request left; it is back in `req`, to go on a new
    /// one.
    async fn try_send(
        &self,
        slot: &Arc<Slot>,
        mut idle: Idle,
        req: &mut Option<Outgoing>,
        authority: &Authority,
        reused: bool,
    ) -> Result<Option<Sent>, ProxyError> {
        if idle.conn.ready().await.is_err() && reused {
            return Ok(None);
        }
        // Origin-form, except to a parent proxy (plain HTTP) and over HTTP/2, where the scheme
        // and authority travel with the target (`:scheme`, `:authority`).
        let absolute = match idle.conn {
            Conn::H2(_) => Some("https"),
            Conn::H1(..) if !idle.key.tls && !self.dialer.is_direct() => Some("http"),
            Conn::H1(..) => None,
        };
        let r = req.as_mut().ok_or_else(|| closed_before_sent(authority))?;
        aim(r, absolute, authority)?;
        let sent = match &mut idle.conn {
            Conn::H1(s, unclean) => {
                let unclean = unclean.clone();
                let sent = s.try_send_request(taken(req, authority)?).await;
                // One clock read: the connection's idle time starts when its response came.
                sent.map(|resp| {
                    let at = Instant::now();
                    slot.put(idle, &self.registry, at);
                    Sent { resp, unclean, at }
                })
            }
            Conn::H2(s) => {
                let mut s = s.clone();
                slot.put(idle, &self.registry, Instant::now());
                let sent = s.try_send_request(taken(req, authority)?).await;
                sent.map(|resp| Sent {
                    resp,
                    unclean: None,
                    at: Instant::now(),
                })
            }
        };
        match sent {
            Ok(resp) => Ok(Some(resp)),
            Err(mut e) => match e.take_message() {
                Some(unsent) if reused => {
                    *req = Some(unsent);
                    Ok(None)
                }
                _ => Err(conn::protocol_error(authority, &e.into_error())),
            },
        }
    }
}

/// The request `req` holds, taken to be sent (moved straight into the send, never borrowed: a
/// borrowed local would keep its room in the future across the send's await).
fn taken(req: &mut Option<Outgoing>, authority: &Authority) -> Result<Outgoing, ProxyError> {
    req.take().ok_or_else(|| closed_before_sent(authority))
}

/// An upstream connection acquired for a request before it is sent (`Upstreams::acquire`).
pub(crate) struct Acquired {
    idle: Idle,
    /// Kept from an earlier request: it may have closed meanwhile (the request then goes on a
    /// new one).
    reused: bool,
}

/// Whether `req`'s client sends its requests in turn (HTTP/1), not at once (HTTP/2, in a
/// tunnel): its kept HTTP/1 connection may be taken while the last response ends.
pub(crate) fn is_sequential<B>(req: &Request<B>) -> bool {
    req.version() != Version::HTTP_2
}

fn closed_before_sent(authority: &Authority) -> ProxyError {
    ProxyError::UpstreamProtocol {
        target: authority.to_host_port(),
        detail: "connection closed before the request was sent".to_string(),
    }
}

/// Puts the request target in origin-form (`absolute` is `None`), or in absolute-form with
/// that scheme and `authority`.
fn aim(
    req: &mut Outgoing,
    absolute: Option<&str>,
    authority: &Authority,
) -> Result<(), ProxyError> {
    let uri = req.uri();
    let pq = uri.path_and_query().map_or("/", |p| p.as_str());
    let aimed = match absolute {
        None if uri.scheme().is_none() => return Ok(()),
        None => Uri::try_from(pq),
        Some(scheme) => {
            let host_port = authority.to_host_port();
            let mut s = String::with_capacity(scheme.len() + 3 + host_port.len() + pq.len());
            for part in [scheme, "://", &host_port, pq] {
                s.push_str(part);
            }
            Uri::try_from(s)
        }
    };
    *req.uri_mut() = aimed.map_err(|_| unbuildable())?;
    Ok(())
}

/// `pq` as an origin-form target: the request's own path and query where they are the same
/// text (nearly always: shared, not parsed again), else `pq` parsed.
fn origin_form(uri: &Uri, pq: String) -> Result<Uri, ProxyError> {
    if let Some(own) = uri.path_and_query().filter(|own| own.as_str() == pq) {
        let mut parts = http::uri::Parts::default();
        parts.path_and_query = Some(own.clone());
        if let Ok(uri) = Uri::from_parts(parts) {
            return Ok(uri);
        }
    }
    Uri::try_from(pq).map_err(|_| unbuildable())
}

fn unbuildable() -> ProxyError {
    ProxyError::bad_request("the request target could not be rebuilt", "check the URL")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The request's own path and query, shared, is the target `pq` parsed would be; another
    /// text is parsed.
    #[test]
    fn the_origin_form_target_is_pq_whether_shared_or_parsed() {
        for (own, pq) in [
            ("http://h:8080/small", "/small"),
            ("http://h/a/b?q=1&r", "/a/b?q=1&r"),
            ("http://h", "/"),
            ("/x?y", "/x?y"),
            ("http://h/a/../b", "/b"),
            ("http://h/%7euser", "/~user"),
        ] {
            let uri: Uri = own.parse().unwrap();
            let aimed = origin_form(&uri, pq.to_string()).unwrap();
            let parsed = Uri::try_from(pq).unwrap();
            assert_eq!(aimed, parsed, "{own} as {pq}");
            assert_eq!(aimed.to_string(), parsed.to_string(), "{own} as {pq}");
            assert!(aimed.scheme().is_none() && aimed.authority().is_none());
        }
        assert!(origin_form(&"/a".parse().unwrap(), "/a b".into()).is_err());
    }
}
