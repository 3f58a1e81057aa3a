//! What a security team audits and an operator watches: the audit log, metrics, the admin API and
//! hot reload.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::common::netns::Netns;
use crate::common::*;

fn open_catalog(up: &Upstream) -> String {
    format!(
        "agent: {{id: ops-bot, namespace: ops, owner: sre}}\nintents:\n  read:\n    allow:\n      - hosts: [localhost]\n        ports: [{p}]\n        methods: [GET]\n  probe:\n    mode: monitor\n    allow:\n      - hosts: [localhost]\n        ports: [{p}]\n        methods: [HEAD]\n",
        p = up.addr.port()
    )
}

#[test]
fn audit_records_allow_deny_and_monitor_field_by_field_without_secrets() {
    let up = Upstream::start();
    let proxy = ProxyProc::start(&open_catalog(&up));
    let base = format!("http://localhost:{}/echo", up.addr.port());
    let secret = [
        "-H",
        "Authorization: Bearer sk-live-SECRET",
        "-H",
        "Cookie: session=SECRETCOOKIE",
        "-H",
        "Proxy-Authorization: Basic U0VDUkVU",
    ];
    let mut args = vec![
        "-x".to_string(),
        proxy.url(),
        "-H".into(),
        "intentgate-intent: read".into(),
        "-H".into(),
        "intentgate-task: INC-1".into(),
    ];
    args.extend(secret.iter().map(|s| s.to_string()));
    let run = |extra: &[&str], url: &str| {
        let mut a: Vec<&str> = args.iter().map(String::as_str).collect();
        a.extend(extra);
        a.push(url);
        curl(&a)
    };
    assert_eq!(run(&[], &format!("{base}/a?token=QUERYSECRET")).status, 200);
    assert_eq!(
        run(&["-X", "POST", "-d", "body-SECRET"], &format!("{base}/b")).status,
        403
    );
    assert_eq!(
        run(
            &["-H", "intentgate-intent: probe", "-X", "DELETE"],
            &format!("{base}/c")
        )
        .status,
        400,
        "two intents"
    );
    let out = curl(&[
        "-x",
        &proxy.url(),
        "-H",
        "intentgate-intent: probe",
        "-X",
        "DELETE",
        &format!("{base}/c"),
    ]);
    assert_eq!(out.status, 200, "monitor forwards");

    let recs = proxy.audit_n(4);
    let allow = &recs[0];
    for (field, want) in [
        ("decision", "allow"),
        ("mode", "enforce"),
        ("method", "GET"),
        ("scheme", "http"),
        ("host", "localhost"),
        ("path", "/echo/a"),
        ("connection", "forward"),
    ] {
        assert_eq!(allow[field], want, "{field}: {allow}");
    }
    assert_eq!(allow["port"], up.addr.port());
    assert_eq!(allow["status"], 200);
    assert_eq!(allow["agent"]["id"], "ops-bot");
    assert_eq!(allow["agent"]["namespace"], "ops");
    assert_eq!(allow["intent"]["name"], "read");
    assert_eq!(allow["intent"]["task"], "INC-1");
    assert_eq!(allow["intent"]["source"], "header");
    assert_eq!(allow["intent"]["verified"], false);
    assert!(allow["bytes_out"].as_u64().unwrap() > 0);
    assert!(allow["durations"]["total_ms"].as_f64().unwrap() > 0.0);
    assert!(allow["policy_revision"].as_str().unwrap().len() == 16);
    assert!(allow["time"].as_str().unwrap().ends_with('Z'));
    assert_eq!(allow["seq"], 1);
    assert_eq!(allow["decision_id"].as_str().unwrap().len(), 24);
    let deny = &recs[1];
    assert_eq!(
        (deny["decision"].as_str(), deny["status"].as_u64()),
        (Some("deny"), Some(403))
    );
    assert!(
        deny["reasons"][0]
            .as_str()
            .unwrap()
            .contains("does not permit POST")
    );
    assert_eq!(recs[2]["decision"], "error");
    assert_eq!(recs[2]["error"], "bad_request");
    let monitor = &recs[3];
    assert_eq!(
        (monitor["decision"].as_str(), monitor["mode"].as_str()),
        (Some("would_deny"), Some("monitor"))
    );
    let seqs: Vec<u64> = recs.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3, 4]);
    let all = std::fs::read_to_string(proxy.path("audit.log")).unwrap();
    for s in ["SECRET", "sk-live", "QUERYSECRET", "U0VDUkVU"] {
        assert!(!all.contains(s), "{s} leaked into the audit log");
    }
}

