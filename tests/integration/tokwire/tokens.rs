//! Intent tokens through the proxy: declared, refused, narrowed, seen by Rego, never leaked.

use serde_json::{Value, json};

use super::*;
use crate::common::*;

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

#[test]
fn hs256_keyed_with_the_issuers_public_key_and_alg_none_are_refused_on_a_real_request() {
    use aws_lc_rs::hmac;
    use base64::Engine;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let env = Env::start("");
    // A good token of our issuer: its claims and kid are reused, only the algorithm changes.
    let good = env.mint("read-issues", &[]);
    assert_eq!(env.get("GET", "/issues/1", &[tok(&good)]).status, 200);
    let payload = good.split('.').nth(1).unwrap();
    let head: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(good.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    let kid = head["kid"].as_str().unwrap();
    // The public key, in each form a confused verifier might use as the HMAC secret.
    let jwks_text = std::fs::read(env.keys.path().join("iss.jwks.json")).unwrap();
    let jwks: Value = serde_json::from_slice(&jwks_text).unwrap();
    let jwk = &jwks["keys"][0];
    let x = jwk["x"].as_str().unwrap();
    let x_raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(x)
        .unwrap();
    let mut forged = Vec::new();
    for secret in [x.as_bytes(), &x_raw, &jwks_text, jwk.to_string().as_bytes()] {
        let input = format!(
            "{}.{payload}",
            b64(json!({"alg": "HS256", "typ": "JWT", "kid": kid})
                .to_string()
                .as_bytes())
        );
        let mac = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret), input.as_bytes());
        forged.push(format!("{input}.{}", b64(mac.as_ref())));
    }
    for alg in ["none", "None", "NONE"] {
        let h = json!({"alg": alg, "kid": kid}).to_string();
        forged.push(format!("{}.{payload}.", b64(h.as_bytes())));
        // With the good signature left on, too.
        let sig = good.rsplit('.').next().unwrap();
        forged.push(format!("{}.{payload}.{sig}", b64(h.as_bytes())));
    }
    for (i, t) in forged.iter().enumerate() {
        let out = env.get("GET", "/issues/1", &[tok(t)]);
        let j = refused(&out, "intent_token_invalid", t);
        assert!(
            j["reason"].as_str().unwrap().contains("unsupported_alg"),
            "{i}: {j}"
        );
    }
    assert_eq!(env.up.requests(), 1, "a forged token's call went upstream");
    let all: Vec<&str> = forged.iter().map(String::as_str).collect();
    assert_never_leaked(&env, &all);
}
