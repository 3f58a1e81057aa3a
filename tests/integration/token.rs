//! `intentgate token`: keys, intent tokens and attestations made by the real binary are verified
//! by PyPI PyJWT (code we did not write, tests/clients/pyjwt_tokens.py), and tokens PyJWT mints
//! are verified by `intentgate token verify` — against JWK Sets in files and over HTTPS.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::tls::TestCa;
use crate::common::*;

const PY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/pyjwt_tokens.py");
const STATIC_HTTPS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/static_https.py");
const DOC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/intent-tokens.md");
const ISS: &str = "https://orchestrator.example";
const AGENT: &str = "spiffe://cluster.local/ns/agents/sa/triage";

fn now() -> u64 {
    crate::issuer::now()
}

/// Runs the PyJWT helper: (exit code, stdout, stderr).
fn py(args: &[&str]) -> (i32, String, String) {
    let out = Command::new("python3").arg(PY).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(r: (i32, String, String)) -> String {
    assert_eq!(r.0, 0, "stdout: {}\nstderr: {}", r.1, r.2);
    r.1.trim().to_string()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// `intentgate token keygen` into `dir/name.pem`; the JWK Set it printed, written to
/// `dir/name.jwks.json`.
fn keygen(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let key = dir.join(format!("{name}.pem"));
    let jwks = ok(run_cli(&["token", "keygen", "--out", p(&key)]));
    let file = dir.join(format!("{name}.jwks.json"));
    std::fs::write(&file, &jwks).unwrap();
    (key, file)
}

#[test]
fn tokens_minted_by_intentgate_verify_with_pyjwt_for_each_algorithm() {
    let dir = tempfile::tempdir().unwrap();
    let (ed_key, ed_jwks) = keygen(dir.path(), "ed");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&ed_key).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // A second keygen over the same file is refused.
    assert_eq!(run_cli(&["token", "keygen", "--out", p(&ed_key)]).0, 2);
    let mut keys = vec![(ed_key, ed_jwks)];
    // ES256 and RS256 keys made by Python's cryptography; their JWK Set printed by us.
    for alg in ["ES256", "RS256"] {
        let d = dir.path().join(alg);
        std::fs::create_dir(&d).unwrap();
        ok(py(&["keygen", alg, p(&d)]));
        let ours = ok(run_cli(&["token", "jwks", "--key", p(&d.join("key.pem"))]));
        let file = d.join("ours.jwks.json");
        std::fs::write(&file, ours).unwrap();
        keys.push((d.join("key.pem"), file));
    }
    for (key, jwks) in &keys {
        let claims = json!({"methods": ["GET"], "hosts": ["api.github.com"], "max_calls": 5});
        let token = ok(run_cli(&[
            "token",
            "mint",
            "--key",
            p(key),
            "--intent",
            "read-issues",
            "--agent",
            AGENT,
            "--ttl",
            "5m",
            "--issuer",
            ISS,
            "--sub",
            "alice",
            "--task",
            "TICKET-42",
            "--claims",
            &claims.to_string(),
        ]));
        let verified: Value =
            serde_json::from_str(&ok(py(&["verify", p(jwks), &token, ISS, AGENT]))).unwrap();
        assert_eq!(verified["intent"], "read-issues", "{}", key.display());
        assert_eq!(verified["sub"], "alice");
        assert_eq!(verified["task"], "TICKET-42");
        assert_eq!(verified["methods"], json!(["GET"]));
        assert_eq!(verified["max_calls"], 5);
        let exp = verified["exp"].as_u64().unwrap();
        assert_eq!(exp - verified["iat"].as_u64().unwrap(), 300);
        assert!(verified["jti"].as_str().is_some_and(|j| !j.is_empty()));
        // And our own verify agrees.
        ok(run_cli(&[
            "token",
            "verify",
            "--jwks",
            p(jwks),
            &token,
            "--audience",
            AGENT,
            "--issuer",
            ISS,
        ]));
    }
}

#[test]
fn tokens_minted_by_pyjwt_verify_with_intentgate_and_refusals_name_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    for alg in ["EdDSA", "ES256", "RS256"] {
        let d = dir.path().join(alg);
        std::fs::create_dir(&d).unwrap();
        ok(py(&["keygen", alg, p(&d)]));
        let jwks = d.join("jwks.json");
        let claims = |over: Value| {
            let mut c = json!({"iss": ISS, "aud": [AGENT], "sub": "alice", "intent": "read-issues",
                               "task": "TICKET-42", "iat": now(), "exp": now() + 300, "jti": "j-1"});
            for (k, v) in over.as_object().unwrap() {
                c[k] = v.clone();
            }
            c
        };
        let verify = |token: &str| {
            run_cli(&[
                "token",
                "verify",
                "--jwks",
                p(&jwks),
                token,
                "--audience",
                AGENT,
                "--issuer",
                ISS,
            ])
        };
        let good = ok(py(&["mint", p(&d), alg, &claims(json!({})).to_string()]));
        let out: Value = serde_json::from_str(&ok(verify(&good))).unwrap();
        assert_eq!(out["intent"], "read-issues", "{alg}");
        let cases = [
            (json!({"exp": now() - 120, "iat": now() - 420}), "expired"),
            (json!({"nbf": now() + 600}), "not_yet_valid"),
            (
                json!({"aud": "spiffe://cluster.local/ns/agents/sa/other"}),
                "wrong_audience",
            ),
            (json!({"iss": "https://evil.example"}), "unknown_issuer"),
        ];
        for (over, reason) in cases {
            let token = ok(py(&["mint", p(&d), alg, &claims(over).to_string()]));
            let (code, stdout, stderr) = verify(&token);
            assert_eq!(code, 1, "{alg} {reason}: {stdout}");
            assert!(stderr.contains(&format!("({reason})")), "{alg}: {stderr}");
            assert!(!stderr.contains(&token) && !stderr.contains(token.split('.').nth(1).unwrap()));
        }
        // A signature from another key with the same kid.
        let other = dir.path().join(format!("{alg}-other"));
        std::fs::create_dir(&other).unwrap();
        ok(py(&["keygen", alg, p(&other)]));
        let forged = ok(py(&[
            "mint",
            p(&other),
            alg,
            &claims(json!({})).to_string(),
        ]));
        let (code, _, stderr) = verify(&forged);
        assert_eq!(
            (code, stderr.contains("(bad_signature)")),
            (1, true),
            "{alg}: {stderr}"
        );
        // alg none: the payload of the good token with no signature.
        let payload = good.split('.').nth(1).unwrap();
        let none = format!("eyJhbGciOiJub25lIn0.{payload}.");
        let (code, _, stderr) = verify(&none);
        assert_eq!(
            (code, stderr.contains("(unsupported_alg)")),
            (1, true),
            "{stderr}"
        );
    }
}

