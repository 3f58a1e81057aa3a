//! Who gets which bundle: the real `intentgate inject` verifies service-account tokens minted by
//! PyPI joserfc (RS256 and ES256) against a JWK Set file or keys found through an HTTPS
//! discovery document, and answers conditional requests and HEAD per RFC 9110; curl is the
//! client.

use std::process::Command;

use serde_json::{Value, json};

use super::bundles::*;
use super::issuer::{FakeApi, ISSUER, Issuer, now};
use crate::common::*;

/// curl -i: (status, headers lowercased, body).
fn fetch(control: &Control, ns: &str, args: &[&str]) -> (u16, String, Vec<u8>) {
    let ca = control.dir().join("ca.pem");
    let out = Command::new("curl")
        .args(["-sS", "-i", "--cacert"])
        .arg(ca)
        .args(args)
        .arg(control.url(ns))
        .output()
        .unwrap();
    let raw = out.stdout;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(raw.len());
    let head = String::from_utf8_lossy(&raw[..split]).to_lowercase();
    let body = raw.get(split + 4..).unwrap_or_default().to_vec();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head, body)
}

fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}")
}

fn error_body(body: &[u8]) -> Value {
    let v: Value = serde_json::from_slice(body).unwrap();
    error_code(&v);
    v
}

#[test]
fn a_token_fetches_its_own_namespace_and_nothing_else() {
    let dir = setup();
    write_catalog(&dir.path().join("policy"), "support", 80, &["/x"]);
    write_catalog(&dir.path().join("policy"), "other", 80, &["/y"]);
    let control = Control::start(dir.path(), 0);
    let issuer = Issuer {
        dir: dir.path().join("issuer"),
    };
    // RS256 and ES256, with and without a key id.
    let mut es = Issuer::claims("support");
    es["_kid"] = Value::Null;
    for token in [issuer.token("support"), issuer.mint("ES256", &es)] {
        let (code, head, body) = fetch(&control, "support", &["-H", &bearer(&token)]);
        assert_eq!(code, 200, "{head}");
        assert!(head.contains("content-type: application/gzip"), "{head}");
        assert!(body.starts_with(&[0x1f, 0x8b]), "a gzip body");
        // Another namespace's bundle: forbidden, whoever the token's pod is.
        let (code, _, body) = fetch(&control, "other", &["-H", &bearer(&token)]);
        assert_eq!(code, 403);
        let e = error_body(&body);
        assert_eq!(error_code(&e), "forbidden");
        assert!(e["reason"].as_str().unwrap().contains("'support'"), "{e}");
    }
    let (code, _, _) = fetch(&control, "other", &["-H", &bearer(&issuer.token("other"))]);
    assert_eq!(code, 200);

    // No token, a token that is not one, and tokens that must not pass: 401 with a challenge.
    let stranger = Issuer::init(&dir.path().join("stranger"));
    let claims = |change: &dyn Fn(&mut Value)| {
        let mut c = Issuer::claims("support");
        change(&mut c);
        issuer.mint("RS256", &c)
    };
    let cases: Vec<(&str, Option<String>, &str)> = vec![
        ("no token", None, "no bearer token"),
        ("garbage", Some("not-a-jwt".into()), "compact JWS"),
        (
            "another issuer's key",
            Some(stranger.token("support")),
            "signature",
        ),
        (
            "expired",
            Some(claims(&|c| c["exp"] = json!(now() - 120))),
            "exp",
        ),
        (
            "not yet valid",
            Some(claims(&|c| c["nbf"] = json!(now() + 600))),
            "nbf",
        ),
        (
            "the API server's audience",
            Some(claims(&|c| {
                c["aud"] = json!(["https://kubernetes.default.svc"])
            })),
            "aud",
        ),
        (
            "another issuer",
            Some(claims(&|c| c["iss"] = json!("https://evil"))),
            "iss",
        ),
        (
            "no namespace",
            Some(claims(&|c| c["kubernetes.io"] = json!({}))),
            "namespace claim",
        ),
    ];
    for (what, token, reason) in cases {
        let header = token.map(|t| bearer(&t));
        let args: Vec<&str> = header.iter().flat_map(|h| ["-H", h.as_str()]).collect();
        let (code, head, body) = fetch(&control, "support", &args);
        assert_eq!(code, 401, "{what}: {head}");
        assert!(head.contains("www-authenticate: bearer"), "{what}: {head}");
        let e = error_body(&body);
        assert_eq!(error_code(&e), "unauthenticated", "{what}");
        assert!(
            e["reason"].as_str().unwrap().contains(reason),
            "{what}: {e}"
        );
    }
}

