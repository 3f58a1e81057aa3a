//! CONNECT: decided on host and port (with the CONNECT's own intent headers, else session, else
//! default), the upstream dialled BEFORE the 200 so failures are clear, then bytes spliced. A
//! spliced tunnel's record is written when it ends, with the bytes it moved; an intercepted
//! one's at the 200 (each inner request has its own).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::header::HeaderValue;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::sync::oneshot;
use tracing::{Instrument, debug, info_span, warn};

use super::audited::Relayed;
use super::decide::{self, Live};
use super::{Outcome, Proxy, VIA, target, tunnel};
use crate::audit::AuditRecord;
use crate::error::ProxyError;
use crate::listen::guard::InFlightToken;
use crate::policy::{ConnectionFacts, RequestFacts};

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
        live: &Live,
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
        rec.connection = "connect";
        // A CONNECT opens a tunnel for an https URL (RFC 9110 9.3.6): its record and policy input
        // say so (a spliced tunnel's bytes are not looked at).
        rec.scheme = "https";
        rec.host.clone_from(&authority.host);
        rec.port = authority.port;

        let (host, port) = (authority.host.as_str(), authority.port);
        let intercept = self.cfg.tls.intercepts(host, self.clients_trust_ca);
        if intercept {
            // Destination safety, the part that needs no lookup: an IP literal's address classes.
            // A name is resolved only for an inner request its own decision lets go.
            self.dialer.vet_early(host, port, false).await?;
            // Only to a port some intent (or `egress.connect_ports`) allows, whatever the
            // interception setting: a spliced CONNECT gets the same from the catalog below.
            self.connect_port(&req, live, &authority, rec)?;
            // Intercepted: the CONNECT carries no request headers worth deciding on; each inner
            // request is decided on its own. The upstream is dialled per inner request.
            if rec.decision.is_empty() {
                rec.decision = "allow";
            }
            rec.connection = "intercepted";
            rec.reasons
                .push("tunnel intercepted: each inner request is decided on its own".into());
            return self.open_tunnel(req, authority, token, None, rec);
        }
        // Spliced: decided here, on destination alone. A name is resolved before the decision
        // only when a loaded module reads input.destination, else only once it may go.
        let reads_destination = live.policy.reads_destination();
        let early = self.dialer.vet_early(host, port, reads_destination).await?;
        let declared = decide::header_intent(req.headers(), &self.tag_intent, &self.task_header)?;
        let id = rec.decision_id.clone();
        let facts = RequestFacts {
            id: &id,
            protocol: "HTTP/1.1",
            method: "CONNECT",
            scheme: "https",
            host: &authority.host,
            port: authority.port,
            path: None,
            query: None,
            headers: Some(req.headers()),
            connection: ConnectionFacts {
                mode: "connect",
                sni: None,
                intercepted: false,
            },
            destination: early.destination(),
            body: None,
        };
        decide::decide(live, &self.session, &self.metrics, declared, &facts, rec)?;
        self.dialer.vet_pending(&early, host, port, rec).await?;

        // Dialled before the 200, so a failure is a clear 502 rather than a dead tunnel.
        self.tunnel_slot()?;
        let upstream = match self.dialer.tunnel(&authority).await {
            Ok(u) => u,
            Err(e) => {
                self.tunnels.fetch_sub(1, Ordering::AcqRel);
                return Err(e.into());
            }
        };
        self.open_tunnel(req, authority, token, Some(upstream), rec)
    }

    /// Refuses (403 `port_not_in_scope`) an intercepted CONNECT to a port that neither the
    /// catalog's rules nor `egress.connect_ports` allow; in monitor mode it is recorded only.
    fn connect_port(
        &self,
        req: &Request<Incoming>,
        live: &Live,
        authority: &target::Authority,
        rec: &mut AuditRecord,
    ) -> Result<(), ProxyError> {
        let port = authority.port;
        if self.cfg.egress.connect_ports.contains(&port) || live.policy.catalog().names_port(port) {
            return Ok(());
        }
        let declared = decide::header_intent(req.headers(), &self.tag_intent, &self.task_header)?;
        let intent = declared
            .map(|(i, _)| i.to_string())
            .or_else(|| live.default_intent.as_ref().map(|(i, _)| i.clone()));
        let reason = format!(
            "CONNECT {}: port {port} is not allowed by any intent nor egress.connect_ports",
            authority.to_host_port()
        );
        self.metrics
            .refusals
            .with_label_values(&["port_not_in_scope"])
            .inc();
        if live.policy.mode_for(intent.as_deref()) == crate::config::Mode::Monitor {
            rec.decision = "would_deny";
            rec.reasons.push(format!("would deny: {reason}"));
            return Ok(());
        }
        rec.decision = "deny";
        rec.error = Some("port_not_in_scope");
        rec.reasons = vec![reason.clone()];
        Err(ProxyError::Denied {
            code: "port_not_in_scope",
            reason,
            hint: "tunnels go to the ports the intents allow (443 by default); ask for an intent \
                   that allows this port, or add it to egress.connect_ports"
                .into(),
            agent: live.agent.id.clone(),
            intent,
        })
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
    /// (whose tunnel slot is taken here; a spliced tunnel's was taken before dialling). A
    /// spliced tunnel's record waits for it to end (`Outcome::Upgraded`), with what it moved.
    fn open_tunnel(
        self: &Arc<Self>,
        req: Request<Incoming>,
        authority: target::Authority,
        token: InFlightToken,
        upstream: Option<tokio::net::TcpStream>,
        rec: &AuditRecord,
    ) -> Result<Outcome, ProxyError> {
        if upstream.is_none() {
            self.tunnel_slot()?;
        }
        let count = TunnelCount(self.clone());
        let id = rec.decision_id.clone();
        let proxy = self.clone();
        let idle = Duration::from_millis(self.cfg.limits.tunnel_idle_timeout_ms);
        let (done, relayed) = match upstream {
            Some(_) => {
                let (tx, rx) = oneshot::channel();
                (Some(tx), Some(rx))
            }
            None => (None, None),
        };
        let span = info_span!("tunnel", target = %authority.to_host_port(), decision_id = %id);
        tokio::spawn(
            async move {
                // The token lives as long as the tunnel: the connection guard stays out of its bytes.
                let _token = token;
                let _count = count;
                match (hyper::upgrade::on(req).await, upstream) {
                    (Ok(upgraded), Some(upstream)) => {
                        let closing = proxy.audit.closing();
                        let s =
                            tunnel::splice(TokioIo::new(upgraded), upstream, idle, closing).await;
                        debug!(end = ?s.end, "tunnel ended");
                        if let Some(done) = done {
                            let _ = done.send(Relayed::from(&s));
                        }
                    }
                    (Ok(upgraded), None) => {
                        proxy.intercept(TokioIo::new(upgraded), authority).await
                    }
                    (Err(e), _) => warn!(error = %e, "CONNECT upgrade failed"),
                }
            }
            .instrument(span),
        );
        let mut resp = Response::new(Empty::new().map_err(|never| match never {}).boxed());
        *resp.status_mut() = StatusCode::OK;
        resp.headers_mut()
            .insert(http::header::VIA, HeaderValue::from_static(VIA));
        if let Ok(v) = HeaderValue::from_str(&id) {
            resp.headers_mut().insert("intentgate-decision-id", v);
        }
        Ok(match relayed {
            Some(relayed) => Outcome::Upgraded(resp, relayed, "tunnel"),
            None => Outcome::Done(resp),
        })
    }
}
