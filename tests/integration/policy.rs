//! Identity, intent and the Rego decision on every request, through the real proxy.

use bytes::Bytes;
use http::Request;
use http_body_util::Full;

use crate::common::*;

/// A catalog over two local upstreams (ports substituted for UP and OTHER).
fn catalog(up: &Upstream, other: &Upstream, extra: &str) -> String {
    format!(
        r#"agent: {{id: support-bot, namespace: support, owner: team-helpdesk}}
headers: {{strip: [x-agent-id]}}
intents:
  triage:
    description: Read and label tickets
    claimable_by: {{agents: [support-bot], namespaces: [support]}}
    allow:
      - hosts: [localhost, 127.0.0.1]
        ports: [{up}]
        methods: [GET, PUT]
        paths: ["/echo/tickets/**", "/echo/users/*/profile"]
  billing:
    claimable_by: {{agents: [billing-bot]}}
    allow:
      - hosts: [localhost]
        ports: [{up}]
  watch:
    mode: monitor
    allow:
      - hosts: [localhost]
        ports: [{other}]
        methods: [GET]
{extra}"#,
        up = up.addr.port(),
        other = other.addr.port()
    )
}

fn get(proxy: &ProxyProc, url: &str, headers: &[(&str, &str)]) -> http::Response<Bytes> {
    let mut b = Request::get(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    send(proxy.addr, b.body(Full::new(Bytes::new())).unwrap())
}

#[test]
fn allowed_and_denied_by_host_port_method_and_path() {
    let (up, other) = (Upstream::start(), Upstream::start());
    let proxy = ProxyProc::start(&catalog(&up, &other, ""));
    let p = up.addr.port();
    let i = ["-H", "intentgate-intent: triage"];
    let cases: Vec<(Vec<&str>, String, u16)> = vec![
        (
            vec!["-X", "GET"],
            format!("http://localhost:{p}/echo/tickets/4711"),
            200,
        ),
        (
            vec!["-X", "PUT"],
            format!("http://127.0.0.1:{p}/echo/tickets/4711/labels"),
            200,
        ),
        (
            vec!["-X", "GET"],
            format!("http://localhost:{p}/echo/users/7/profile"),
            200,
        ),
        (
            vec!["-X", "DELETE"],
            format!("http://localhost:{p}/echo/tickets/4711"),
            403,
        ), // method
        (
            vec!["-X", "GET"],
            format!("http://localhost:{p}/echo/users/7/8/profile"),
            403,
        ), // path: * is one segment
        (
            vec!["-X", "GET"],
            format!("http://localhost:{p}/echo/admin"),
            403,
        ), // path
        (
            vec!["-X", "GET"],
            format!("http://localhost:{}/echo/tickets/1", other.addr.port()),
            403,
        ), // port
        (
            vec!["-X", "GET"],
            format!("http://127.0.0.2:{p}/echo/tickets/1"),
            403,
        ), // host
    ];
    let purl = proxy.url();
    for (args, url, status) in &cases {
        let mut a: Vec<&str> = vec!["-x", &purl];
        a.extend(i);
        a.extend(args.iter());
        a.push(url);
        let out = curl(&a);
        assert_eq!(out.status, *status, "{args:?} {url}: {out:?}");
        if *status == 403 {
            let j = out.json();
            assert_eq!(error_code(&j), "intent_violation");
            assert_eq!(j["agent"], "support-bot");
            assert_eq!(j["intent"], "triage");
            assert!(
                j["hint"]
                    .as_str()
                    .unwrap()
                    .contains("extend intent 'triage'"),
                "{j}"
            );
            assert!(j["decision_id"].as_str().is_some_and(|d| d.len() == 24));
        }
    }
    // Nothing denied reached the upstream; what was allowed arrived tagged.
    assert_eq!(up.requests(), 3);
    assert_eq!(other.requests(), 0);
    let seen = up.seen();
    assert_eq!(seen[0].header("intentgate-agent"), Some("support-bot"));
    assert_eq!(seen[0].header("intentgate-intent"), Some("triage"));
    assert!(seen[0].header("intentgate-decision-id").is_some());
    assert!(seen[0].header("intentgate-intent").is_some());
    // The Rust client sees the same refusal, with the deny header.
    let resp = get(
        &proxy,
        &format!("http://localhost:{p}/echo/admin"),
        &[("intentgate-intent", "triage")],
    );
    assert_eq!(resp.status(), 403);
    assert_eq!(resp.headers()["intentgate-decision"], "deny");
}

#[test]
fn intent_sources_and_their_precedence() {
    let (up, other) = (Upstream::start(), Upstream::start());
    let proxy = ProxyProc::start(&catalog(&up, &other, "intent: billing\n"));
    let url = up.url("/echo/tickets/1").replace("127.0.0.1", "localhost");
    // Default (config): billing, which this agent may not claim.
    let out = curl(&["-x", &proxy.url(), &url]);
    assert_eq!(out.status, 403);
    assert!(
        out.json()["reason"]
            .as_str()
            .unwrap()
            .contains("may not claim intent 'billing'")
    );
    // Session intent (admin API) beats the default.
    let set = curl(&[
        "-X",
        "PUT",
        "-d",
        r#"{"name": "triage", "task": "INC-4711", "ttl_seconds": 600}"#,
        &proxy.admin_url("/v1/intent"),
    ]);
    assert_eq!(set.status, 200, "{set:?}");
    assert_eq!(curl(&["-x", &proxy.url(), &url]).status, 200);
    // The header beats the session.
    let out = curl(&["-x", &proxy.url(), "-H", "intentgate-intent: billing", &url]);
    assert_eq!(out.status, 403);
    // Two different intent headers are refused outright.
    let out = curl(&[
        "-x",
        &proxy.url(),
        "-H",
        "intentgate-intent: triage",
        "-H",
        "intentgate-intent: billing",
        &url,
    ]);
    assert_eq!(out.status, 400, "{out:?}");
    let audit = proxy.audit_n(4);
    let sources: Vec<&str> = audit
        .iter()
        .map(|r| r["intent"]["source"].as_str().unwrap())
        .collect();
    assert_eq!(sources[..3], ["default", "session", "header"]);
    assert_eq!(audit[1]["intent"]["task"], "INC-4711");
    assert_eq!(up.seen()[0].header("intentgate-intent"), Some("triage"));
}

#[test]
fn spoofed_identity_and_intent_headers_are_stripped_and_never_trusted() {
    let (up, other) = (Upstream::start(), Upstream::start());
    let proxy = ProxyProc::start(&catalog(&up, &other, ""));
    let url = format!("http://localhost:{}/echo/tickets/1", up.addr.port());
    // Claiming to be billing-bot does not make this agent billing-bot.
    let resp = get(
        &proxy,
        &url,
        &[
            ("intentgate-intent", "billing"),
            ("intentgate-agent", "billing-bot"),
        ],
    );
    assert_eq!(resp.status(), 403);
    assert!(String::from_utf8_lossy(resp.body()).contains("agent 'support-bot' may not claim"));
    let resp = get(
        &proxy,
        &url,
        &[
            ("intentgate-intent", "triage"),
            ("intentgate-agent", "root"),
            ("intentgate-decision-id", "forged"),
            ("x-agent-id", "admin"),
        ],
    );
    assert_eq!(resp.status(), 200);
    let seen = &up.seen()[0];
    assert_eq!(seen.header("intentgate-agent"), Some("support-bot"));
    assert_ne!(seen.header("intentgate-decision-id"), Some("forged"));
    assert_eq!(seen.header("x-agent-id"), None);
}

#[test]
fn monitor_mode_forwards_and_records_would_deny() {
    let (up, other) = (Upstream::start(), Upstream::start());
    let proxy = ProxyProc::start(&catalog(&up, &other, ""));
    // The `watch` intent is in monitor mode: a call outside its scope is forwarded.
    let url = format!("http://localhost:{}/echo/anything", up.addr.port());
    let out = curl(&[
        "-x",
        &proxy.url(),
        "-X",
        "POST",
        "-d",
        "x",
        "-H",
        "intentgate-intent: watch",
        &url,
    ]);
    assert_eq!(out.status, 200, "{out:?}");
    assert_eq!(up.requests(), 1);
    let rec = &proxy.audit_n(1)[0];
    assert_eq!(rec["decision"], "would_deny");
    assert_eq!(rec["mode"], "monitor");
    assert!(
        rec["reasons"][0]
            .as_str()
            .unwrap()
            .contains("does not permit POST")
    );
    // --mode enforce overrides the intent's own mode.
    let strict = ProxyProc::start_with(&catalog(&up, &other, ""), &["--mode", "enforce"], &[]);
    assert_eq!(
        curl(&["-x", &strict.url(), "-H", "intentgate-intent: watch", &url]).status,
        403
    );
}

#[test]
fn missing_unknown_and_unclaimable_intents() {
    let (up, other) = (Upstream::start(), Upstream::start());
    let proxy = ProxyProc::start(&catalog(&up, &other, ""));
    let url = format!("http://localhost:{}/echo/tickets/1", up.addr.port());
    let out = curl(&["-x", &proxy.url(), &url]);
    assert_eq!(out.status, 403);
    assert!(
        out.json()["hint"]
            .as_str()
            .unwrap()
            .contains("intentgate-intent: NAME"),
        "{out:?}"
    );
    let out = curl(&[
        "-x",
        &proxy.url(),
        "-H",
        "intentgate-intent: nonsense",
        &url,
    ]);
    assert!(
        out.json()["reason"]
            .as_str()
            .unwrap()
            .contains("not in the catalog")
    );
    let out = curl(&["-x", &proxy.url(), "-H", "intentgate-intent: billing", &url]);
    assert!(
        out.json()["hint"]
            .as_str()
            .unwrap()
            .contains("may not claim")
    );
    assert_eq!(up.requests(), 0);
}

#[test]
fn namespaces_narrow_but_never_override_a_global_deny() {
    let (up, other) = (Upstream::start(), Upstream::start());
    let dir = tempfile::tempdir().unwrap();
    let p = up.addr.port();
    std::fs::write(
        dir.path().join("global.rego"),
        "package intentgate\nimport rego.v1\ndeny contains \"deleting is never allowed\" if input.request.method == \"DELETE\"\n",
    )
    .unwrap();
    let ns = dir.path().join("namespaces/support");
    std::fs::create_dir_all(&ns).unwrap();
    std::fs::write(
        ns.join("catalog.yaml"),
        format!("intents:\n  cleanup:\n    allow:\n      - hosts: [localhost]\n        ports: [{p}]\n        methods: [GET, DELETE]\n"),
    )
    .unwrap();
    std::fs::write(
        ns.join("narrow.rego"),
        "package intentgate.namespace\nimport rego.v1\ndeny contains \"support does not read archives\" if input.request.path_segments[1] == \"archive\"\n",
    )
    .unwrap();
    let extra = format!("policy: {{paths: [\"{}\"]}}\n", dir.path().display());
    let proxy = ProxyProc::start(&catalog(&up, &other, &extra));
    let h = ["-H", "intentgate-intent: cleanup"];
    let base = format!("http://localhost:{p}/echo");
    // The namespace's intent allows DELETE; the global deny still wins.
    let out = curl(&[
        "-x",
        &proxy.url(),
        h[0],
        h[1],
        "-X",
        "DELETE",
        &format!("{base}/x"),
    ]);
    assert_eq!(
        (out.status, out.json()["reason"].as_str()),
        (403, Some("deleting is never allowed"))
    );
    // The namespace narrows its own scope.
    let out = curl(&["-x", &proxy.url(), h[0], h[1], &format!("{base}/archive/1")]);
    assert_eq!(out.json()["reason"], "support does not read archives");
    assert_eq!(
        curl(&["-x", &proxy.url(), h[0], h[1], &format!("{base}/live/1")]).status,
        200
    );
    assert_eq!(up.requests(), 1);
}

#[test]
fn expired_or_ownerless_agents_get_no_egress() {
    let up = Upstream::start();
    let allow_all = format!(
        "intent: any\nintents: {{any: {{allow: [{{hosts: [localhost], ports: [{}]}}]}}}}\n",
        up.addr.port()
    );
    let url = format!("http://localhost:{}/echo", up.addr.port());
    let expired = ProxyProc::start(&format!(
        "agent: {{id: old-bot, owner: team, expires: \"2024-01-01T00:00:00Z\"}}\n{allow_all}"
    ));
    let out = curl(&["-x", &expired.url(), &url]);
    assert_eq!(out.status, 403);
    assert_eq!(error_code(&out.json()), "agent_refused");
    assert!(
        out.json()["reason"]
            .as_str()
            .unwrap()
            .contains("expired at 2024-01-01")
    );
    // No owner: in Kubernetes ($POD_NAMESPACE set) there is no $USER fallback.
    let ownerless = ProxyProc::start_with(
        &format!("agent: {{id: orphan}}\n{allow_all}"),
        &[],
        &[("POD_NAMESPACE", "ns"), ("USER", "someone")],
    );
    let out = curl(&["-x", &ownerless.url(), &url]);
    assert!(
        out.json()["reason"].as_str().unwrap().contains("no owner"),
        "{out:?}"
    );
    // Outside Kubernetes the owner defaults to $USER, so a first run works.
    let local = ProxyProc::start_with(
        &format!("agent: {{id: dev-bot}}\n{allow_all}"),
        &[],
        &[("USER", "alice")],
    );
    assert_eq!(curl(&["-x", &local.url(), &url]).status, 200);
    assert_eq!(up.requests(), 1);
}

#[test]
fn a_policy_runtime_error_fails_closed() {
    let (up, other) = (Upstream::start(), Upstream::start());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("broken.rego"),
        "package intentgate\nimport rego.v1\nx := 1 if input.request.method == \"GET\"\nx := 2 if input.request.host != \"\"\ndeny contains \"x\" if x > 5\n",
    )
    .unwrap();
    let extra = format!("policy: {{paths: [\"{}\"]}}\n", dir.path().display());
    let proxy = ProxyProc::start(&catalog(&up, &other, &extra));
    let out = curl(&[
        "-x",
        &proxy.url(),
        "-H",
        "intentgate-intent: triage",
        &format!("http://localhost:{}/echo/tickets/1", up.addr.port()),
    ]);
    assert_eq!(out.status, 403, "{out:?}");
    assert_eq!(error_code(&out.json()), "policy_error");
    assert_eq!(up.requests(), 0);
}

#[test]
fn a_spliced_tunnel_is_decided_with_the_connect_headers() {
    let (up, other) = (Upstream::start(), Upstream::start());
    let proxy = ProxyProc::start(&catalog(&up, &other, ""));
    let target = format!("localhost:{}", up.addr.port());
    // No intent on the CONNECT: refused before any byte reaches the upstream.
    let resp = raw(
        proxy.addr,
        format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes(),
    );
    assert!(resp.starts_with("HTTP/1.1 403"), "{resp}");
    // curl --proxy-header carries the intent on the CONNECT itself.
    let out = curl(&[
        "-x",
        &proxy.url(),
        "-p",
        "--proxy-header",
        "intentgate-intent: triage",
        &format!("http://{target}/anything"),
    ]);
    assert_eq!(out.status, 200, "{out:?}");
    assert_eq!(up.connections(), 1);
}
