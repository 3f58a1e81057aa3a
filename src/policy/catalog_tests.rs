//! Tests of the native catalog matcher.

use super::*;
use std::collections::BTreeMap;

use super::super::pattern::{path_pattern, text_matches};
use super::why::push_num;
use crate::config::{ClaimableBy, IntentSpec, ScopeRule};

fn agent(id: &str, ns: Option<&str>) -> Agent {
    Agent {
        id: id.into(),
        namespace: ns.map(str::to_string),
        service_account: None,
        owner: Some("o".into()),
        owner_source: None,
        spiffe_id: None,
        labels: Default::default(),
        expires: None,
    }
}

fn rule(
    hosts: &[&str],
    ports: Option<&[u16]>,
    methods: Option<&[&str]>,
    paths: Option<&[&str]>,
) -> ScopeRule {
    ScopeRule {
        hosts: hosts.iter().map(|s| s.to_string()).collect(),
        ports: ports.map(<[u16]>::to_vec),
        methods: methods.map(|m| m.iter().map(|s| s.to_string()).collect()),
        paths: paths.map(|p| p.iter().map(|s| s.to_string()).collect()),
        body_methods: None,
        ..ScopeRule::default()
    }
}

fn catalog(rules: Vec<ScopeRule>, claim: ClaimableBy) -> Result<Catalog, CatalogError> {
    let mut m = BTreeMap::new();
    m.insert(
        "triage".to_string(),
        IntentSpec {
            description: String::new(),
            claimable_by: claim,
            mode: Some(Mode::Monitor),
            allow: rules,
            ..IntentSpec::default()
        },
    );
    Catalog::compile(&[("test.yaml".into(), m)], Mode::Enforce)
}

fn check(c: &Catalog, method: &str, host: &str, port: u16, path: &str) -> ScopeVerdict {
    let q = ScopeQuery {
        method,
        host,
        port,
        path,
        destination_only: method == "CONNECT",
        mcp: None,
        llm: None,
    };
    c.verdict(&agent("bot", Some("support")), Some("triage"), &q)
}

#[test]
fn hosts_exact_and_wildcard() {
    let c = catalog(
        vec![rule(
            &["API.Zendesk.com.", "*.example.org"],
            None,
            None,
            None,
        )],
        ClaimableBy::default(),
    )
    .unwrap();
    assert_eq!(
        check(&c, "GET", "api.zendesk.com", 443, "/").code,
        ScopeCode::Matched
    );
    assert_eq!(check(&c, "GET", "a.example.org", 443, "/").rule, Some(1));
    assert_eq!(
        check(&c, "GET", "a.b.example.org", 80, "/").code,
        ScopeCode::Matched
    );
    let v = check(&c, "GET", "example.org", 443, "/x");
    assert_eq!(v.code, ScopeCode::HostNotInScope);
    assert!(
        v.why
            .contains("intent 'triage' does not permit GET example.org/x"),
        "{}",
        v.why
    );
    assert_eq!(
        check(&c, "GET", "zendesk.com", 443, "/").code,
        ScopeCode::HostNotInScope
    );
    assert_eq!(
        check(&c, "GET", "api.zendesk.com", 443, "/").mode,
        Mode::Monitor
    );
}

#[test]
fn other_wildcards_are_refused_naming_intent_and_rule() {
    for bad in [
        "api.*.com",
        "*",
        "ap*.x.com",
        "*.",
        "x.com:443",
        "x.com/a",
        "[x.com]",
    ] {
        let err = catalog(
            vec![
                rule(&["ok.com"], None, None, None),
                rule(&[bad], None, None, None),
            ],
            ClaimableBy::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("test.yaml: intent 'triage' rule 2:"),
            "{bad}: {err}"
        );
    }
    let err = catalog(
        vec![rule(&["a.com"], None, None, Some(&["/api/v*"]))],
        ClaimableBy::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("whole segment"), "{err}");
    assert!(
        catalog(
            vec![rule(&["a.com"], None, Some(&["GE T"]), None)],
            ClaimableBy::default()
        )
        .is_err()
    );
}

#[test]
fn ports_default_to_80_and_443() {
    let c = catalog(
        vec![
            rule(&["a.com"], None, None, None),
            rule(&["b.com"], Some(&[8443]), None, None),
        ],
        ClaimableBy::default(),
    )
    .unwrap();
    assert!(check(&c, "GET", "a.com", 80, "/").matched);
    assert!(check(&c, "GET", "a.com", 443, "/").matched);
    let v = check(&c, "GET", "a.com", 8080, "/");
    assert_eq!(v.code, ScopeCode::PortNotInScope);
    assert!(v.why.contains("a.com:8080/"), "{}", v.why);
    assert!(check(&c, "GET", "b.com", 8443, "/").matched);
    assert_eq!(
        check(&c, "GET", "b.com", 443, "/").code,
        ScopeCode::PortNotInScope
    );
}

