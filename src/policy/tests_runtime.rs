//! Tests of the decision cache, reloads, evaluation limits, revisions and the Rego test runner.

use super::tests::*;
use super::*;
use std::time::Duration;

#[test]
fn revision_follows_the_sources() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "g.rego", GLOBAL_DENY);
    let a = agent(None);
    let r1 = PolicySet::load(&config(&[dir.path()]), &a)
        .unwrap()
        .revision()
        .to_string();
    let r2 = PolicySet::load(&config(&[dir.path()]), &a)
        .unwrap()
        .revision()
        .to_string();
    assert_eq!(r1, r2);
    write(
        dir.path(),
        "g.rego",
        &GLOBAL_DENY.replace("stripe", "paypal"),
    );
    assert_ne!(
        r1,
        PolicySet::load(&config(&[dir.path()]), &a)
            .unwrap()
            .revision()
    );
}

#[test]
fn rego_tests_in_policy_dirs_report_pass_and_fail() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "g.rego", GLOBAL_DENY);
    write(
        dir.path(),
        "g_test.rego",
        "package intentgate_test\n\nimport rego.v1\n\nimport data.intentgate\n\n\
test_stripe_denied if {\n\tnot intentgate.decision.allow with input as {\"request\": {\"host\": \"api.stripe.com\"}, \"scope\": {\"matched\": true, \"mode\": \"enforce\"}}\n}\n\n\
test_wrong if {\n\tintentgate.decision.allow with input as {\"request\": {\"host\": \"api.stripe.com\"}, \"scope\": {\"matched\": true, \"mode\": \"enforce\"}}\n}\n",
    );
    write(
        dir.path(),
        "namespaces/support/n_test.rego",
        "package intentgate.namespace_test\n\nimport rego.v1\n\ntest_ns_ok if { true }\n",
    );
    let r = rego_test::run(&config(&[dir.path()]), false).unwrap();
    let text = r.render();
    assert_eq!((r.passed(), r.failed()), (2, 1), "{text}");
    assert!(text.contains("FAIL intentgate_test.test_wrong"), "{text}");
    assert!(
        text.contains("PASS intentgate.namespace_test.test_ns_ok")
            && text.contains("[namespace support]"),
        "{text}"
    );
}

#[test]
fn decisions_are_cached_only_when_safe_and_stay_correct() {
    let a = agent(None);
    let c = config(&[]);
    let p = PolicySet::load(&c, &a).unwrap();
    assert_eq!(p.cache_plan(), "keyed on input.{scope.matched}");
    let first = decide(
        &p,
        &a,
        &intent("triage"),
        &req("POST", "api.zendesk.com", "/a"),
    );
    let second = decide(
        &p,
        &a,
        &intent("triage"),
        &req("PUT", "api.zendesk.com", "/b"),
    );
    assert_eq!(p.cache_stats(), CacheStats { hits: 1, misses: 1 });
    assert!(!first.cached && second.cached);
    assert_eq!(p.uncacheable(), None);
    // The reason is rendered from this request's verdict, not the cached one's.
    assert!(
        first.reasons[0].contains("POST api.zendesk.com/a"),
        "{:?}",
        first.reasons
    );
    assert!(
        second.reasons[0].contains("PUT api.zendesk.com/b"),
        "{:?}",
        second.reasons
    );
    assert!(
        decide(
            &p,
            &a,
            &intent("triage"),
            &req("GET", "api.zendesk.com", "/")
        )
        .allow
    );
    // explain never answers from the cache.
    let (d, input) = p.explain(
        &a,
        &intent("triage"),
        &req("GET", "api.zendesk.com", "/").facts(),
    );
    assert!(d.allow && input.is_object());
    assert_eq!(p.cache_stats().hits, 1);

    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "h.rego",
        "package intentgate\n\nimport rego.v1\n\ndeny contains \"no bots\" if input.request.headers[\"user-agent\"] == \"bot\"\n",
    );
    let p = PolicySet::load(&config(&[dir.path()]), &a).unwrap();
    assert_eq!(
        p.cache_plan(),
        "disabled: a policy reads input.request.headers"
    );
    let mut r = req("GET", "api.zendesk.com", "/");
    assert!(decide(&p, &a, &intent("triage"), &r).allow);
    r.headers.insert("user-agent", "bot".parse().unwrap());
    assert!(!decide(&p, &a, &intent("triage"), &r).allow);
    assert_eq!(p.cache_stats(), CacheStats::default());

    let mut c = config(&[]);
    c.policy.decision_cache = false;
    let p = PolicySet::load(&c, &a).unwrap();
    assert_eq!(p.cache_plan(), "disabled: policy.decision_cache is false");
}