#[test]
fn attestations_verify_with_pyjwt_and_a_changed_request_fails_the_binding() {
    let dir = tempfile::tempdir().unwrap();
    let (key, jwks) = keygen(dir.path(), "sidecar");
    let sidecar = "spiffe://cluster.local/ns/agents/sa/triage";
    let url = "https://api.github.com/repos/o/r/issues?state=open";
    let att = ok(run_cli(&[
        "token",
        "attest",
        "--key",
        p(&key),
        "--issuer",
        sidecar,
        "--agent",
        sidecar,
        "--method",
        "GET",
        "--url",
        url,
        "--intent",
        "read-issues",
        "--task",
        "TICKET-42",
        "--token-sub",
        "alice",
        "--decision-id",
        "d-1",
        "--policy-revision",
        "r7",
    ]));
    let request = ["GET", "api.github.com", "/repos/o/r/issues?state=open"];
    let mut args = vec!["verify", p(&jwks), &att, sidecar, "api.github.com"];
    args.extend(request);
    let claims: Value = serde_json::from_str(&ok(py(&args))).unwrap();
    assert_eq!(claims["intent"], "read-issues");
    assert_eq!(claims["token_sub"], "alice");
    assert_eq!(claims["decision_id"], "d-1");
    assert_eq!(claims["policy_revision"], "r7");
    assert!(claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap() <= 60);
    // The request changed after signing: PyJWT's binding check and ours refuse it.
    let mut changed = vec!["verify", p(&jwks), &att, sidecar, "api.github.com"];
    changed.extend(["POST", "api.github.com", "/repos/o/r/issues?state=open"]);
    assert_eq!(py(&changed).0, 1);
    let verify = |method: &str, url: &str| {
        run_cli(&[
            "token",
            "verify",
            "--jwks",
            p(&jwks),
            &att,
            "--method",
            method,
            "--url",
            url,
        ])
    };
    ok(verify("GET", url));
    for (m, u) in [
        ("POST", url),
        (
            "GET",
            "https://api.github.com/repos/o/r/issues?state=closed",
        ),
        ("GET", "https://evil.example/repos/o/r/issues?state=open"),
    ] {
        let (code, _, stderr) = verify(m, u);
        assert_eq!(
            (code, stderr.contains("(binding_mismatch)")),
            (1, true),
            "{m} {u}: {stderr}"
        );
    }
}

