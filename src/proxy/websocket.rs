//! WebSocket upgrades: decided by the pipeline exactly like a GET, then sent upstream on a
//! dedicated HTTP/1.1 connection and, once the upstream answers 101, relayed byte for byte under
//! the tunnel limits (a place among `limits.max_tunnels`, `limits.tunnel_idle_timeout_ms`) with
//! one audit record carrying the byte counts when the relay ends.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;
use tracing::{Instrument, debug, info_span, warn};

use super::audited::Relayed;
use super::connect::TunnelCount;
use super::{Outcome, Proxy, headers, tunnel};
use crate::audit::Ended;
use crate::conn::guard::{InFlight, InFlightToken};
use crate::error::ProxyError;
use crate::target::Authority;
use crate::tls::client::UpstreamAlpn;
use crate::vocab::Scheme;

/// A request that asks for a WebSocket upgrade; on the proxy listener it holds the connection's
/// in-flight token so the connection guard stays out of the relayed bytes.
#[derive(Default)]
pub(super) struct Upgrading {
    token: Option<InFlightToken>,
}

impl Upgrading {
    pub(super) fn held_by(mut self, in_flight: &InFlight) -> Self {
        self.token = Some(in_flight.start());
        self
    }
}

const HINT: &str =
    "only 'Connection: Upgrade' with 'Upgrade: websocket' on a GET without a body is forwarded";

/// Whether the request asks for an upgrade: `None` when `Connection` does not name `upgrade` (a
/// stray `Upgrade` header is then removed as hop-by-hop); a WebSocket upgrade on a bodiless GET;
/// any other upgrade is refused with 400.
pub(super) fn requested(method: &Method, h: &HeaderMap) -> Result<Option<Upgrading>, ProxyError> {
    // Runs on every request: no allocation unless `Connection` names `upgrade`. Usually there
    // is no `Connection` (HTTP/1.1 keeps alive without one): looked for among the names first.
    let connection = crate::head::any(h, [&header::CONNECTION]);
    let upgrade =
        || headers::list_tokens(h, header::CONNECTION).any(|t| t.eq_ignore_ascii_case("upgrade"));
    if !(connection && upgrade()) {
        return Ok(None);
    }
    if !websocket_only(h) {
        let wanted: Vec<&str> = headers::list_tokens(h, header::UPGRADE).collect();
        return Err(ProxyError::bad_request(
            format!("upgrade to '{}' is not supported", wanted.join(", ")),
            HINT,
        ));
    }
    let body = h.contains_key(header::TRANSFER_ENCODING)
        || h.get(header::CONTENT_LENGTH).is_some_and(|v| v != "0");
    if method != Method::GET || body {
        return Err(ProxyError::bad_request(
            format!("a WebSocket upgrade must be a GET without a body, not {method}"),
            HINT,
        ));
    }
    Ok(Some(Upgrading::default()))
}

/// Whether `Upgrade` names exactly one protocol, `websocket`.
fn websocket_only(h: &HeaderMap) -> bool {
    let mut up = headers::list_tokens(h, header::UPGRADE);
    up.next()
        .is_some_and(|t| t.eq_ignore_ascii_case("websocket"))
        && up.next().is_none()
}

/// `Connection: upgrade` + `Upgrade: websocket` (the hop-by-hop pair each hop sets itself).
fn mark_upgrade(h: &mut HeaderMap) {
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
}

/// Sends the upgrade request on a fresh HTTP/1.1 connection that supports upgrades.
async fn send_on<IO>(io: IO, req: Request<Empty<Bytes>>) -> Result<Response<Incoming>, hyper::Error>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            debug!(error = %e, "websocket upstream connection ended with an error");
        }
    });
    sender.send_request(req).await
}

