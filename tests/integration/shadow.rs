//! `policy.shadow`: a candidate policy decided beside the live one on live traffic. The live
//! decision is enforced; each disagreement is in the call's audit record and counted; the shadow
//! is reloaded like the live policy.

use std::time::Duration;

use crate::common::*;

const SHADOW_DENIES_ADMIN: &str = "package intentgate.namespace\nimport rego.v1\n\
    deny contains {\"code\": \"admin\", \"message\": \"admin paths are closed\"} if startswith(input.request.path, \"/admin\")\n";

#[test]
fn the_shadow_policy_is_decided_beside_the_live_one_and_only_disagreements_are_recorded() {
    let up = Upstream::start();
    let p = up.addr.port();
    let dir = tempfile::tempdir().unwrap();
    let rego = dir.path().join("candidate.rego");
    std::fs::write(&rego, SHADOW_DENIES_ADMIN).unwrap();
    let proxy = ProxyProc::start(&format!(
        "agent: {{id: bot, owner: team}}\npolicy: {{shadow: {{paths: [\"{}\"]}}, watch_interval_ms: 100}}\n\
         intents:\n  read:\n    allow: [{{hosts: [localhost], ports: [{p}], methods: [GET]}}]\n",
        rego.display()
    ));
    let get = |path: &str| {
        let url = format!("http://localhost:{p}{path}");
        curl(&["-x", &proxy.url(), "-H", "intentgate-intent: read", &url]).status
    };
    // Agreement: no shadow in the record. Disagreement: the live allow is enforced.
    assert_eq!(get("/tickets/1"), 200);
    assert_eq!(get("/admin/users"), 200);
    let recs = proxy.audit_n(2);
    assert!(recs[0].get("shadow").is_none(), "{}", recs[0]);
    let sh = &recs[1]["shadow"];
    assert_eq!(
        (&recs[1]["decision"], &sh["decision"], &sh["code"]),
        (&"allow".into(), &"deny".into(), &"intent_violation".into()),
        "{}",
        recs[1]
    );
    assert!(
        sh["reasons"].to_string().contains("admin paths are closed"),
        "{sh}"
    );
    let series =
        "intentgate_shadow_disagreements_total{intent=\"read\",live=\"allow\",shadow=\"deny\"}";
    assert_eq!(proxy.metric(series), 1.0);

    // The shadow file changes: reloaded like the live policy; now it agrees.
    std::fs::write(&rego, "package intentgate.namespace\nimport rego.v1\n").unwrap();
    eventually(
        "the shadow policy reloaded",
        Duration::from_secs(15),
        || {
            let n = proxy.audit().len();
            (get("/admin/users") == 200
                && proxy.audit_n(n + 1).last().unwrap().get("shadow").is_none())
            .then_some(())
        },
    );
    // Agreeing calls are not counted.
    let before = proxy.metric(series);
    assert_eq!(get("/admin/users"), 200);
    assert_eq!(proxy.metric(series), before);
}

#[test]
fn a_broken_shadow_policy_is_refused_at_start_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let rego = dir.path().join("bad.rego");
    std::fs::write(
        &rego,
        "package intentgate.namespace\ndeny contains x if {\n",
    )
    .unwrap();
    let cfg = dir.path().join("c.yaml");
    std::fs::write(
        &cfg,
        format!("policy: {{shadow: {{paths: [\"{}\"]}}}}\n", rego.display()),
    )
    .unwrap();
    let (code, err) = serve_outcome(&cfg, &dir.path().join("ready"));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("shadow") && err.contains("bad.rego"), "{err}");
}
