//! Attestations: signed, bound to the request, verified against the JWKS they are published in.

use std::time::{Duration, SystemTime};

use super::*;
use crate::token::mint::SigningKey;

fn attester() -> Attester {
    let (key, _) = SigningKey::generate_ed25519().unwrap();
    Attester::new(key, "spiffe://cluster.local/ns/a/sa/agent".into(), 30).unwrap()
}

fn statement() -> Statement<'static> {
    Statement {
        sub: "spiffe://cluster.local/ns/a/sa/agent",
        aud: "api.example.com",
        intent: Some("read-issues"),
        task: Some("TICKET-1"),
        token_sub: Some("alice"),
        decision_id: "0123abcd0000000000000001",
        policy_revision: "r7",
        method: "GET",
        authority: "api.example.com",
        path_and_query: "/v1/issues?state=open",
    }
}

#[test]
fn an_attestation_verifies_with_its_binding_and_claims() {
    let a = attester();
    let now = SystemTime::now();
    let value = a.header_value(&statement(), now).unwrap();
    let keys = Jwks::parse(a.jwks().to_string().as_bytes()).unwrap();
    let expect = Expected {
        issuer: Some("spiffe://cluster.local/ns/a/sa/agent"),
        audience: Some("api.example.com"),
        request: Some(("GET", "api.example.com", "/v1/issues?state=open")),
    };
    let c = verify_token(&keys, &value, &expect, now, 0).unwrap();
    assert_eq!(c["intent"], "read-issues");
    assert_eq!(c["token_sub"], "alice");
    assert_eq!(c["decision_id"], "0123abcd0000000000000001");
    assert_eq!(c["policy_revision"], "r7");
    assert_eq!(c["exp"].as_u64().unwrap() - c["iat"].as_u64().unwrap(), 30);
    let header: serde_json::Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(value.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["alg"], "EdDSA");
    assert_eq!(header["typ"], TYP);
    assert_eq!(header["kid"], a.jwks()["keys"][0]["kid"]);
}

#[test]
fn a_changed_request_fails_the_binding_and_late_use_fails_the_time() {
    let a = attester();
    let now = SystemTime::now();
    let value = a.header_value(&statement(), now).unwrap();
    let keys = Jwks::parse(a.jwks().to_string().as_bytes()).unwrap();
    for (m, au, pq) in [
        ("POST", "api.example.com", "/v1/issues?state=open"),
        ("GET", "evil.example.com", "/v1/issues?state=open"),
        ("GET", "api.example.com", "/v1/issues?state=closed"),
        // The separator keeps parts apart: moving text across them changes the binding.
        ("GET", "api.example.com\n/v1", "/issues?state=open"),
    ] {
        let expect = Expected {
            request: Some((m, au, pq)),
            ..Expected::default()
        };
        assert_eq!(
            verify_token(&keys, &value, &expect, now, 0),
            Err(TokenError::BindingMismatch)
        );
    }
    let late = now + Duration::from_secs(31);
    assert_eq!(
        verify_token(&keys, &value, &Expected::default(), late, 0),
        Err(TokenError::Expired)
    );
    let wrong_aud = Expected {
        audience: Some("other.example.com"),
        ..Expected::default()
    };
    assert_eq!(
        verify_token(&keys, &value, &wrong_aud, now, 0),
        Err(TokenError::WrongAudience)
    );
}

#[test]
fn the_ttl_is_capped_and_only_ed25519_signs_attestations() {
    let (key, _) = SigningKey::generate_ed25519().unwrap();
    let a = Attester::new(key, "i".into(), 3600).unwrap();
    let value = a.header_value(&statement(), SystemTime::now()).unwrap();
    let keys = Jwks::parse(a.jwks().to_string().as_bytes()).unwrap();
    let c = verify_token(&keys, &value, &Expected::default(), SystemTime::now(), 0).unwrap();
    assert_eq!(
        c["exp"].as_u64().unwrap() - c["iat"].as_u64().unwrap(),
        MAX_TTL_SECONDS
    );
    // The binding is the documented hash.
    assert_eq!(
        c["req"],
        URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(
            &SHA256,
            b"GET\napi.example.com\n/v1/issues?state=open"
        ))
    );
}

#[test]
fn the_jwk_thumbprint_matches_rfc_7638() {
    // RFC 8037 appendix A.3: the thumbprint of its Ed25519 example key.
    let pkcs8_prefix = [
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    let seed = URL_SAFE_NO_PAD
        .decode("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A")
        .unwrap();
    let der = [&pkcs8_prefix[..], &seed].concat();
    let key = SigningKey::from_pem(SigningKey::pkcs8_pem(&der).as_bytes()).unwrap();
    assert_eq!(
        key.public_jwk().unwrap()["x"],
        "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
    );
    assert_eq!(
        key.kid(),
        Some("kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k")
    );
}

#[test]
fn the_claims_written_by_hand_are_json_for_any_text() {
    let a = Attester::new(
        SigningKey::generate_ed25519().unwrap().0,
        "iss \"quoted\"".into(),
        30,
    )
    .unwrap();
    let task = "line 1\nline 2\t\"quoted\" back\\slash \u{1}\u{1f} é — ✓";
    let s = Statement {
        task: Some(task),
        token_sub: None,
        ..statement()
    };
    let now = SystemTime::now();
    let value = a.header_value(&s, now).unwrap();
    let keys = Jwks::parse(a.jwks().to_string().as_bytes()).unwrap();
    let c = verify_token(&keys, &value, &Expected::default(), now, 0).unwrap();
    assert_eq!(c["task"], task);
    assert_eq!(c["iss"], "iss \"quoted\"");
    let mut names: Vec<&str> = c.as_object().unwrap().keys().map(|k| k.as_str()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "aud",
            "decision_id",
            "exp",
            "iat",
            "intent",
            "iss",
            "policy_revision",
            "req",
            "sub",
            "task"
        ]
    );
    // The bytes are what a JSON serialiser writes: compact, in the documented order.
    let claims = URL_SAFE_NO_PAD
        .decode(value.split('.').nth(1).unwrap())
        .unwrap();
    let expected = format!(
        "{{\"iss\":{},\"sub\":\"{}\",\"aud\":\"api.example.com\",\"intent\":\"read-issues\",\
         \"task\":{},\"decision_id\":\"0123abcd0000000000000001\",\"policy_revision\":\"r7\",\
         \"iat\":{},\"exp\":{},\"req\":\"{}\"}}",
        serde_json::to_string("iss \"quoted\"").unwrap(),
        s.sub,
        serde_json::to_string(task).unwrap(),
        c["iat"],
        c["exp"],
        request_binding("GET", "api.example.com", "/v1/issues?state=open"),
    );
    assert_eq!(String::from_utf8(claims).unwrap(), expected);
}

#[test]
fn the_binding_and_the_numbers_are_the_known_values() {
    // base64url(SHA-256("GET\napi.example.com\n/v1/issues?state=open")), by Python's hashlib.
    assert_eq!(
        request_binding("GET", "api.example.com", "/v1/issues?state=open"),
        "HNG7TKi5EXYT8_oX8mG2-jlm-hKg16jxiWkuXxY3zMs"
    );
    for n in [0, 7, 10, 59, 1_765_000_000, 9_999_999_999, u64::MAX] {
        let mut out = b"x".to_vec();
        decimal(&mut out, n);
        assert_eq!(out, format!("x{n}").into_bytes());
    }
}
