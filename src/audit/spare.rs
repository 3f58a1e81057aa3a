//! Records the writer has written, given back for new requests: a request's record then costs
//! no allocation (its box, the strings `decision_id`, `method`, `host` and `path`, and the
//! `reasons` vector keep theirs), and the writer frees none. A record is blanked before it goes
//! back: every field as `AuditRecord::default()` has it (written out field by field, so a new
//! field must be added here too), the strings and the vector emptied.

use std::sync::{Arc, Mutex};

use super::{AuditAgent, AuditIntent, AuditRecord, Durations};

/// At most this many records wait to be reused (more in flight are freed as before).
const SPARE: usize = 64;

/// The records waiting to be reused. Boxed: each is taken and queued as the box it is (a record
/// is large and moves as a pointer).
#[allow(clippy::vec_box)]
pub(super) struct Spare {
    records: Mutex<Vec<Box<AuditRecord>>>,
    /// The agent of a blank record (shared: no allocation a record).
    agent: Arc<AuditAgent>,
}

impl Default for Spare {
    fn default() -> Self {
        Spare {
            records: Mutex::new(Vec::with_capacity(SPARE)),
            agent: Arc::default(),
        }
    }
}

impl Spare {
    /// A blank record: one given back, else a new one.
    pub(super) fn take(&self) -> Box<AuditRecord> {
        let reused = self.records.lock().ok().and_then(|mut r| r.pop());
        reused.unwrap_or_default()
    }

    /// Blanks `written` and keeps what there is room for (the rest is freed).
    #[allow(clippy::vec_box)]
    pub(super) fn give(&self, written: &mut Vec<Box<AuditRecord>>) {
        if written.is_empty() {
            return;
        }
        for rec in written.iter_mut() {
            blank(rec, &self.agent);
        }
        if let Ok(mut records) = self.records.lock() {
            let room = SPARE.saturating_sub(records.len()).min(written.len());
            records.extend(written.drain(..room));
        }
        written.clear();
    }
}

/// `rec` as `AuditRecord::default()` with `agent`, its strings' allocations kept. Each field is
/// set in place (no new record built and moved over the old one); the pattern names every field,
/// so a field added to the record does not compile until it is blanked here too.
fn blank(rec: &mut AuditRecord, agent: &Arc<AuditAgent>) {
    let AuditRecord {
        time,
        seq,
        boot_id,
        decision_id,
        agent: rec_agent,
        intent,
        connection,
        method,
        scheme,
        host,
        port,
        path,
        decision,
        mode,
        reasons,
        error,
        code,
        credential,
        policy_revision,
        status,
        bytes_in,
        bytes_out,
        ended,
        durations,
        shadow,
        trace,
        mcp,
        llm,
        at,
        budget,
        charge,
        decision_header,
    } = rec;
    for s in [time, boot_id, decision_id, method, host, path] {
        s.clear();
    }
    reasons.clear();
    *seq = 0;
    if !Arc::ptr_eq(rec_agent, agent) {
        *rec_agent = Arc::clone(agent);
    }
    *intent = AuditIntent::default();
    *connection = None;
    *scheme = None;
    *port = 0;
    *decision = None;
    *mode = None;
    *error = None;
    *code = None;
    *credential = None;
    *policy_revision = Arc::default();
    *status = 0;
    *bytes_in = 0;
    *bytes_out = 0;
    *ended = None;
    *durations = Durations::default();
    *shadow = None;
    *trace = None;
    *mcp = None;
    *llm = None;
    *at = None;
    *budget = None;
    *charge = None;
    *decision_header = None;
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::config::Mode;
    use crate::intent::IntentSource;
    use crate::vocab::{ConnectionMode, ErrorCode, Scheme, Verdict};

    fn full() -> Box<AuditRecord> {
        Box::new(AuditRecord {
            time: "2026-12-07T09:00:00.000001Z".into(),
            seq: 7,
            boot_id: "00112233445566778899".into(),
            decision_id: "0011223300000000000000ff".into(),
            agent: Arc::new(AuditAgent {
                id: "a".into(),
                ..AuditAgent::default()
            }),
            intent: AuditIntent {
                name: Some("bench".into()),
                task: Some("T-1".into()),
                source: Some(IntentSource::Header),
                verified: true,
            },
            connection: Some(ConnectionMode::Forward),
            method: "GET".into(),
            scheme: Some(Scheme::Http),
            host: "example.com".into(),
            port: 8080,
            path: "/a/b".into(),
            decision: Some(Verdict::Deny),
            mode: Some(Mode::Monitor),
            reasons: vec!["because".into()],
            error: Some(ErrorCode::PolicyError),
            code: Some(ErrorCode::IntentViolation),
            credential: Some(Arc::default()),
            policy_revision: Arc::from("rev"),
            status: 403,
            bytes_in: 1,
            bytes_out: 2,
            ended: Some(super::super::Ended::Idle),
            durations: Durations {
                policy_us: 3,
                upstream_ms: 4.5,
                total_ms: 6.5,
            },
            shadow: Some(Box::new(crate::audit::Shadow {
                decision: Verdict::Allow,
                code: None,
                reasons: vec!["r".into()],
            })),
            trace: Some(crate::audit::Trace {
                trace_id: [1; 16],
                span_id: [2; 8],
                parent: None,
                flags: 1,
            }),
            mcp: Some(crate::mcp::Noted {
                method: "tools/call".into(),
                tool: None,
            }),
            llm: Some(
                serde_json::from_str(r#"{"provider":"openai","model":"m","stream":true,"input_tokens":1,"output_tokens":null}"#)
                    .unwrap(),
            ),
            at: Some(SystemTime::now()),
            decision_header: Some(http::HeaderValue::from_static("d")),
            ..AuditRecord::default()
        })
    }

    #[test]
    fn a_record_given_back_is_blank_and_keeps_its_strings_allocations() {
        let spare = Spare::default();
        let rec = full();
        let host = rec.host.as_ptr();
        let reasons = rec.reasons.as_ptr();
        spare.give(&mut vec![rec]);
        let reused = spare.take();
        assert_eq!(reused.host.as_ptr(), host, "the host's allocation is kept");
        assert_eq!(reused.reasons.as_ptr(), reasons, "and the reasons' vector");
        let fresh = AuditRecord {
            agent: Arc::clone(&spare.agent),
            ..AuditRecord::default()
        };
        assert_eq!(format!("{reused:?}"), format!("{fresh:?}"));
        let (mut a, mut b) = (Vec::new(), Vec::new());
        super::super::line::write(&reused, &mut a);
        super::super::line::write(&fresh, &mut b);
        assert_eq!(a, b, "the same line as a new record's");
        // None left: a new one.
        assert_eq!(
            format!("{:?}", spare.take()),
            format!("{:?}", AuditRecord::default())
        );
    }

    #[test]
    fn at_most_spare_records_are_kept() {
        let spare = Spare::default();
        let mut written: Vec<_> = (0..SPARE + 5).map(|_| full()).collect();
        spare.give(&mut written);
        assert!(written.is_empty());
        assert_eq!(spare.records.lock().unwrap().len(), SPARE);
        spare.give(&mut vec![full()]);
        assert_eq!(spare.records.lock().unwrap().len(), SPARE);
    }
}
