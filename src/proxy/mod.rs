//! The request pipeline: every request the agent sends passes through `Proxy::handle`, in the
//! order written down in `pipeline`, `prepare` (src/proxy/prepare.rs) and `forward` (one comment
//! per step, so a reader finds the path in few places).

/// `Box::pin(future)` with the future made in its box (the box allocated first, then written):
/// `Box::pin` makes the future on the stack (its room for every step: ~5 KiB for a request, tens
/// of KB for an intercepted tunnel) and copies it whole into the box. A macro, so the future is
/// made where it is written rather than passed to a function by value.
macro_rules! pinned_in_box {
    ($future:expr) => {{
        // Bound first, so the box's type is the future's own (not a `dyn` the caller expects).
        let made = ::std::boxed::Box::write(::std::boxed::Box::new_uninit(), $future);
        ::std::boxed::Box::into_pin(made)
    }};
}
use pinned_in_box;

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
mod prepare;
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
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::Relaxed;
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
use crate::target;
use crate::tls::Tls;
use crate::vocab::{ConnectionMode, Scheme};
pub use entry::ClientConn;
pub use entry::Handled;
use entry::{Source, Target};
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
    /// The names step 1's summary notes as `Seen::NAMED` (`head::summary`): those of `strip`
    /// and of the intent, task and intent token headers that are not `intentgate-*` (usually
    /// none).
    named: Vec<HeaderName>,
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
    /// service's future for as long as the client connection lives, idle or not. The box is
    /// made in place (`pinned_in_box!`).
    pub fn handle(self: Arc<Self>, req: Request<Incoming>, client: Arc<ClientConn>) -> Handled {
        pinned_in_box!(self.run(req, Source::Listener(client)))
    }

    // Not an `async fn`: one moves its arguments into locals of its future first (a copy of
    // the 264-byte request at every level); an `async move` block uses them where they lie.
    #[allow(clippy::manual_async_fn)]
    fn run(
        self: Arc<Self>,
        req: Request<Incoming>,
        from: Source,
    ) -> impl Future<Output = Result<Response<Body>, Infallible>> {
        async move {
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
            rec.decision_header = crate::ids::header(&rec.decision_id);
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
            if blocked {
                let refused = Err(ProxyError::AuditUnavailable);
                return Ok(self.respond(refused, rec, slot, &span, started));
            }
            // Armed while the pipeline runs: if the request is dropped there (the client went
            // away, or shutdown closed its connection), the record is still written.
            let mut armed = audited::Armed::new(&mut rec, &mut slot, started);
            let outcome = {
                // Pinned where it lies, so the span wraps a reference rather than a copy of the
                // state.
                let pipeline = std::pin::pin!(self.pipeline(req, &live, armed.rec(), &from));
                pipeline.instrument(span.clone()).await
            };
            armed.disarm();
            drop(armed);
            // The outcome (152 bytes) goes to `respond` as it came: not through the locals of
            // an `if` and a block first (a copy each).
            Ok(self.respond(outcome, rec, slot, &span, started))
        }
    }

    // Not an `async fn`: one moves its arguments into locals of its future first (a copy of
    // the 264-byte request at every level); an `async move` block uses them where they lie.
    #[allow(clippy::manual_async_fn)]
    fn pipeline(
        self: &Arc<Self>,
        req: Request<Incoming>,
        live: &LivePolicy,
        rec: &mut AuditRecord,
        entry: &Source,
    ) -> impl Future<Output = Result<Outcome, ProxyError>> {
        async move {
            // 1. Limits and framing first: nothing reads a head over our limits, or one two parsers
            //    could read differently (smuggling forms). One pass over the head's names finds
            //    what the checks below and steps 4–7 look for (`head::summary`): they consult it
            //    rather than walk the names again.
            let limits = &self.cfg.limits;
            let head = crate::head::summary(req.headers(), &self.named);
            let seen = head.seen;
            let (count, max) = (req.headers().len(), limits.max_header_bytes);
            headers::check_limits(count, head.bytes, max, limits.max_headers)?;
            headers::check_framing(req.method(), req.headers(), seen)?;
            //    hyper hands on Content-Length + Transfer-Encoding as chunked alone: the raw head
            //    told the connection's guard (400 ambiguous_framing, the connection closed).
            if entry.ambiguous_framing() && seen.any(headers::Seen::TRANSFER_ENCODING) {
                return Err(headers::ambiguous_framing());
            }
            //    A method override naming another method: the upstream might run either (400).
            let query = req.uri().query();
            headers::check_method_override(req.method(), req.headers(), query, seen)?;
            //    An upgrade must be a WebSocket one (else 400); it is decided like any GET below.
            let ws = websocket::requested(req.method(), req.headers(), seen)?;
            // 1b. The agent's request rate (off unless limits.requests_per_second is set): 429.
            if let Err(wait) = self.rate.take(&live.agent.id, limits) {
                return Err(ProxyError::RateLimited {
                    agent: live.agent.id.clone(),
                    retry_after_s: wait.as_secs_f64().ceil().max(1.0) as u64,
                });
            }
            let (target, ws, kept) = match entry {
                // 2. Inside an intercepted tunnel the destination is the tunnel's: the request must
                //    name the same authority (else 421), and its origin-form path is canonicalised.
                //    A tunnel refused at its CONNECT answers each request with that refusal.
                Source::Tunnel(t) => {
                    let target = t.target_of(&req)?;
                    if let Some(refused) = &t.refused {
                        target.note(rec);
                        return Err(refused.answer(rec));
                    }
                    (target, ws, &t.kept)
                }
                // 2b. On a transparent connection the destination is the host the request names
                //     (Host) at the port the client dialled, never the IP it chose
                //     (src/proxy/transparent.rs).
                //     A WebSocket is decided the same way and relayed as on the proxy listener.
                Source::Transparent(r) => {
                    let target = r.target_of(&req)?;
                    (target, ws.map(|w| w.held_by(&r.in_flight)), &r.kept)
                }
                Source::Listener(client) => {
                    // 3. CONNECT goes to the tunnel path (src/proxy/connect.rs); everything else is
                    //    forwarded. Boxed: a tunnel's state is large and would otherwise size every
                    //    request's future.
                    if req.method() == Method::CONNECT {
                        let start = client.in_flight.start();
                        return pinned_in_box!(self.connect(req, live, rec, start)).await;
                    }
                    // 4. The canonical target: absolute-form only (origin-form means someone mistook
                    //    us for the origin), host and path canonicalised ONCE and used for the
                    //    decision and forwarding.
                    let (authority, path, query) = target::absolute_target(req.uri())?;
                    target::check_host_of(req.uri(), head.host, req.headers(), &authority)?;
                    // 4b. The one door to intentgate itself: plain HTTP to the admin listener's own
                    //     address is answered in-process by the agent-facing admin endpoints, never
                    //     forwarded (src/proxy/door.rs); every other way to our listeners is refused
                    //     at step 5.
                    let written = req.uri().authority().map(|a| a.as_str());
                    if let Some(door) = self.door_at(&authority, written) {
                        let peer = client.in_flight.peer();
                        return self.through_door(door, req, rec, &path, peer).await;
                    }
                    let target = Target {
                        authority,
                        path,
                        query,
                        scheme: Scheme::Http,
                        mode: ConnectionMode::Forward,
                        sni: None,
                    };
                    (
                        target,
                        ws.map(|w| w.held_by(&client.in_flight)),
                        &client.kept,
                    )
                }
            };
            // 5.–8c. The decision and what follows from it, up to the request ready to go
            //     (src/proxy/prepare.rs); then 9.–10. (`forward`). Two futures, one after the other:
            //     the request's future has room for the larger, not for both. The request ready to
            //     go stays in `slot`, here: the send borrows it rather than carrying a copy.
            let mut slot = None;
            let prepared = self.prepare(req, live, rec, target, ws, seen, kept, &mut slot);
            let ready = match prepared.await? {
                prepare::Prepared::Send(ready) => ready,
                prepare::Prepared::Relayed(outcome) => return Ok(outcome),
            };
            self.forward(ready, rec, kept).await
        }
    }

    /// Steps 9 and 10: a request `prepare`d sent upstream, and its response.
    async fn forward(
        &self,
        ready: &mut prepare::Ready,
        rec: &mut AuditRecord,
        kept: &Affinity,
    ) -> Result<Outcome, ProxyError> {
        // 9. Forward (src/proxy/sender/), the body streamed and counted, bounded by the upstream
        //    response timeout: over the connection acquired at 6b, else one this client
        //    connection or tunnel kept from an earlier request to the same destination, else an
        //    idle or a new one. (`ready`'s fields used where they lie: not moved into locals,
        //    which would be room of their own in the future.)
        let to = Destination {
            authority: &ready.authority,
            tls: ready.scheme == Scheme::Https,
            path_and_query: std::mem::take(&mut ready.pq),
        };
        //    The timeout's timer is the one this client connection or tunnel's earlier requests
        //    used (src/proxy/sender/deadline.rs).
        let limit_ms = self.cfg.limits.upstream_response_timeout_ms;
        let sent = Instant::now();
        let deadline = tokio::time::Instant::from_std(sent) + Duration::from_millis(limit_ms);
        //    Pinned where it lies: the bound holds a reference instead of a copy of its state.
        let acquired = ready.acquired.take();
        let sending = std::pin::pin!(
            self.upstreams
                .send(kept, to, &mut ready.req, acquired, sent)
        );
        let sender::Sent { resp, unclean, at } = match kept.1.bound(deadline, sending).await {
            // A send that failed on the client's body is the client's error (400), not a 502.
            Ok(Err(_)) if ready.bytes_in.load(Relaxed) & audited::CLIENT_BODY_FAILED != 0 => {
                return Err(headers::malformed_body());
            }
            Ok(r) => r?,
            Err(sender::Elapsed) => {
                return Err(ProxyError::UpstreamTimeout {
                    target: ready.authority.to_host_port(),
                    stage: "response headers",
                    after_ms: limit_ms,
                });
            }
        };
        //    (The response's moment is the sender's clock read as it kept the connection.)
        let upstream = at.saturating_duration_since(sent);
        self.metrics
            .upstream_seconds
            .observe(upstream.as_secs_f64());
        rec.durations.upstream_ms = crate::audit::millis(upstream);

        // 10. The response: hop-by-hop removed, Via added, the body streamed as it arrives.
        let (mut parts, body) = resp.into_parts();
        headers::remove_hop_by_hop_add_via(&mut parts.headers);
        if let Some(f) = ready.tools.take() {
            self.filter_answer(&mut parts, f, &ready.authority.to_host_port())?;
        }
        Ok(Outcome::Forwarded(
            Response::from_parts(parts, body),
            Arc::clone(&ready.bytes_in),
            unclean,
        ))
    }
}
