//! CONNECT, through the decision step (src/proxy/gate.rs). Spliced: decided on host and port
//! (with the CONNECT's own intent headers, else session, else default), the upstream dialled
//! BEFORE the 200 so failures are clear, then bytes spliced; its record is written when it ends,
//! with the bytes it moved. Intercepted: decided by the tunnel rule alone, its record written at
//! the 200 (each inner request has its own); a refusal is answered inside the tunnel.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::header::HeaderValue;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::sync::oneshot;
use tracing::{Instrument, Span, debug, debug_span, info_span, warn};

use super::audited::Relayed;
use super::gate::{self, LivePolicy, Refused};
use super::{Outcome, Proxy, VIA, headers, target, tunnel};
use crate::audit::AuditRecord;
use crate::conn::guard::InFlightToken;
use crate::error::{Blame, ProxyError};
use crate::policy::{ConnectionFacts, RequestFacts};
use crate::vocab::{ConnectionMode, Protocol, Scheme};

/// Decrements the tunnel count when a tunnel ends.
pub(super) struct TunnelCount(pub(super) Arc<Proxy>);

impl Drop for TunnelCount {
    fn drop(&mut self) {
        self.0.tunnels.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Proxy {
    pub(super) async fn connect(
        self: &Arc<Self>,
        req: Request<Incoming>,
        live: &LivePolicy,
        rec: &mut AuditRecord,
        token: InFlightToken,
    ) -> Result<Outcome, ProxyError> {
        // The target: host:port, port required; canonicalised like any other.
        let raw = req
            .uri()
            .authority()
            .map(|a| a.as_str())
            .unwrap_or_default();
        let authority = target::parse_authority(raw, None)?;
        // Intercepted: decided by the tunnel rule alone (its client sends no request headers worth
        // deciding on: each inner request is decided on its own, and dials its own upstream).
        // Spliced: decided here, on destination alone.
        let intercept = self
            .cfg
            .tls
            .intercepts(&authority.host, self.clients_trust_ca);
        let mode = if intercept {
            ConnectionMode::Intercepted
        } else {
            ConnectionMode::Connect
        };
        gate::note(rec, mode, Scheme::Https, &authority, None);
        let declared = gate::header_intent(req.headers(), &self.tag_intent, &self.task_header)?;
        let intent_token = headers::single_value(req.headers(), self.intent_tokens.header())?;
        let facts = RequestFacts {
            id: "",
            protocol: Protocol::Http11,
            method: "CONNECT",
            scheme: Scheme::Https,
            host: &authority.host,
            port: authority.port,
            path: None,
            query: None,
            headers: Some(req.headers()),
            connection: ConnectionFacts {
                mode,
                sni: None,
                intercepted: intercept,
            },
            destination: None,
            body: None,
            mcp: None,
            llm: None,
        };
        let call = gate::Call {
            facts,
            to: &authority,
            declared,
            intent_token,
            bodyless_with_body: None,
        };
        let decided = self.decide(live, rec, call).await;
        if intercept {
            // A refusal by policy (`port_not_in_scope`, `destination_forbidden`) is answered
            // inside the tunnel, where the client reads it; the CONNECT itself succeeds.
            let refused = match decided {
                Ok(_) => None,
                Err(err) if err.blame() == Blame::Policy => {
                    self.failed(rec, &err);
                    rec.reasons
                        .push("refused at the CONNECT: answered inside the tunnel".into());
                    Some(Refused {
                        err,
                        rec: rec.clone(),
                    })
                }
                Err(err) => return Err(err),
            };
            return self.open_tunnel(req, authority, token, None, refused, rec);
        }
        let allowed = decided?;
        crate::cred::refuse_spliced(
            live.policy.catalog(),
            &allowed.decision,
            &live.agent.id,
            rec,
        )?;

        // Dialled before the 200, so a failure is a clear 502 rather than a dead tunnel.
        self.tunnel_slot()?;
        let upstream = match self.dialer.tunnel(&authority).await {
            Ok(u) => u,
            Err(e) => {
                self.tunnels.fetch_sub(1, Ordering::AcqRel);
                return Err(e.into());
            }
        };
        self.open_tunnel(req, authority, token, Some(upstream), None, rec)
    }

    /// Takes a place among the open tunnels, or refuses with 503.
    pub(super) fn tunnel_slot(&self) -> Result<(), ProxyError> {
        let limit = self.cfg.limits.max_tunnels;
        if self.tunnels.fetch_add(1, Ordering::AcqRel) >= limit {
            self.tunnels.fetch_sub(1, Ordering::AcqRel);
            return Err(ProxyError::Overloaded {
                what: "tunnels",
                limit,
            });
        }
        Ok(())
    }

    /// Answers 200 and runs the tunnel: spliced to `upstream`, or intercepted when it is `None`
    /// (whose tunnel slot is taken here; a spliced tunnel's was taken before dialling), answering
    /// `refused` to its requests if its CONNECT was refused. A spliced tunnel's record waits for
    /// it to end (`Outcome::Upgraded`), with what it moved.
    fn open_tunnel(
        self: &Arc<Self>,
        req: Request<Incoming>,
        authority: target::Authority,
        token: InFlightToken,
        upstream: Option<tokio::net::TcpStream>,
        refused: Option<Refused>,
        rec: &AuditRecord,
    ) -> Result<Outcome, ProxyError> {
        if upstream.is_none() {
            self.tunnel_slot()?;
        }
        let count = TunnelCount(self.clone());
        let id = rec.decision_id.clone();
        let proxy = self.clone();
        let target = authority.to_host_port();
        let id_header = HeaderValue::from_str(&id).ok();
        let upgrade = hyper::upgrade::on(req);
        let relayed = match upstream {
            Some(upstream) => {
                let idle = Duration::from_millis(self.cfg.limits.tunnel_idle_timeout_ms);
                let (done, relayed) = oneshot::channel();
                // At debug: a span at info costs ~10k instructions a tunnel (its fields
                // formatted), and the one line at info or above names them itself.
                let span = debug_span!("tunnel", %target, decision_id = %id);
                spawn_tunnel(
                    token,
                    count,
                    upgrade,
                    (target, id),
                    span,
                    move |upgraded| async move {
                        let closing = proxy.audit.closing();
                        let s =
                            tunnel::splice(TokioIo::new(upgraded), upstream, idle, closing).await;
                        debug!(end = ?s.end, "tunnel ended");
                        let _ = done.send(Relayed::from(&s));
                    },
                );
                Some(relayed)
            }
            None => {
                let span = info_span!("tunnel", %target, decision_id = %id);
                spawn_tunnel(
                    token,
                    count,
                    upgrade,
                    (target, id),
                    span,
                    move |upgraded| async move {
                        // Boxed here, made in its box: the task (moved when spawned, and again into
                        // tokio's cell) stays small, though TLS and an HTTP server inside make this
                        // future tens of KB.
                        let mode = ConnectionMode::Intercepted;
                        let io = TokioIo::new(upgraded);
                        super::pinned_in_box!(proxy.intercept(io, authority, mode, refused)).await
                    },
                );
                None
            }
        };
        let mut resp = Response::new(Empty::new().map_err(|never| match never {}).boxed());
        *resp.status_mut() = StatusCode::OK;
        resp.headers_mut()
            .insert(http::header::VIA, HeaderValue::from_static(VIA));
        if let Some(v) = id_header {
            resp.headers_mut().insert(super::headers::DECISION_ID, v);
        }
        Ok(match relayed {
            Some(relayed) => Outcome::Upgraded(resp, relayed, "tunnel"),
            None => Outcome::Done(resp),
        })
    }
}

/// Runs a tunnel once its CONNECT is upgraded: `run` gets the client's stream. The in-flight token
/// lives as long as the tunnel (the connection guard stays out of its bytes), and so does the
/// tunnel count. Each caller's `run` makes a task type of its own: a spliced tunnel's future
/// would otherwise be as large as an intercepted one's (TLS and an HTTP server) and be copied at
/// that size when spawned.
fn spawn_tunnel<F, R>(
    token: InFlightToken,
    count: TunnelCount,
    upgrade: OnUpgrade,
    (target, id): (String, String),
    span: Span,
    run: F,
) where
    F: FnOnce(Upgraded) -> R + Send + 'static,
    R: Future<Output = ()> + Send,
{
    tokio::spawn(
        async move {
            let _token = token;
            let _count = count;
            match upgrade.await {
                Ok(upgraded) => run(upgraded).await,
                Err(e) => warn!(%target, decision_id = %id, error = %e, "CONNECT upgrade failed"),
            }
        }
        .instrument(span),
    );
}
