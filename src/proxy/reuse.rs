//! Sending a forwarded request upstream. A client connection keeps the HTTP/1 connection of its
//! last plain-HTTP request and reuses it for the next request to the same host and port: no pool
//! checkout, no idle-list bookkeeping and no extra task per request. A client connection without
//! one takes an idle one that another (or an ended) client connection holds (src/proxy/idle.rs),
//! else dials. Anything else (HTTPS inside an intercepted tunnel, a parent proxy, a transparent
//! connection) goes through the pooled clients.
//!
//! A kept connection was dialled for exactly its (host, port), by `Dialer::dial`, which vets every
//! address right before connecting; a request for another destination never uses it (the kept one
//! is closed and a new, vetted one is dialled). It is not reused once idle for longer than
//! `limits.pool_idle_timeout_ms`.

use std::sync::Arc;

use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tracing::debug;

use super::audited::Counted;
use super::idle::Slot;
use super::inspect::Replay;
use super::target::Authority;
use super::{Proxy, upstream};
use crate::error::ProxyError;

type Outgoing = Request<Counted<Replay>>;

/// The upstream connection one client connection keeps between its requests.
#[derive(Default)]
pub struct KeptUpstream(Arc<Slot>);

impl Proxy {
    /// Sends a plain-HTTP request in origin-form (`path_and_query`) to `authority`, over the
    /// connection `kept` holds when it fits, else over a new vetted one that `kept` then keeps.
    /// A request that a reused connection closed before sending is retried once on a new one
    /// (the pool does the same).
    pub(super) async fn send_kept(
        &self,
        kept: &KeptUpstream,
        mut req: Outgoing,
        authority: &Authority,
        path_and_query: &str,
    ) -> Result<Response<Incoming>, ProxyError> {
        let (host, port) = (authority.host.as_str(), authority.port);
        *req.uri_mut() = Uri::try_from(path_and_query).map_err(|_| {
            ProxyError::bad_request("the request target could not be rebuilt", "check the URL")
        })?;
        let slot = &kept.0;
        let own = slot.take(host, port, self.idle.max_idle());
        let mut reused = own.or_else(|| {
            let other = self.idle.take(host, port, slot);
            if other.is_some() {
                self.idle.holds(host, port, slot);
            }
            other
        });
        if let Some(mut sender) = reused.take() {
            // Ready once the previous exchange has finished; an error means it closed meanwhile.
            if sender.ready().await.is_ok() {
                match sender.try_send_request(req).await {
                    Ok(resp) => {
                        slot.put(host, port, sender, &self.idle);
                        return Ok(resp);
                    }
                    Err(mut e) => match e.take_message() {
                        Some(unsent) => req = unsent,
                        None => return Err(protocol_error(authority, &e.into_error())),
                    },
                }
            }
        }
        let stream = self.dialer.dial(host, port).await?;
        let (mut sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| protocol_error(authority, &e))?;
        drive(conn);
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| protocol_error(authority, &e))?;
        slot.put(host, port, sender, &self.idle);
        self.idle.holds(host, port, slot);
        Ok(resp)
    }
}

/// Runs an upstream connection (HTTP/1 or HTTP/2, plain or TLS) until it closes.
pub(super) fn drive<C>(conn: C)
where
    C: std::future::Future<Output = Result<(), hyper::Error>> + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            debug!(error = %e, "upstream connection ended with an error");
        }
    });
}

/// What the pooled client reports for the same failure (`upstream::classify_client_error`).
pub(super) fn protocol_error(authority: &Authority, e: &hyper::Error) -> ProxyError {
    ProxyError::UpstreamProtocol {
        target: authority.to_host_port(),
        detail: e.to_string(),
    }
}

impl Proxy {
    /// Sends a request over the pooled clients: HTTPS (an intercepted tunnel's requests), or
    /// plain HTTP through a parent proxy or from a redirected connection.
    pub(super) async fn send_pooled(
        &self,
        mut req: Outgoing,
        scheme: &'static str,
        authority: &Authority,
        path_and_query: &str,
    ) -> Result<Response<Incoming>, ProxyError> {
        let target = authority.to_host_port();
        let mut uri = String::with_capacity(scheme.len() + target.len() + path_and_query.len() + 3);
        for part in [scheme, "://", &target, path_and_query] {
            uri.push_str(part);
        }
        *req.uri_mut() = Uri::try_from(uri).map_err(|_| {
            ProxyError::bad_request("the request target could not be rebuilt", "check the URL")
        })?;
        let sent = if scheme == "https" {
            self.https.request(req).await
        } else {
            self.client.request(req).await
        };
        sent.map_err(|e| upstream::classify_client_error(&e, &target))
    }
}
