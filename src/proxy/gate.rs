//! The decision step, one for every kind of call: an HTTP request (on the proxy listener, in an
//! intercepted tunnel, on a transparent connection), a spliced CONNECT, the CONNECT of a tunnel to
//! be intercepted, and a transparent connection decided on its destination alone. In order:
//! destination safety that needs no lookup; who is calling (never from the request); which intent
//! is in force (token > header > session > default, src/proxy/intent_token.rs); the policy's
//! answer (its native rules, then Rego); its enforcement (enforce blocks, monitor records); then,
//! for a call that may go, its name resolved and every address vetted. Nothing the policy
//! denies is ever looked up in DNS.

use std::sync::Arc;

use http::{HeaderMap, HeaderName, Method};

use super::budget::Spending;
use super::{Proxy, headers};
use crate::audit::{AuditAgent, AuditIntent, AuditRecord};
use crate::config::Mode;
use crate::error::ProxyError;
use crate::identity::Agent;
use crate::intent::Intent;
use crate::metrics::Metrics;
use crate::policy::{Decision, PolicySet, RequestFacts};
use crate::target::Authority;
use crate::vocab::{ConnectionMode, ErrorCode, Scheme, Verdict};

/// What a reload swaps: the compiled policy and the identity it was compiled for.
pub struct LivePolicy {
    pub policy: PolicySet,
    pub agent: Agent,
    /// The agent as audit records carry it, built once from `agent`.
    audit_agent: Arc<AuditAgent>,
    /// The default intent and task (config / `--intent`).
    pub default_intent: Option<(String, Option<String>)>,
    /// The default intent's name as `policy`'s catalog shares it (`Catalog::share`), found once:
    /// most requests are made under it.
    default_shared: Option<(Arc<str>, Option<crate::intent::Known>)>,
    /// `policy.shadow`: decided beside `policy`, never enforced.
    pub shadow: Option<PolicySet>,
    /// The agent's id as the upstream tag's value, made once (src/proxy/tags.rs).
    agent_tag: Option<http::HeaderValue>,
    /// `intentgate_requests_total`'s counters for `policy`'s intents (src/proxy/tally.rs).
    tally: super::tally::Tally,
}

impl LivePolicy {
    pub fn new(
        policy: PolicySet,
        agent: Agent,
        default_intent: Option<(String, Option<String>)>,
    ) -> Self {
        LivePolicy {
            audit_agent: Arc::new(AuditAgent {
                id: agent.id.clone(),
                namespace: agent.namespace.clone(),
                spiffe_id: agent.spiffe_id.clone(),
                service_account: agent.service_account.clone(),
                owner: agent.owner.clone(),
                expires: agent
                    .expires
                    .map(|t| humantime::format_rfc3339_seconds(t).to_string()),
            }),
            agent_tag: http::HeaderValue::from_str(&agent.id).ok(),
            tally: super::tally::Tally::new(policy.catalog()),
            default_shared: default_intent
                .as_ref()
                .map(|(n, _)| policy.catalog().share(n.trim())),
            policy,
            agent,
            default_intent,
            shadow: None,
        }
    }

    /// With a shadow policy (`policy.shadow`).
    pub fn with_shadow(self, shadow: Option<PolicySet>) -> Self {
        LivePolicy { shadow, ..self }
    }

    /// The agent as audit records carry it.
    pub(crate) fn audit_agent(&self) -> &Arc<AuditAgent> {
        &self.audit_agent
    }

    /// `policy`'s catalog's `share` of an intent name, the default's found without a lookup.
    pub(super) fn share(&self, name: &str) -> (Arc<str>, Option<crate::intent::Known>) {
        match &self.default_shared {
            Some((d, known)) if **d == *name => (Arc::clone(d), *known),
            _ => self.policy.catalog().share(name),
        }
    }

    /// The agent's id as a header value (none when it cannot be one).
    pub(super) fn agent_tag(&self) -> Option<&http::HeaderValue> {
        self.agent_tag.as_ref()
    }
}