#[test]
fn concurrent_requests_leave_exactly_one_record_each_even_through_sigterm() {
    let up = Upstream::start();
    // A tiny audit queue: requests wait for the writer (back-pressure) rather than lose records.
    let dir = tempfile::tempdir().unwrap();
    let audit_path = dir.path().join("audit.log");
    let mut proxy = ProxyProc::start(&format!(
        "{}limits: {{shutdown_grace_ms: 10000}}\naudit: {{path: \"{}\", queue: 4}}\n",
        open_catalog(&up),
        audit_path.display()
    ));
    let url = format!("http://localhost:{}/echo", up.addr.port());
    let done = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for t in 0..8 {
        let (purl, url, done, stop) = (proxy.url(), url.clone(), done.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            let mut answered = 0;
            for i in 0..400 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let out = curl(&[
                    "-x",
                    &purl,
                    "-H",
                    "intentgate-intent: read",
                    &format!("{url}?t={t}&i={i}"),
                ]);
                if out.status == 200 {
                    answered += 1;
                    done.fetch_add(1, Ordering::SeqCst);
                }
            }
            answered
        }));
    }
    eventually("some requests to complete", Duration::from_secs(30), || {
        (done.load(Ordering::SeqCst) >= 40).then_some(())
    });
    proxy.signal("TERM");
    stop.store(true, Ordering::SeqCst);
    let answered: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(proxy.wait_exit(Duration::from_secs(20)).success());
    let lines = std::fs::read_to_string(&audit_path).unwrap();
    let allowed = lines
        .lines()
        .filter(|l| l.contains("\"decision\":\"allow\""))
        .count();
    // Every request the upstream answered has its record, and nothing else was invented.
    assert_eq!(allowed, up.requests(), "audit lines vs upstream requests");
    assert_eq!(allowed, answered, "audit lines vs 200s the clients saw");
    let seqs: Vec<u64> = lines
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "no gaps");
}

#[test]
fn file_audit_sink_is_reopened_on_sighup() {
    let up = Upstream::start();
    let proxy = ProxyProc::start(&open_catalog(&up));
    let url = format!("http://localhost:{}/echo", up.addr.port());
    let get = || curl(&["-x", &proxy.url(), "-H", "intentgate-intent: read", &url]).status;
    assert_eq!(get(), 200);
    proxy.audit_n(1);
    let rotated = proxy.path("audit.log.1");
    std::fs::rename(proxy.path("audit.log"), &rotated).unwrap();
    proxy.signal("HUP");
    // The reopen happens before the next write after the signal.
    eventually(
        "the SIGHUP reload to be logged",
        Duration::from_secs(10),
        || proxy.stderr().contains("SIGHUP").then_some(()),
    );
    assert_eq!(get(), 200);
    let fresh = proxy.audit_n(1);
    assert_eq!(fresh[0]["seq"], 2);
    assert_eq!(
        std::fs::read_to_string(&rotated).unwrap().lines().count(),
        1
    );
}

#[test]
fn metrics_move_by_exactly_the_requests_sent() {
    let up = Upstream::start();
    let proxy = ProxyProc::start(&open_catalog(&up));
    let url = format!("http://localhost:{}/echo", up.addr.port());
    let allow = r#"intentgate_requests_total{decision="allow",intent="read",mode="enforce"}"#;
    let deny = r#"intentgate_requests_total{decision="deny",intent="read",mode="enforce"}"#;
    let unknown = r#"intentgate_requests_total{decision="deny",intent="unknown",mode="enforce"}"#;
    let (a0, d0) = (proxy.metric(allow), proxy.metric(deny));
    for _ in 0..5 {
        assert_eq!(
            curl(&["-x", &proxy.url(), "-H", "intentgate-intent: read", &url]).status,
            200
        );
    }
    for _ in 0..3 {
        assert_eq!(
            curl(&[
                "-x",
                &proxy.url(),
                "-H",
                "intentgate-intent: read",
                "-X",
                "PUT",
                &url
            ])
            .status,
            403
        );
    }
    // Made-up intent names do not become label values (bounded cardinality).
    curl(&[
        "-x",
        &proxy.url(),
        "-H",
        "intentgate-intent: made-up-123",
        &url,
    ]);
    assert_eq!(proxy.metric(allow) - a0, 5.0);
    assert_eq!(proxy.metric(deny) - d0, 3.0);
    assert_eq!(proxy.metric(unknown), 1.0);
    let text = curl(&[&proxy.admin_url("/metrics")]).body;
    assert!(!text.contains("made-up-123"));
    assert!(proxy.metric("intentgate_policy_evaluation_seconds_count") >= 9.0);
    assert!(text.contains("intentgate_build_info{version="));
    assert!(text.contains("intentgate_policy_info{revision="));
    for name in [
        "intentgate_active_connections",
        "intentgate_tunnels_active",
        "intentgate_audit_queue_depth",
        "intentgate_upstream_request_duration_seconds_count",
    ] {
        assert!(text.contains(name), "{name} missing");
    }
}

