//! Decision-level tests of the policy set: the default policy over the catalog, global and
//! namespace rules, failures closed, secrets kept out of the input.

use std::path::Path;

use super::*;
use crate::config::AgentConfig;
use crate::intent::IntentSource;

fn agent(ns: Option<&str>) -> Agent {
    let cfg = AgentConfig {
        id: Some("support-bot".into()),
        namespace: ns.map(Into::into),
        owner: Some("team".into()),
        ..Default::default()
    };
    Agent::from_config(&cfg, &|_| None).unwrap()
}

fn config(yaml: &str, dir: Option<&Path>) -> Config {
    let mut c: Config = serde_yaml::from_str(yaml).unwrap();
    if let Some(d) = dir {
        c.policy.paths = vec![d.to_path_buf()];
    }
    c
}

const CATALOG: &str = r#"
intents:
  triage:
    allow:
      - hosts: [api.zendesk.com]
        methods: [GET]
        paths: ["/api/v2/tickets/**"]
  refunds:
    mode: monitor
    allow:
      - hosts: [api.stripe.com]
"#;

fn intent(name: &str) -> Intent {
    Intent {
        name: Some(name.into()),
        task: None,
        source: IntentSource::Header,
        verified: false,
        claims: Default::default(),
    }
}

fn facts<'a>(
    method: &'a str,
    host: &'a str,
    path: &'a str,
    headers: Option<&'a http::HeaderMap>,
) -> RequestFacts<'a> {
    RequestFacts {
        id: "t",
        protocol: "HTTP/1.1",
        method,
        scheme: "https",
        host,
        port: 443,
        path: Some(path),
        query: Some("page=2&page=3"),
        headers,
        connection: ConnectionFacts {
            mode: "forward",
            sni: None,
            intercepted: false,
        },
        destination: None,
    }
}

#[test]
fn catalog_verdicts_become_decisions() {
    let p = PolicySet::load(&config(CATALOG, None), &agent(None)).unwrap();
    let a = agent(None);
    let d = p.decide(
        &a,
        &intent("triage"),
        &facts("GET", "api.zendesk.com", "/api/v2/tickets/1", None),
    );
    assert!(d.allow, "{d:?}");
    assert_eq!(d.mode, Mode::Enforce);
    let d = p.decide(
        &a,
        &intent("triage"),
        &facts("POST", "api.zendesk.com", "/api/v2/tickets/1", None),
    );
    assert!(!d.allow);
    assert_eq!(d.code, "intent_violation");
    assert!(
        d.reasons[0].contains("does not permit POST api.zendesk.com:443"),
        "{:?}",
        d.reasons
    );
    assert!(d.hint.contains("extend intent 'triage'"));
    // Mode precedence: the intent's own mode, then the flag over everything.
    let d = p.decide(
        &a,
        &intent("refunds"),
        &facts("GET", "api.zendesk.com", "/", None),
    );
    assert_eq!((d.allow, d.mode), (false, Mode::Monitor));
    let mut c = config(CATALOG, None);
    c.mode_override = Some(Mode::Enforce);
    let p2 = PolicySet::load(&c, &a).unwrap();
    assert_eq!(
        p2.decide(
            &a,
            &intent("refunds"),
            &facts("GET", "x.example", "/", None)
        )
        .mode,
        Mode::Enforce
    );
    // No intent: the hint says how to declare one.
    let d = p.decide(
        &a,
        &Intent::none(),
        &facts("GET", "api.zendesk.com", "/", None),
    );
    assert!(!d.allow && d.hint.contains("intentgate-intent"), "{d:?}");
}

#[test]
fn global_deny_wins_and_namespaces_only_narrow() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("global.rego"),
        "package intentgate\nimport rego.v1\ndeny contains \"writes to tickets are frozen\" if input.request.method == \"PUT\"\n",
    )
    .unwrap();
    let ns = dir.path().join("namespaces/support");
    std::fs::create_dir_all(&ns).unwrap();
    std::fs::write(
        ns.join("narrow.rego"),
        "package intentgate.namespace\nimport rego.v1\ndeny contains \"support reads no users\" if input.request.path_segments[2] == \"users\"\n",
    )
    .unwrap();
    std::fs::write(
        ns.join("catalog.yaml"),
        "intents:\n  edit:\n    allow:\n      - hosts: [api.zendesk.com]\n        methods: [PUT, GET]\n",
    )
    .unwrap();
    let a = agent(Some("support"));
    let p = PolicySet::load(&config(CATALOG, Some(dir.path())), &a).unwrap();
    // The namespace's own intent permits PUT, the global deny still forbids it.
    let d = p.decide(
        &a,
        &intent("edit"),
        &facts("PUT", "api.zendesk.com", "/api/v2/tickets/1", None),
    );
    assert_eq!(
        (d.allow, d.reasons.clone()),
        (false, vec!["writes to tickets are frozen".to_string()])
    );
    // The namespace narrows what the catalog allows.
    let d = p.decide(
        &a,
        &intent("edit"),
        &facts("GET", "api.zendesk.com", "/api/v2/users", None),
    );
    assert_eq!(d.reasons, vec!["support reads no users".to_string()]);
    assert!(
        p.decide(
            &a,
            &intent("edit"),
            &facts("GET", "api.zendesk.com", "/api/v2/tickets", None)
        )
        .allow
    );
    // Another namespace's agent sees neither the namespace intent nor its rules.
    let other = agent(Some("sales"));
    let p = PolicySet::load(&config(CATALOG, Some(dir.path())), &other).unwrap();
    assert_eq!(
        p.decide(
            &other,
            &intent("edit"),
            &facts("GET", "api.zendesk.com", "/", None)
        )
        .scope
        .code,
        "unknown_intent"
    );

    // A namespace module that tries to define the global decision is refused at load.
    std::fs::write(
        ns.join("override.rego"),
        "package intentgate\nimport rego.v1\ndecision := {\"allow\": true}\n",
    )
    .unwrap();
    let err = PolicySet::load(&config(CATALOG, Some(dir.path())), &a)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("override.rego:1") && err.contains("intentgate.namespace"),
        "{err}"
    );
}

