//! The report's reading and counting: audit records as the proxy writes them are read back with
//! every field the report uses; times, caps and the timeline's coarsening.

use std::sync::Arc;

use super::record::{Decision, Record, epoch_secs, format_minute};
use super::stats::{Counter, Stats};
use crate::audit::{AuditAgent, AuditIntent, AuditRecord};
use crate::config::Mode;
use crate::vocab::{ConnectionMode, ErrorCode, Verdict};

fn record(decision: Verdict, code: Option<ErrorCode>) -> AuditRecord {
    AuditRecord {
        time: "2026-12-05T10:41:02.123456Z".into(),
        agent: Arc::new(AuditAgent {
            id: "support-bot".into(),
            namespace: Some("support".into()),
            spiffe_id: None,
            service_account: Some("support-sa".into()),
            owner: Some("team \"helpdesk\"".into()),
            expires: Some("2027-06-30T00:00:00Z".into()),
        }),
        intent: AuditIntent {
            name: Some("triage-tickets".into()),
            ..AuditIntent::default()
        },
        connection: Some(ConnectionMode::Intercepted),
        method: "GET".into(),
        host: "api.zendesk.com".into(),
        port: 443,
        path: "/api/v2/tickets/4711".into(),
        decision: Some(decision),
        mode: Some(Mode::Enforce),
        reasons: vec!["not allowed".into()],
        code,
        ..AuditRecord::default()
    }
}

#[test]
fn reads_the_records_the_proxy_writes() {
    let line =
        serde_json::to_vec(&record(Verdict::Deny, Some(ErrorCode::IntentViolation))).unwrap();
    let r: Record<'_> = serde_json::from_slice(&line).unwrap();
    assert_eq!(r.decision, Decision::Deny);
    assert_eq!(r.agent.id, "support-bot");
    assert_eq!(r.agent.owner.as_deref(), Some("team \"helpdesk\""));
    assert_eq!(r.agent.service_account.as_deref(), Some("support-sa"));
    assert_eq!(r.agent.expires.as_deref(), Some("2027-06-30T00:00:00Z"));
    assert_eq!(r.intent.name.as_deref(), Some("triage-tickets"));
    assert_eq!(
        (&*r.host, r.port, &*r.path),
        ("api.zendesk.com", 443, "/api/v2/tickets/4711")
    );
    assert_eq!(r.refusal_code(), "intent_violation");
    assert_eq!(r.first_reason(), "not allowed");
    // Strings without escapes are borrowed from the line, not copied.
    assert!(matches!(r.host, std::borrow::Cow::Borrowed(_)));
    for d in [Verdict::Allow, Verdict::WouldDeny, Verdict::Error] {
        let line = serde_json::to_vec(&record(d, None)).unwrap();
        assert!(serde_json::from_slice::<Record<'_>>(&line).is_ok(), "{d}");
    }
}

#[test]
fn times() {
    assert_eq!(epoch_secs("1970-01-01T00:00:00Z"), Some(0));
    assert_eq!(
        epoch_secs("2026-12-05T10:50:00.999999Z"),
        Some(1_796_467_800)
    );
    assert_eq!(epoch_secs("2026-12-05T12:50:00+02:00"), Some(1_796_467_800));
    assert_eq!(epoch_secs("2000-02-29T00:00:00Z"), Some(951_782_400));
    for bad in [
        "",
        "2026-12-05",
        "2026-13-05T10:50:00Z",
        "2026-12-05T10:50:00",
        "x026-12-05T10:50:00Z",
    ] {
        assert_eq!(epoch_secs(bad), None, "{bad}");
    }
    assert_eq!(format_minute(1_796_467_800), "2026-12-05 10:50");
    assert_eq!(format_minute(951_782_400), "2000-02-29 00:00");
}

#[test]
fn tables_are_capped_and_the_timeline_coarsens() {
    let mut c: Counter<u64> = Counter::default();
    for i in 0..6_000 {
        *c.at(&["code", &i.to_string()]) += 1;
    }
    assert_eq!(c.iter().count(), 5_000);
    assert_eq!(c.other, 1_000);
    assert_eq!(c.iter().map(|(_, n)| n).sum::<u64>() + c.other, 6_000);

    // 150,000 distinct minutes of one series: the buckets widen, no call is lost.
    let mut stats = Stats::default();
    let mut rec = record(Verdict::Allow, None);
    for m in 0..150_000i64 {
        let t = 1_796_467_800 + m * 60;
        rec.time = format!("{}:00Z", &super::record::format_minute(t).replace(' ', "T"));
        let line = serde_json::to_vec(&rec).unwrap();
        let r: Record<'_> = serde_json::from_slice(&line).unwrap();
        stats.add(&r, String::new);
    }
    assert!(stats.timeline.width > 60);
    assert!(stats.timeline.buckets.len() <= 100_000);
    assert_eq!(stats.timeline.buckets.values().sum::<u64>(), 150_000);
    assert_eq!(stats.agents[0].calls, 150_000);
}
