//! The "minted tokens" cases the core decides: keys made here, tokens signed by our signer and
//! by hand-built JWS (alg none, HS256 with the public key as secret).

use std::io::Write;
use std::time::{Duration, SystemTime};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::hmac;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, RsaKeyPair};
use serde_json::{Value, json};

use super::*;
use crate::config::TokenIssuer;
use crate::token::mint::{MintRequest, SigningKey, jwks_json, mint};

const ISS: &str = "https://orchestrator.example";
const AGENT: &str = "spiffe://cluster.local/ns/a/sa/agent";

fn metrics() -> Arc<crate::metrics::Metrics> {
    Arc::new(crate::metrics::Metrics::new().unwrap())
}

fn ed() -> SigningKey {
    SigningKey::generate_ed25519().unwrap().0
}
fn es() -> SigningKey {
    let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
        .unwrap();
    SigningKey::from_pem(SigningKey::pkcs8_pem(doc.as_ref()).as_bytes()).unwrap()
}
fn rs() -> SigningKey {
    let der = RsaKeyPair::generate(KeySize::Rsa2048)
        .unwrap()
        .as_der()
        .unwrap();
    SigningKey::from_pem(SigningKey::pkcs8_pem(der.as_ref()).as_bytes()).unwrap()
}

/// A file with `text` that lives as long as the test.
fn file(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f
}

struct Setup {
    verifier: Verifier,
    jwks: tempfile::NamedTempFile,
    revoked: tempfile::NamedTempFile,
}

fn setup(keys: &[&SigningKey]) -> Setup {
    let jwks = file(&jwks_json(keys).to_string());
    let revoked = file("# revoked\nold-jti\n");
    let cfg = IntentTokensConfig {
        issuers: vec![TokenIssuer {
            issuer: ISS.into(),
            jwks_file: Some(jwks.path().to_path_buf()),
            ..TokenIssuer::default()
        }],
        revoked: Some(revoked.path().to_path_buf()),
        ..IntentTokensConfig::default()
    };
    let verifier = Verifier::new(&cfg, &[AGENT.to_string(), "agent".into()], &metrics()).unwrap();
    Setup {
        verifier,
        jwks,
        revoked,
    }
}

fn request() -> MintRequest {
    MintRequest {
        issuer: ISS.into(),
        agent: AGENT.into(),
        intent: "read-issues".into(),
        sub: Some("alice".into()),
        task: Some("TICKET-1".into()),
        ttl_seconds: 300,
        ..MintRequest::default()
    }
}

fn now() -> SystemTime {
    SystemTime::now()
}

#[test]
fn valid_tokens_of_each_algorithm_verify_with_their_claims() {
    let keys = [ed(), es(), rs()];
    let s = setup(&keys.iter().collect::<Vec<_>>());
    for key in &keys {
        let mut req = request();
        req.extra = json!({"methods": ["GET"], "hosts": ["api.example.com"], "max_calls": 3})
            .as_object()
            .unwrap()
            .clone();
        let token = mint(key, &req, now()).unwrap();
        let c = s.verifier.verify(&token, now()).unwrap();
        assert_eq!(c.intent, "read-issues");
        assert_eq!(c.sub.as_deref(), Some("alice"));
        assert_eq!(c.task.as_deref(), Some("TICKET-1"));
        assert_eq!(c.aud, vec![AGENT.to_string()]);
        assert_eq!(c.methods, Some(vec!["GET".to_string()]));
        assert_eq!(c.hosts, Some(vec!["api.example.com".to_string()]));
        assert_eq!(c.max_calls, Some(3));
    }
}

#[test]
fn times_are_checked_with_the_clock_skew() {
    let key = ed();
    let s = setup(&[&key]);
    let token = mint(&key, &request(), now()).unwrap();
    // exp = now + 300; the skew is 30 s.
    let later = now() + Duration::from_secs(300 + 31);
    assert_eq!(s.verifier.verify(&token, later), Err(TokenError::Expired));
    let within = now() + Duration::from_secs(300 + 25);
    assert!(s.verifier.verify(&token, within).is_ok());
    // Issued in the future (iat), or not before a later time (nbf).
    let early = now() - Duration::from_secs(60);
    let fresh = mint(&key, &request(), now()).unwrap();
    assert_eq!(
        s.verifier.verify(&fresh, early),
        Err(TokenError::NotYetValid)
    );
    let mut req = request();
    req.extra.insert("nbf".into(), (unix(now()) + 120).into());
    let nbf = mint(&key, &req, now()).unwrap();
    assert_eq!(s.verifier.verify(&nbf, now()), Err(TokenError::NotYetValid));
}

