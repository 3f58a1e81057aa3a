//! Tests of loading and deciding: precedence, namespaces, failure handling, secrets.

use std::path::Path;
use std::time::{Duration, SystemTime};

use super::*;
use crate::config::{IntentSpec, ScopeRule};
use crate::intent::IntentSource;
use crate::vocab::{ConnectionMode, Protocol, Scheme};

pub(super) fn agent(ns: Option<&str>) -> Agent {
    Agent {
        id: "support-bot".into(),
        namespace: ns.map(str::to_string),
        service_account: Some("support-bot".into()),
        owner: Some("team-helpdesk".into()),
        owner_source: None,
        spiffe_id: None,
        labels: [("tier".to_string(), "prod".to_string())].into(),
        expires: None,
    }
}

pub(super) fn intent(name: &str) -> Intent {
    Intent {
        name: Some(name.into()),
        task: Some("INC-1".into()),
        source: IntentSource::Header,
        verified: false,
        claims: Default::default(),
        token: None,
        known: None,
    }
}

pub(super) fn config(dirs: &[&Path]) -> Config {
    let mut c = Config::default();
    c.intents.insert(
        "triage".into(),
        IntentSpec {
            allow: vec![ScopeRule {
                hosts: vec!["api.zendesk.com".into(), "api.stripe.com".into()],
                methods: Some(vec!["GET".into(), "DELETE".into()]),
                ..ScopeRule::default()
            }],
            ..IntentSpec::default()
        },
    );
    c.intents.insert(
        "watch".into(),
        IntentSpec {
            mode: Some(Mode::Monitor),
            allow: vec![ScopeRule {
                hosts: vec!["*.example.com".into()],
                ..ScopeRule::default()
            }],
            ..IntentSpec::default()
        },
    );
    c.policy.paths = dirs.iter().map(|d| d.to_path_buf()).collect();
    c
}

pub(super) fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

pub(super) struct Req {
    method: &'static str,
    host: &'static str,
    path: &'static str,
    pub(super) headers: http::HeaderMap,
}

pub(super) fn req(method: &'static str, host: &'static str, path: &'static str) -> Req {
    Req {
        method,
        host,
        path,
        headers: http::HeaderMap::new(),
    }
}

impl Req {
    pub(super) fn facts(&self) -> RequestFacts<'_> {
        RequestFacts {
            id: "r1",
            protocol: Protocol::Http11,
            method: self.method,
            scheme: Scheme::Https,
            host: self.host,
            port: 443,
            path: Some(self.path),
            query: Some("page=2"),
            headers: Some(&self.headers),
            connection: ConnectionFacts {
                mode: ConnectionMode::Intercepted,
                sni: Some(self.host),
                intercepted: true,
            },
            destination: None,
            body: None,
            mcp: None,
            llm: None,
        }
    }
}

pub(super) fn decide(p: &PolicySet, a: &Agent, i: &Intent, r: &Req) -> Decision {
    p.decide(a, i, &r.facts())
}

#[test]
fn policy_set_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<PolicySet>();
}

#[test]
fn catalog_allows_and_denies_with_reasons_and_hints() {
    let a = agent(None);
    let p = PolicySet::load(&config(&[]), &a).unwrap();
    let d = decide(
        &p,
        &a,
        &intent("triage"),
        &req("GET", "api.zendesk.com", "/api/v2/tickets"),
    );
    assert!(d.allow, "{d:?}");
    assert_eq!(
        (d.code_text(), d.mode, d.scope.rule),
        ("allowed", Mode::Enforce, Some(1))
    );
    let d = decide(
        &p,
        &a,
        &intent("triage"),
        &req("POST", "api.zendesk.com", "/x"),
    );
    assert!(!d.allow && d.blocks());
    assert_eq!(d.code_text(), "intent_violation");
    assert_eq!(d.reasons, vec![d.scope.why.clone()]);
    assert!(
        d.reasons[0].starts_with("intent 'triage' does not permit POST api.zendesk.com/x"),
        "{:?}",
        d.reasons
    );
    assert_eq!(
        d.hint,
        "declare an intent that permits this call, or ask the platform team to extend intent 'triage'"
    );
    let d = decide(&p, &a, &Intent::none(), &req("GET", "api.zendesk.com", "/"));
    assert_eq!((d.allow, d.scope.code.as_str()), (false, "no_intent"));
    assert!(
        d.hint.contains("intentgate-intent: NAME") && d.hint.contains("/v1/intent"),
        "{}",
        d.hint
    );
    let d = decide(&p, &a, &intent("nope"), &req("GET", "api.zendesk.com", "/"));
    assert_eq!(d.scope.code, ScopeCode::UnknownIntent);
    assert!(!p.revision().is_empty());
    assert_eq!(p.modules(), ["<builtin>/intentgate.rego".to_string()]);
}

