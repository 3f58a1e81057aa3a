//! Claiming an intent: an agent outside an intent's `claimable_by` is refused (403
//! `intent_not_claimable`) in every mode, however it declares the intent (header, session, default)
//! and however the call arrives (forward, spliced CONNECT); the session API refuses such an intent
//! and one not in the catalog up front.

use std::time::Duration;

use crate::common::*;

/// Monitor-mode intents under a top-level `mode` (`TOP`): `watch` only billing-bot may claim,
/// `ns-only` only the billing namespace, `mine` is support-bot's own.
fn config(up: &Upstream, top: &str, mine_for: &str, extra: &str) -> String {
    format!(
        "agent: {{id: support-bot, namespace: support, owner: team}}\nmode: {top}\n{extra}\
         intents:\n\
         \x20 watch:\n    mode: monitor\n    claimable_by: {{agents: [billing-bot]}}\n\
         \x20   allow: [{{hosts: [localhost], ports: [{p}]}}]\n\
         \x20 ns-only:\n    mode: monitor\n    claimable_by: {{namespaces: [billing]}}\n\
         \x20   allow: [{{hosts: [localhost], ports: [{p}]}}]\n\
         \x20 mine:\n    mode: monitor\n    claimable_by: {{agents: [{mine_for}]}}\n\
         \x20   allow: [{{hosts: [localhost], ports: [{p}], methods: [GET]}}]\n",
        p = up.addr.port()
    )
}

fn with_intent(proxy: &ProxyProc, intent: &str, method: &str, url: &str) -> CurlOut {
    let header = format!("intentgate-intent: {intent}");
    curl(&["-x", &proxy.url(), "-H", &header, "-X", method, url])
}

fn assert_not_claimable(out: &CurlOut, intent: &str) {
    assert_eq!(out.status, 403, "{intent}: {out:?}");
    let j = out.json();
    assert_eq!(error_code(&j), "intent_not_claimable", "{j}");
    assert!(
        j["reason"].as_str().unwrap().contains(&format!(
            "agent 'support-bot' may not claim intent '{intent}'"
        )),
        "{j}"
    );
    assert!(j["hint"].as_str().unwrap().contains("may not claim"), "{j}");
    assert!(j["decision_id"].is_string(), "{j}");
}

#[test]
fn a_monitor_intent_the_agent_may_not_claim_is_refused_in_every_mode() {
    let up = Upstream::start();
    let url = format!("http://localhost:{}/echo", up.addr.port());
    // Top-level enforce, top-level monitor, and the --mode monitor flag: none softens a claim.
    let runs: [(&str, &[&str]); 3] = [
        ("enforce", &[]),
        ("monitor", &[]),
        ("enforce", &["--mode", "monitor"]),
    ];
    for (top, args) in runs {
        let proxy = ProxyProc::start_with(&config(&up, top, "support-bot", ""), args, &[]);
        let before = up.requests();
        for intent in ["watch", "ns-only"] {
            assert_not_claimable(&with_intent(&proxy, intent, "GET", &url), intent);
        }
        assert_eq!(
            up.requests(),
            before,
            "{top} {args:?}: a refused claim was forwarded"
        );
        // Monitor still softens the scope of an intent the agent may hold: POST is out of scope.
        let out = with_intent(&proxy, "mine", "POST", &url);
        assert_eq!(out.status, 200, "{out:?}");
        let recs = proxy.audit_n(3);
        for r in &recs[..2] {
            assert_eq!(
                (&r["decision"], &r["mode"]),
                (&"deny".into(), &"enforce".into()),
                "{r}"
            );
            assert_eq!(r["status"], 403, "{r}");
            assert!(
                r["reasons"][0].as_str().unwrap().contains("may not claim"),
                "{r}"
            );
        }
        assert_eq!(recs[2]["decision"], "would_deny", "{}", recs[2]);
    }
}

