//! Credentials brokered per intent (src/cred/): a local HTTPS upstream that checks the token the
//! proxy injects (the agent holds a dummy one), with curl and the openai SDK; query and Basic
//! placements; `require_absent`; plain HTTP refused unless allowed; file rotation without restart;
//! spliced tunnels refused; the secret never in any output.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::tls::TestCa;
use crate::common::*;
use crate::cred_server::{Api, api};

const S1: &str = "s3cr3t-first-7f1e";
const S2: &str = "s3cr3t-rotated-90ab";

struct World {
    dir: tempfile::TempDir,
    ca: String,
    tls_api: Api,
    plain_api: Api,
    proxy: ProxyProc,
}

fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    init_ca(dir.path());
    let test_ca = TestCa::new("cred upstream CA");
    let up_ca = test_ca.write_pem(dir.path());
    let tls_api = api(Some(test_ca.server_config(&["localhost"])), S1);
    let plain_api = api(None, S1);
    let secret = dir.path().join("api-token");
    std::fs::write(&secret, format!("{S1}\n")).unwrap();
    let (p, pp) = (tls_api.addr.port(), plain_api.addr.port());
    let rule = |paths: &str, inject: &str| {
        format!(
            "      - hosts: [localhost, 127.0.0.1]\n        ports: [{p}, {pp}]\n        paths: [{paths}]\n        inject: {inject}\n"
        )
    };
    let mut yaml = format!(
        "agent: {{id: cred-bot, owner: o}}\nintent: gh\n\
         tls: {{ca_cert: \"{ca}/ca.pem\", ca_key: \"{ca}/ca-key.pem\", upstream_ca: \"{}\"}}\n\
         credentials:\n  api: {{file: \"{}\", poll_ms: 100}}\nintents:\n  gh:\n    allow:\n",
        up_ca.display(),
        secret.display(),
        ca = dir.path().join("ca").display(),
    );
    let bearer = "{credential: api, header: Authorization, format: \"Bearer {}\"}";
    yaml += &rule("\"/v1/models\", \"/api/**\"", bearer);
    yaml += &rule("\"/q/**\"", "{credential: api, query: api_key}");
    yaml += &rule("\"/basic/**\"", "{credential: api, basic: {user: bot}}");
    yaml += &rule(
        "\"/strict/**\"",
        "{credential: api, header: Authorization, format: \"Bearer {}\", require_absent: true}",
    );
    yaml += &rule("\"/plain/**\"", "{credential: api, header: x-api-key}");
    yaml += &rule(
        "\"/plainok/**\"",
        "{credential: api, header: x-api-key, allow_plaintext: true}",
    );
    let proxy = ProxyProc::start(&yaml);
    let ca = dir.path().join("ca/ca.pem").display().to_string();
    World {
        dir,
        ca,
        tls_api,
        plain_api,
        proxy,
    }
}

impl World {
    fn https(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.tls_api.addr.port())
    }

    fn curl(&self, url: &str, extra: &[&str]) -> CurlOut {
        let purl = self.proxy.url();
        let mut args = vec!["-x", purl.as_str(), "--cacert", self.ca.as_str()];
        args.extend(extra);
        args.push(url);
        curl(&args)
    }
}

/// Every place intentgate writes to: stdout, stderr (at debug), the audit file, `/v1/policy`,
/// `POST /v1/explain`, and `intentgate explain` with the same config.
fn every_output(w: &World) -> String {
    let mut all = w.proxy.stdout() + &w.proxy.stderr();
    all += &std::fs::read_to_string(w.proxy.path("audit.log")).unwrap_or_default();
    all += &curl(&[&w.proxy.admin_url("/v1/policy")]).body;
    let explain = serde_json::json!({"method": "GET", "url": w.https("/api/x"), "intent": "gh",
        "headers": {"authorization": "Bearer agent-dummy"}});
    all += &curl(&[
        "-X",
        "POST",
        "--data",
        &explain.to_string(),
        &w.proxy.admin_url("/v1/explain"),
    ])
    .body;
    let config = w.proxy.path("config.yaml");
    let (_, out, err) = run_cli(&[
        "explain",
        "--config",
        config.to_str().unwrap(),
        "GET",
        &w.https("/api/x"),
    ]);
    all + &out + &err
}