#[test]
fn admin_endpoints_and_the_session_intent_lifecycle() {
    let up = Upstream::start();
    let proxy = ProxyProc::start(&open_catalog(&up));
    let url = format!("http://localhost:{}/echo", up.addr.port());
    assert_eq!(curl(&[&proxy.admin_url("/healthz")]).status, 200);
    assert_eq!(curl(&[&proxy.admin_url("/readyz")]).status, 200);
    let nf = curl(&[&proxy.admin_url("/nope")]);
    assert_eq!(
        (nf.status, error_code(&nf.json()).as_str()),
        (404, "not_found")
    );
    let pol = curl(&[&proxy.admin_url("/v1/policy")]).json();
    assert_eq!(pol["intents"], serde_json::json!(["probe", "read"]));
    assert!(
        pol["modules"][0]
            .as_str()
            .unwrap()
            .contains("intentgate.rego")
    );

    // No intent: denied. Set a session intent with a short TTL: allowed; after expiry: denied.
    assert_eq!(curl(&["-x", &proxy.url(), &url]).status, 403);
    let set = curl(&[
        "-X",
        "PUT",
        "-d",
        r#"{"name": "read", "ttl_seconds": 1}"#,
        &proxy.admin_url("/v1/intent"),
    ]);
    assert_eq!(set.json()["session"]["name"], "read");
    assert_eq!(
        curl(&[&proxy.admin_url("/v1/intent")]).json()["session"]["name"],
        "read"
    );
    assert_eq!(curl(&["-x", &proxy.url(), &url]).status, 200);
    eventually(
        "the session intent to expire",
        Duration::from_secs(5),
        || (curl(&["-x", &proxy.url(), &url]).status == 403).then_some(()),
    );
    // Set again, then delete.
    curl(&[
        "-X",
        "PUT",
        "-d",
        r#"{"name": "read"}"#,
        &proxy.admin_url("/v1/intent"),
    ]);
    assert_eq!(curl(&["-x", &proxy.url(), &url]).status, 200);
    assert_eq!(
        curl(&["-X", "DELETE", &proxy.admin_url("/v1/intent")]).json()["cleared"],
        true
    );
    assert_eq!(curl(&["-x", &proxy.url(), &url]).status, 403);
    let bad = curl(&[
        "-X",
        "PUT",
        "-d",
        r#"{"nam": "x"}"#,
        &proxy.admin_url("/v1/intent"),
    ]);
    assert_eq!(bad.status, 400);

    // Explain through the API.
    let body = format!(r#"{{"method": "GET", "url": "{url}", "intent": "read"}}"#);
    let ex = curl(&["-X", "POST", "-d", &body, &proxy.admin_url("/v1/explain")]).json();
    assert_eq!(ex["decision"]["allow"], true);
    assert_eq!(ex["input"]["scope"]["intent"], "read");
}

#[test]
fn admin_mutations_are_refused_from_a_non_loopback_peer() {
    // An isolated network namespace with only a loopback interface, given one extra address that
    // is not in 127/8: connections to it come from a non-loopback peer, and no packet can leave.
    let mut ns = Netns::new("adm", &["198.18.0.1/32"]);
    let token = ns.dir().join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let info = ns.intentgate(&format!(
        "listen: {{proxy: 127.0.0.1:0, admin: 0.0.0.0:0}}\nagent: {{owner: t}}\nadmin: {{token_file: \"{}\"}}\n\
         intents: {{x: {{allow: [{{hosts: [example.com]}}]}}}}\n",
        token.display()
    ));
    let port = info["admin"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();
    let curl_ns = |args: &[&str]| ns.curl(&[&["-w", "\n%{http_code}"], args].concat());
    let outside = format!("http://198.18.0.1:{port}");
    let inside = format!("http://127.0.0.1:{port}");
    // Read-only endpoints answer anyone (the kubelet, Prometheus).
    assert!(curl_ns(&[&format!("{outside}/healthz")]).ends_with("200"));
    // Mutations from the non-loopback peer are refused, token or not.
    let r = curl_ns(&[
        "-X",
        "PUT",
        "-H",
        "Authorization: Bearer s3cret",
        "-d",
        r#"{"name":"x"}"#,
        &format!("{outside}/v1/intent"),
    ]);
    assert!(
        r.ends_with("403") && r.contains("admin_loopback_only"),
        "{r}"
    );
    assert!(curl_ns(&["-X", "POST", &format!("{outside}/v1/reload")]).ends_with("403"));
    // From loopback: the token is required, then accepted.
    let r = curl_ns(&[
        "-X",
        "PUT",
        "-d",
        r#"{"name":"x"}"#,
        &format!("{inside}/v1/intent"),
    ]);
    assert!(r.ends_with("401"), "{r}");
    let r = curl_ns(&[
        "-X",
        "PUT",
        "-H",
        "Authorization: Bearer s3cret",
        "-d",
        r#"{"name":"x"}"#,
        &format!("{inside}/v1/intent"),
    ]);
    assert!(r.ends_with("200"), "{r}");
}

#[test]
fn reload_applies_a_valid_change_under_load_and_refuses_a_broken_one() {
    let up = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let pol = dir.path().join("policy");
    std::fs::create_dir(&pol).unwrap();
    let p = up.addr.port();
    std::fs::write(pol.join("catalog.yaml"), format!("intents:\n  read:\n    allow:\n      - hosts: [localhost]\n        ports: [{p}]\n        methods: [GET]\n")).unwrap();
    let proxy = ProxyProc::start(&format!(
        "agent: {{id: r, owner: o}}\nmode: enforce\npolicy: {{paths: [\"{}\"], watch_interval_ms: 100}}\n",
        pol.display()
    ));
    let url = format!("http://localhost:{p}/echo");
    let rev0 = curl(&[&proxy.admin_url("/v1/policy")]).json()["revision"]
        .as_str()
        .unwrap()
        .to_string();
    // Load runs throughout; every request must be answered by the old or the new policy.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let load = {
        let (purl, url, stop, failures) =
            (proxy.url(), url.clone(), stop.clone(), failures.clone());
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                let s = curl(&["-x", &purl, "-H", "intentgate-intent: read", &url]).status;
                if s != 200 && s != 403 {
                    failures.fetch_add(1, Ordering::SeqCst);
                }
                n += 1;
            }
            n
        })
    };
    // A valid change: a deny rule appears; the watcher picks it up.
    std::fs::write(pol.join("deny.rego"), "package intentgate\nimport rego.v1\ndeny contains \"frozen\" if input.request.method == \"GET\"\n").unwrap();
    // The bound is generous: the reload compiles the policy in a debug build while the load
    // thread and the rest of the suite share the cores (10 s ran out once under load).
    eventually(
        "the new rule to be enforced",
        Duration::from_secs(30),
        || {
            let out = curl(&["-x", &proxy.url(), "-H", "intentgate-intent: read", &url]);
            (out.status == 403 && out.body.contains("frozen")).then_some(())
        },
    );
    let st = curl(&[&proxy.admin_url("/v1/policy")]).json();
    assert_ne!(st["revision"], rev0);
    assert_eq!(st["last_reload"]["result"], "success");
    // A broken change is refused; the last good policy (with the deny) stays in force.
    std::fs::write(
        pol.join("broken.rego"),
        "package intentgate\nimport rego.v1\ndeny contains if {\n",
    )
    .unwrap();
    let r = curl(&["-X", "POST", &proxy.admin_url("/v1/reload")]);
    assert_eq!(r.status, 422, "{r:?}");
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("broken.rego"),
        "{r:?}"
    );
    let out = curl(&["-x", &proxy.url(), "-H", "intentgate-intent: read", &url]);
    assert!(out.status == 403 && out.body.contains("frozen"), "{out:?}");
    assert_eq!(
        curl(&[&proxy.admin_url("/v1/policy")]).json()["last_reload"]["result"],
        "failure"
    );
    assert!(proxy.metric(r#"intentgate_policy_reloads_total{result="failure"}"#) >= 1.0);
    stop.store(true, Ordering::SeqCst);
    let sent = load.join().unwrap();
    assert!(sent > 0);
    assert_eq!(
        failures.load(Ordering::SeqCst),
        0,
        "a request failed during reload"
    );
}