#[test]
fn the_session_api_refuses_unclaimable_and_unknown_intents_and_requests_recheck_the_claim() {
    let up = Upstream::start();
    let url = format!("http://localhost:{}/echo", up.addr.port());
    let proxy = ProxyProc::start(&config(&up, "enforce", "support-bot", ""));
    let put = |body: &str| curl(&["-X", "PUT", "-d", body, &proxy.admin_url("/v1/intent")]);
    let out = put(r#"{"name": "watch", "task": "INC-1"}"#);
    assert_not_claimable(&out, "watch");
    let out = put(r#"{"name": "ns-only"}"#);
    assert_not_claimable(&out, "ns-only");
    assert!(
        out.json()["reason"]
            .as_str()
            .unwrap()
            .contains("namespaces [\"billing\"]")
    );
    let out = put(r#"{"name": "no-such-intent"}"#);
    assert_eq!(out.status, 422, "{out:?}");
    let j = out.json();
    assert_eq!(error_code(&j), "unknown_intent", "{j}");
    assert!(
        j["reason"].as_str().unwrap().contains("not in the catalog"),
        "{j}"
    );
    assert!(
        j["hint"].as_str().unwrap().contains("GET /v1/policy"),
        "{j}"
    );
    assert!(j["decision_id"].is_string(), "{j}");
    // Nothing was set: a request without a header has no intent.
    assert!(curl(&[&proxy.admin_url("/v1/intent")]).json()["session"].is_null());
    assert_eq!(curl(&["-x", &proxy.url(), &url]).status, 403);
    assert_eq!(up.requests(), 0);

    // A claimable one is set; when a reload takes the claim away, the session's requests are
    // refused (not forwarded as would_deny under the intent's monitor mode).
    assert_eq!(put(r#"{"name": "mine"}"#).status, 200);
    assert_eq!(curl(&["-x", &proxy.url(), &url]).status, 200);
    let config_file = proxy.path("config.yaml");
    let text = std::fs::read_to_string(&config_file).unwrap();
    std::fs::write(
        &config_file,
        text.replace("agents: [support-bot]", "agents: [someone-else]"),
    )
    .unwrap();
    let r = curl(&["-X", "POST", &proxy.admin_url("/v1/reload")]);
    assert_eq!(r.status, 200, "{r:?}");
    let out = curl(&["-x", &proxy.url(), &url]);
    assert_not_claimable(&out, "mine");
    assert_eq!(up.requests(), 1);
    // The writer thread appends the refusal's record after the answer: wait for it (by the
    // decision id the answer carries).
    let id = out.json()["decision_id"].clone();
    let rec = eventually("the refusal's record", Duration::from_secs(10), || {
        proxy.audit().into_iter().find(|r| r["decision_id"] == id)
    });
    assert_eq!(rec["intent"]["source"], "session", "{rec}");
}

#[test]
fn a_spliced_connect_under_the_default_intent_is_refused_when_the_agent_may_not_claim_it() {
    let up = Upstream::start();
    let extra = "intent: watch\ntls: {intercept: none}\n";
    let proxy = ProxyProc::start(&config(&up, "enforce", "support-bot", extra));
    // curl -p: CONNECT (no intent header on it, so the default intent decides), then plain HTTP
    // inside the spliced tunnel.
    let url = format!("http://localhost:{}/echo", up.addr.port());
    let out = curl(&["-p", "-x", &proxy.url(), &url]);
    assert!(out.stderr.contains("403"), "{out:?}");
    assert_eq!(up.connections(), 0, "the tunnel was opened: {out:?}");
    let rec = proxy.audit_n(1).remove(0);
    assert_eq!(
        (&rec["method"], &rec["decision"], &rec["mode"]),
        (&"CONNECT".into(), &"deny".into(), &"enforce".into()),
        "{rec}"
    );
    assert_eq!(rec["intent"]["source"], "default", "{rec}");
    assert!(
        rec["reasons"][0]
            .as_str()
            .unwrap()
            .contains("may not claim intent 'watch'"),
        "{rec}"
    );
    // The same CONNECT with the answer read raw: the JSON refusal.
    let target = format!("localhost:{}", up.addr.port());
    let answer = raw(
        proxy.addr,
        format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes(),
    );
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(has_error_code(&answer, "intent_not_claimable"), "{answer}");
}
