//! The request pipeline: every request the agent sends passes through `Proxy::handle`, in the
//! order written down in `forward` (one comment per step, so a reader finds the path in one place).

mod attest;
mod audited;
mod budget;
mod connect;
mod dns;
mod door;
mod entry;
mod failure;
pub mod gate;
pub mod headers;
mod inspect;
pub(crate) mod intent_token;
mod intercept;
mod mcp;
mod rate;
mod respond;
mod sender;
mod setup;
mod shadow;
mod stub;
mod tags;
mod tally;
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
use http::header::HeaderName;
use http::{Method, Request, Response};
use hyper::body::Incoming;
use tracing::{Instrument, debug_span};

use crate::audit::{Audit, AuditRecord};
use crate::config::Config;
use crate::error::{Body, ProxyError};
use crate::intent::SessionStore;
use crate::metrics::Metrics;
use crate::policy::{ConnectionFacts, RequestFacts};
use crate::target;
use crate::tls::Tls;
use crate::vocab::{ConnectionMode, Scheme};
use audited::Counted;
pub use entry::ClientConn;
pub use entry::Handled;
use entry::{Entry, Target};
use gate::LivePolicy;
use respond::Outcome;
use sender::{Affinity, Destination, Upstreams};
use upstream::Dialer;

pub(crate) use door::AdminDoor;
pub use headers::VIA;
pub use setup::ProxyParts;

/// Everything the request path needs, shared by all connections.
pub struct Proxy {
    cfg: Arc<Config>,
    /// Where forwarded requests go upstream (src/proxy/sender/).
    upstreams: Upstreams,
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
    pub live: ArcSwap<LivePolicy>,
    pub session: Arc<SessionStore>,
    pub metrics: Arc<Metrics>,
    pub audit: Audit,
    /// The agent-facing admin endpoints at the admin listener's address (src/proxy/door.rs).
    door: std::sync::OnceLock<door::Door>,
    /// Signed intent tokens (src/proxy/intent_token.rs).
    pub(crate) intent_tokens: intent_token::IntentTokens,
    /// Attestations of forwarded requests (src/proxy/attest.rs).
    pub(crate) attestation: attest::Attestation,
    /// The credentials injected for the agent (src/cred/).
    creds: crate::cred::Store,
    /// Budget counters per intent (src/budget/); they outlive reloads.
    pub budgets: crate::budget::Budgets,
}

impl Proxy {
    /// The service entry point: never fails; errors become JSON responses (in `error`), and every
    /// request leaves exactly one audit record. Boxed (`Handled`): hyper keeps room for its
    /// service's future for as long as the client connection lives, idle or not.
    pub fn handle(self: Arc<Self>, req: Request<Incoming>, client: Arc<ClientConn>) -> Handled {
        Box::pin(async move { self.run(req, Entry::Listener(&client)).await })
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
        // Boxed from the start: a forwarded response's body keeps it until the body ends, and the
        // record is large (moved as a pointer, not copied, into the body). One the writer gave
        // back when it can: its box and strings are reused (src/audit/spare.rs).
        let mut rec = self.audit.record();
        crate::ids::decision_id_into(&mut rec.decision_id);
        rec.at = Some(SystemTime::now());
        rec.method.push_str(req.method().as_str());
        let live = self.live.load_full();
        // Every record names the agent, also one refused before its decision.
        rec.agent = Arc::clone(live.audit_agent());
        // With OpenTelemetry export on, the call's span in the agent's trace (its traceparent).
        if self.cfg.telemetry.otlp.is_some() {
            let parent = req
                .headers()
                .get(headers::TRACEPARENT)
                .map(|v| v.as_bytes());
            rec.trace = Some(crate::audit::Trace::continue_from(parent));
        }
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
        Ok(self.respond(outcome, rec, slot, &span, started))
    }

