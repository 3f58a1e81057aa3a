//! The shadow policy (`policy.shadow`): a candidate decided beside the live policy on the same
//! call, never enforced. A disagreement (another verdict or code) is written to the call's record
//! and counted in `intentgate_shadow_disagreements_total{intent,live,shadow}`. Off, it costs one
//! `Option` check per call.

use super::gate::{self, LivePolicy};
use crate::audit::{AuditRecord, Shadow};
use crate::intent::Intent;
use crate::metrics::Metrics;
use crate::policy::{Decision, PolicySet, RequestFacts};

/// Decides `facts` under `shadow` and records how it differs from the live decision `live_d`.
pub(super) fn compare(
    shadow: &PolicySet,
    live: &LivePolicy,
    metrics: &Metrics,
    intent: &Intent,
    facts: &RequestFacts<'_>,
    live_d: &Decision,
    rec: &mut AuditRecord,
) {
    let s = shadow.decide_call(&live.agent, intent, facts);
    let (lv, sv) = (live_d.verdict(), s.verdict());
    let code = |d: &Decision| d.code.filter(|_| !d.allow);
    if lv == sv && code(live_d) == code(&s) {
        return;
    }
    metrics
        .shadow_disagreements
        .with_label_values(&[gate::intent_label(live, intent), lv.as_str(), sv.as_str()])
        .inc();
    rec.shadow = Some(Box::new(Shadow {
        decision: sv,
        code: code(&s),
        reasons: s.reasons,
    }));
}
