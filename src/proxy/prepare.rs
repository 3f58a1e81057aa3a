//! Steps 5 to 8c of a forwarded request, in the order `Proxy::pipeline` (src/proxy/mod.rs)
//! hands on to: the body's start when something reads it, the decision, the budget, the
//! credential, the headers, the tags and the attestation; a WebSocket upgrade is relayed from
//! here. A future of its own, apart from the send's (`Proxy::forward`, steps 9 and 10): what only
//! these steps hold (the decision, the intent, an MCP or LLM call, the request as inspected)
//! then shares its room in the request's future with the send's instead of adding to it (that
//! future is boxed, and copied whole, for every request).

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use http::Request;
use hyper::body::Incoming;

use super::audited::Counted;
use super::entry::Target;
use super::gate::{self, LivePolicy};
use super::respond::Outcome;
use super::sender::{Acquired, Affinity, Outgoing};
use super::{Proxy, budget, headers, inspect, intent_token, mcp, websocket};
use crate::audit::AuditRecord;
use crate::error::ProxyError;
use crate::mcp::filter::ToolsFilter;
use crate::policy::{ConnectionFacts, RequestFacts};
use crate::target::Authority;
use crate::vocab::{ConnectionMode, Scheme};

/// What steps 5 to 8c end in.
pub(super) enum Prepared<'s> {
    /// The request, ready to go upstream (steps 9 and 10): in the caller's slot, so neither this
    /// answer nor the send's future carries it (each would be a copy of it).
    Send(&'s mut Ready),
    /// A WebSocket upgrade, relayed (8b).
    Relayed(Outcome),
}

/// A request ready to go upstream.
pub(super) struct Ready {
    /// Taken out as it is sent (`Upstreams::send`).
    pub req: Option<Outgoing>,
    /// The request body's bytes, counted as they go.
    pub bytes_in: Arc<AtomicU64>,
    pub authority: Authority,
    pub scheme: Scheme,
    /// The canonical path and query, sent in origin-form.
    pub pq: String,
    /// The connection acquired while a Redis budget check was answered (6b).
    pub acquired: Option<Acquired>,
    /// A `tools/list` answer to cut down (src/proxy/mcp.rs).
    pub tools: Option<ToolsFilter>,
}

impl Proxy {
    /// Steps 5 to 8c for `req` to `target` (see the module documentation); a request ready to
    /// go is put in `slot`.
    // Not an `async fn`, as `Proxy::run` and `pipeline` are not (the request is not moved into a
    // local of the future).
    #[allow(clippy::too_many_arguments, clippy::manual_async_fn)]
    pub(super) fn prepare<'s>(
        self: &Arc<Self>,
        req: Request<Incoming>,
        live: &LivePolicy,
        rec: &mut AuditRecord,
        target: Target,
        ws: Option<websocket::Upgrading>,
        kept: &Affinity,
        slot: &'s mut Option<Ready>,
    ) -> impl Future<Output = Result<Prepared<'s>, ProxyError>> {
        async move {
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
            let mut req = req.map(inspect::Replay::new);
            let inspect::Inspected { json, mcp, llm } = if self.may_inspect(live) {
                self.inspect(&mut req, live, rec, &authority.host, &path)
                    .await?
            } else {
                Default::default()
            };

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
                    // Boxed: the Redis round trip and the dial are rare, their state large.
                    let acquiring =
                        Box::pin(self.spent_while_acquiring(live, s, rec, kept, to, &req));
                    let acquired = acquiring.await.map_err(|e| mcp::refusal(&mcp, e))?;
                    acquired.transpose()?
                }
            };
            let tools = (mcp.as_ref())
                .and_then(|m| self.tools_filter(live, m, &decision, req.headers_mut()));
            //    An LLM call's record names its model; its usage is read from the response (step 10).
            if let Some(c) = &llm {
                let label = gate::intent_label(live, &intent);
                rec.llm = Some(Box::new(crate::llm::AuditLlm::new(c, label)));
                budget::charge_llm_tokens(rec);
            }

            // 7. Headers the agent may not send upstream: hop-by-hop, its own intentgate/identity claims
            //    (the intent token kept aside first, by reference, for step 7b).
            let subject =
                intent_token::subject(presented, req.headers(), self.intent_tokens.header());
            let h = req.headers_mut();
            headers::remove_hop_by_hop_and_claims(h, &self.strip);

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
                let relayed = Box::pin(self.websocket(req, ws, &authority, scheme, &pq)).await;
                return relayed.map(Prepared::Relayed);
            }
            // The body counted as it goes (step 9), boxed (`Outgoing`); the request taken out as it
            // is sent.
            let bytes_in = Arc::new(AtomicU64::new(0));
            let req = Some(req.map(|body| Box::new(Counted::new(body, bytes_in.clone()))));
            Ok(Prepared::Send(slot.insert(Ready {
                req,
                bytes_in,
                authority,
                scheme,
                pq,
                acquired,
                tools,
            })))
        }
    }
}
