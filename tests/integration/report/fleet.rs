//! The test's fleet: three agents (one owned and current, one without an owner in monitor mode,
//! one past expiry and idle) and their calls, written as the sidecar writes audit lines.

use std::path::Path;

use serde_json::json;

/// An agent as its sidecar's records describe it.
pub(super) struct Agent {
    pub(super) id: &'static str,
    pub(super) owner: Option<&'static str>,
    pub(super) namespace: &'static str,
    pub(super) expires: Option<&'static str>,
    pub(super) mode: &'static str,
}

pub(super) const SUPPORT: Agent = Agent {
    id: "support-bot",
    owner: Some("team-helpdesk"),
    namespace: "support",
    expires: Some("2027-06-30T00:00:00Z"),
    mode: "enforce",
};
pub(super) const BILLING: Agent = Agent {
    id: "billing-bot",
    owner: None,
    namespace: "billing",
    expires: None,
    mode: "monitor",
};
pub(super) const OLD: Agent = Agent {
    id: "old-bot",
    owner: Some("team-legacy"),
    namespace: "legacy",
    expires: Some("2026-12-01T00:00:00Z"),
    mode: "enforce",
};

/// One call of the test's fleet.
#[derive(Clone)]
pub(super) struct Call {
    pub(super) minute: u32,
    pub(super) agent: &'static Agent,
    pub(super) intent: Option<&'static str>,
    pub(super) method: &'static str,
    pub(super) host: &'static str,
    pub(super) path: String,
    /// allow, deny, would_deny or error
    pub(super) decision: &'static str,
    /// The policy's code (deny, would_deny) or the error code.
    pub(super) code: Option<&'static str>,
    pub(super) reason: Option<String>,
}

pub(super) fn calls() -> Vec<Call> {
    let call = |minute, agent, intent, method, host, path: &str| Call {
        minute,
        agent,
        intent,
        method,
        host,
        path: path.to_string(),
        decision: "allow",
        code: None,
        reason: None,
    };
    let mut v = Vec::new();
    for m in 0..40 {
        let path = format!("/api/v2/tickets/{}", 4700 + m);
        v.push(call(
            m,
            &SUPPORT,
            Some("triage-tickets"),
            "GET",
            "api.zendesk.com",
            &path,
        ));
        if m % 4 == 1 {
            v.push(Call {
                decision: "deny",
                code: Some("intent_violation"),
                reason: Some(
                    "POST slack.com/api/chat.postMessage is not allowed for intent triage-tickets"
                        .into(),
                ),
                ..call(
                    m,
                    &SUPPORT,
                    Some("triage-tickets"),
                    "POST",
                    "slack.com",
                    "/api/chat.postMessage",
                )
            });
        }
    }
    for m in [7, 21] {
        v.push(Call {
            decision: "error",
            code: Some("destination_blocked"),
            reason: Some("10.0.0.5 is a private address".into()),
            ..call(
                m,
                &SUPPORT,
                Some("triage-tickets"),
                "GET",
                "10.0.0.5",
                "/admin",
            )
        });
    }
    v.push(call(
        30,
        &SUPPORT,
        None,
        "GET",
        "api.zendesk.com",
        "/api/v2/users/me",
    ));
    for m in (10..35).step_by(5) {
        v.push(call(
            m,
            &BILLING,
            Some("billing-lookup"),
            "GET",
            "api.stripe.com",
            "/v1/charges",
        ));
    }
    for m in [12, 22] {
        v.push(Call {
            decision: "would_deny",
            code: Some("intent_violation"),
            reason: Some(
                "POST api.stripe.com/v1/refunds is not allowed for intent billing-lookup".into(),
            ),
            ..call(
                m,
                &BILLING,
                Some("billing-lookup"),
                "POST",
                "api.stripe.com",
                "/v1/refunds",
            )
        });
    }
    for m in 0..4 {
        v.push(call(
            m,
            &OLD,
            Some("crm-sync"),
            "GET",
            "crm.example.com",
            "/contacts",
        ));
    }
    v
}

/// The audit line of a call, as the sidecar writes it.
pub(super) fn line(c: &Call, seq: usize, connection: &str) -> String {
    let a = c.agent;
    let mut r = json!({
        "time": format!("2026-12-05T10:{:02}:{:02}.{:06}Z", c.minute, seq % 60, seq),
        "seq": seq, "boot_id": "9c1f00aa00bb00cc", "decision_id": format!("ad64a969{seq:016x}"),
        "agent": {"id": a.id, "namespace": a.namespace,
                  "spiffe_id": format!("spiffe://cluster.local/ns/{}/sa/{}", a.namespace, a.id),
                  "service_account": a.id, "owner": a.owner, "expires": a.expires},
        "intent": {"name": c.intent, "task": null, "source": if c.intent.is_some() { "header" } else { "none" }, "verified": false},
        "connection": connection, "method": c.method, "scheme": "https", "host": c.host, "port": 443,
        "path": c.path, "decision": c.decision, "mode": a.mode,
        "reasons": c.reason.iter().collect::<Vec<_>>(),
        "policy_revision": "3d31c624d2702c23", "status": 200, "bytes_in": 0, "bytes_out": 512,
        "durations": {"policy_us": 21, "upstream_ms": 38.2, "total_ms": 39.0}
    });
    match c.decision {
        "error" => r["error"] = json!(c.code),
        "deny" | "would_deny" => r["code"] = json!(c.code),
        _ => {}
    }
    r.to_string()
}

/// Writes the fleet's log: every call, the CONNECT of an intercepted tunnel (not a call) and a
/// line cut short (not a record).
pub(super) fn write_log(path: &Path, calls: &[Call]) {
    let mut text = String::new();
    let connect = Call {
        path: String::new(),
        method: "CONNECT",
        ..calls[0].clone()
    };
    text.push_str(&line(&connect, 0, "intercepted"));
    text.push('\n');
    for (i, c) in calls.iter().enumerate() {
        text.push_str(&line(c, i + 1, "intercepted"));
        text.push('\n');
    }
    text.push_str("{\"time\":\"2026-12-05T10:41:00Z\",\"seq\":99,\"agent\":{\"id\n");
    std::fs::write(path, text).unwrap();
}