#[test]
fn methods_and_paths() {
    let c = catalog(
        vec![rule(
            &["api.x.com"],
            Some(&[443]),
            Some(&["get", "PUT"]),
            Some(&["/api/v2/tickets/**", "/users/*/profile"]),
        )],
        ClaimableBy::default(),
    )
    .unwrap();
    assert!(check(&c, "GET", "api.x.com", 443, "/api/v2/tickets").matched);
    assert!(check(&c, "PUT", "api.x.com", 443, "/api/v2/tickets/1/comments").matched);
    assert!(check(&c, "GET", "api.x.com", 443, "/users/7/profile").matched);
    assert_eq!(
        check(&c, "GET", "api.x.com", 443, "/users/7/8/profile").code,
        ScopeCode::PathNotInScope
    );
    assert_eq!(
        check(&c, "GET", "api.x.com", 443, "/users/profile").code,
        ScopeCode::PathNotInScope
    );
    assert_eq!(
        check(&c, "GET", "api.x.com", 443, "/api/v2/ticketsx").code,
        ScopeCode::PathNotInScope
    );
    let v = check(&c, "DELETE", "api.x.com", 443, "/api/v2/tickets/1");
    assert_eq!(v.code, ScopeCode::MethodNotInScope);
    assert!(v.why.contains("GET, PUT"), "{}", v.why);
    // A tunnel that is not intercepted is matched on its destination only.
    let v = check(&c, "CONNECT", "api.x.com", 443, "");
    assert!(
        v.matched && v.why.contains("CONNECT api.x.com:443"),
        "{}",
        v.why
    );
}

#[test]
fn double_star_in_the_middle() {
    let m = |s: &str| text_matches("/a/**/b/*", &super::super::input::segments(s));
    assert!(m("/a/b/c"));
    assert!(m("/a/x/y/b/c"));
    assert!(m("/a/b/b/c"));
    assert!(!m("/a/b"));
    assert!(!m("/a/x/b/c/d"));
    assert!(text_matches("/**", &[]));
    assert!(text_matches("/", &[]));
}

#[test]
fn a_pattern_longer_than_the_stack_buffer_matches_the_same() {
    let a = |n: usize| "/a".repeat(n);
    let m = |pat: &str, path: &str| text_matches(pat, &super::super::input::segments(path));
    let long = format!("{}/*/z", a(20));
    assert!(path_pattern(&long).is_ok());
    assert!(m(&long, &format!("{}/q/z", a(20))));
    assert!(!m(&long, &format!("{}/q/y", a(20))));
    assert!(!m(&long, &format!("{}/q/z", a(19))));
    assert!(m(&format!("{}/**", a(17)), &a(30)));
}

#[test]
fn claimable_by_each_list_present_must_match() {
    let both = ClaimableBy {
        agents: Some(vec!["bot".into()]),
        namespaces: Some(vec!["support".into()]),
    };
    let c = catalog(vec![rule(&["a.com"], None, None, None)], both).unwrap();
    let q = ScopeQuery {
        method: "GET",
        host: "a.com",
        port: 443,
        path: "/",
        destination_only: false,
        mcp: None,
        llm: None,
    };
    assert!(
        c.verdict(&agent("bot", Some("support")), Some("triage"), &q)
            .matched
    );
    assert_eq!(
        c.verdict(&agent("other", Some("support")), Some("triage"), &q)
            .code,
        ScopeCode::NotClaimable
    );
    assert_eq!(
        c.verdict(&agent("bot", Some("dev")), Some("triage"), &q)
            .code,
        ScopeCode::NotClaimable
    );
    assert_eq!(
        c.verdict(&agent("bot", None), Some("triage"), &q).code,
        ScopeCode::NotClaimable
    );
    let ns_only = ClaimableBy {
        agents: None,
        namespaces: Some(vec!["support".into()]),
    };
    let c = catalog(vec![rule(&["a.com"], None, None, None)], ns_only).unwrap();
    assert!(
        c.verdict(&agent("anyone", Some("support")), Some("triage"), &q)
            .matched
    );
    assert_eq!(
        c.verdict(&agent("bot", None), Some("nope"), &q).code,
        ScopeCode::UnknownIntent
    );
    assert_eq!(
        c.verdict(&agent("bot", None), None, &q).code,
        ScopeCode::NoIntent
    );
}

#[test]
fn an_intent_defined_twice_is_refused() {
    let mut m = BTreeMap::new();
    m.insert("x".to_string(), IntentSpec::default());
    let err = Catalog::compile(
        &[("a.yaml".into(), m.clone()), ("b.yaml".into(), m)],
        Mode::Enforce,
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("already defined in a.yaml"),
        "{err}"
    );
}

