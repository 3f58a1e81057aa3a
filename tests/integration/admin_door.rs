//! The agent's own admin calls: `$INTENTGATE_ADMIN_URL` works whether the client honours
//! `NO_PROXY` for it or sends it through the proxy (requests, httpx, aiohttp, curl, under
//! `intentgate run`); through the proxy only the agent-facing endpoints answer, in-process.

use crate::common::*;
use crate::run::{run, world};

const AGENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/agent.py");
const LIBS: [&str; 4] = ["requests", "httpx", "aiohttp", "curl"];

#[test]
fn the_admin_url_works_with_and_without_no_proxy_in_every_client() {
    let w = world("");
    let audit = w.dir.path().join("audit.jsonl");
    let url = w.up.url("/echo/ok/1");
    let admin = |lib: &str, method: &str, body: serde_json::Value| serde_json::json!({"admin_lib": lib, "method": method, "path": "/v1/intent", "body": body});
    let get = serde_json::json!({"lib": "requests", "method": "GET", "url": url});
    let mut plan = Vec::new();
    for half in 0..2 {
        if half == 1 {
            plan.push(serde_json::json!({"unset_no_proxy": true}));
        }
        for lib in LIBS {
            // Claimed with a TTL, the call passes; cleared, it is refused again.
            let claim = serde_json::json!({"name": "work", "ttl_seconds": 600});
            plan.extend([
                admin(lib, "PUT", claim),
                get.clone(),
                admin(lib, "DELETE", serde_json::Value::Null),
                get.clone(),
            ]);
        }
    }
    let plan = serde_json::Value::from(plan).to_string();
    let audit_arg = audit.to_str().unwrap();
    let (code, stdout, stderr) = run(&w, &["--audit", audit_arg], &["python3", AGENT, &plan]);
    assert_eq!(code, 0, "{stderr}");
    let want: Vec<u16> = [200, 200, 200, 403].repeat(LIBS.len() * 2);
    let got: Vec<u16> = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(got, want, "{stderr}");
    assert_eq!(w.up.requests(), LIBS.len() * 2);
    // Without NO_PROXY every client sent its admin calls through the proxy, where the admin API
    // answered them in-process (and the records say so); with it, some did too (requests does
    // not match `127.0.0.1:PORT` in NO_PROXY for an IP host).
    let recs: Vec<serde_json::Value> = std::fs::read_to_string(&audit)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let door: Vec<_> = recs.iter().filter(|r| r["path"] == "/v1/intent").collect();
    assert!(door.len() >= LIBS.len() * 2, "{recs:?}");
    for r in &door {
        assert_eq!(r["decision"], "allow", "{r}");
        assert_eq!(r["status"], 200, "{r}");
        assert_eq!(r["agent"]["id"], "dev-agent", "{r}");
        assert!(
            r["reasons"][0].as_str().unwrap().contains("admin API"),
            "{r}"
        );
    }
}

#[test]
fn through_the_proxy_only_the_agent_endpoints_answer_and_a_refused_claim_says_why() {
    let up = Upstream::start();
    let proxy = ProxyProc::start(&format!(
        "agent: {{id: door-agent, owner: o}}\nintents:\n  work:\n    allow:\n      - hosts: [127.0.0.1]\n        ports: [{}]\n",
        up.addr.port()
    ));
    let admin = proxy.admin.unwrap();
    let via = |method: &str, path: &str, body: &str| {
        let req = format!(
            "{method} http://{admin}{path} HTTP/1.1\r\nHost: {admin}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        raw(proxy.addr, req.as_bytes())
    };
    // A claim the catalog refuses says why, with the request's own decision id.
    let resp = via(
        "PUT",
        "/v1/intent",
        r#"{"name": "nope", "ttl_seconds": 60}"#,
    );
    assert!(resp.starts_with("HTTP/1.1 422"), "{resp}");
    let j = raw_json(&resp);
    assert_eq!(error_code(&j), "unknown_intent", "{j}");
    assert!(
        j["reason"]
            .as_str()
            .unwrap()
            .contains("'nope' is not in the catalog"),
        "{j}"
    );
    assert_eq!(
        (j["agent"].as_str(), j["intent"].as_str()),
        (Some("door-agent"), Some("nope"))
    );
    let id = j["decision_id"].as_str().unwrap();
    assert!(
        resp.contains(&format!("intentgate-decision-id: {id}")),
        "{resp}"
    );
    // A claim it allows holds for its TTL; explain answers too.
    let resp = via(
        "PUT",
        "/v1/intent",
        r#"{"name": "work", "ttl_seconds": 60}"#,
    );
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(raw_json(&resp)["session"]["expires"].is_string(), "{resp}");
    let resp = via("GET", "/v1/intent", "");
    assert_eq!(raw_json(&resp)["session"]["name"], "work", "{resp}");
    let explain = format!(
        r#"{{"method": "GET", "url": "{}", "intent": "work"}}"#,
        up.url("/x")
    );
    let resp = via("POST", "/v1/explain", &explain);
    assert_eq!(raw_json(&resp)["decision"]["allow"], true, "{resp}");
    // Every other admin endpoint is refused there, with a hint that names the way that works.
    for (method, path) in [
        ("GET", "/v1/policy"),
        ("POST", "/v1/reload"),
        ("GET", "/metrics"),
    ] {
        let resp = via(method, path, "");
        assert!(resp.starts_with("HTTP/1.1 403"), "{method} {path}: {resp}");
        let j = raw_json(&resp);
        assert_eq!(error_code(&j), "destination_forbidden", "{j}");
        assert!(
            j["hint"].as_str().unwrap().contains("INTENTGATE_ADMIN_URL"),
            "{j}"
        );
    }
    // Each was recorded once, with its decision id; the refused claim's among them.
    let recs = proxy.audit_n(7);
    assert!(recs.iter().any(|r| r["decision_id"] == id), "{recs:?}");
    assert_eq!(up.requests(), 0);
}
