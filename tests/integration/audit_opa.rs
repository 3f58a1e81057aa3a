//! `audit.format: opa`: the real proxy writes each decision as an OPA decision-log event, with
//! the input it decided on and its result, and keeps what OPA has no field for.

use crate::common::*;

#[test]
fn with_audit_format_opa_each_decision_is_an_opa_decision_log_event() {
    let up = Upstream::start();
    let p = up.addr.port();
    let proxy = ProxyProc::start(&format!(
        "agent: {{id: bot, namespace: support, owner: team}}\naudit: {{path: stdout, format: opa}}\n\
         intents:\n  read:\n    allow: [{{hosts: [localhost], ports: [{p}], methods: [GET]}}]\n"
    ));
    for method in ["GET", "DELETE"] {
        let url = format!("http://localhost:{p}/tickets/1");
        curl(&[
            "-x",
            &proxy.url(),
            "-H",
            "intentgate-intent: read",
            "-X",
            method,
            &url,
        ]);
    }
    let events: Vec<serde_json::Value> =
        eventually("two events", std::time::Duration::from_secs(10), || {
            let lines: Vec<_> = proxy
                .stdout()
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect();
            (lines.len() >= 2).then_some(lines)
        });
    for (e, (allow, decision, status)) in events
        .iter()
        .zip([(true, "allow", 200), (false, "deny", 403)])
    {
        assert_eq!(e["path"], "intentgate/decision", "{e}");
        assert!(
            e["decision_id"].as_str().is_some_and(|d| !d.is_empty()),
            "{e}"
        );
        assert!(
            e["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{e}"
        );
        assert_eq!(
            (
                &e["labels"]["app"],
                &e["labels"]["agent"],
                &e["labels"]["namespace"]
            ),
            (&"intentgate".into(), &"bot".into(), &"support".into()),
            "{e}"
        );
        assert!(e["bundles"]["intentgate"]["revision"].is_string(), "{e}");
        assert_eq!(e["input"]["intent"]["name"], "read", "{e}");
        assert_eq!(e["input"]["request"]["host"], "localhost", "{e}");
        assert_eq!(e["input"]["request"]["path"], "/tickets/1", "{e}");
        assert_eq!(
            (&e["result"]["allow"], &e["result"]["decision"]),
            (&allow.into(), &decision.into()),
            "{e}"
        );
        assert_eq!(e["intentgate"]["status"], status, "{e}");
        assert!(e["intentgate"]["seq"].as_u64().is_some(), "{e}");
    }
    assert_eq!(events[1]["result"]["code"], "intent_violation");
    assert_eq!(events[1]["input"]["request"]["method"], "DELETE");
}