#[test]
fn a_reload_starts_with_an_empty_cache() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "g.rego",
        "package intentgate\n\nimport rego.v1\n\ndeny contains \"x\" if input.request.method == \"DELETE\"\n",
    );
    let a = agent(None);
    let p = PolicySet::load(&config(&[dir.path()]), &a).unwrap();
    assert!(
        !decide(
            &p,
            &a,
            &intent("triage"),
            &req("DELETE", "api.zendesk.com", "/")
        )
        .allow
    );
    write(
        dir.path(),
        "g.rego",
        "package intentgate\n\nimport rego.v1\n\ndeny contains \"x\" if input.request.method == \"PATCH\"\n",
    );
    let p = PolicySet::load(&config(&[dir.path()]), &a).unwrap();
    assert!(
        decide(
            &p,
            &a,
            &intent("triage"),
            &req("DELETE", "api.zendesk.com", "/")
        )
        .allow
    );
}

#[test]
fn a_runaway_policy_is_cut_off_and_fails_closed() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "slow.rego",
        "package intentgate\n\nimport rego.v1\n\ndeny contains \"never\" if {\n\tinput.request.path == \"/slow\"\n\tsome i in numbers.range(1, 5000)\n\tsome j in numbers.range(1, 5000)\n\ti * j == -1\n}\n",
    );
    let a = agent(None);
    let p = PolicySet::load(&config(&[dir.path()]), &a).unwrap();
    let start = std::time::Instant::now();
    let d = decide(
        &p,
        &a,
        &intent("triage"),
        &req("GET", "api.zendesk.com", "/slow"),
    );
    assert_eq!((d.allow, d.code_text()), (false, "policy_error"), "{d:?}");
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(
        decide(
            &p,
            &a,
            &intent("triage"),
            &req("GET", "api.zendesk.com", "/fast")
        )
        .allow
    );
}

#[test]
fn a_policy_that_fails_only_on_some_requests_loads_and_fails_closed_on_them() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "conflict.rego",
        "package intentgate\nimport rego.v1\nx := 1 if input.request.method == \"GET\"\nx := 2 if input.request.host != \"\"\ndeny contains \"x\" if x > 5\n",
    );
    let a = agent(None);
    let p = PolicySet::load(&config(&[dir.path()]), &a).unwrap();
    let d = decide(
        &p,
        &a,
        &intent("triage"),
        &req("GET", "api.zendesk.com", "/"),
    );
    assert_eq!((d.allow, d.code_text()), (false, "policy_error"));
    // A query that names no rule is a load error.
    let mut c = config(&[]);
    c.policy.query = "data.intentgate.nope".into();
    let err = PolicySet::load(&c, &a).unwrap_err().to_string();
    assert!(err.contains("data.intentgate.nope"), "{err}");
}

#[test]
fn decisions_get_every_input_field_their_policy_reads_and_match_explain() {
    // Decisions evaluate only the input fields the modules name (cache::reads); `explain`
    // evaluates the whole input. Both must see the same values, and so decide the same.
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "g.rego",
        "package intentgate\n\nimport rego.v1\n\n\
deny contains concat(\" \", [\n\
\tinput.request.method, input.request.path_segments[0], input.request.query.page[0],\n\
\tinput.connection.mode, input.intent.task, input.agent.labels.tier, input.scope.code,\n\
\tsprintf(\"%v\", [input.request.port]),\n\
]) if input.request.host == \"api.zendesk.com\"\n\n\
deny contains \"no-headers-seen\" if not input.request.headers\n",
    );
    let a = agent(None);
    let mut c = config(&[dir.path()]);
    c.policy.decision_cache = false;
    let p = PolicySet::load(&c, &a).unwrap();
    let r = req("GET", "api.zendesk.com", "/api/v2/tickets");
    let d = decide(&p, &a, &intent("triage"), &r);
    assert!(!d.allow);
    assert_eq!(
        d.reasons,
        vec!["GET api 2 intercepted INC-1 prod matched 443".to_string()],
        "{d:?}"
    );
    let (e, input) = p.explain(&a, &intent("triage"), &r.facts());
    assert_eq!(e.reasons, d.reasons);
    assert_eq!(
        input["request"]["id"], "r1",
        "explain shows the whole input"
    );
    assert_eq!(input["time"]["unix"].as_u64().map(|t| t > 0), Some(true));

    // The builtin policy reads only input.scope.matched; its decisions are those of explain.
    let p = PolicySet::load(&config(&[]), &a).unwrap();
    for (method, host) in [("GET", "api.zendesk.com"), ("POST", "api.zendesk.com")] {
        let r = req(method, host, "/x");
        let d = decide(&p, &a, &intent("triage"), &r);
        let (e, _) = p.explain(&a, &intent("triage"), &r.facts());
        assert_eq!((d.allow, &d.reasons), (e.allow, &e.reasons));
    }
}

