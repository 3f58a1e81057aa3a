//! Tests of the per-namespace layout: namespace modules and catalogs apply only to their
//! namespace, can narrow, and can never override a global deny.

use super::tests::*;
use super::*;

#[test]
fn namespace_modules_narrow_only_their_namespace() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "global.rego", GLOBAL_DENY);
    write(
        dir.path(),
        "namespaces/support/narrow.rego",
        "package intentgate.namespace\n\nimport rego.v1\n\ndeny contains \"support may not delete\" if input.request.method == \"DELETE\"\n",
    );
    let c = config(&[dir.path()]);
    let sup = agent(Some("support"));
    let p = PolicySet::load(&c, &sup).unwrap();
    assert_eq!(p.modules().len(), 3, "{:?}", p.modules());
    let d = decide(
        &p,
        &sup,
        &intent("triage"),
        &req("DELETE", "api.zendesk.com", "/t/1"),
    );
    assert_eq!(
        (d.allow, d.reasons.clone()),
        (false, vec!["support may not delete".to_string()])
    );
    assert!(
        decide(
            &p,
            &sup,
            &intent("triage"),
            &req("GET", "api.zendesk.com", "/t/1")
        )
        .allow
    );
    let d = decide(
        &p,
        &sup,
        &intent("triage"),
        &req("GET", "api.stripe.com", "/v1/refunds"),
    );
    assert_eq!(d.reasons, vec!["refunds need a human".to_string()]);
    let dev = agent(Some("dev"));
    let p = PolicySet::load(&c, &dev).unwrap();
    assert!(
        decide(
            &p,
            &dev,
            &intent("triage"),
            &req("DELETE", "api.zendesk.com", "/t/1")
        )
        .allow
    );
    // A policy set answers only for the namespace it was loaded for.
    assert_eq!(
        decide(
            &p,
            &sup,
            &intent("triage"),
            &req("GET", "api.zendesk.com", "/")
        )
        .code_text(),
        "policy_error"
    );
}

#[test]
fn a_namespace_cannot_override_a_global_deny() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "global.rego", GLOBAL_DENY);
    write(
        dir.path(),
        "namespaces/support/widen.rego",
        "package intentgate.namespace\n\nimport rego.v1\n\ngrant contains \"yes\" if true\n\ndecision := {\"allow\": true}\n\nallow := true\n",
    );
    let sup = agent(Some("support"));
    let p = PolicySet::load(&config(&[dir.path()]), &sup).unwrap();
    let d = decide(
        &p,
        &sup,
        &intent("triage"),
        &req("GET", "api.stripe.com", "/v1/refunds"),
    );
    assert!(!d.allow, "{d:?}");
    assert!(!decide(&p, &sup, &intent("triage"), &req("GET", "evil.com", "/")).allow);
    // Declaring the global package from a namespace folder is refused at load.
    write(
        dir.path(),
        "namespaces/support/sneaky.rego",
        "package intentgate\n\nimport rego.v1\n\ngrant contains \"yes\" if true\n",
    );
    let err = PolicySet::load(&config(&[dir.path()]), &sup)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("sneaky.rego") && err.contains("package intentgate.namespace"),
        "{err}"
    );
}

#[test]
fn namespace_catalogs_and_data_apply_to_their_namespace() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "namespaces/support/catalog.yaml",
        "intents:\n  read-kb:\n    allow:\n      - hosts: [kb.internal.example]\nblocked_paths: [/admin]\n",
    );
    write(
        dir.path(),
        "namespaces/support/paths.rego",
        "package intentgate.namespace\n\nimport rego.v1\n\ndeny contains \"admin is off limits\" if input.request.path in data.intentgate.namespace.blocked_paths\n",
    );
    let sup = agent(Some("support"));
    let p = PolicySet::load(&config(&[dir.path()]), &sup).unwrap();
    assert!(
        decide(
            &p,
            &sup,
            &intent("read-kb"),
            &req("GET", "kb.internal.example", "/a")
        )
        .allow
    );
    let d = decide(
        &p,
        &sup,
        &intent("read-kb"),
        &req("GET", "kb.internal.example", "/admin"),
    );
    assert_eq!(d.reasons, vec!["admin is off limits".to_string()]);
    let dev = agent(Some("dev"));
    let p = PolicySet::load(&config(&[dir.path()]), &dev).unwrap();
    assert_eq!(
        decide(
            &p,
            &dev,
            &intent("read-kb"),
            &req("GET", "kb.internal.example", "/a")
        )
        .scope
        .code,
        ScopeCode::UnknownIntent
    );
}