#[test]
fn evaluation_errors_fail_closed_unless_configured() {
    let dir = tempfile::tempdir().unwrap();
    // Two complete definitions with different values: a runtime conflict error in Rego.
    std::fs::write(
        dir.path().join("broken.rego"),
        "package intentgate\nimport rego.v1\nx := 1 if input.request.method == \"GET\"\nx := 2 if input.request.host != \"\"\ndeny contains \"x\" if x > 5\n",
    )
    .unwrap();
    let a = agent(None);
    let p = PolicySet::load(&config(CATALOG, Some(dir.path())), &a).unwrap();
    let d = p.decide(
        &a,
        &intent("triage"),
        &facts("GET", "api.zendesk.com", "/api/v2/tickets", None),
    );
    assert_eq!((d.allow, d.code), (false, "policy_error"), "{d:?}");
    let mut c = config(CATALOG, Some(dir.path()));
    c.policy.on_error = OnError::Allow;
    let p = PolicySet::load(&c, &a).unwrap();
    let d = p.decide(
        &a,
        &intent("triage"),
        &facts("GET", "api.zendesk.com", "/api/v2/tickets", None),
    );
    assert_eq!((d.allow, d.code), (true, "policy_error"));
    // An undefined query fails closed too.
    let mut c = config(CATALOG, None);
    c.policy.query = "data.nothing.here".into();
    let p = PolicySet::load(&c, &a).unwrap();
    assert_eq!(
        p.decide(
            &a,
            &intent("triage"),
            &facts("GET", "api.zendesk.com", "/api/v2/tickets", None)
        )
        .code,
        "policy_error"
    );
}

#[test]
fn input_follows_the_contract_and_holds_no_secrets() {
    let p = PolicySet::load(&config(CATALOG, None), &agent(Some("support"))).unwrap();
    let mut h = http::HeaderMap::new();
    h.insert("authorization", "Bearer sk-live".parse().unwrap());
    h.insert("cookie", "session=1".parse().unwrap());
    h.insert("content-type", "application/json".parse().unwrap());
    let a = agent(Some("support"));
    let (_, input) = p.explain(
        &a,
        &intent("triage"),
        &facts("GET", "api.zendesk.com", "/api/v2/tickets", Some(&h)),
    );
    let text = input.to_string();
    assert!(
        !text.contains("sk-live") && !text.contains("session=1"),
        "{text}"
    );
    assert_eq!(
        input["request"]["headers"]["content-type"],
        "application/json"
    );
    assert_eq!(
        input["request"]["path_segments"],
        serde_json::json!(["api", "v2", "tickets"])
    );
    assert_eq!(
        input["request"]["query"]["page"],
        serde_json::json!(["2", "3"])
    );
    assert_eq!(input["agent"]["namespace"], "support");
    assert_eq!(input["intent"]["source"], "header");
    assert_eq!(input["scope"]["matched"], true);
    assert_eq!(input["scope"]["rule"], 1);
    assert!(input["time"]["unix"].as_u64().unwrap() > 1_700_000_000);
}

#[test]
fn builtin_rego_tests_pass() {
    let a = agent(None);
    let mut p = PolicySet::load_with(&config(CATALOG, None), &a, true).unwrap();
    let results = p.run_tests();
    assert!(results.len() >= 4, "{results:?}");
    assert!(results.iter().all(|r| r.passed), "{results:?}");
}

#[test]
fn decisions_are_cached_only_when_safe() {
    let a = agent(None);
    let p = PolicySet::load(&config(CATALOG, None), &a).unwrap();
    assert_eq!(p.uncacheable(), None);
    let f = facts("GET", "api.zendesk.com", "/api/v2/tickets/77", None);
    let first = p.decide(&a, &intent("triage"), &f);
    let second = p.decide(&a, &intent("triage"), &f);
    assert!(!first.cached && second.cached);
    assert_eq!(
        (first.allow, &first.reasons, &first.scope),
        (second.allow, &second.reasons, &second.scope)
    );
    // A different path is a different key.
    assert!(
        !p.decide(
            &a,
            &intent("triage"),
            &facts("GET", "api.zendesk.com", "/api/v2/tickets/78", None)
        )
        .cached
    );
    // A module that reads headers makes caching unsafe.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("h.rego"),
        "package intentgate\nimport rego.v1\ndeny contains \"no json\" if input.request.headers[\"content-type\"] == \"application/json\"\n",
    )
    .unwrap();
    let p = PolicySet::load(&config(CATALOG, Some(dir.path())), &a).unwrap();
    assert!(p.uncacheable().unwrap().contains("input.request.headers"));
    p.decide(&a, &intent("triage"), &f);
    assert!(!p.decide(&a, &intent("triage"), &f).cached);
}