    async fn pipeline(
        self: &Arc<Self>,
        req: Request<Incoming>,
        live: &LivePolicy,
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
        let client = match entry {
            // 2. Inside an intercepted tunnel the destination is the tunnel's: the request must
            //    name the same authority (else 421), and its origin-form path is canonicalised.
            //    A tunnel refused at its CONNECT answers each request with that refusal.
            Entry::Tunnel(t) => {
                let target = t.target_of(&req)?;
                if let Some(refused) = &t.refused {
                    target.note(rec);
                    return Err(refused.answer(rec));
                }
                return self.forward(req, live, rec, target, ws, &t.kept).await;
            }
            // 2b. On a transparent connection the destination is the host the request names
            //     (Host) at the port the client dialled, never the IP it chose
            //     (src/proxy/transparent.rs).
            //     A WebSocket is decided the same way and relayed as on the proxy listener.
            Entry::Transparent(r) => {
                let target = r.target_of(&req)?;
                let ws = ws.map(|w| w.held_by(&r.in_flight));
                return self.forward(req, live, rec, target, ws, &r.kept).await;
            }
            Entry::Listener(client) => client,
        };
        // 3. CONNECT goes to the tunnel path (src/proxy/connect.rs); everything else is forwarded.
        if req.method() == Method::CONNECT {
            // Boxed: a tunnel's state is large and would otherwise size every request's future.
            return Box::pin(self.connect(req, live, rec, client.in_flight.start())).await;
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
                .through_door(door, req, rec, &path, client.in_flight.peer())
                .await;
        }
        let target = Target {
            authority,
            path,
            query,
            scheme: Scheme::Http,
            mode: ConnectionMode::Forward,
            sni: None,
        };
        let ws = ws.map(|w| w.held_by(&client.in_flight));
        self.forward(req, live, rec, target, ws, &client.kept).await
    }

    async fn forward(
        self: &Arc<Self>,
        req: Request<Incoming>,
        live: &LivePolicy,
        rec: &mut AuditRecord,
        target: Target,
        ws: Option<websocket::Upgrading>,
        kept: &Affinity,
    ) -> Result<Outcome, ProxyError> {
        target.note(rec);
        let Target {
            authority,
            path,
            mut query,
            scheme,
            mode,
            sni,
        } = target;
        let bodyless_with_body = headers::body_on_bodyless(&req);

        // 5. The body's start, only when a loaded module reads input.request.body, the call is
        //    MCP, or it is an LLM API call to a host of a `protocol: llm` rule (src/llm/): at most
        //    limits.inspect_body_bytes, replayed in front of the rest when forwarded.
        //    5b. An MCP call's JSON-RPC message(s), read whole (src/proxy/mcp.rs).
        let mcp = self.speaks_mcp(&req, live, &authority.host);
        let mut req = req.map(inspect::Replay::new);
        let (json, llm) = self
            .inspect_body(&mut req, live, mcp, &authority.host, &path)
            .await?;
        let mcp = mcp.then(|| self.read_mcp(&req, json, rec)).transpose()?;

        // 6. The decision step (src/proxy/gate.rs): destination safety, identity from config
        //    (never from the request), intent from the headers (two different values refused) >
        //    session > default, the policy; enforce blocks; then the name of what may go is
        //    resolved and vetted (the connection later dials only vetted addresses of it).
        let (declared, intent_token) = self.declared(req.headers())?;
        let facts = RequestFacts {
            id: "",
            protocol: req.version().into(),
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
                intercepted: mode == ConnectionMode::Intercepted || scheme == Scheme::Https,
            },
            destination: None,
            body: live.policy.reads_body().then(|| req.body().facts(json)),
            mcp: mcp.as_ref().map(|m| &m.call),
            llm: llm.as_ref(),
        };
        let call = gate::Call {
            facts,
            declared,
            intent_token,
            bodyless_with_body: bodyless_with_body.then(|| req.method()),
        };
        //    A refused MCP call is answered in-band, as JSON-RPC the model reads; an allowed
        //    `tools/list` may have its answer cut down (src/proxy/mcp.rs).
        //    (Matched, not `map_err`: the decision is large, and `map_err` copies it once more.)
        let (
            gate::Allowed {
                decision,
                intent,
                presented,
            },
            spending,
        ) = match self.decide_pending(live, rec, call).await {
            Ok(decided) => decided,
            Err(e) => return Err(mcp::refusal(&mcp, e)),
        };
        // 6b. A budget check sent to Redis is answered while the upstream connection is acquired
        //     (the round trip overlaps DNS, TCP and TLS): over budget, nothing is sent and the
        //     connection stays idle (src/proxy/budget.rs). In process it was answered above.
        let acquired = match spending {
            None => None,
            Some(s) => {
                let to = ws
                    .is_none()
                    .then_some((&authority, scheme == Scheme::Https));
                let acquiring = self.spent_while_acquiring(live, s, rec, kept, to, &req);
                let acquired = acquiring.await.map_err(|e| mcp::refusal(&mcp, e))?;
                acquired.transpose()?
            }
        };
        let tools = self.tools_filter(live, mcp.as_ref(), &decision, req.headers_mut());
        //    An LLM call's record names its model; its usage is read from the response (step 10).
        if let Some(c) = &llm {
            let label = gate::intent_label(live, &intent);
            rec.llm = Some(Box::new(crate::llm::AuditLlm::new(c, label)));
            budget::charge_llm_tokens(rec);
        }