#[test]
fn the_upstream_gets_the_brokered_credential_never_the_agents_and_only_where_allowed() {
    let w = world();
    let dummy = ["-H", "Authorization: Bearer agent-dummy"];
    // Allowed: the agent's dummy key is replaced by the secret (the upstream checks it).
    for proto in ["--http1.1", "--http2"] {
        let ok = w.curl(&w.https("/api/repos"), &[&[proto][..], &dummy].concat());
        assert_eq!(ok.status, 200, "{proto}: {ok:?}");
    }
    // Query and Basic placements; the agent's own `api_key` is removed, other parameters kept.
    let q = w.curl(&w.https("/q/search?api_key=agent-dummy&page=2"), &[]);
    assert_eq!(q.status, 200, "{q:?}");
    assert_eq!(q.json()["query"], format!("page=2&api_key={S1}"));
    let b = w.curl(&w.https("/basic/x"), &dummy);
    assert_eq!(b.status, 200, "{b:?}");
    // Denied by the intent: refused, nothing reached the upstream.
    let before = w.tls_api.seen.lock().unwrap().len();
    let denied = w.curl(&w.https("/admin"), &dummy);
    assert_eq!(denied.status, 403, "{denied:?}");
    assert_eq!(error_code(&denied.json()), "intent_violation");
    // require_absent: an agent-sent credential proves it holds a key: refused, not forwarded.
    let present = w.curl(&w.https("/strict/x"), &dummy);
    assert_eq!(present.status, 403, "{present:?}");
    assert_eq!(error_code(&present.json()), "credential_present");
    assert_eq!(w.tls_api.seen.lock().unwrap().len(), before);
    assert_eq!(w.curl(&w.https("/strict/x"), &[]).status, 200);
    // Plain HTTP: refused unless the rule allows it; then injected.
    let plain = format!("http://127.0.0.1:{}", w.plain_api.addr.port());
    let refused = w.curl(&format!("{plain}/plain/x"), &dummy);
    assert_eq!(refused.status, 403, "{refused:?}");
    assert_eq!(error_code(&refused.json()), "credential_requires_tls");
    assert!(
        w.plain_api.seen.lock().unwrap().is_empty(),
        "nothing was sent"
    );
    let ok = w.curl(
        &format!("{plain}/plainok/x"),
        &["-H", "x-api-key: agent-dummy"],
    );
    assert_eq!(ok.status, 200, "{ok:?}");

    // The openai SDK with a dummy key: the proxy replaces it, the upstream accepts the call.
    let script = "import json,sys,openai\n\
        c=openai.OpenAI(api_key='sk-agent-dummy',base_url=sys.argv[1],max_retries=0,\
        http_client=openai.DefaultHttpxClient(proxy=sys.argv[2],verify=sys.argv[3]))\n\
        print(json.dumps({'models':[m.id for m in c.models.list()]}))\n";
    let out = Command::new("python3")
        .args(["-c", script, &w.https("/v1"), &w.proxy.url(), &w.ca])
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openai: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Every record of an injected call names the credential (name, version), never the value.
    let recs = eventually("the records", Duration::from_secs(10), || {
        let r = w.proxy.audit();
        (r.iter()
            .filter(|r| r["credential"]["name"] == "api")
            .count()
            >= 7)
            .then_some(r)
    });
    let by_path = |p: &str| recs.iter().find(|r| r["path"] == p).unwrap().clone();
    assert_eq!(by_path("/api/repos")["credential"]["version"], 1);
    assert_eq!(by_path("/v1/models")["credential"]["name"], "api");
    assert!(by_path("/admin").get("credential").is_none());
    assert_eq!(by_path("/plain/x")["error"], "credential_requires_tls");

    // Rotation: a new file value is used from the next request on, without restart; an empty
    // (half-written) file keeps the last good one.
    let file = w.dir.path().join("api-token");
    std::fs::write(&file, S2).unwrap();
    *w.tls_api.expect.lock().unwrap() = S2.to_string();
    eventually("the rotated secret", Duration::from_secs(20), || {
        (w.curl(&w.https("/api/rotated"), &[]).status == 200).then_some(())
    });
    std::fs::write(&file, "").unwrap();
    eventually("the failed read counted", Duration::from_secs(20), || {
        let m = w
            .proxy
            .metric("intentgate_credential_refresh_total{credential=\"api\",result=\"error\"}");
        (m >= 1.0).then_some(())
    });
    assert_eq!(w.curl(&w.https("/api/after-empty"), &[]).status, 200);
    let rotated = eventually("the rotated record", Duration::from_secs(10), || {
        w.proxy
            .audit()
            .into_iter()
            .find(|r| r["path"] == "/api/after-empty")
    });
    assert_eq!(rotated["credential"]["version"], 2, "{rotated}");

    // The secrets appear nowhere intentgate writes.
    let all = every_output(&w);
    assert!(all.contains("credential"), "the outputs were read");
    for s in [S1, S2] {
        assert!(!all.contains(s), "secret {s} leaked: {all}");
    }
}