#[test]
fn mode_precedence_flag_then_intent_then_top_level() {
    let a = agent(None);
    let mut c = config(&[]);
    let p = PolicySet::load(&c, &a).unwrap();
    let d = decide(&p, &a, &intent("watch"), &req("GET", "evil.com", "/"));
    assert_eq!((d.allow, d.mode, d.blocks()), (false, Mode::Monitor, false));
    let d = decide(&p, &a, &intent("triage"), &req("GET", "evil.com", "/"));
    assert_eq!(d.mode, Mode::Enforce);
    c.mode = Mode::Monitor;
    let p = PolicySet::load(&c, &a).unwrap();
    assert_eq!(
        decide(&p, &a, &intent("triage"), &req("GET", "evil.com", "/")).mode,
        Mode::Monitor
    );
    c.mode_override = Some(Mode::Enforce);
    let p = PolicySet::load(&c, &a).unwrap();
    let d = decide(&p, &a, &intent("watch"), &req("GET", "evil.com", "/"));
    assert_eq!((d.mode, d.blocks()), (Mode::Enforce, true));
}

pub(super) const GLOBAL_DENY: &str = "package intentgate\n\nimport rego.v1\n\n\
deny contains {\"code\": \"no_refunds\", \"message\": \"refunds need a human\"} if input.request.host == \"api.stripe.com\"\n";

#[test]
fn runtime_errors_fail_closed_unless_on_error_allow() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "boom.rego",
        "package intentgate\n\nimport rego.v1\n\ndeny contains x if {\n\tinput.request.path == \"/boom\"\n\tx := to_number(\"not a number\")\n}\n",
    );
    let a = agent(None);
    let mut c = config(&[dir.path()]);
    let p = PolicySet::load(&c, &a).unwrap();
    assert!(
        decide(
            &p,
            &a,
            &intent("triage"),
            &req("GET", "api.zendesk.com", "/ok")
        )
        .allow
    );
    let d = decide(
        &p,
        &a,
        &intent("triage"),
        &req("GET", "api.zendesk.com", "/boom"),
    );
    assert_eq!(
        (d.allow, d.code_text(), d.blocks()),
        (false, "policy_error", true),
        "{d:?}"
    );
    assert!(
        d.reasons[0].starts_with("policy evaluation failed"),
        "{:?}",
        d.reasons
    );
    c.policy.on_error = OnError::Allow;
    let p = PolicySet::load(&c, &a).unwrap();
    let d = decide(
        &p,
        &a,
        &intent("triage"),
        &req("GET", "api.zendesk.com", "/boom"),
    );
    assert_eq!((d.allow, d.code_text()), (true, "policy_error"));
}

#[test]
fn an_undefined_decision_is_a_policy_error() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "custom.rego",
        "package custom\n\nimport rego.v1\n\ndecision := {\"allow\": true} if input.request.method == \"POST\"\n",
    );
    let a = agent(None);
    let mut c = config(&[dir.path()]);
    c.policy.builtin = false;
    c.policy.query = "data.custom.decision".into();
    let p = PolicySet::load(&c, &a).unwrap();
    assert!(decide(&p, &a, &intent("triage"), &req("POST", "x.com", "/")).allow);
    let d = decide(&p, &a, &intent("triage"), &req("GET", "x.com", "/"));
    assert_eq!((d.allow, d.code_text()), (false, "policy_error"));
    assert!(d.reasons[0].contains("undefined"), "{:?}", d.reasons);
}

