//! What a call that ends in an error leaves behind: the metric for who caused it, and its audit
//! record's outcome. A call refused before its decision is recorded `decision: error` with the
//! code; a call the decision let go keeps its decision and carries the code too, so an upstream
//! that failed it (502/504) is recorded, counted and summarised as failed, not as allowed, and is
//! logged at `warn`.

use tracing::warn;

use super::Proxy;
use crate::audit::AuditRecord;
use crate::error::{Blame, ProxyError};
use crate::vocab::Verdict;

impl Proxy {
    /// Counts `err` by who caused it (policy refusals are counted by the decision step).
    pub(super) fn count_error(&self, err: &ProxyError) {
        match err.blame() {
            Blame::Upstream => self
                .metrics
                .upstream_errors
                .with_label_values(&[err.code().as_str()])
                .inc(),
            Blame::Client | Blame::Proxy => self.metrics.refused(err.code()),
            Blame::Policy => {}
        }
    }

    /// Records that the call of `rec` ended in `err`, answered with `err`'s status.
    pub(super) fn failed(&self, rec: &mut AuditRecord, err: &ProxyError) {
        self.count_error(err);
        rec.status = err.status().as_u16();
        let code = err.code();
        match rec.decision {
            None => {
                rec.decision = Some(Verdict::Error);
                rec.error = Some(code);
            }
            Some(Verdict::Allow | Verdict::WouldDeny) if rec.error.is_none() => {
                rec.error = Some(code);
            }
            Some(_) => {}
        }
        if code.upstream_failure() {
            let target = crate::hostport::HostPort(&rec.host, rec.port);
            warn!(
                decision_id = %rec.decision_id,
                error = %code,
                %target,
                reason = %err,
                "the upstream failed a call the decision let go"
            );
        }
    }
}
