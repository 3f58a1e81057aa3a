//! The decision step: who is calling (never from the request), which intent is in force (header >
//! session > default), the policy's answer, and its enforcement (enforce blocks, monitor records).

use std::sync::Arc;

use http::{HeaderMap, HeaderName};

use super::headers;
use crate::audit::{AuditAgent, AuditIntent, AuditRecord};
use crate::config::Mode;
use crate::error::ProxyError;
use crate::identity::Agent;
use crate::intent::{self, Intent, SessionStore};
use crate::metrics::Metrics;
use crate::policy::{Decision, PolicySet, RequestFacts};

/// What a reload swaps: the compiled policy and the identity it was compiled for.
pub struct Live {
    pub policy: PolicySet,
    pub agent: Agent,
    /// The agent as audit records carry it, built once from `agent`.
    audit_agent: Arc<AuditAgent>,
    /// The default intent and task (config / `--intent`).
    pub default_intent: Option<(String, Option<String>)>,
}

impl Live {
    pub fn new(
        policy: PolicySet,
        agent: Agent,
        default_intent: Option<(String, Option<String>)>,
    ) -> Self {
        Live {
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
            policy,
            agent,
            default_intent,
        }
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

/// Decides `facts`, records the outcome in `rec` and the metrics, and refuses (in enforce mode)
/// what policy denies. Ok carries the decision and intent of a request that may proceed.
pub fn decide(
    live: &Live,
    session: &SessionStore,
    metrics: &Metrics,
    declared: Option<(&str, Option<&str>)>,
    facts: &RequestFacts<'_>,
    rec: &mut AuditRecord,
) -> Result<(Decision, Intent), ProxyError> {
    let agent = &live.agent;
    rec.agent = Arc::clone(&live.audit_agent);
    rec.policy_revision = live.policy.shared_revision();
    let default = live
        .default_intent
        .as_ref()
        .map(|(n, t)| (n.as_str(), t.as_deref()));
    let intent = intent::resolve(declared, session, default);
    rec.intent = AuditIntent {
        name: intent.name.clone(),
        task: intent.task.clone(),
        source: intent.source.as_str(),
        verified: intent.verified,
    };

    // The policy set also enforces the lifecycle (an ownerless or expired agent gets no egress,
    // in any mode: `Decision::blocks`).
    let d = live.policy.decide(agent, &intent, facts);
    metrics.policy_seconds.observe(d.policy_micros as f64 / 1e6);
    if live.policy.uncacheable().is_none() {
        metrics.decision_cache[usize::from(!d.cached)].inc();
    }
    rec.durations.policy_us = d.policy_micros;
    rec.mode = d.mode.as_str();
    rec.reasons.clone_from(&d.reasons);
    if d.code == "policy_error" {
        rec.error = Some("policy_error");
    }
    rec.code = (!d.allow).then_some(d.code);
    let label = if d.allow {
        "allow"
    } else if d.blocks() {
        "deny"
    } else {
        "would_deny"
    };
    rec.decision = label;
    count(metrics, live, label, d.mode, &intent);
    if d.blocks() {
        return Err(ProxyError::Denied {
            code: d.code,
            reason: d.reasons.join("; "),
            hint: d.hint.clone(),
            agent: agent.id.clone(),
            intent: intent.name.clone(),
        });
    }
    Ok((d, intent))
}

/// `intentgate_requests_total`, with the intent label bounded to catalog names.
fn count(metrics: &Metrics, live: &Live, decision: &str, mode: Mode, intent: &Intent) {
    let label = match intent.name.as_deref() {
        None => "none",
        Some(n) if live.policy.catalog().contains(n) => n,
        Some(_) => "unknown",
    };
    metrics
        .requests
        .with_label_values(&[decision, mode.as_str(), label])
        .inc();
}
