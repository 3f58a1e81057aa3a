//! JWS verification with keys made here (aws-lc-rs signs; the tests build the JWK Set by hand).

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair, RSA_PKCS1_SHA256, RsaKeyPair,
};
use serde_json::json;

use super::*;

fn enc(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

/// Reads one DER INTEGER at the start of `d`: (content, rest).
fn der_int(d: &[u8]) -> (&[u8], &[u8]) {
    assert_eq!(d[0], 0x02);
    let (len, at) = match d[1] {
        l if l < 0x80 => (l as usize, 2),
        0x81 => (d[2] as usize, 3),
        0x82 => ((d[2] as usize) << 8 | d[3] as usize, 4),
        _ => panic!("long DER length"),
    };
    (&d[at..at + len], &d[at + len..])
}

enum Signer {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
}

impl Signer {
    fn rsa() -> Self {
        Signer::Rsa(RsaKeyPair::generate(KeySize::Rsa2048).unwrap())
    }
    fn ec() -> Self {
        Signer::Ec(EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap())
    }

    /// The public JWK.
    fn jwk(&self, kid: &str) -> Value {
        match self {
            Signer::Rsa(k) => {
                // RSAPublicKey ::= SEQUENCE { n INTEGER, e INTEGER }
                let der = k.public_key().as_ref();
                let body = &der[if der[1] == 0x82 { 4 } else { 2 }..];
                let (n, rest) = der_int(body);
                let (e, _) = der_int(rest);
                json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": enc(n), "e": enc(e)})
            }
            Signer::Ec(k) => {
                let p = k.public_key().as_ref();
                json!({"kty": "EC", "crv": "P-256", "kid": kid, "x": enc(&p[1..33]), "y": enc(&p[33..])})
            }
        }
    }

    fn sign(&self, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            enc(header.to_string().as_bytes()),
            enc(claims.to_string().as_bytes())
        );
        let sig = match self {
            Signer::Rsa(k) => {
                let mut s = vec![0; k.public_modulus_len()];
                k.sign(
                    &RSA_PKCS1_SHA256,
                    &SystemRandom::new(),
                    input.as_bytes(),
                    &mut s,
                )
                .unwrap();
                s
            }
            Signer::Ec(k) => k
                .sign(&SystemRandom::new(), input.as_bytes())
                .unwrap()
                .as_ref()
                .to_vec(),
        };
        format!("{input}.{}", enc(&sig))
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims() -> Value {
    json!({"iss": "https://issuer.test", "aud": ["intentgate-bundles"], "exp": now() + 600,
           "nbf": now() - 5, "kubernetes.io": {"namespace": "support"}})
}

fn expect() -> Expect<'static> {
    Expect {
        issuer: "https://issuer.test",
        audience: "intentgate-bundles",
        leeway: Duration::from_secs(30),
        now: SystemTime::now(),
    }
}

#[test]
fn rs256_and_es256_tokens_verify_and_their_claims_are_checked() {
    let (rsa, ec) = (Signer::rsa(), Signer::ec());
    let set = Jwks::parse(
        json!({"keys": [rsa.jwk("r1"), ec.jwk("e1"),
                        {"kty": "oct", "k": "c2VjcmV0"}, {"kty": "RSA", "use": "enc", "n": "AQ", "e": "AQAB"}]})
        .to_string()
        .as_bytes(),
    )
    .unwrap();
    assert_eq!(
        set.len(),
        2,
        "the symmetric and the encryption key are skipped"
    );
    assert!(set.has_kid("r1") && !set.has_kid("zz"));
    for (signer, alg, kid) in [(&rsa, "RS256", "r1"), (&ec, "ES256", "e1")] {
        let t = signer.sign(&json!({"alg": alg, "kid": kid}), &claims());
        let v = set.verify(&t).unwrap();
        v.check(&expect()).unwrap();
        assert_eq!(v.claims["kubernetes.io"]["namespace"], "support");
        assert_eq!(unverified_kid(&t).as_deref(), Some(kid));
        // Without a kid every key of the algorithm is tried.
        let t = signer.sign(&json!({"alg": alg}), &claims());
        set.verify(&t).unwrap();
    }
}

#[test]
fn forged_and_confused_tokens_are_refused() {
    let (rsa, other) = (Signer::rsa(), Signer::rsa());
    let set = Jwks::parse(json!({"keys": [rsa.jwk("r1")]}).to_string().as_bytes()).unwrap();
    let good = rsa.sign(&json!({"alg": "RS256", "kid": "r1"}), &claims());
    // Another key under our kid.
    let forged = other.sign(&json!({"alg": "RS256", "kid": "r1"}), &claims());
    assert_eq!(set.verify(&forged).unwrap_err(), JwsError::Signature);
    // A changed payload under the old signature.
    let parts: Vec<&str> = good.split('.').collect();
    let mut c = claims();
    c["kubernetes.io"]["namespace"] = json!("kube-system");
    let swapped = format!(
        "{}.{}.{}",
        parts[0],
        enc(c.to_string().as_bytes()),
        parts[2]
    );
    assert_eq!(set.verify(&swapped).unwrap_err(), JwsError::Signature);
    // alg none, HMAC with the public key, an unknown kid, an ES256 header on an RSA key.
    let none = format!("{}.{}.", enc(br#"{"alg":"none"}"#), parts[1]);
    assert!(matches!(set.verify(&none), Err(JwsError::Algorithm(a)) if a == "none"));
    let hs = format!("{}.{}.{}", enc(br#"{"alg":"HS256"}"#), parts[1], parts[2]);
    assert!(matches!(set.verify(&hs), Err(JwsError::Algorithm(_))));
    let unknown = rsa.sign(&json!({"alg": "RS256", "kid": "r9"}), &claims());
    assert_eq!(
        set.verify(&unknown).unwrap_err(),
        JwsError::NoKey("r9".into())
    );
    let es = format!(
        "{}.{}.{}",
        enc(br#"{"alg":"ES256","kid":"r1"}"#),
        parts[1],
        parts[2]
    );
    assert!(matches!(set.verify(&es), Err(JwsError::NoKey(_))));
    let crit = rsa.sign(&json!({"alg": "RS256", "crit": ["x"], "x": 1}), &claims());
    assert_eq!(set.verify(&crit).unwrap_err(), JwsError::Critical);
    for bad in [
        "",
        "a.b",
        "a.b.c.d",
        "!!.!!.!!",
        &"a".repeat(MAX_TOKEN_BYTES + 1),
    ] {
        assert_eq!(
            set.verify(bad).unwrap_err(),
            JwsError::Malformed,
            "{bad:.20}"
        );
    }
}

#[test]
fn registered_claims_must_match() {
    let rsa = Signer::rsa();
    let set = Jwks::parse(json!({"keys": [rsa.jwk("r1")]}).to_string().as_bytes()).unwrap();
    let claim_of = |change: &dyn Fn(&mut Value)| {
        let mut c = claims();
        change(&mut c);
        let t = rsa.sign(&json!({"alg": "RS256"}), &c);
        match set.verify(&t).unwrap().check(&expect()) {
            Err(JwsError::Claim { claim, .. }) => claim,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(claim_of(&|c| c["iss"] = json!("https://evil.test")), "iss");
    assert_eq!(
        claim_of(&|c| c["aud"] = json!("https://kubernetes.default.svc")),
        "aud"
    );
    assert_eq!(claim_of(&|c| c["aud"] = json!(["a", "b"])), "aud");
    assert_eq!(claim_of(&|c| c["exp"] = json!(now() - 31)), "exp");
    assert_eq!(
        claim_of(&|c| _ = c.as_object_mut().unwrap().remove("exp")),
        "exp"
    );
    assert_eq!(claim_of(&|c| c["nbf"] = json!(now() + 120)), "nbf");
    // A string audience and a small skew are fine.
    let mut c = claims();
    c["aud"] = json!("intentgate-bundles");
    c["exp"] = json!(now() - 10);
    let t = rsa.sign(&json!({"alg": "RS256"}), &c);
    set.verify(&t).unwrap().check(&expect()).unwrap();
}

#[test]
fn key_sets_without_usable_keys_are_refused() {
    for bad in [
        "not json",
        "{}",
        r#"{"keys": []}"#,
        r#"{"keys": [{"kty": "EC", "crv": "P-384", "x": "AA", "y": "AA"}]}"#,
        r#"{"keys": [{"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}]}"#,
        r#"{"keys": [{"kty": "RSA", "e": "AQAB"}]}"#,
    ] {
        assert!(
            matches!(Jwks::parse(bad.as_bytes()), Err(JwsError::KeySet(_))),
            "{bad}"
        );
    }
}