        // 7. Headers the agent may not send upstream: hop-by-hop, its own intentgate/identity claims
        //    (the intent token kept aside first, by reference, for step 7b).
        let subject = intent_token::subject(presented, req.headers(), self.intent_tokens.header());
        let h = req.headers_mut();
        headers::remove_hop_by_hop(h);
        headers::strip_agent_claims(h, &self.strip);

        // 7b. The credential the matched rule binds, or the decision picks (src/cred/): what the
        //     agent sent in its place removed (or refused), the value added on an allowed call
        //     over intercepted TLS (plain HTTP only if the rule allows it).
        let injection = crate::cred::Injection {
            decision: &decision,
            catalog: live.policy.catalog(),
            scheme,
            headers: h,
            query: &mut query,
            agent: &live.agent.id,
            intent: intent.name.as_deref(),
            intent_token: intent_token::for_credential(subject.as_ref(), &intent),
        };
        self.creds.inject(injection, rec).await?;
        let h = req.headers_mut();

        // 8. Tags for the upstream (agent, intent, decision id, and any the decision adds), Via,
        //    the trace parent, and Host from the canonical authority (src/proxy/tags.rs).
        self.tag_upstream(h, live, &intent, &decision, rec, &authority, scheme);

        // 8b. A WebSocket upgrade (decided above like any GET) goes on its own connection and,
        //     upgraded, is relayed as a tunnel (src/proxy/websocket.rs). Boxed: a tunnel's state
        //     would otherwise size every request's future.
        let mut pq = path;
        if let Some(q) = &query {
            pq.push('?');
            pq.push_str(q);
        }
        // 8c. The signed attestation of what was vetted, bound to what goes upstream, when
        //     the intent attests (src/proxy/attest.rs).
        self.attest(&mut req, live, &intent, rec, &authority.host, &pq)?;
        if let Some(ws) = ws {
            return Box::pin(self.websocket(req, ws, &authority, scheme, &pq)).await;
        }
        // 9. Forward (src/proxy/sender/), the body streamed and counted, bounded by the upstream
        //    response timeout: over the connection acquired at 6b, else one this client
        //    connection or tunnel kept from an earlier request to the same destination, else an
        //    idle or a new one.
        let bytes_in = Arc::new(AtomicU64::new(0));
        let req = req.map(|body| Counted::new(body, bytes_in.clone()));
        let to = Destination {
            authority: &authority,
            tls: scheme == Scheme::Https,
            path_and_query: pq,
        };
        //    The timeout's timer is the one this client connection or tunnel's earlier requests
        //    used (src/proxy/sender/deadline.rs).
        let limit_ms = self.cfg.limits.upstream_response_timeout_ms;
        let sent = Instant::now();
        let deadline = tokio::time::Instant::from_std(sent) + Duration::from_millis(limit_ms);
        //    Pinned where it lies: the bound holds a reference instead of a copy of its state.
        let sending = std::pin::pin!(self.upstreams.send(kept, to, req, acquired));
        let sender::Sent { resp, unclean } = match kept.1.bound(deadline, sending).await {
            // A send that failed on the client's body is the client's error (400), not a 502.
            Ok(Err(_)) if bytes_in.load(Relaxed) & audited::CLIENT_BODY_FAILED != 0 => {
                return Err(headers::malformed_body());
            }
            Ok(r) => r?,
            Err(sender::Elapsed) => {
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
        if let Some(f) = tools {
            self.filter_answer(&mut parts, f, &authority.to_host_port())?;
        }
        Ok(Outcome::Forwarded(
            Response::from_parts(parts, body),
            bytes_in,
            unclean,
        ))
    }
}