#[test]
fn verify_reads_the_jwks_over_https() {
    let dir = tempfile::tempdir().unwrap();
    let (key, jwks) = keygen(dir.path(), "k");
    let served = dir.path().join("www/.well-known");
    std::fs::create_dir_all(&served).unwrap();
    std::fs::copy(&jwks, served.join("jwks.json")).unwrap();
    let ca = TestCa::new("jwks test CA");
    let (cert, cert_key) = ca.server_pem(&["127.0.0.1"]);
    let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_file, cert).unwrap();
    std::fs::write(&key_file, cert_key).unwrap();
    let ca_file = ca.write_pem(dir.path());
    let port_file = dir.path().join("port");
    let mut server = Command::new("python3")
        .args([
            STATIC_HTTPS,
            p(&dir.path().join("www")),
            p(&cert_file),
            p(&key_file),
            p(&port_file),
        ])
        .spawn()
        .unwrap();
    let port: u16 = eventually("the JWKS server", Duration::from_secs(20), || {
        std::fs::read_to_string(&port_file)
            .ok()?
            .trim()
            .parse()
            .ok()
    });
    let token = ok(run_cli(&[
        "token",
        "mint",
        "--key",
        p(&key),
        "--intent",
        "i",
        "--agent",
        AGENT,
    ]));
    let url = format!("https://127.0.0.1:{port}/.well-known/jwks.json");
    let r = run_cli(&[
        "token",
        "verify",
        "--jwks",
        &url,
        "--ca",
        p(&ca_file),
        &token,
    ]);
    // Without the CA the server is not trusted: cannot check (2), not "refused".
    let untrusted = run_cli(&["token", "verify", "--jwks", &url, &token]);
    let _ = server.kill();
    let _ = server.wait();
    ok(r);
    assert_eq!(untrusted.0, 2, "{}", untrusted.2);
}

#[test]
fn the_orchestrator_snippet_in_the_docs_issues_a_token_intentgate_accepts() {
    let doc = std::fs::read_to_string(DOC).unwrap();
    let start = doc
        .find("```python\n")
        .expect("a python snippet in docs/intent-tokens.md")
        + 10;
    let snippet = &doc[start..start + doc[start..].find("```").unwrap()];
    let dir = tempfile::tempdir().unwrap();
    let (_, jwks) = keygen(dir.path(), "orchestrator");
    std::fs::rename(
        dir.path().join("orchestrator.pem"),
        dir.path().join("orchestrator-key.pem"),
    )
    .unwrap();
    std::fs::rename(&jwks, dir.path().join("orchestrator-jwks.json")).unwrap();
    let out = Command::new("python3")
        .args(["-c", snippet])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let jwks = dir.path().join("orchestrator-jwks.json");
    let claims: Value = serde_json::from_str(&ok(run_cli(&[
        "token",
        "verify",
        "--jwks",
        p(&jwks),
        &token,
        "--audience",
        AGENT,
        "--issuer",
        ISS,
    ])))
    .unwrap();
    assert_eq!(claims["intent"], "read-issues");
    assert!(claims["exp"].as_u64().unwrap() <= now() + 300);
}

#[test]
fn intent_token_config_errors_name_the_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let (_, jwks) = keygen(dir.path(), "k");
    std::fs::copy(&jwks, dir.path().join("issuer.json")).unwrap();
    let good = dir.path().join("good.yaml");
    std::fs::write(
        &good,
        format!("intent_tokens:\n  issuers:\n    - issuer: {ISS}\n      jwks_file: issuer.json\n"),
    )
    .unwrap();
    let (code, _, stderr) = run_cli(&["check", "--config", p(&good)]);
    assert_eq!(code, 0, "{stderr}");
    for (name, body, field) in [
        (
            "missing.yaml",
            "intent_tokens:\n  issuers:\n    - issuer: x\n      jwks_file: nope.json\n",
            "intent_tokens.issuers[0].jwks_file",
        ),
        (
            "url.yaml",
            "intent_tokens:\n  issuers:\n    - issuer: x\n      jwks_url: http://x.example/jwks\n",
            "intent_tokens.issuers[0].jwks_url",
        ),
        (
            "url_ca.yaml",
            "intent_tokens:\n  issuers:\n    - issuer: x\n      jwks_url: https://x.example/jwks\n      ca_file: nope.pem\n",
            "intent_tokens.issuers[0].ca_file",
        ),
        (
            "skew.yaml",
            "intent_tokens:\n  clock_skew_seconds: 3600\n",
            "intent_tokens.clock_skew_seconds",
        ),
        (
            "required.yaml",
            "intent_tokens:\n  required: true\n",
            "intent_tokens.required",
        ),
        ("typo.yaml", "intent_tokens:\n  issuer: []\n", "issuer"),
    ] {
        let f = dir.path().join(name);
        std::fs::write(&f, body).unwrap();
        let (code, _, stderr) = run_cli(&["check", "--config", p(&f)]);
        assert_eq!(code, 2, "{name}: {stderr}");
        assert!(
            stderr.contains(name) && stderr.contains(field),
            "{name}: {stderr}"
        );
    }
}