/// The intent the agent declared in headers (both values checked for duplicates).
pub fn header_intent<'a>(
    h: &'a HeaderMap,
    intent: &HeaderName,
    task: &HeaderName,
) -> Result<Option<(&'a str, Option<&'a str>)>, ProxyError> {
    let name = headers::single_value(h, intent)?;
    let task = headers::single_value(h, task)?;
    Ok(name.map(|n| (n, task)))
}

impl Proxy {
    /// The intent a request's headers declare (`header_intent`) and the intent token they carry.
    /// A request usually carries none of the three: `seen` (step 1's summary) tells when it has
    /// none of their kinds, else the names are looked for in one pass first.
    pub(super) fn declared<'a>(
        &self,
        h: &'a HeaderMap,
        seen: crate::head::Seen,
    ) -> Result<Declared<'a>, ProxyError> {
        use crate::head::Seen;
        let token = self.intent_tokens.header();
        let (intent, task) = (&self.tag_intent, &self.task_header);
        if !seen.any(Seen::OWN | Seen::NAMED) || !crate::head::any(h, [intent, task, token]) {
            return Ok((None, None));
        }
        Ok((
            header_intent(h, intent, task)?,
            headers::single_value(h, token)?,
        ))
    }
}

/// A request's declared intent (and task), and its intent token.
pub(super) type Declared<'a> = (Option<(&'a str, Option<&'a str>)>, Option<&'a str>);

/// The record takes where a call goes and how it arrived, before anything can refuse it.
pub(super) fn note(
    rec: &mut AuditRecord,
    mode: ConnectionMode,
    scheme: Scheme,
    authority: &Authority,
    path: Option<&str>,
) {
    rec.connection = Some(mode);
    rec.scheme = Some(scheme);
    rec.host.clone_from(&authority.host);
    rec.port = authority.port;
    if let Some(p) = path {
        p.clone_into(&mut rec.path);
    }
}

impl super::Target {
    /// `note` for a request's canonical target.
    pub(super) fn note(&self, rec: &mut AuditRecord) {
        note(
            rec,
            self.mode,
            self.scheme,
            &self.authority,
            Some(&self.path),
        );
    }
}

/// One call to decide.
pub(super) struct Call<'a> {
    /// What the policy sees. `id` and `destination` are the step's to fill in.
    pub facts: RequestFacts<'a>,
    /// The destination (`facts.host` and `facts.port` are its): an IP literal is vetted as the
    /// target's parser read it.
    pub to: &'a Authority,
    /// The intent the call's own headers declare.
    pub declared: Option<(&'a str, Option<&'a str>)>,
    /// The intent token the call's own headers carry (`intent_tokens.header`).
    pub intent_token: Option<&'a str>,
    /// The method of a GET, HEAD, OPTIONS or DELETE that carries a body: it may go only where
    /// the matched rule's `body_methods` allows it (an upstream that ignores the body would
    /// read it as the next request).
    pub bodyless_with_body: Option<&'a Method>,
}

/// A call the step lets go: the decision, and the intent it was made under.
pub(super) struct Allowed {
    pub decision: Decision,
    pub intent: Intent,
    /// Where the intent token the intent was verified from is.
    pub presented: Option<super::intent_token::Presented>,
}

impl Proxy {
    /// The decision step (see the module documentation). The record (already `note`d) gets the
    /// decision; an `Err` is the refusal to answer.
    pub(super) async fn decide(
        &self,
        live: &LivePolicy,
        rec: &mut AuditRecord,
        call: Call<'_>,
    ) -> Result<Allowed, ProxyError> {
        let (allowed, spending) = self.decide_pending(live, rec, call).await?;
        if let Some(s) = spending {
            self.spent(live, s, rec).await?;
        }
        Ok(allowed)
    }