#[test]
fn lifecycle_refuses_ownerless_and_expired_agents_in_any_mode() {
    let mut c = config(&[]);
    c.mode_override = Some(Mode::Monitor);
    let mut a = agent(None);
    a.owner = None;
    let p = PolicySet::load(&c, &a).unwrap();
    let d = decide(
        &p,
        &a,
        &intent("triage"),
        &req("GET", "api.zendesk.com", "/"),
    );
    assert_eq!(
        (d.allow, d.code_text(), d.blocks()),
        (false, "agent_refused", true)
    );
    assert!(d.reasons[0].contains("no owner"));
    let mut a = agent(None);
    a.expires = Some(SystemTime::now() - Duration::from_secs(5));
    let d = decide(
        &p,
        &a,
        &intent("triage"),
        &req("GET", "api.zendesk.com", "/"),
    );
    assert!(d.reasons[0].contains("expired"), "{:?}", d.reasons);
    c.agent.enforce_lifecycle = false;
    let p = PolicySet::load(&c, &a).unwrap();
    assert!(
        decide(
            &p,
            &a,
            &intent("triage"),
            &req("GET", "api.zendesk.com", "/")
        )
        .allow
    );
}

#[test]
fn secrets_never_reach_the_input() {
    let a = agent(None);
    let mut c = config(&[]);
    c.headers.strip = vec!["x-api-key".into()];
    let p = PolicySet::load(&c, &a).unwrap();
    let mut r = req("GET", "API.Zendesk.com.", "/api/v2/tickets");
    for (k, v) in [
        ("authorization", "Bearer s3cret"),
        ("cookie", "sid=s3cret"),
        ("proxy-authorization", "Basic s3cret"),
        ("x-api-key", "s3cret"),
        ("content-type", "application/json"),
    ] {
        r.headers.insert(k, v.parse().unwrap());
    }
    let (d, input) = p.explain(&a, &intent("triage"), &r.facts());
    assert!(d.allow, "{d:?}");
    let text = input.to_string();
    assert!(!text.contains("s3cret"), "{text}");
    let h = &input["request"]["headers"];
    assert_eq!(h, &serde_json::json!({"content-type": "application/json"}));
    assert_eq!(input["request"]["host"], "api.zendesk.com");
    assert_eq!(
        input["request"]["path_segments"],
        serde_json::json!(["api", "v2", "tickets"])
    );
    assert_eq!(
        input["request"]["query"],
        serde_json::json!({"page": ["2"]})
    );
    assert_eq!(input["intent"]["source"], "header");
    assert_eq!(input["agent"]["labels"]["tier"], "prod");
    assert_eq!(input["scope"]["matched"], true);
    assert_eq!(input["connection"]["mode"], "intercepted");
    assert_eq!(input["mcp"], serde_json::Value::Null);
    assert!(input["time"]["unix"].as_u64().unwrap() > 1_700_000_000);
}

#[test]
fn load_errors_name_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "bad.rego",
        "package intentgate\n\nimport rego.v1\n\ndeny contains x if {\n  x := \n}\n",
    );
    let err = PolicySet::load(&config(&[dir.path()]), &agent(None))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("bad.rego:6: expecting `}` while parsing set\n"),
        "{err}"
    );
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "unsafe.rego",
        "package intentgate\n\nimport rego.v1\n\ndeny contains x if {\n  y == 1\n}\n",
    );
    let err = PolicySet::load(&config(&[dir.path()]), &agent(None))
        .unwrap_err()
        .to_string();
    eprintln!("{err}");
    assert!(err.contains("unsafe.rego:"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "data.yaml",
        "intents:\n  x:\n    allow:\n      - hosts: [a.com]\n        prots: [1]\n",
    );
    let err = PolicySet::load(&config(&[dir.path()]), &agent(None))
        .unwrap_err()
        .to_string();
    assert!(err.contains("data.yaml:") && err.contains("prots"), "{err}");
    let missing = Path::new("/nonexistent/intentgate-policy");
    let err = PolicySet::load(&config(&[missing]), &agent(None))
        .unwrap_err()
        .to_string();
    assert!(err.contains("/nonexistent/intentgate-policy"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "c.yaml",
        "intents:\n  x:\n    allow:\n      - hosts: [\"a.*.com\"]\n",
    );
    let err = PolicySet::load(&config(&[dir.path()]), &agent(None))
        .unwrap_err()
        .to_string();
    assert!(err.contains("c.yaml: intent 'x' rule 1:"), "{err}");
}
