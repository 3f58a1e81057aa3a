//! Signed intent tokens wired into the proxy: a token in the request header, on the session
//! (`PUT /v1/intent {"token"}`) or given to `run --intent-token` declares the intent; each way a
//! token can fail is its own 403; a bare name is refused where a token is required or where it
//! contradicts the token; narrowing claims narrow; the verified claims reach Rego
//! (`input.intent.token`); the token never reaches the upstream, the logs or the audit.
//! Tokens are minted by `intentgate token mint` and by PyPI PyJWT (tests/clients/pyjwt_tokens.py).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use crate::common::*;

const PY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/pyjwt_tokens.py");
const ISS: &str = "https://orchestrator.example";
const AGENT: &str = "test-agent";
const HEADER: &str = "intentgate-intent-token";

fn now() -> u64 {
    crate::issuer::now()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A proxy whose issuer `ISS` signs with an Ed25519 key made by `intentgate token keygen`, and
/// a PyJWT key (`py/`, RS256) of an issuer it does not know.
pub struct Env {
    pub up: Upstream,
    pub proxy: ProxyProc,
    pub keys: tempfile::TempDir,
    pub key: PathBuf,
    pub revoked: PathBuf,
}

impl Env {
    /// `extra` is appended to the config (e.g. `attestation:`).
    pub fn start(extra: &str) -> Self {
        let keys = tempfile::tempdir().unwrap();
        let key = keys.path().join("iss.pem");
        let (code, jwks, err) = run_cli(&["token", "keygen", "--out", p(&key)]);
        assert_eq!(code, 0, "{err}");
        let jwks_file = keys.path().join("iss.jwks.json");
        std::fs::write(&jwks_file, jwks).unwrap();
        let revoked = keys.path().join("revoked.txt");
        std::fs::write(&revoked, "# revoked jti\n").unwrap();
        let py_dir = keys.path().join("py");
        std::fs::create_dir(&py_dir).unwrap();
        py(&["keygen", "RS256", p(&py_dir)]);
        let rego = keys.path().join("sub.rego");
        // Rego reads the verified claims: a write needs the principal the task is done for.
        std::fs::write(
            &rego,
            "package intentgate\nimport rego.v1\n\
             deny contains \"write-issues needs a token naming its sub\" if {\n\
             \tinput.intent.name == \"write-issues\"\n\tnot input.intent.token.sub\n}\n",
        )
        .unwrap();
        let up = Upstream::start();
        let port = up.addr.port();
        let yaml = format!(
            "mode: enforce\n\
             policy: {{paths: [\"{rego}\"]}}\n\
             intent_tokens:\n  issuers: [{{issuer: \"{ISS}\", jwks_file: \"{jwks}\"}}]\n  revoked: \"{revoked}\"\n\
             intents:\n\
             \x20 read-issues:\n    allow: [{{hosts: [localhost], ports: [{port}], methods: [GET], paths: [\"/issues/**\"]}}]\n\
             \x20 write-issues:\n    requires_token: true\n\
             \x20   allow: [{{hosts: [localhost], ports: [{port}], methods: [GET, POST], paths: [\"/issues/**\"]}}]\n\
             {extra}",
            rego = rego.display(),
            jwks = jwks_file.display(),
            revoked = revoked.display(),
        );
        let proxy = ProxyProc::start(&yaml);
        Env {
            up,
            proxy,
            keys,
            key,
            revoked,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://localhost:{}{path}", self.up.addr.port())
    }

    /// `intentgate token mint` with our issuer's key.
    pub fn mint(&self, intent: &str, extra: &[&str]) -> String {
        let mut args = vec![
            "token",
            "mint",
            "--key",
            p(&self.key),
            "--intent",
            intent,
            "--agent",
            AGENT,
            "--ttl",
            "5m",
            "--issuer",
            ISS,
        ];
        args.extend_from_slice(extra);
        let (code, out, err) = run_cli(&args);
        assert_eq!(code, 0, "{err}");
        out.trim().to_string()
    }

    /// A token PyJWT signs with the unknown `py/` RS256 key (claims as given).
    fn py_mint(&self, claims: Value) -> String {
        py(&[
            "mint",
            p(&self.keys.path().join("py")),
            "RS256",
            &claims.to_string(),
        ])
    }

    /// curl through the proxy with the headers given.
    pub fn get(&self, method: &str, path: &str, headers: &[String]) -> CurlOut {
        let mut args = vec![
            "-x".to_string(),
            self.proxy.url(),
            "-X".into(),
            method.into(),
        ];
        for h in headers {
            args.push("-H".into());
            args.push(h.clone());
        }
        args.push(self.url(path));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        curl(&args)
    }
}

fn py(args: &[&str]) -> String {
    let out = Command::new("python3").arg(PY).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn tok(t: &str) -> String {
    format!("{HEADER}: {t}")
}

fn refused(out: &CurlOut, code: &str, token: &str) -> Value {
    assert_eq!(out.status, 403, "{code}: {out:?}");
    let j = out.json();
    assert_eq!(error_code(&j), code, "{j}");
    assert!(j["decision_id"].is_string() && j["hint"].is_string(), "{j}");
    assert!(
        !out.body.contains(token),
        "the refusal echoes the token: {j}"
    );
    j
}

/// Everything intentgate wrote (debug log, audit) and what the upstream saw.
fn assert_never_leaked(env: &Env, tokens: &[&str]) {
    let audit = std::fs::read_to_string(env.proxy.dir.path().join("audit.log")).unwrap();
    let (out, err) = (env.proxy.stdout(), env.proxy.stderr());
    for t in tokens {
        // Its payload part (unique: each token has a random jti) finds a leaked token.
        let sig = t.split('.').nth(1).unwrap();
        assert!(!audit.contains(sig), "a token is in the audit log");
        assert!(
            !out.contains(sig) && !err.contains(sig),
            "a token is in the log"
        );
        for seen in env.up.seen() {
            assert!(
                seen.headers.iter().all(|(_, v)| !v.contains(sig)),
                "a token reached the upstream: {seen:?}"
            );
        }
    }
}

#[test]
fn a_token_in_the_header_declares_the_intent_and_never_goes_upstream() {
    let env = Env::start("");
    let t = env.mint("read-issues", &["--task", "T-1", "--sub", "alice"]);
    let out = env.get("GET", "/issues/1", &[tok(&t)]);
    assert_eq!(out.status, 200, "{out:?}");
    let seen = env.up.seen().pop().unwrap();
    assert_eq!(seen.header(HEADER), None, "the token header was forwarded");
    assert_eq!(seen.header("intentgate-intent"), Some("read-issues"));
    let rec = env.proxy.audit_n(1).pop().unwrap();
    assert_eq!(rec["decision"], "allow", "{rec}");
    assert_eq!(rec["intent"]["name"], "read-issues", "{rec}");
    assert_eq!(rec["intent"]["source"], "token", "{rec}");
    assert_eq!(rec["intent"]["verified"], true, "{rec}");
    assert_eq!(rec["intent"]["task"], "T-1", "{rec}");

    // The same bare name beside it is fine; another one is refused.
    let same = env.get(
        "GET",
        "/issues/2",
        &[tok(&t), "intentgate-intent: read-issues".into()],
    );
    assert_eq!(same.status, 200, "{same:?}");
    let other = env.get(
        "GET",
        "/issues/2",
        &[tok(&t), "intentgate-intent: write-issues".into()],
    );
    let j = refused(&other, "intent_token_mismatch", &t);
    assert!(
        j["reason"].as_str().unwrap().contains("'write-issues'"),
        "{j}"
    );
    // Without the token, the bare name of an intent that requires one is refused, naming the
    // issuer.
    let bare = env.get(
        "GET",
        "/issues/3",
        &["intentgate-intent: write-issues".into()],
    );
    let j = refused(&bare, "intent_token_required", &t);
    assert!(j["hint"].as_str().unwrap().contains(ISS), "{j}");
    // A bare name of an intent that does not require one still works.
    let plain = env.get(
        "GET",
        "/issues/3",
        &["intentgate-intent: read-issues".into()],
    );
    assert_eq!(plain.status, 200, "{plain:?}");
    let rec = env.proxy.audit_n(5).pop().unwrap();
    assert_eq!(rec["intent"]["source"], "header", "{rec}");
    assert_eq!(rec["intent"]["verified"], false, "{rec}");
    assert_never_leaked(&env, &[&t]);
}

#[test]
fn each_way_a_token_fails_is_its_own_refusal_and_no_token_is_echoed() {
    let env = Env::start("");
    let t = now();
    let claims = |over: Value| {
        let mut c = json!({"iss": ISS, "aud": AGENT, "intent": "read-issues", "iat": t - 10,
                           "exp": t + 300, "jti": "j-1"});
        for (k, v) in over.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    let good = env.mint("read-issues", &["--claims", r#"{"jti": "revoke-me"}"#]);
    // Our issuer's key, tampered: the signature of another token.
    let other = env.mint("read-issues", &[]);
    let forged = format!(
        "{}.{}",
        good.rsplit_once('.').unwrap().0,
        other.rsplit('.').next().unwrap()
    );
    let header_b64 = |h: Value| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(h.to_string())
    };
    let payload = good.split('.').nth(1).unwrap();
    let alg_none = format!("{}.{payload}.", header_b64(json!({"alg": "none"})));
    let cases: Vec<(&str, String)> = vec![
        (
            "intent_token_expired",
            env.mint(
                "read-issues",
                &[
                    "--claims",
                    &json!({"exp": t - 600, "iat": t - 900}).to_string(),
                ],
            ),
        ),
        (
            "intent_token_invalid",
            env.mint(
                "read-issues",
                &["--claims", &json!({"nbf": t + 600}).to_string()],
            ),
        ),
        ("intent_token_bad_signature", forged),
        ("intent_token_invalid", alg_none),
        (
            "intent_token_unknown_issuer",
            env.py_mint(claims(json!({"iss": "https://rogue.example"}))),
        ),
        (
            "intent_token_wrong_audience",
            env.mint("read-issues", &["--claims", r#"{"aud": "other-agent"}"#]),
        ),
        (
            "intent_token_unknown_intent",
            env.mint("delete-everything", &[]),
        ),
        (
            "intent_token_widening",
            env.mint(
                "read-issues",
                &["--claims", r#"{"hosts": ["evil.example"]}"#],
            ),
        ),
        (
            "intent_token_widening",
            env.mint("read-issues", &["--claims", r#"{"methods": ["DELETE"]}"#]),
        ),
        (
            "intent_token_widening",
            env.mint("read-issues", &["--claims", r#"{"paths": ["/admin/**"]}"#]),
        ),
        ("intent_token_invalid", "not-a-token".to_string()),
    ];
    for (i, (code, token)) in cases.iter().enumerate() {
        let out = env.get("GET", "/issues/1", &[tok(token)]);
        let j = refused(&out, code, token);
        let rec = env.proxy.audit_n(i + 1).pop().unwrap();
        assert_eq!(rec["decision"], "deny", "{code}: {rec}");
        assert_eq!(rec["code"], *code, "{rec}");
        assert_eq!(rec["intent"]["verified"], false, "{rec}");
        assert!(j["reason"].as_str().unwrap().len() > 10, "{j}");
    }
    assert_eq!(env.up.requests(), 0, "a refused token's call went upstream");
    // Revoked: the good token works until its jti is listed (the file is re-read).
    assert_eq!(env.get("GET", "/issues/1", &[tok(&good)]).status, 200);
    std::fs::write(&env.revoked, "revoke-me\n").unwrap();
    eventually(
        "the revocation list to be re-read",
        std::time::Duration::from_secs(20),
        || {
            let out = env.get("GET", "/issues/1", &[tok(&good)]);
            (out.status == 403).then(|| refused(&out, "intent_token_revoked", &good))
        },
    );
    let all: Vec<&str> = cases
        .iter()
        .map(|(_, t)| t.as_str())
        .filter(|t| t.contains('.'))
        .collect();
    assert_never_leaked(&env, &all);
    // explain (offline and on the admin API) never prints a token either.
    let explain = curl(&[
        "-X",
        "POST",
        &env.proxy.admin_url("/v1/explain"),
        "-d",
        &json!({"method": "GET", "url": env.url("/issues/1"), "headers": {HEADER: good}})
            .to_string(),
    ]);
    assert!(
        !explain.body.contains(good.rsplit('.').next().unwrap()),
        "{}",
        explain.body
    );
}

#[test]
fn narrowing_claims_narrow_and_rego_reads_the_verified_claims() {
    let env = Env::start("");
    let narrow = json!({"methods": ["GET"], "paths": ["/issues/7"], "hosts": ["localhost"]});
    let t = env.mint(
        "write-issues",
        &["--sub", "alice", "--claims", &narrow.to_string()],
    );
    assert_eq!(env.get("GET", "/issues/7", &[tok(&t)]).status, 200);
    let j = refused(
        &env.get("GET", "/issues/8", &[tok(&t)]),
        "outside_token_scope",
        &t,
    );
    assert!(j["reason"].as_str().unwrap().contains("paths"), "{j}");
    let j = refused(
        &env.get("POST", "/issues/7", &[tok(&t)]),
        "outside_token_scope",
        &t,
    );
    assert!(j["reason"].as_str().unwrap().contains("methods"), "{j}");
    // Rego sees input.intent.token: a write-issues token without a sub is denied by policy.
    let no_sub = env.mint("write-issues", &[]);
    let out = env.get("POST", "/issues/7", &[tok(&no_sub)]);
    assert_eq!(out.status, 403, "{out:?}");
    assert!(
        out.body.contains("needs a token naming its sub"),
        "{}",
        out.body
    );
    let with_sub = env.mint("write-issues", &["--sub", "bob"]);
    assert_eq!(env.get("POST", "/issues/7", &[tok(&with_sub)]).status, 200);
}

#[test]
fn a_session_token_declares_the_intent_until_it_expires_and_beats_bare_names() {
    let env = Env::start("");
    let admin = env.proxy.admin_url("/v1/intent");
    let t = env.mint("write-issues", &["--sub", "alice", "--task", "T-9"]);
    // A bare session name for an intent that requires a token is refused up front.
    let bare = curl(&["-X", "PUT", &admin, "-d", r#"{"name": "write-issues"}"#]);
    refused(&bare, "intent_token_required", &t);
    // A bad token is refused with its code, not echoed.
    let wrong = env.mint("write-issues", &["--claims", r#"{"aud": "someone-else"}"#]);
    let out = curl(&[
        "-X",
        "PUT",
        &admin,
        "-d",
        &json!({"token": wrong}).to_string(),
    ]);
    refused(&out, "intent_token_wrong_audience", &wrong);
    let out = curl(&["-X", "PUT", &admin, "-d", &json!({"token": t}).to_string()]);
    assert_eq!(out.status, 200, "{out:?}");
    assert_eq!(out.json()["session"]["name"], "write-issues");
    assert!(!out.body.contains(&t), "the session echoes the token");
    let got = curl(&[&admin]);
    assert!(!got.body.contains(&t), "GET /v1/intent shows the token");
    // Calls without headers are made under the session's token.
    assert_eq!(env.get("POST", "/issues/1", &[]).status, 200);
    let rec = env.proxy.audit_n(1).pop().unwrap();
    assert_eq!(rec["intent"]["source"], "token", "{rec}");
    assert_eq!(rec["intent"]["task"], "T-9", "{rec}");
    // A bare header name contradicting the session's token is refused.
    let out = env.get(
        "GET",
        "/issues/1",
        &["intentgate-intent: read-issues".into()],
    );
    refused(&out, "intent_token_mismatch", &t);
    assert_never_leaked(&env, &[&t, &wrong]);
}

#[test]
fn a_token_on_a_spliced_connect_is_checked_against_the_destination() {
    let env = Env::start("");
    let t = env.mint("read-issues", &[]);
    let narrowed = env.mint("read-issues", &["--claims", r#"{"paths": ["/issues/1"]}"#]);
    // A spliced tunnel (no CA configured): curl sends the header on the CONNECT only.
    let url = format!("https://localhost:{}/issues/1", env.up.addr.port());
    let connect = |token: &str| {
        curl(&[
            "-x",
            &env.proxy.url(),
            "-p",
            "--proxy-header",
            &tok(token),
            "-k",
            &url,
        ])
    };
    // The upstream speaks plain HTTP: the tunnel opens, then TLS fails; the CONNECT was allowed.
    connect(&t);
    let rec = env.proxy.audit_n(1).pop().unwrap();
    assert_eq!(rec["method"], "CONNECT", "{rec}");
    assert_eq!(rec["intent"]["source"], "token", "{rec}");
    assert_eq!(rec["decision"], "allow", "{rec}");
    // Paths cannot be seen in a spliced tunnel: a token narrowing them is refused there.
    connect(&narrowed);
    let rec = env.proxy.audit_n(2).pop().unwrap();
    assert_eq!(rec["code"], "outside_token_scope", "{rec}");
}

#[test]
fn run_presents_its_intent_token_for_the_child_calls() {
    let env = Env::start("");
    let t = env.mint("write-issues", &["--sub", "alice"]);
    let file = env.keys.path().join("token.jwt");
    std::fs::write(&file, format!("{t}\n")).unwrap();
    // The same config as the proxy's, for `run`.
    let config = env.proxy.dir.path().join("config.yaml");
    let audit = env.keys.path().join("run-audit.log");
    let url = env.url("/issues/5");
    let (code, out, err) = run_cli(&[
        "run",
        "--config",
        p(&config),
        "--audit",
        p(&audit),
        "--intent-token",
        p(&file),
        "--",
        "curl",
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-X",
        "POST",
        &url,
    ]);
    assert_eq!(code, 0, "{out} {err}");
    assert_eq!(out.trim(), "200", "{err}");
    let text = std::fs::read_to_string(&audit).unwrap();
    let rec: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(rec["intent"]["name"], "write-issues", "{rec}");
    assert_eq!(rec["intent"]["source"], "token", "{rec}");
    let sig = t.rsplit('.').next().unwrap();
    assert!(!text.contains(sig) && !err.contains(sig) && !out.contains(sig));
}