    /// `decide`, except that a budget check sent to the Redis store is returned unanswered: the
    /// caller awaits it (`Proxy::spent`) before anything goes upstream.
    pub(super) async fn decide_pending(
        &self,
        live: &LivePolicy,
        rec: &mut AuditRecord,
        call: Call<'_>,
    ) -> Result<(Allowed, Option<Spending<'_>>), ProxyError> {
        let Call {
            mut facts,
            to,
            declared,
            intent_token,
            bodyless_with_body,
        } = call;
        let (host, port) = (facts.host, facts.port);
        // Destination safety, the part that needs no lookup: an IP literal's address classes. A
        // name is resolved before the decision only when a loaded module reads
        // input.destination, and never for a tunnel to be intercepted (each request inside
        // resolves its own, once its decision lets it go).
        let tunnel = facts.opens_tunnel();
        let reads_destination = !tunnel && live.policy.reads_destination();
        // Without an await where none is needed (an IP literal, a name the policy does not read
        // the address of or the resolver's cache holds); a lookup is boxed: rare, its state
        // would be room in every request's future.
        let early = match self.dialer.vet_early_now(to, reads_destination) {
            Some(early) => early?,
            None => Box::pin(self.dialer.vet_early(host, port, reads_destination)).await?,
        };
        facts.destination = early.destination();
        // The id is lent to the facts for the decision (not copied: this runs on every request).
        let id = std::mem::take(&mut rec.decision_id);
        let facts = RequestFacts { id: &id, ..facts };
        // The intent, with intent tokens (src/proxy/intent_token.rs): verified, and their
        // narrowing claims applied, before the policy.
        let mut intent =
            self.intent_tokens
                .resolve(live, &self.session, declared, intent_token, &facts);
        // A token naming a key its issuer's fetched set lacks: the set is fetched again.
        // Boxed: the key fetch (rare) would otherwise be most of every request's future.
        if intent.is_err() && Box::pin(self.intent_tokens.refetch_keys()).await {
            intent =
                self.intent_tokens
                    .resolve(live, &self.session, declared, intent_token, &facts);
        }
        let mut presented = None;
        let decided = match intent {
            Ok((intent, p)) => {
                presented = p;
                settle(live, &self.metrics, intent, &facts, rec)
            }
            Err(refusal) => Err(refusal.refuse(live, rec, &self.metrics)),
        };
        rec.decision_id = id;
        let (decision, intent) = decided?;
        if let Some(method) = bodyless_with_body {
            if !live.policy.catalog().allows_body(&decision.scope, method) {
                rec.decision = Some(Verdict::Error);
                rec.error = Some(ErrorCode::AmbiguousRequest);
                return Err(headers::unexpected_body(method));
            }
        }
        // The intent's budget (src/proxy/budget.rs): the call is checked and counted; over
        // budget, refused (429) or, in monitor mode, recorded would_deny. With Redis the check
        // is sent now and answered later, while the name is resolved and the upstream dialled
        // (a call then refused by its budget may have been resolved and dialled, never sent).
        let spending = if tunnel {
            None
        } else {
            self.spend(live, &intent, decision.mode, rec)?
        };
        // The name's own resolution, vetted; the connection later dials only vetted addresses
        // of it (a tunnel to be intercepted dials nothing: its requests do).
        if !tunnel {
            match self.dialer.vet_pending_now(&early, host, port, rec) {
                Some(vetted) => vetted?,
                None => Box::pin(self.dialer.vet_pending(&early, host, port, rec)).await?,
            }
        }
        Ok((
            Allowed {
                decision,
                intent,
                presented,
            },
            spending,
        ))
    }
}