/// A proxy that splices `localhost` (a pinned client): a tunnel to a host whose rule binds a
/// credential is refused, since no credential could be added.
#[test]
fn a_spliced_tunnel_to_a_host_with_a_bound_credential_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_ca_dir, ca, key) = ca();
    let secret = dir.path().join("t");
    std::fs::write(&secret, S1).unwrap();
    let up = Upstream::start();
    let p = up.addr.port();
    let proxy = ProxyProc::start(&format!(
        "agent: {{id: b, owner: o}}\nintent: gh\ntls: {{ca_cert: \"{ca}\", ca_key: \"{key}\", splice: [localhost]}}\n\
         egress: {{allow_cidrs: [127.0.0.0/8], connect_ports: [{p}]}}\n\
         credentials: {{api: {{file: \"{}\"}}}}\n\
         intents: {{gh: {{allow: [{{hosts: [localhost], ports: [{p}], inject: {{credential: api, header: authorization, format: \"token {{}}\"}}}}]}}}}\n",
        secret.display()
    ));
    let resp = raw(
        proxy.addr,
        format!("CONNECT localhost:{p} HTTP/1.1\r\nHost: localhost:{p}\r\n\r\n").as_bytes(),
    );
    assert!(resp.starts_with("HTTP/1.1 403"), "{resp}");
    assert_eq!(raw_error_code(&resp), "credential_requires_interception");
    assert!(
        raw_json(&resp)["hint"]
            .as_str()
            .unwrap()
            .contains("intercept")
    );
    assert_eq!(up.connections(), 0, "nothing was dialled");
    let rec = eventually("the record", Duration::from_secs(10), || {
        proxy.audit().into_iter().find(|r| r["method"] == "CONNECT")
    });
    assert_eq!(rec["error"], "credential_requires_interception", "{rec}");
}