#[test]
fn ip_literals_name_raw_tcp_destinations() {
    let c = catalog(
        vec![rule(
            &["10.77.0.2", "[FD00::0:1]", "2001:db8::7"],
            Some(&[5432]),
            None,
            None,
        )],
        ClaimableBy::default(),
    )
    .unwrap();
    assert!(check(&c, "CONNECT", "10.77.0.2", 5432, "").matched);
    assert!(check(&c, "CONNECT", "fd00::1", 5432, "").matched);
    assert!(check(&c, "CONNECT", "2001:db8::7", 5432, "").matched);
    assert_eq!(
        check(&c, "CONNECT", "10.77.0.2", 5433, "").code,
        ScopeCode::PortNotInScope
    );
    // Exact only: another address, or a name that resolves there, is not this rule.
    assert_eq!(
        check(&c, "CONNECT", "10.77.0.3", 5432, "").code,
        ScopeCode::HostNotInScope
    );
    let err = catalog(
        vec![rule(&["*.10.0.0.1"], None, None, None)],
        ClaimableBy::default(),
    );
    assert!(err.is_err());
}

#[test]
fn the_request_is_written_with_its_port_when_not_80_or_443() {
    for (port, destination_only, want) in [
        (80, false, "x GET api.example.com/a/b?c"),
        (443, false, "x GET api.example.com/a/b?c"),
        (8080, false, "x GET api.example.com:8080/a/b?c"),
        (443, true, "x GET api.example.com:443"),
    ] {
        let q = ScopeQuery {
            method: "GET",
            host: "api.example.com",
            port,
            path: "/a/b?c",
            destination_only,
            mcp: None,
            llm: None,
        };
        assert_eq!(req_text("x ", &q, 0), want);
    }
    let mut s = String::new();
    push_num(&mut s, 1207);
    assert_eq!(s, "1207");
}

#[test]
fn body_methods_name_bodyless_methods_of_the_rule() {
    let with = |methods: Option<&[&str]>, body: &[&str]| {
        let mut r = rule(&["api.example.com"], None, methods, None);
        r.body_methods = Some(body.iter().map(|s| s.to_string()).collect());
        catalog(vec![r], ClaimableBy::default())
    };
    let c = with(Some(&["GET", "DELETE"]), &["delete"]).unwrap();
    let agent = agent("a", None);
    let q = |method| ScopeQuery {
        method,
        host: "api.example.com",
        port: 443,
        path: "/x",
        destination_only: false,
        mcp: None,
        llm: None,
    };
    let v = c.verdict(&agent, Some("triage"), &q("DELETE"));
    assert!(c.allows_body(&v, &http::Method::DELETE));
    let v = c.verdict(&agent, Some("triage"), &q("GET"));
    assert!(v.matched && !c.allows_body(&v, &http::Method::GET));
    let v = c.verdict(&agent, Some("other"), &q("DELETE"));
    assert!(!c.allows_body(&v, &http::Method::DELETE));
    // Only body-less methods, and only those the rule allows.
    assert!(
        with(None, &["POST"])
            .unwrap_err()
            .msg
            .contains("not one of GET")
    );
    assert!(
        with(Some(&["GET"]), &["DELETE"])
            .unwrap_err()
            .msg
            .contains("not among")
    );
}

#[test]
fn a_refusal_names_the_rule_that_came_closest() {
    let c = catalog(
        vec![
            rule(&["api.x.com"], Some(&[8443]), None, None),
            rule(&["api.x.com"], None, Some(&["POST"]), Some(&["/x"])),
            rule(&["api.x.com"], None, Some(&["GET"]), Some(&["/tickets/*"])),
        ],
        ClaimableBy::default(),
    )
    .unwrap();
    let v = check(&c, "DELETE", "api.x.com", 443, "/tickets/1");
    assert_eq!(v.code, ScopeCode::MethodNotInScope);
    assert!(v.why.ends_with("(rule 2 allows: POST)"), "{}", v.why);
    let v = check(&c, "GET", "api.x.com", 443, "/users");
    assert_eq!(v.code, ScopeCode::PathNotInScope);
    assert!(v.why.ends_with("(rule 3 allows: /tickets/*)"), "{}", v.why);
    let v = check(&c, "GET", "api.x.com", 9000, "/tickets/1");
    assert_eq!(v.code, ScopeCode::PortNotInScope);
    assert!(v.why.ends_with("(rule 1 allows: [8443])"), "{}", v.why);
}

#[test]
fn ipv6_hosts_are_bracketed_in_reasons() {
    let c = catalog(
        vec![rule(&["::1"], Some(&[18080]), Some(&["GET"]), None)],
        ClaimableBy::default(),
    )
    .unwrap();
    let v = check(&c, "GET", "::1", 18080, "/x");
    assert_eq!(v.why, "GET [::1]:18080/x matches rule 1 of intent 'triage'");
    let v = check(&c, "PUT", "::1", 18080, "/x");
    assert!(v.why.contains("permit PUT [::1]:18080/x: the"), "{}", v.why);
    let v = check(&c, "CONNECT", "::2", 443, "");
    assert!(v.why.contains("permit CONNECT [::2]:443: the"), "{}", v.why);
}