/// Decides `facts`, records the outcome in `rec` and the metrics, and refuses (in enforce mode)
/// what policy denies. Ok carries the decision and intent of a call that may proceed.
fn settle(
    live: &LivePolicy,
    metrics: &Metrics,
    intent: Intent,
    facts: &RequestFacts<'_>,
    rec: &mut AuditRecord,
) -> Result<(Decision, Intent), ProxyError> {
    let agent = &live.agent;
    // rec.agent is set where the record is made (src/proxy/mod.rs, transparent.rs).
    rec.policy_revision = live.policy.shared_revision();
    rec.intent = AuditIntent {
        name: intent.name.clone(),
        task: intent.task.clone(),
        source: Some(intent.source),
        verified: intent.verified,
    };

    // The policy set also enforces the lifecycle (an ownerless or expired agent gets no egress,
    // in any mode: `Decision::blocks`).
    let d = live.policy.decide_call(agent, &intent, facts);
    rec.durations.policy_us = d.policy_micros;
    if let Some(shadow) = &live.shadow {
        super::shadow::compare(shadow, live, metrics, &intent, facts, &d, rec);
    }
    rec.mode = Some(d.mode);
    rec.reasons.clone_from(&d.reasons);
    // A policy that could not decide, and the native tunnel rule, name themselves in the record.
    rec.error = d
        .code
        .filter(|c| matches!(c, ErrorCode::PolicyError | ErrorCode::PortNotInScope));
    rec.code = (!d.allow).then(|| d.code.unwrap_or(ErrorCode::IntentViolation));
    let verdict = d.verdict();
    rec.decision = Some(verdict);
    if facts.opens_tunnel() {
        // Not a call of its own (its requests are): counted only when the tunnel rule refuses.
        if let Some(code) = d.code {
            metrics.refused(code);
        }
    } else {
        metrics.policy_seconds.observe(d.policy_micros as f64 / 1e6);
        if live.policy.uncacheable().is_none() {
            metrics.decision_cache[usize::from(!d.cached)].inc();
        }
        count(metrics, live, verdict, d.mode, &intent);
    }
    if d.blocks() {
        return Err(ProxyError::Denied {
            code: d.code.unwrap_or(ErrorCode::IntentViolation),
            reason: d.reason(),
            hint: d.hint.clone(),
            agent: agent.id.clone(),
            intent: intent.name.as_deref().map(str::to_string),
        });
    }
    Ok((d, intent))
}

/// The intent as a metric label: bounded to catalog names.
pub(super) fn intent_label<'a>(live: &LivePolicy, intent: &'a Intent) -> &'a str {
    match intent.name.as_deref() {
        None => "none",
        Some(n) if live.policy.catalog().index_of_intent(intent).is_some() => n,
        Some(_) => "unknown",
    }
}

/// `intentgate_requests_total`, with the intent label bounded to catalog names.
fn count(metrics: &Metrics, live: &LivePolicy, decision: Verdict, mode: Mode, intent: &Intent) {
    live.tally.count(
        &metrics.requests,
        live.policy.catalog(),
        intent,
        decision,
        mode,
    );
}

/// A refusal decided at an intercepted tunnel's CONNECT (`port_not_in_scope`,
/// `destination_forbidden`): the tunnel is opened all the same and every request inside it is
/// answered with the refusal, where the client reads it (a refused CONNECT shows in most clients
/// as a bare "tunnel failed"). The upstream is never dialled and nothing more is resolved.
pub(super) struct Refused {
    pub err: ProxyError,
    /// The CONNECT's record, after its decision.
    pub rec: AuditRecord,
}

impl Refused {
    /// The refusal of one request inside the tunnel; its record carries the CONNECT's decision.
    pub(super) fn answer(&self, rec: &mut AuditRecord) -> ProxyError {
        let d = &self.rec;
        rec.agent = Arc::clone(&d.agent);
        rec.intent.clone_from(&d.intent);
        rec.policy_revision = Arc::clone(&d.policy_revision);
        rec.decision = d.decision;
        rec.mode = d.mode;
        rec.reasons.clone_from(&d.reasons);
        rec.error = d.error;
        self.err.clone()
    }
}

#[cfg(test)]
#[path = "gate_tests.rs"]
mod tests;