#[test]
fn a_token_for_another_agent_or_from_another_issuer_is_refused() {
    let key = ed();
    let s = setup(&[&key]);
    let mut other = request();
    other.agent = "spiffe://cluster.local/ns/a/sa/other".into();
    let t = mint(&key, &other, now()).unwrap();
    assert_eq!(s.verifier.verify(&t, now()), Err(TokenError::WrongAudience));
    // aud as a list that names this agent's plain id is accepted.
    let mut list = request();
    list.extra.insert("aud".into(), json!(["x", "agent"]));
    assert!(
        s.verifier
            .verify(&mint(&key, &list, now()).unwrap(), now())
            .is_ok()
    );
    let mut stranger = request();
    stranger.issuer = "https://evil.example".into();
    let t = mint(&key, &stranger, now()).unwrap();
    assert_eq!(s.verifier.verify(&t, now()), Err(TokenError::UnknownIssuer));
}

#[test]
fn signatures_algorithms_and_key_ids_are_checked() {
    let key = ed();
    let s = setup(&[&key]);
    let token = mint(&key, &request(), now()).unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    // Another key with the same kid: a bad signature.
    let forger = ed().with_kid(key.kid().unwrap().to_string());
    let forged = mint(&forger, &request(), now()).unwrap();
    assert_eq!(
        s.verifier.verify(&forged, now()),
        Err(TokenError::BadSignature)
    );
    // Claims changed after signing.
    let mut claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    claims["intent"] = "admin".into();
    let changed = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        parts[2]
    );
    assert_eq!(
        s.verifier.verify(&changed, now()),
        Err(TokenError::BadSignature)
    );
    // alg none, with and without a signature part.
    let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    for t in [
        format!("{none_header}.{}.", parts[1]),
        format!("{none_header}.{}.{}", parts[1], parts[2]),
    ] {
        assert_eq!(
            s.verifier.verify(&t, now()),
            Err(TokenError::UnsupportedAlg)
        );
    }
    // HS256 keyed with the public JWK (the classic confusion): refused before any key is used.
    let kid = key.kid().unwrap();
    let header = URL_SAFE_NO_PAD.encode(json!({"alg": "HS256", "kid": kid}).to_string());
    let input = format!("{header}.{}", parts[1]);
    let secret = key.public_jwk().unwrap()["x"].as_str().unwrap().to_string();
    let mac = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()),
        input.as_bytes(),
    );
    let hs = format!("{input}.{}", URL_SAFE_NO_PAD.encode(mac));
    assert_eq!(
        s.verifier.verify(&hs, now()),
        Err(TokenError::UnsupportedAlg)
    );
    // ES256 in the header with the Ed25519 key's kid: the alg does not match the key type.
    let header = URL_SAFE_NO_PAD.encode(json!({"alg": "ES256", "kid": kid}).to_string());
    let mismatch = format!("{header}.{}.{}", parts[1], parts[2]);
    assert_eq!(
        s.verifier.verify(&mismatch, now()),
        Err(TokenError::AlgKeyMismatch)
    );
    // A kid the issuer does not have.
    let stranger = ed();
    let t = mint(&stranger, &request(), now()).unwrap();
    assert_eq!(s.verifier.verify(&t, now()), Err(TokenError::UnknownKid));
    for bad in ["", "a.b", "a.b.c.d", "!!.??.**"] {
        assert_eq!(s.verifier.verify(bad, now()), Err(TokenError::Malformed));
    }
}