impl Proxy {
    /// Forwards a decided WebSocket upgrade (`req` already carries the tags of steps 7–8) to
    /// `authority`, origin-form `pq`, and relays the upgraded connections when it answers 101.
    pub(super) async fn websocket(
        self: &Arc<Self>,
        mut req: Request<super::inspect::Replay>,
        ws: Upgrading,
        authority: &Authority,
        scheme: Scheme,
        pq: &str,
    ) -> Result<Outcome, ProxyError> {
        // A place among the tunnels before anything is dialled (503 + Retry-After when full).
        self.tunnel_slot()?;
        let count = TunnelCount(self.clone());
        let client_side = hyper::upgrade::on(&mut req);
        let target = authority.to_host_port();
        let (mut parts, _) = req.into_parts();
        parts.uri = pq.parse().map_err(|_| {
            ProxyError::bad_request("the request target could not be rebuilt", "check the URL")
        })?;
        parts.version = Version::HTTP_11;
        mark_upgrade(&mut parts.headers);
        let out = Request::from_parts(parts, Empty::<Bytes>::new());
        let limit_ms = self.cfg.limits.upstream_response_timeout_ms;
        let sending = async {
            let tcp = self.dialer.tunnel(authority).await?;
            let sent = if scheme == Scheme::Https {
                let tls = self
                    .tls
                    .upstream
                    .connect(tcp, &authority.host, UpstreamAlpn::Http1)
                    .await
                    .map_err(|e| ProxyError::UpstreamTls {
                        target: target.clone(),
                        reason: e.to_string(),
                    })?;
                send_on(tls, out).await
            } else {
                send_on(tcp, out).await
            };
            sent.map_err(|e| ProxyError::UpstreamProtocol {
                target: target.clone(),
                detail: e.to_string(),
            })
        };
        let mut resp = tokio::time::timeout(Duration::from_millis(limit_ms), sending)
            .await
            .map_err(|_| ProxyError::UpstreamTimeout {
                target: target.clone(),
                stage: "websocket handshake",
                after_ms: limit_ms,
            })??;
        let metric = |result: &str| {
            self.metrics
                .websocket_upgrades
                .with_label_values(&[result])
                .inc();
        };
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            // Declined: an ordinary response, streamed back; the tunnel place is given back.
            metric("declined");
            drop(count);
            let (mut parts, body) = resp.into_parts();
            headers::remove_hop_by_hop_add_via(&mut parts.headers);
            let bytes_in = Arc::new(AtomicU64::new(0));
            return Ok(Outcome::Forwarded(
                Response::from_parts(parts, body),
                bytes_in,
                None,
            ));
        }
        if !websocket_only(resp.headers()) {
            metric("failed");
            return Err(ProxyError::UpstreamProtocol {
                target,
                detail: "answered 101 without 'Upgrade: websocket'".into(),
            });
        }
        metric("upgraded");
        let upstream_side = hyper::upgrade::on(&mut resp);
        let (done, relayed) = oneshot::channel();
        let idle = Duration::from_millis(self.cfg.limits.tunnel_idle_timeout_ms);
        let closing = self.audit.closing();
        let span = info_span!("websocket", target = %target);
        tokio::spawn(
            async move {
                let _count = count;
                let _token = ws.token;
                let relayed = match (client_side.await, upstream_side.await) {
                    (Ok(c), Ok(u)) => {
                        let s = tunnel::splice(TokioIo::new(c), TokioIo::new(u), idle, closing);
                        Relayed::from(&s.await)
                    }
                    (c, u) => {
                        warn!(client = ?c.err(), upstream = ?u.err(), "websocket upgrade failed");
                        Relayed {
                            up: 0,
                            down: 0,
                            end: Ended::Error,
                        }
                    }
                };
                debug!(end = relayed.end.as_str(), "websocket relay ended");
                let _ = done.send(relayed);
            }
            .instrument(span),
        );
        let (mut parts, _) = resp.into_parts();
        headers::remove_hop_by_hop_add_via(&mut parts.headers);
        mark_upgrade(&mut parts.headers);
        let body = Empty::new().map_err(|never| match never {}).boxed();
        Ok(Outcome::Upgraded(
            Response::from_parts(parts, body),
            relayed,
            "websocket relay",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        m
    }

    #[test]
    fn only_websocket_on_a_bodiless_get_is_an_upgrade() {
        let ws = h(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "WebSocket"),
        ]);
        assert!(requested(&Method::GET, &ws).unwrap().is_some());
        assert!(requested(&Method::POST, &ws).is_err());
        let stray = h(&[("upgrade", "websocket")]);
        assert!(requested(&Method::GET, &stray).unwrap().is_none());
        for other in ["foo", "websocket, foo", ""] {
            let m = h(&[("connection", "upgrade"), ("upgrade", other)]);
            assert!(requested(&Method::GET, &m).is_err(), "{other}");
        }
        let body = h(&[
            ("connection", "upgrade"),
            ("upgrade", "websocket"),
            ("content-length", "5"),
        ]);
        assert!(requested(&Method::GET, &body).is_err());
    }
}
