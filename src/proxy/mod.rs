//! The request pipeline: every request the agent sends passes through `Proxy::handle`, in the
//! order written down in `forward` (one comment per step, so a reader finds the path in one place).

mod audited;
mod connect;
pub mod connector;
pub mod decide;
mod dns;
mod door;
pub mod headers;
mod idle;
mod inspect;
mod intercept;
mod kept_tls;
mod rate;
mod reuse;
mod setup;
mod stub;
pub mod target;
pub mod transparent;
pub mod tunnel;
pub mod upstream;
mod websocket;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use http::header::{HOST, HeaderName, HeaderValue};
use http::{Method, Request, Response, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tracing::{Instrument, debug, debug_span};

use crate::audit::{Audit, AuditRecord};
use crate::config::Config;
use crate::error::{self, Blame, Body, ProxyError};
use crate::intent::SessionStore;
use crate::listen::guard::InFlight;
use crate::metrics::Metrics;
use crate::policy::{ConnectionFacts, RequestFacts};
use crate::tls::Tls;
use audited::{Audited, Counted};
use connector::{HttpClient, HttpsClient};
use decide::Live;
use target::Authority;
use upstream::Dialer;

pub(crate) use door::AdminDoor;
pub use headers::VIA;
pub use reuse::KeptUpstream;
pub use setup::{Parts, dns_server};

/// Everything the request path needs, shared by all connections.
pub struct Proxy {
    cfg: Arc<Config>,
    client: HttpClient,
    https: HttpsClient,
    /// Idle upstream connections held by client connections (src/proxy/idle.rs).
    idle: Arc<idle::IdleUpstreams>,
    dialer: Dialer,
    tls: Arc<Tls>,
    /// Whether clients were given intentgate's CA (a configured CA, `run`, an injected pod):
    /// `tls.intercept: auto` intercepts only then.
    clients_trust_ca: bool,
    strip: Vec<HeaderName>,
    tag_agent: HeaderName,
    tag_intent: HeaderName,
    tag_decision: HeaderName,
    /// The header an agent names its task in (`headers.task`).
    task_header: HeaderName,
    tunnels: AtomicUsize,
    rate: rate::RateLimiter,
    /// The policy and identity in force; swapped whole on reload. A request keeps the one it
    /// started with until it ends.
    pub live: ArcSwap<Live>,
    pub session: Arc<SessionStore>,
    pub metrics: Arc<Metrics>,
    pub audit: Audit,
    /// The agent-facing admin endpoints at the admin listener's address (src/proxy/door.rs).
    door: std::sync::OnceLock<door::Door>,
}

/// Where a request came from: the proxy listener (absolute-form or CONNECT), or an intercepted
/// tunnel (origin-form, its destination fixed by the CONNECT).
enum Entry<'a> {
    Listener(&'a InFlight),
    Tunnel(&'a intercept::TunnelInfo),
    /// Plain HTTP on a connection redirected to the transparent listener.
    Transparent(&'a transparent::Redirected),
}

impl Entry<'_> {
    /// Whether the raw request stream of the client connection turned ambiguous (a head with
    /// Content-Length and Transfer-Encoding, src/listen/framing.rs).
    fn ambiguous_framing(&self) -> bool {
        match self {
            Entry::Listener(f) => f.ambiguous_framing(),
            Entry::Tunnel(t) => t.in_flight.ambiguous_framing(),
            Entry::Transparent(r) => r.in_flight.ambiguous_framing(),
        }
    }
}

/// The upstream connection a request's client side keeps between its requests.
#[derive(Clone, Copy)]
enum Kept<'a> {
    /// Plain HTTP from the proxy listener: the client connection's (src/proxy/reuse.rs).
    Http(&'a KeptUpstream),
    /// HTTPS inside an intercepted TLS tunnel: the tunnel's (src/proxy/kept_tls.rs).
    Tls(&'a Arc<kept_tls::TunnelUpstream>),
}

/// The canonical destination of a forwarded request, and how it arrived.
struct Target {
    authority: Authority,
    path: String,
    query: Option<String>,
    scheme: &'static str,
    mode: &'static str,
    sni: Option<String>,
}

/// What the pipeline produced: an upstream response to stream back, or a finished response.
enum Outcome {
    Forwarded(Response<Incoming>, Arc<AtomicU64>),
    Done(Response<Body>),
    /// A 101 (WebSocket) or a CONNECT's 200 (spliced tunnel) whose connections are relayed in
    /// the background; the audit record waits for the relay to end, and names it in its reasons.
    Upgraded(
        Response<Body>,
        tokio::sync::oneshot::Receiver<audited::Relayed>,
        &'static str,
    ),
}

fn protocol(v: Version) -> &'static str {
    match v {
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_10 => "HTTP/1.0",
        _ => "HTTP/1.1",
    }
}

impl Proxy {
    /// The service entry point: never fails; errors become JSON responses (in `error`), and every
    /// request leaves exactly one audit record.
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        in_flight: InFlight,
    ) -> Result<Response<Body>, Infallible> {
        self.run(req, Entry::Listener(&in_flight)).await
    }

    async fn run(
        self: Arc<Self>,
        req: Request<Incoming>,
        entry: Entry<'_>,
    ) -> Result<Response<Body>, Infallible> {
        let started = Instant::now();
        // Back-pressure: the audit record's place is reserved before any work is done. While
        // the log cannot be written (`audit.on_failure: block`) nothing is forwarded: 503.
        let blocked = self.audit.blocked();
        let mut slot = if blocked {
            self.audit.try_reserve()
        } else {
            self.audit.reserve().await
        };
        let mut rec = AuditRecord {
            decision_id: crate::ids::decision_id(),
            at: Some(SystemTime::now()),
            method: req.method().to_string(),
            ..AuditRecord::default()
        };
        let live = self.live.load_full();
        // Every record names the agent, also one refused before its decision.
        rec.agent = Arc::clone(live.audit_agent());
        // At debug level: recording a span costs ~12k instructions a request (a quarter of the
        // path) at the default `info`, where nothing inside a request logs; the few warnings that
        // can name their decision_id do so themselves.
        let span = debug_span!("request", decision_id = %rec.decision_id, method = %req.method(), target = %req.uri());
        // Pinned where it lies, so the span wraps a reference rather than a copy of the state.
        let outcome = if blocked {
            Err(ProxyError::AuditUnavailable)
        } else {
            // Armed while the pipeline runs: if the request is dropped there (the client went
            // away, or shutdown closed its connection), the record is still written.
            let mut armed = audited::Armed::new(&mut rec, &mut slot, started);
            let outcome = {
                let pipeline = std::pin::pin!(self.pipeline(req, &live, armed.rec(), entry));
                pipeline.instrument(span.clone()).await
            };
            armed.disarm();
            outcome
        };
        let resp = match outcome {
            Ok(Outcome::Forwarded(resp, bytes_in)) => {
                rec.status = resp.status().as_u16();
                let id = rec.decision_id.clone();
                span.in_scope(|| debug!(status = rec.status, "forwarded"));
                let mut resp = resp.map(|b| Audited::new(b, rec, slot, bytes_in, started).boxed());
                if let Ok(v) = HeaderValue::from_str(&id) {
                    resp.headers_mut().insert("intentgate-decision-id", v);
                }
                return Ok(resp);
            }
            Ok(Outcome::Done(resp)) => {
                rec.status = resp.status().as_u16();
                resp
            }
            Ok(Outcome::Upgraded(mut resp, relayed, what)) => {
                // One record per WebSocket or spliced tunnel, written when its relay ends, with
                // the byte counts and how it ended.
                rec.status = resp.status().as_u16();
                if let Ok(v) = HeaderValue::from_str(&rec.decision_id) {
                    resp.headers_mut().insert("intentgate-decision-id", v);
                }
                tokio::spawn(audited::audit_when_relayed(
                    rec, slot, relayed, started, what,
                ));
                return Ok(resp);
            }
            Err(err) => {
                span.in_scope(
                    || debug!(error = %err, code = err.code(), blame = ?err.blame(), "refused"),
                );
                self.count_error(&err);
                rec.status = err.status().as_u16();
                if rec.decision.is_empty() {
                    rec.decision = "error";
                    rec.error = Some(err.code());
                }
                error::into_response(&err, &rec.decision_id)
            }
        };
        rec.durations.total_ms = crate::audit::millis(started.elapsed());
        if let Some(slot) = slot {
            slot.send(rec);
        }
        Ok(resp)
    }

    fn count_error(&self, err: &ProxyError) {
        match err.blame() {
            Blame::Upstream => self
                .metrics
                .upstream_errors
                .with_label_values(&[err.code()])
                .inc(),
            Blame::Client | Blame::Proxy => {
                self.metrics.refusals.with_label_values(&[err.code()]).inc()
            }
            Blame::Policy => {}
        }
    }

    async fn pipeline(
        self: &Arc<Self>,
        req: Request<Incoming>,
        live: &Live,
        rec: &mut AuditRecord,
        entry: Entry<'_>,
    ) -> Result<Outcome, ProxyError> {
        // 1. Limits and framing first: nothing reads a head over our limits, or one two parsers
        //    could read differently (smuggling forms).
        let limits = &self.cfg.limits;
        headers::check_limits(req.headers(), limits.max_header_bytes, limits.max_headers)?;
        headers::check_framing(req.method(), req.headers())?;
        //    hyper hands on Content-Length + Transfer-Encoding as chunked alone: the raw head
        //    told the connection's guard (400 ambiguous_framing, the connection closed).
        if entry.ambiguous_framing() && req.headers().contains_key(http::header::TRANSFER_ENCODING)
        {
            return Err(headers::ambiguous_framing());
        }
        //    A method override naming another method: the upstream might run either (400).
        headers::check_method_override(req.method(), req.headers(), req.uri().query())?;
        //    An upgrade must be a WebSocket one (else 400); it is decided like any GET below.
        let ws = websocket::requested(req.method(), req.headers())?;
        // 1b. The agent's request rate (off unless limits.requests_per_second is set): 429.
        if let Err(wait) = self.rate.take(&live.agent.id, limits) {
            return Err(ProxyError::RateLimited {
                agent: live.agent.id.clone(),
                retry_after_s: wait.as_secs_f64().ceil().max(1.0) as u64,
            });
        }
        let in_flight = match entry {
            // 2. Inside an intercepted tunnel the destination is the tunnel's: the request must
            //    name the same authority (else 421), and its origin-form path is canonicalised.
            Entry::Tunnel(t) => {
                let target = t.target_of(&req)?;
                let kept = t.upstream.as_ref().map(Kept::Tls);
                return self.forward(req, live, rec, target, ws, kept).await;
            }
            // 2b. On a transparent connection the destination is the host the request names
            //     (Host) at the port the client dialled, never the IP it chose
            //     (src/proxy/transparent.rs).
            //     A WebSocket is decided the same way and relayed as on the proxy listener.
            Entry::Transparent(r) => {
                let target = r.target_of(&req)?;
                let ws = ws.map(|w| w.held_by(&r.in_flight));
                return self.forward(req, live, rec, target, ws, None).await;
            }
            Entry::Listener(in_flight) => in_flight,
        };
        // 3. CONNECT goes to the tunnel path (src/proxy/connect.rs); everything else is forwarded.
        if req.method() == Method::CONNECT {
            // Boxed: a tunnel's state is large and would otherwise size every request's future.
            return Box::pin(self.connect(req, live, rec, in_flight.start())).await;
        }
        // 4. The canonical target: absolute-form only (origin-form means someone mistook us for
        //    the origin), host and path canonicalised ONCE and used for the decision and forwarding.
        let (authority, path, query) = target::absolute_target(req.uri())?;
        target::check_host_header_of(req.uri(), req.headers(), &authority)?;
        // 4b. The one door to intentgate itself: plain HTTP to the admin listener's own address
        //     is answered in-process by the agent-facing admin endpoints, never forwarded
        //     (src/proxy/door.rs); every other way to our listeners is refused at step 5.
        let written = req.uri().authority().map(|a| a.as_str());
        if let Some(door) = self.door_at(&authority, written) {
            return self
                .through_door(door, req, rec, &path, in_flight.peer())
                .await;
        }
        let target = Target {
            authority,
            path,
            query,
            scheme: "http",
            mode: "forward",
            sni: None,
        };
        let ws = ws.map(|w| w.held_by(in_flight));
        let kept = self
            .dialer
            .is_direct()
            .then(|| Kept::Http(in_flight.upstream()));
        self.forward(req, live, rec, target, ws, kept).await
    }

    async fn forward(
        self: &Arc<Self>,
        req: Request<Incoming>,
        live: &Live,
        rec: &mut AuditRecord,
        target: Target,
        ws: Option<websocket::Upgrading>,
        kept: Option<Kept<'_>>,
    ) -> Result<Outcome, ProxyError> {
        let Target {
            authority,
            path,
            query,
            scheme,
            mode,
            sni,
        } = target;
        rec.connection = mode;
        rec.scheme = scheme;
        rec.host.clone_from(&authority.host);
        rec.port = authority.port;
        rec.path.clone_from(&path);
        let bodyless_body = headers::body_on_bodyless(&req);

        // 5. Destination safety, the part that needs no lookup: an IP literal's address classes.
        //    A name is resolved before the decision only when a loaded module reads
        //    input.destination; otherwise nothing denied is ever sent to DNS (step 6b).
        let (host, port) = (authority.host.as_str(), authority.port);
        let reads_destination = live.policy.reads_destination();
        let early = self.dialer.vet_early(host, port, reads_destination).await?;

        // 5b. The body's start, only when a loaded module reads input.request.body (at most
        //     limits.inspect_body_bytes; replayed in front of the rest when forwarded).
        let (mut req, json) = self.inspect_body(req, live).await?;

        // 6. The decision: identity from config (never from the request), intent from the headers
        //    (two different values refused) > session > default, then the policy; enforce blocks.
        let declared = decide::header_intent(req.headers(), &self.tag_intent, &self.task_header)?;
        let id = rec.decision_id.clone();
        let facts = RequestFacts {
            id: &id,
            protocol: protocol(req.version()),
            method: req.method().as_str(),
            scheme,
            host: &authority.host,
            port: authority.port,
            path: Some(&path),
            query: query.as_deref(),
            headers: Some(req.headers()),
            connection: ConnectionFacts {
                mode,
                sni: sni.as_deref(),
                intercepted: mode == "intercepted" || scheme == "https",
            },
            destination: early.destination(),
            body: live.policy.reads_body().then(|| req.body().facts(json)),
        };
        let (decision, intent) =
            decide::decide(live, &self.session, &self.metrics, declared, &facts, rec)?;
        // 6b. A body on GET/HEAD/OPTIONS/DELETE only where the matched rule's `body_methods`
        //     allows it: an upstream that ignores it would read it as the next request (400).
        if bodyless_body
            && !live
                .policy
                .catalog()
                .allows_body(&decision.scope, req.method())
        {
            rec.decision = "error";
            rec.error = Some("ambiguous_request");
            return Err(headers::unexpected_body(req.method()));
        }

        // 6c. Destination safety for what may go: the name resolved (shared short-lived cache)
        //     and every address vetted; the connection later dials only vetted addresses of that
        //     same resolution.
        self.dialer.vet_pending(&early, host, port, rec).await?;

        // 7. Headers the agent may not send upstream: hop-by-hop, its own intentgate/identity claims.
        let h = req.headers_mut();
        headers::remove_hop_by_hop(h);
        headers::strip_agent_claims(h, &self.strip);

        // 8. Tags for the upstream (agent, intent, decision id, and any the decision adds), Via,
        //    and Host from the canonical authority.
        headers::add_via(h);
        let tag = |v: &str| HeaderValue::from_str(v).ok();
        if let Some(v) = tag(&live.agent.id) {
            h.insert(self.tag_agent.clone(), v);
        }
        if let Some(v) = intent.name.as_deref().and_then(tag) {
            h.insert(self.tag_intent.clone(), v);
        }
        if let Some(v) = tag(&id) {
            h.insert(self.tag_decision.clone(), v);
        }
        for (k, v) in &decision.headers {
            if let (Ok(k), Some(v)) = (HeaderName::from_bytes(k.as_bytes()), tag(v)) {
                h.insert(k, v);
            }
        }
        let default_port = if scheme == "https" { 443 } else { 80 };
        if let Some(host) = tag(&authority.host_header(default_port)) {
            h.insert(HOST, host);
        }

        // 8b. A WebSocket upgrade (decided above like any GET) goes on its own connection and,
        //     upgraded, is relayed as a tunnel (src/proxy/websocket.rs). Boxed: a tunnel's state
        //     would otherwise size every request's future.
        let mut pq = path;
        if let Some(q) = &query {
            pq.push('?');
            pq.push_str(q);
        }
        if let Some(ws) = ws {
            return Box::pin(self.websocket(req, ws, &authority, scheme, &pq)).await;
        }
        // 9. Forward in origin-form (absolute-form to a parent proxy), the body streamed and
        //    counted, bounded by the upstream response timeout: plain HTTP from the listener over
        //    the upstream connection its client connection keeps (src/proxy/reuse.rs), HTTPS in
        //    an intercepted tunnel over the TLS connection the tunnel keeps
        //    (src/proxy/kept_tls.rs), the rest over the pooled clients.
        let bytes_in = Arc::new(AtomicU64::new(0));
        let (mut parts, body) = req.into_parts();
        // An HTTP/2 client inside a tunnel sends requests concurrently, an HTTP/1 one in turn.
        let sequential = parts.version != Version::HTTP_2;
        parts.version = Version::HTTP_11;
        let req = Request::from_parts(parts, Counted::new(body, bytes_in.clone()));
        let limit_ms = self.cfg.limits.upstream_response_timeout_ms;
        let sent = Instant::now();
        //    Pinned where it lies: the timeout holds a reference instead of a copy of its state.
        let sending = std::pin::pin!(async {
            match kept {
                Some(Kept::Http(k)) if scheme == "http" => {
                    self.send_kept(k, req, &authority, &pq).await
                }
                Some(Kept::Tls(t)) if scheme == "https" => {
                    self.send_kept_tls(t, sequential, req, &pq).await
                }
                _ => self.send_pooled(req, scheme, &authority, &pq).await,
            }
        });
        let resp = match tokio::time::timeout(Duration::from_millis(limit_ms), sending).await {
            // A send that failed on the client's body is the client's error (400), not a 502.
            Ok(Err(_)) if bytes_in.load(Relaxed) & audited::CLIENT_BODY_FAILED != 0 => {
                return Err(headers::malformed_body());
            }
            Ok(r) => r?,
            Err(_) => {
                return Err(ProxyError::UpstreamTimeout {
                    target: authority.to_host_port(),
                    stage: "response headers",
                    after_ms: limit_ms,
                });
            }
        };
        let upstream = sent.elapsed();
        self.metrics
            .upstream_seconds
            .observe(upstream.as_secs_f64());
        rec.durations.upstream_ms = crate::audit::millis(upstream);

        // 10. The response: hop-by-hop removed, Via added, the body streamed as it arrives.
        let (mut parts, body) = resp.into_parts();
        headers::remove_hop_by_hop(&mut parts.headers);
        headers::add_via(&mut parts.headers);
        Ok(Outcome::Forwarded(
            Response::from_parts(parts, body),
            bytes_in,
        ))
    }
}
