//! The upstream TLS connections an intercepted tunnel keeps between its requests. A tunnel has
//! exactly one authority, so its requests reuse the connection of the last one: no pool checkout,
//! no idle-list bookkeeping and no extra task per request. When the tunnel ends, its idle
//! connections wait in a shared list (src/proxy/idle.rs) for the next tunnel to the same
//! host:port, as the pool would keep them.
//!
//! Every new connection is dialled by `Dialer::dial` (which vets each address right before
//! connecting) and verified by `connector::tls_handshake`, exactly as the pooled connector does.
//! A kept connection serves only the host:port it was dialled for, and is not reused once idle
//! for longer than `limits.pool_idle_timeout_ms` (the reaper in src/proxy/idle.rs closes it).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use super::audited::Counted;
use super::connector::{TlsDialError, tls_handshake};
use super::idle::IdleUpstreams;
use super::inspect::Replay;
use super::target::Authority;
use super::{Proxy, reuse};
use crate::error::ProxyError;

type Outgoing = Request<Counted<Replay>>;

/// A request sender on an upstream TLS connection, as ALPN chose.
pub(super) enum TlsSender {
    H1(http1::SendRequest<Counted<Replay>>),
    H2(http2::SendRequest<Counted<Replay>>),
}

impl TlsSender {
    fn is_closed(&self) -> bool {
        match self {
            TlsSender::H1(s) => s.is_closed(),
            TlsSender::H2(s) => s.is_closed(),
        }
    }

    /// Whether nothing is in flight on the connection (an HTTP/2 one: no way to tell cheaply, so
    /// its `since` is refreshed on each use and it counts as idle).
    pub(super) fn is_idle(&self) -> bool {
        match self {
            TlsSender::H1(s) => s.is_ready(),
            TlsSender::H2(_) => true,
        }
    }
}

/// An idle connection and since when.
pub(super) struct Idle {
    pub sender: TlsSender,
    pub since: Instant,
}

impl Idle {
    pub fn fresh(&self, max_idle: Duration) -> bool {
        !self.sender.is_closed() && self.since.elapsed() <= max_idle
    }
}

/// The connections one tunnel keeps, all for its own host:port.
pub struct TunnelUpstream {
    authority: Authority,
    idle: Mutex<Vec<Idle>>,
    home: Arc<IdleUpstreams>,
}

impl Drop for TunnelUpstream {
    fn drop(&mut self) {
        if let Ok(list) = self.idle.get_mut() {
            let list = std::mem::take(list);
            self.home.adopt_tls(&self.authority, list);
        }
    }
}

impl TunnelUpstream {
    pub(super) fn new(authority: Authority, home: &Arc<IdleUpstreams>) -> Self {
        Self {
            authority,
            idle: Mutex::default(),
            home: home.clone(),
        }
    }

    /// A sender to reuse. `sequential` (an HTTP/1 tunnel: its next request comes after the last
    /// response) takes the newest HTTP/1 one even if the last response is still finishing, and
    /// the caller waits for it; otherwise only one that is ready now. An HTTP/2 one is shared.
    fn take(&self, max_idle: Duration, sequential: bool) -> Option<TlsSender> {
        let mut list = self.idle.lock().ok()?;
        list.retain(|i| i.fresh(max_idle));
        let at = list.iter().rposition(|i| match &i.sender {
            TlsSender::H2(_) => true,
            TlsSender::H1(s) => sequential || s.is_ready(),
        })?;
        if let TlsSender::H2(s) = &list[at].sender {
            let s = s.clone();
            list[at].since = Instant::now();
            return Some(TlsSender::H2(s));
        }
        Some(list.swap_remove(at).sender)
    }

    /// Keeps `sender` for the next request (at most `limits.pool_max_idle_per_host`).
    fn put(&self, sender: TlsSender) {
        let Ok(mut list) = self.idle.lock() else {
            return;
        };
        if matches!(sender, TlsSender::H2(_))
            && list.iter().any(|i| matches!(i.sender, TlsSender::H2(_)))
        {
            return; // the HTTP/2 connection in use stays listed while it is shared
        }
        if list.len() >= self.home.max_per_host().max(1) {
            list.remove(0);
        }
        list.push(Idle {
            sender,
            since: Instant::now(),
        });
    }

    /// Closes the connections idle for longer than `max_idle` (not one still sending a body).
    pub(super) fn expire(&self, max_idle: Duration) {
        if let Ok(mut list) = self.idle.try_lock() {
            list.retain(|i| {
                !i.sender.is_closed() && (i.since.elapsed() <= max_idle || !i.sender.is_idle())
            });
        }
    }
}