#[test]
fn conditional_requests_and_head_follow_rfc_9110() {
    let dir = setup();
    write_catalog(&dir.path().join("policy"), "support", 80, &["/x"]);
    let control = Control::start(dir.path(), 0);
    let auth = bearer(
        &Issuer {
            dir: dir.path().join("issuer"),
        }
        .token("support"),
    );
    let (code, head, body) = fetch(&control, "support", &["-H", &auth]);
    assert_eq!(code, 200);
    let etag = head
        .lines()
        .find_map(|l| l.strip_prefix("etag: "))
        .unwrap()
        .trim()
        .to_string();
    let inm = |v: &str| format!("If-None-Match: {v}");
    for (value, want) in [
        (etag.clone(), 304),
        (format!("W/{etag}"), 304),
        (format!("\"nope\", W/\"x\" ,{etag}"), 304),
        ("*".to_string(), 304),
        ("\"nope\", W/\"x\"".to_string(), 200),
        (format!("{etag}garbage"), 200),
    ] {
        let (code, head, body) = fetch(&control, "support", &["-H", &auth, "-H", &inm(&value)]);
        assert_eq!(code, want, "If-None-Match: {value}");
        assert!(head.contains(&format!("etag: {etag}")), "{value}: {head}");
        if want == 304 {
            assert!(body.is_empty());
        }
    }
    // HEAD: the GET's headers (length included), no body; conditional too.
    let (code, head, hbody) = fetch(&control, "support", &["-I", "-H", &auth]);
    assert_eq!(code, 200);
    assert!(hbody.is_empty());
    assert!(head.contains(&format!("etag: {etag}")), "{head}");
    assert!(
        head.contains(&format!("content-length: {}", body.len())),
        "{head}"
    );
    let (code, _, _) = fetch(&control, "support", &["-I", "-H", &auth, "-H", &inm(&etag)]);
    assert_eq!(code, 304);
    // Other methods: 405 with Allow.
    let (code, head, body) = fetch(&control, "support", &["-X", "POST", "-H", &auth]);
    assert_eq!(code, 405);
    assert!(head.contains("allow: get, head"), "{head}");
    error_body(&body);
}

#[test]
fn keys_come_from_the_issuers_discovery_document_and_follow_its_rotation() {
    let dir = setup();
    write_catalog(&dir.path().join("policy"), "support", 80, &["/x"]);
    // The API server stand-in: discovery and keys, only to the control deployment's own token.
    let api_dir = dir.path().join("api");
    std::fs::create_dir_all(&api_dir).unwrap();
    let api_token = dir.path().join("api-token");
    std::fs::write(&api_token, "control-plane-token").unwrap();
    std::fs::write(api_dir.join("bearer"), "control-plane-token").unwrap();
    let issuer = Issuer {
        dir: dir.path().join("issuer"),
    };
    std::fs::copy(issuer.jwks(), api_dir.join("jwks.json")).unwrap();
    let api = FakeApi::start(
        &api_dir,
        &dir.path().join("tls.crt"),
        &dir.path().join("tls.key"),
    );
    std::fs::write(
        api_dir.join("discovery.json"),
        json!({"issuer": ISSUER, "jwks_uri": format!("{}/openid/v1/jwks", api.url()),
               "response_types_supported": ["id_token"], "subject_types_supported": ["public"],
               "id_token_signing_alg_values_supported": ["RS256"]})
        .to_string(),
    )
    .unwrap();
    let config = dir.path().join("inject.yaml");
    std::fs::write(
        &config,
        format!(
            "bundles:\n  policy_dir: {}\n  auth:\n    issuer: {ISSUER}\n    keys:\n      discovery:\n        url: {}/.well-known/openid-configuration\n        ca_file: {}\n        token_file: {}\n",
            dir.path().join("policy").display(),
            api.url(),
            dir.path().join("ca.pem").display(),
            api_token.display()
        ),
    )
    .unwrap();
    let p = |n: &str| dir.path().join(n);
    let control = Control::launch(dir.path(), &p("tls.crt"), &p("tls.key"), &config, 0);
    let get = |token: &str| fetch(&control, "support", &["-H", &bearer(token)]).0;
    let first = issuer.token("support");
    eventually("keys fetched through discovery", WAIT, || {
        (get(&first) == 200).then_some(())
    });
    assert!(
        api.requests()
            .iter()
            .any(|r| r == "/.well-known/openid-configuration token"),
        "{:?}",
        api.requests()
    );
    assert!(api.requests().iter().any(|r| r == "/openid/v1/jwks token"));

    // The issuer rotates to new keys (new key ids): a token signed with them is refused until
    // the server has fetched them, which a token naming an unknown key prompts.
    let rotated = Issuer::init(&dir.path().join("rotated"));
    let keys: Value =
        serde_json::from_str(&std::fs::read_to_string(rotated.jwks()).unwrap()).unwrap();
    let renamed: Vec<Value> = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            let mut k = k.clone();
            k["kid"] = json!(format!("{}-2", k["kid"].as_str().unwrap()));
            k
        })
        .collect();
    std::fs::write(
        api_dir.join("jwks.json"),
        json!({"keys": renamed}).to_string(),
    )
    .unwrap();
    let mut claims = Issuer::claims("support");
    claims["_kid"] = json!("r1-2");
    let new = rotated.mint("RS256", &claims);
    assert_eq!(get(&new), 401, "not fetched yet");
    eventually("rotated keys fetched", WAIT * 3, || {
        (get(&new) == 200).then_some(())
    });
    // The old key is gone from the set: its tokens no longer pass.
    assert_eq!(get(&first), 401);
}
