//! `audit.format: opa`: each record written as an OPA decision-log event (the fields OPA's own
//! decision logs carry: `labels`, `decision_id`, `path`, `input`, `result`, `timestamp`,
//! `metrics`, `bundles`), one JSON object per line, so pipelines built for OPA's logs ingest
//! intentgate's. What OPA has no field for (sequence, status, bytes, how a stream ended) is kept
//! under `intentgate`, so the record stays whole.

use serde_json::{Map, Value, json};

use super::AuditRecord;

/// The decision every record is the answer of (the default `policy.query`, as OPA writes paths).
const PATH: &str = "intentgate/decision";

/// Appends `rec` as one OPA decision-log event (no newline) to `out`.
pub(super) fn write(rec: &AuditRecord, out: &mut Vec<u8>) {
    let a = &rec.agent;
    let mut labels = Map::new();
    labels.insert("app".into(), "intentgate".into());
    labels.insert("id".into(), rec.boot_id.as_str().into());
    labels.insert("version".into(), env!("CARGO_PKG_VERSION").into());
    labels.insert("agent".into(), a.id.as_str().into());
    if let Some(ns) = &a.namespace {
        labels.insert("namespace".into(), ns.as_str().into());
    }
    let text = |v: Option<&str>| v.map_or(Value::Null, Value::from);
    let event = json!({
        "labels": labels,
        "decision_id": rec.decision_id,
        "path": PATH,
        "input": {
            "agent": {
                "id": a.id,
                "namespace": a.namespace,
                "spiffe_id": a.spiffe_id,
                "service_account": a.service_account,
                "owner": a.owner,
                "expires": a.expires,
            },
            "intent": {
                "name": rec.intent.name,
                "task": rec.intent.task,
                "source": text(rec.intent.source.map(|s| s.as_str())),
                "verified": rec.intent.verified,
            },
            "request": {
                "method": rec.method,
                "scheme": text(rec.scheme.map(|s| s.as_str())),
                "host": rec.host,
                "port": rec.port,
                "path": rec.path,
            },
            "connection": {"mode": text(rec.connection.map(|c| c.as_str()))},
        },
        "result": {
            "allow": rec.decision == Some(crate::vocab::Verdict::Allow),
            "decision": text(rec.decision.map(|d| d.as_str())),
            "mode": text(rec.mode.map(|m| m.as_str())),
            "code": text(rec.code.map(|c| c.as_str())),
            "reasons": rec.reasons,
        },
        "requested_by": a.spiffe_id.as_deref().unwrap_or(&a.id),
        "timestamp": rec.time,
        "metrics": {"timer_intentgate_policy_ns": rec.durations.policy_us.saturating_mul(1000)},
        "bundles": {"intentgate": {"revision": &*rec.policy_revision}},
        "intentgate": {
            "seq": rec.seq,
            "error": text(rec.error.map(|e| e.as_str())),
            "status": rec.status,
            "bytes_in": rec.bytes_in,
            "bytes_out": rec.bytes_out,
            "ended": rec.ended,
            "durations": rec.durations,
        },
    });
    // Writing to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, &event);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_carries_the_fields_of_opa_decision_logs() {
        let rec = AuditRecord {
            decision_id: "d1".into(),
            boot_id: "b".into(),
            time: "2026-12-06T00:00:00.000001Z".into(),
            method: "GET".into(),
            host: "api.example.com".into(),
            port: 443,
            decision: Some(crate::vocab::Verdict::Deny),
            code: Some(crate::vocab::ErrorCode::IntentViolation),
            reasons: vec!["no".into()],
            policy_revision: "rev".into(),
            ..AuditRecord::default()
        };
        let mut out = Vec::new();
        write(&rec, &mut out);
        let v: Value = serde_json::from_slice(&out).unwrap();
        for k in [
            "labels",
            "decision_id",
            "path",
            "input",
            "result",
            "timestamp",
            "metrics",
            "bundles",
        ] {
            assert!(v.get(k).is_some(), "{k}: {v}");
        }
        assert_eq!(v["result"]["allow"], false);
        assert_eq!(v["result"]["code"], "intent_violation");
        assert_eq!(v["bundles"]["intentgate"]["revision"], "rev");
        assert_eq!(v["input"]["request"]["host"], "api.example.com");
    }
}