/// The response, or the request back when a reused connection closed before sending it.
type Tried = Result<Response<Incoming>, Outgoing>;

impl Proxy {
    /// Sends an intercepted tunnel's HTTPS request over the connection the tunnel keeps, else a
    /// new vetted and verified one that the tunnel then keeps. `sequential`: the tunnel's client
    /// speaks HTTP/1 (its next request comes after this response). A request that a reused
    /// connection closed before sending is retried once on a new one (the pool does the same).
    pub(super) async fn send_kept_tls(
        &self,
        kept: &Arc<TunnelUpstream>,
        sequential: bool,
        mut req: Outgoing,
        path_and_query: &str,
    ) -> Result<Response<Incoming>, ProxyError> {
        let authority = &kept.authority;
        let max_idle = self.idle.max_idle();
        let reused = kept
            .take(max_idle, sequential)
            .or_else(|| self.idle.take_tls(authority));
        if let Some(sender) = reused {
            match self
                .try_send(kept, sender, req, path_and_query, true)
                .await?
            {
                Ok(resp) => return Ok(resp),
                Err(unsent) => req = unsent,
            }
        }
        let sender = self.dial_tls(authority).await?;
        self.idle.watch_tunnel(kept);
        match self
            .try_send(kept, sender, req, path_and_query, false)
            .await?
        {
            Ok(resp) => Ok(resp),
            Err(_) => Err(ProxyError::UpstreamProtocol {
                target: authority.to_host_port(),
                detail: "connection closed before the request was sent".to_string(),
            }),
        }
    }

    /// Sends on `sender`; `Unsent` when a `reused` connection turned out closed before sending.
    async fn try_send(
        &self,
        kept: &TunnelUpstream,
        sender: TlsSender,
        mut req: Outgoing,
        path_and_query: &str,
        reused: bool,
    ) -> Result<Tried, ProxyError> {
        let authority = &kept.authority;
        let sent = match sender {
            TlsSender::H1(mut s) => {
                if s.ready().await.is_err() && reused {
                    return Ok(Err(req));
                }
                *req.uri_mut() = target_uri(None, path_and_query)?;
                let sent = s.try_send_request(req).await;
                if sent.is_ok() {
                    kept.put(TlsSender::H1(s));
                }
                sent
            }
            TlsSender::H2(mut s) => {
                if s.ready().await.is_err() && reused {
                    return Ok(Err(req));
                }
                *req.uri_mut() = target_uri(Some(authority), path_and_query)?;
                kept.put(TlsSender::H2(s.clone()));
                s.try_send_request(req).await
            }
        };
        match sent {
            Ok(resp) => Ok(Ok(resp)),
            Err(mut e) => match e.take_message() {
                Some(unsent) if reused => Ok(Err(unsent)),
                _ => Err(reuse::protocol_error(authority, &e.into_error())),
            },
        }
    }

    /// A new connection to `authority`: vetted and dialled by `Dialer::dial`, TLS verified as
    /// the pooled connector does, then HTTP/2 or HTTP/1.1 as ALPN agreed.
    async fn dial_tls(&self, authority: &Authority) -> Result<TlsSender, ProxyError> {
        let tcp = self.dialer.dial(&authority.host, authority.port).await?;
        let timeout = Duration::from_millis(self.cfg.limits.connect_timeout_ms);
        let (tls, h2) = tls_handshake(&self.tls.upstream, tcp, authority, timeout)
            .await
            .map_err(|e| match e {
                TlsDialError::Dial(d) => ProxyError::from(d),
                TlsDialError::Tls(t) => ProxyError::from(t),
            })?;
        let io = TokioIo::new(tls);
        if h2 {
            let (mut sender, conn) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(io)
                .await
                .map_err(|e| reuse::protocol_error(authority, &e))?;
            reuse::drive(conn);
            sender
                .ready()
                .await
                .map_err(|e| reuse::protocol_error(authority, &e))?;
            return Ok(TlsSender::H2(sender));
        }
        let (sender, conn) = http1::handshake(io)
            .await
            .map_err(|e| reuse::protocol_error(authority, &e))?;
        reuse::drive(conn);
        Ok(TlsSender::H1(sender))
    }
}

/// Origin-form for HTTP/1.1; for HTTP/2 the absolute form the pooled client sends, which gives
/// `:scheme` and `:authority`.
fn target_uri(h2: Option<&Authority>, path_and_query: &str) -> Result<Uri, ProxyError> {
    let built = match h2 {
        None => Uri::try_from(path_and_query),
        Some(a) => Uri::try_from(format!("https://{}{path_and_query}", a.to_host_port())),
    };
    built.map_err(|_| {
        ProxyError::bad_request("the request target could not be rebuilt", "check the URL")
    })
}