#[test]
fn a_cached_decision_renders_its_scope_reasons_for_each_request() {
    // The policy reads only the method, so both requests share one cache entry; the catalog's
    // sentence ("scope") still belongs to each request.
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "custom.rego",
        "package custom\n\nimport rego.v1\n\ndecision := {\"allow\": false, \"reasons\": [\"scope\", {\"code\": \"scope\"}, {\"code\": \"x\"}, {\"message\": \"m\"}, \"text\"]} if input.request.method == \"GET\"\n",
    );
    let a = agent(None);
    let mut c = config(&[dir.path()]);
    c.policy.builtin = false;
    c.policy.query = "data.custom.decision".into();
    let p = PolicySet::load(&c, &a).unwrap();
    let first = decide(
        &p,
        &a,
        &intent("triage"),
        &req("GET", "api.zendesk.com", "/a"),
    );
    let second = decide(
        &p,
        &a,
        &intent("triage"),
        &req("GET", "evil.example.net", "/b"),
    );
    assert_eq!((first.cached, second.cached), (false, true));
    for d in [&first, &second] {
        assert_eq!(
            d.reasons,
            [
                d.scope.why.as_str(),
                d.scope.why.as_str(),
                "denied by policy (x)",
                "m",
                "text"
            ],
            "{d:?}"
        );
    }
    assert_ne!(first.scope.why, second.scope.why);
}

#[test]
fn only_policies_that_read_the_destination_make_names_resolve_before_deciding() {
    let a = agent(None);
    for (text, reads) in [
        (
            "deny contains \"x\" if input.destination.class == \"private\"",
            true,
        ),
        ("deny contains \"x\" if input.destination", true),
        ("deny contains \"x\" if count(input) > 99", true),
        (
            "deny contains \"x\" if input.request.host == \"destination\"",
            false,
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "d.rego",
            &format!("package intentgate\n\nimport rego.v1\n\n{text}\n"),
        );
        let p = PolicySet::load(&config(&[dir.path()]), &a).unwrap();
        assert_eq!(p.reads_destination(), reads, "{text}");
    }
    // The builtin policy decides on the catalog alone.
    let p = PolicySet::load(&config(&[]), &a).unwrap();
    assert!(!p.reads_destination());
}

#[test]
fn a_call_s_decision_writes_the_match_sentence_only_where_it_is_used() {
    let a = agent(None);
    let p = PolicySet::load(&config(&[]), &a).unwrap();
    let same = |mut call: Decision, full: &Decision| {
        (call.policy_micros, call.cached) = (full.policy_micros, full.cached);
        call.scope.why.clone_from(&full.scope.why);
        assert_eq!(&call, full);
    };
    // Allowed by the builtin policy: nothing reads the sentence, so a call's decision has none.
    let r = req("GET", "api.zendesk.com", "/x");
    let full = decide(&p, &a, &intent("triage"), &r);
    let call = p.decide_call(&a, &intent("triage"), &r.facts());
    assert!(full.allow && full.scope.why.contains("matches rule 1 of intent 'triage'"));
    assert_eq!(call.scope.why, "");
    same(call, &full);
    // Not matched: the sentence is the reason, written either way.
    let r = req("POST", "api.zendesk.com", "/x");
    let full = decide(&p, &a, &intent("triage"), &r);
    let call = p.decide_call(&a, &intent("triage"), &r.facts());
    assert!(!call.scope.why.is_empty() && call.scope.why == full.scope.why);
    same(call, &full);
    // A match whose decision uses the sentence: as a reason, as a denial without one, and as
    // input a module reads.
    for rule in [
        "decision := {\"allow\": true, \"reasons\": [\"scope\"]} if input.request.method == \"GET\"",
        "decision := {\"allow\": false} if input.request.method == \"GET\"",
        "decision := {\"allow\": contains(input.scope.why, \"x\")} if input.request.method == \"GET\"",
    ] {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "custom.rego",
            &format!("package custom\n\nimport rego.v1\n\n{rule}\n"),
        );
        let mut c = config(&[dir.path()]);
        c.policy.builtin = false;
        c.policy.query = "data.custom.decision".into();
        let p = PolicySet::load(&c, &a).unwrap();
        let r = req("GET", "api.zendesk.com", "/x");
        let full = decide(&p, &a, &intent("triage"), &r);
        let call = p.decide_call(&a, &intent("triage"), &r.facts());
        assert!(full.scope.matched && !full.scope.why.is_empty(), "{rule}");
        assert_eq!(call.scope.why, full.scope.why, "{rule}");
        assert_eq!(
            (call.allow, &call.reasons),
            (full.allow, &full.reasons),
            "{rule}"
        );
    }
}