/// The policy picks or vetoes a credential (`decision.credential`); a monitor-mode would-deny
/// gets none. A custom decision wraps the default one.
#[test]
fn the_policy_picks_or_vetoes_and_a_would_deny_gets_nothing() {
    let dir = tempfile::tempdir().unwrap();
    init_ca(dir.path());
    let test_ca = TestCa::new("cred upstream CA");
    let up_ca = test_ca.write_pem(dir.path());
    let api = api(Some(test_ca.server_config(&["localhost"])), S1);
    let p = api.addr.port();
    std::fs::write(dir.path().join("read"), "read-token-1").unwrap();
    std::fs::write(dir.path().join("write"), S1).unwrap();
    std::fs::write(
        dir.path().join("pick.rego"),
        "package pick\nimport rego.v1\nimport data.intentgate\n\
         decision := object.union(intentgate.decision, {\"credential\": \"write\"}) if input.intent.task == \"INC-1\"\n\
         else := object.union(intentgate.decision, {\"credential\": false}) if input.intent.task == \"veto\"\n\
         else := object.union(intentgate.decision, {\"allow\": false}) if input.intent.task == \"deny\"\n\
         else := intentgate.decision\n",
    )
    .unwrap();
    let ca = dir.path().join("ca");
    let proxy = ProxyProc::start(&format!(
        "agent: {{id: b, owner: o}}\nintent: triage\nmode: monitor\n\
         tls: {{ca_cert: \"{c}/ca.pem\", ca_key: \"{c}/ca-key.pem\", upstream_ca: \"{}\"}}\n\
         policy: {{paths: [\"{d}/pick.rego\"], query: data.pick.decision}}\n\
         credentials: {{read: {{file: \"{d}/read\"}}, write: {{file: \"{d}/write\"}}}}\n\
         intents: {{triage: {{allow: [{{hosts: [localhost], ports: [{p}], inject: {{credential: read, header: Authorization, format: \"Bearer {{}}\"}}}}]}}}}\n",
        up_ca.display(),
        c = ca.display(),
        d = dir.path().display(),
    ));
    let call = |task: &str| {
        let c = ca.join("ca.pem");
        let purl = proxy.url();
        let url = format!("https://localhost:{p}/api/x");
        let t = format!("intentgate-task: {task}");
        let i = "intentgate-intent: triage";
        let args = [
            "-x",
            &purl,
            "--cacert",
            c.to_str().unwrap(),
            "-H",
            i,
            "-H",
            &t,
            &url,
        ];
        curl(&args).json()["authorization"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(
        call("plain"),
        "Bearer read-token-1",
        "the rule's own credential"
    );
    assert_eq!(
        call("INC-1"),
        format!("Bearer {S1}"),
        "picked by the policy"
    );
    assert_eq!(call("veto"), "", "vetoed: none");
    assert_eq!(call("deny"), "", "a would-deny in monitor mode: none");
    let recs = eventually("the records", Duration::from_secs(10), || {
        let r = proxy.audit();
        let done = r.iter().filter(|r| r["path"] == "/api/x").count() == 4;
        done.then_some(r)
    });
    let would = recs.iter().find(|r| r["decision"] == "would_deny").unwrap();
    assert!(would.get("credential").is_none(), "{would}");
    assert_eq!(
        recs.iter()
            .filter(|r| r["credential"]["name"] == "write")
            .count(),
        1
    );
}

/// `intentgate run` never passes a credential's env variable to the child; the proxy uses it.
#[test]
fn run_keeps_credential_variables_from_the_child() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.yaml");
    std::fs::write(
        &config,
        "agent: {id: r, owner: o}\ncredentials:\n  api: {env: CRED_TEST_TOKEN}\n  oa:\n    oauth2_client_credentials: {token_url: \"https://localhost:1/t\", client_id: c, client_secret: {env: CRED_TEST_CLIENT_SECRET}}\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["run", "--config", config.to_str().unwrap(), "--", "env"])
        .env("CRED_TEST_TOKEN", S1)
        .env("CRED_TEST_CLIENT_SECRET", S2)
        .env("CRED_TEST_OTHER", "kept")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("CRED_TEST_OTHER=kept"), "{stdout}");
    assert!(!stdout.contains("CRED_TEST_TOKEN"), "{stdout}");
    assert!(!stdout.contains("CRED_TEST_CLIENT_SECRET"), "{stdout}");
    for s in [S1, S2] {
        assert!(
            !stdout.contains(s) && !stderr.contains(s),
            "{stdout}{stderr}"
        );
    }
}

/// Broken credential config: the message names the file and the field; exit 2.
#[test]
fn broken_credential_config_names_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    for (yaml, field) in [
        (
            "intents: {a: {allow: [{hosts: [x.example], inject: {credential: nope, header: authorization}}]}}\n",
            "intents.a.allow.1.inject",
        ),
        ("credentials: {k: {file: /x, env: Y}}\n", "credentials.k"),
        ("credentials: {k: {fil: /x}}\n", "fil"),
        (
            "credentials: {k: {file: /nonexistent/secret}}\n",
            "credentials.k.file",
        ),
    ] {
        let c = dir.path().join("c.yaml");
        std::fs::write(&c, yaml).unwrap();
        let (code, err) = serve_outcome(&c, &dir.path().join("ready"));
        assert_eq!(code, Some(2), "{yaml}: {err}");
        assert!(err.contains("c.yaml"), "{err}");
        assert!(err.contains(field), "{yaml}: {err}");
    }
}