#[test]
fn required_claims_must_be_present() {
    let key = ed();
    let s = setup(&[&key]);
    let no_intent = key
        .sign(
            "JWT",
            &json!({"iss": ISS, "aud": AGENT, "exp": unix(now()) + 60}),
        )
        .unwrap();
    assert_eq!(
        s.verifier.verify(&no_intent, now()),
        Err(TokenError::MissingClaim)
    );
    let no_exp = key
        .sign("JWT", &json!({"iss": ISS, "aud": AGENT, "intent": "x"}))
        .unwrap();
    assert_eq!(
        s.verifier.verify(&no_exp, now()),
        Err(TokenError::MissingClaim)
    );
    let bad_type = key
        .sign(
            "JWT",
            &json!({"iss": ISS, "aud": AGENT, "intent": "x", "exp": "soon"}),
        )
        .unwrap();
    assert_eq!(
        s.verifier.verify(&bad_type, now()),
        Err(TokenError::InvalidClaim)
    );
}

#[test]
fn a_revoked_jti_is_refused_even_when_cached() {
    let key = ed();
    let s = setup(&[&key]);
    let mut req = request();
    req.jti = Some("old-jti".into());
    let t = mint(&key, &req, now()).unwrap();
    assert_eq!(s.verifier.verify(&t, now()), Err(TokenError::Revoked));
    req.jti = Some("task-7".into());
    let t = mint(&key, &req, now()).unwrap();
    assert!(s.verifier.verify(&t, now()).is_ok());
    assert_eq!(s.verifier.cached(), 1);
    // Revoked while cached: the reloaded list applies to the cached entry too.
    std::fs::write(s.revoked.path(), "old-jti\ntask-7\nand-a-longer-line\n").unwrap();
    s.verifier.refresh_now();
    assert_eq!(s.verifier.verify(&t, now()), Err(TokenError::Revoked));
}

#[test]
fn rotation_accepts_old_and_new_kid_during_overlap_and_keeps_the_last_good_set() {
    let (old, new) = (ed(), es());
    let s = setup(&[&old]);
    let t_old = mint(&old, &request(), now()).unwrap();
    let t_new = mint(&new, &request(), now()).unwrap();
    assert!(s.verifier.verify(&t_old, now()).is_ok());
    assert_eq!(
        s.verifier.verify(&t_new, now()),
        Err(TokenError::UnknownKid)
    );
    // Overlap: both kids published.
    std::fs::write(s.jwks.path(), jwks_json(&[&old, &new]).to_string()).unwrap();
    s.verifier.refresh_now();
    assert!(s.verifier.verify(&t_old, now()).is_ok());
    assert!(s.verifier.verify(&t_new, now()).is_ok());
    // A broken file keeps the last good set.
    std::fs::write(s.jwks.path(), "{not json").unwrap();
    s.verifier.refresh_now();
    assert!(s.verifier.verify(&t_new, now()).is_ok());
    // The old key retired: its tokens stop verifying, even ones cached before.
    std::fs::write(s.jwks.path(), jwks_json(&[&new]).to_string()).unwrap();
    s.verifier.refresh_now();
    assert_eq!(
        s.verifier.verify(&t_old, now()),
        Err(TokenError::UnknownKid)
    );
    assert!(s.verifier.verify(&t_new, now()).is_ok());
}

#[test]
fn messages_never_contain_the_token() {
    let key = ed();
    let s = setup(&[&key]);
    let t = mint(&key, &request(), now()).unwrap();
    let later = now() + Duration::from_secs(3600);
    let e = s.verifier.verify(&t, later).unwrap_err();
    for part in t.split('.') {
        assert!(!e.to_string().contains(part) && !format!("{e:?}").contains(part));
    }
    assert_eq!(e.code(), "expired");
}

#[test]
fn an_issuer_whose_jwks_url_was_never_fetched_has_its_tokens_refused() {
    let key = ed();
    let cfg = IntentTokensConfig {
        issuers: vec![TokenIssuer {
            issuer: ISS.into(),
            jwks_url: Some("https://127.0.0.1:9/jwks".into()),
            ..TokenIssuer::default()
        }],
        ..IntentTokensConfig::default()
    };
    // No runtime here: nothing is fetched.
    let verifier = Verifier::new(&cfg, &[AGENT.to_string()], &metrics()).unwrap();
    let token = mint(&key, &request(), now()).unwrap();
    assert_eq!(
        verifier.verify(&token, now()),
        Err(TokenError::KeysUnavailable)
    );
}
