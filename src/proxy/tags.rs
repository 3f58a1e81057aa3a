//! Step 8 of the pipeline: what the upstream is told about a call let go — the agent, the
//! intent, the decision id and any headers the decision adds (configurable names), `Via`, our
//! span as its `traceparent` parent, and `Host` from the canonical authority.

use http::HeaderMap;
use http::header::{HOST, HeaderName, HeaderValue, VIA};

use super::gate::LivePolicy;
use super::{Proxy, headers};
use crate::audit::AuditRecord;
use crate::intent::Intent;
use crate::policy::Decision;
use crate::target::Authority;
use crate::vocab::Scheme;

impl Proxy {
    /// Tags the upstream request's headers `h` for the call of `rec`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn tag_upstream(
        &self,
        h: &mut HeaderMap,
        live: &LivePolicy,
        intent: &Intent,
        decision: &Decision,
        rec: &AuditRecord,
        authority: &Authority,
        scheme: Scheme,
    ) {
        let default_port = if scheme == Scheme::Https { 443 } else { 80 };
        // One pass over the head (compared, not hashed): whether there is a `Via`, and whether
        // the agent's `Host` is one and the canonical one already (usually: then it stays).
        let (mut via, mut hosts, mut canonical) = (false, false, false);
        for (k, v) in h.iter() {
            if k == HOST {
                canonical = !hosts && authority.is_host_header(v.as_bytes(), default_port);
                hosts = true;
            } else if k == VIA {
                via = true;
            }
        }
        headers::add_via_after(h, via);
        let tag = |v: &str| HeaderValue::from_str(v).ok();
        if let Some(v) = live.agent_tag() {
            h.insert(self.tag_agent.clone(), v.clone());
        }
        // A catalog intent's value is the catalog's, made once; another name's is made here.
        let catalog = live.policy.catalog();
        let made = || intent.name.as_deref().and_then(tag);
        if let Some(v) = catalog.intent_tag(intent).cloned().or_else(made) {
            h.insert(self.tag_intent.clone(), v);
        }
        // Made once for the request (src/ids.rs): the response's header is the same value.
        let id = rec.decision_header.clone();
        if let Some(v) = id.or_else(|| tag(&rec.decision_id)) {
            h.insert(self.tag_decision.clone(), v);
        }
        for (k, v) in &decision.headers {
            if let (Ok(k), Some(v)) = (HeaderName::from_bytes(k.as_bytes()), tag(v)) {
                h.insert(k, v);
            }
        }
        // With a trace, the upstream's parent is this call's span.
        if let Some(v) =
            (rec.trace.as_ref()).and_then(|t| HeaderValue::from_bytes(&t.header()).ok())
        {
            h.insert(headers::TRACEPARENT, v);
        }
        if !canonical {
            if let Some(host) = tag(&authority.host_header(default_port)) {
                h.insert(HOST, host);
            }
        }
    }
}
