//! Signing keys (Ed25519, ES256 on P-256, RS256) read from PKCS#8 PEM or made fresh, their public
//! JWK with its RFC 7638 thumbprint as `kid`, and compact JWS signing: intent tokens minted for
//! development and tests, and the attestations the proxy adds.

use std::time::SystemTime;

use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RSA_PKCS1_SHA256,
    RsaKeyPair,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value, json};

use super::claims::unix;
use crate::jws::Alg;

enum Pair {
    Ed25519(Ed25519KeyPair),
    Es256(EcdsaKeyPair),
    Rs256(RsaKeyPair),
}

/// A private key that signs compact JWS.
pub struct SigningKey {
    pair: Pair,
    /// The key id put in every header: the thumbprint, or as given.
    kid: Option<String>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("alg", &self.alg())
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A fresh Ed25519 key; its PKCS#8 document too (to be written to a file). Version 1 (no
    /// public key inside): what other tools (OpenSSL, Python's cryptography) read.
    pub fn generate_ed25519() -> Result<(Self, Vec<u8>), String> {
        let doc = Ed25519KeyPair::generate_pkcs8v1(&SystemRandom::new())
            .map_err(|_| "cannot generate an Ed25519 key".to_string())?;
        let key = Self::from_pkcs8(doc.as_ref())?;
        Ok((key, doc.as_ref().to_vec()))
    }

    /// Reads a `PRIVATE KEY` PEM (PKCS#8) holding an Ed25519, P-256 or RSA key.
    pub fn from_pem(text: &[u8]) -> Result<Self, String> {
        let block = pem::parse(text).map_err(|e| format!("not a PEM file: {e}"))?;
        if block.tag() != "PRIVATE KEY" {
            return Err(format!(
                "a PKCS#8 'PRIVATE KEY' PEM block is needed, found '{}'",
                block.tag()
            ));
        }
        Self::from_pkcs8(block.contents())
    }

    /// A PKCS#8 document as PEM text.
    pub fn pkcs8_pem(der: &[u8]) -> String {
        pem::encode(&pem::Pem::new("PRIVATE KEY", der.to_vec()))
    }

    fn from_pkcs8(der: &[u8]) -> Result<Self, String> {
        let pair = if let Ok(k) = Ed25519KeyPair::from_pkcs8(der) {
            Pair::Ed25519(k)
        } else if let Ok(k) = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der) {
            Pair::Es256(k)
        } else if let Ok(k) = RsaKeyPair::from_pkcs8(der) {
            Pair::Rs256(k)
        } else {
            return Err("not an Ed25519, P-256 or RSA (2048 bits or more) PKCS#8 key".into());
        };
        let mut key = SigningKey { pair, kid: None };
        key.kid = key.thumbprint();
        Ok(key)
    }

    /// Uses `kid` in headers instead of the thumbprint.
    pub fn with_kid(mut self, kid: String) -> Self {
        self.kid = Some(kid);
        self
    }

    pub fn alg(&self) -> Alg {
        match self.pair {
            Pair::Ed25519(_) => Alg::EdDsa,
            Pair::Es256(_) => Alg::Es256,
            Pair::Rs256(_) => Alg::Rs256,
        }
    }

    #[cfg(test)]
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The public key as a JWK's required members (RFC 7638: sorted by name).
    fn public_members(&self) -> Option<Value> {
        match &self.pair {
            Pair::Ed25519(k) => Some(json!({
                "crv": "Ed25519",
                "kty": "OKP",
                "x": URL_SAFE_NO_PAD.encode(k.public_key().as_ref()),
            })),
            Pair::Es256(k) => {
                // The uncompressed point: 0x04 || x || y.
                let point = k.public_key().as_ref();
                let (x, y) = point.get(1..)?.split_at_checked(32)?;
                Some(json!({
                    "crv": "P-256",
                    "kty": "EC",
                    "x": URL_SAFE_NO_PAD.encode(x),
                    "y": URL_SAFE_NO_PAD.encode(y),
                }))
            }
            Pair::Rs256(k) => {
                let (n, e) = rsa_public(k.public_key().as_ref())?;
                Some(json!({
                    "e": URL_SAFE_NO_PAD.encode(e),
                    "kty": "RSA",
                    "n": URL_SAFE_NO_PAD.encode(n),
                }))
            }
        }
    }

    /// The RFC 7638 thumbprint: base64url(SHA-256 of the required members, sorted, no spaces).
    fn thumbprint(&self) -> Option<String> {
        // serde_json's map is ordered by key, and `to_string` writes no whitespace.
        let canonical = self.public_members()?.to_string();
        Some(URL_SAFE_NO_PAD.encode(digest(&SHA256, canonical.as_bytes())))
    }

    /// The public JWK (with `kid`, `alg` and `use`).
    pub fn public_jwk(&self) -> Option<Value> {
        let mut jwk = self.public_members()?;
        let obj = jwk.as_object_mut()?;
        if let Some(kid) = &self.kid {
            obj.insert("kid".into(), kid.clone().into());
        }
        obj.insert("alg".into(), self.alg().as_str().into());
        obj.insert("use".into(), "sig".into());
        Some(jwk)
    }

    /// Signs `claims` as a compact JWS with header `{alg, kid, typ}`.
    pub fn sign(&self, typ: &str, claims: &Value) -> Result<String, String> {
        let claims = serde_json::to_vec(claims).map_err(|e| e.to_string())?;
        let mut out = self.encoded_header(typ).into_bytes();
        out.push(b'.');
        b64_append(&mut out, &claims)?;
        self.append_signature(&mut out)?;
        String::from_utf8(out).map_err(|e| e.to_string())
    }

    /// The first part of every compact JWS this key signs with `typ`: base64url of the header
    /// `{alg, kid, typ}`. A signer of many tokens makes it once.
    pub fn encoded_header(&self, typ: &str) -> String {
        let mut header = Map::new();
        header.insert("alg".into(), self.alg().as_str().into());
        if let Some(kid) = &self.kid {
            header.insert("kid".into(), kid.clone().into());
        }
        header.insert("typ".into(), typ.into());
        URL_SAFE_NO_PAD.encode(Value::Object(header).to_string())
    }

    /// Signs `out` (the JWS signing input: `header.claims`, base64url) and appends `.` and the
    /// signature, base64url: the compact JWS. An Ed25519 signature goes straight from aws-lc-rs
    /// into `out` (no copy of it is made).
    pub(crate) fn append_signature(&self, out: &mut Vec<u8>) -> Result<(), String> {
        let failed = |_| "signing failed".to_string();
        let signature = match &self.pair {
            Pair::Ed25519(k) => k.try_sign(out).map_err(failed)?,
            Pair::Es256(k) => k.sign(&SystemRandom::new(), out).map_err(failed)?,
            Pair::Rs256(k) => {
                let mut sig = vec![0u8; k.public_modulus_len()];
                k.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), out, &mut sig)
                    .map_err(failed)?;
                out.push(b'.');
                return b64_append(out, &sig);
            }
        };
        out.push(b'.');
        b64_append(out, signature.as_ref())
    }
}

/// Appends `data` to `out` as base64url without padding (written in place, no String between).
pub(crate) fn b64_append(out: &mut Vec<u8>, data: &[u8]) -> Result<(), String> {
    let at = out.len();
    let len = base64::encoded_len(data.len(), false).ok_or("too long to encode")?;
    out.resize(at + len, 0);
    let tail = out.get_mut(at..).ok_or("too long to encode")?;
    URL_SAFE_NO_PAD
        .encode_slice(data, tail)
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Reads a DER `RSAPublicKey ::= SEQUENCE { n INTEGER, e INTEGER }` (RFC 8017): n and e as
/// unsigned big-endian bytes.
fn rsa_public(der: &[u8]) -> Option<(&[u8], &[u8])> {
    /// One tag-length-value at the start of `d` with tag `tag`: (content, rest).
    fn tlv(d: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
        let (&t, d) = d.split_first()?;
        let (&l, mut d) = d.split_first()?;
        if t != tag {
            return None;
        }
        let len = if l < 0x80 {
            usize::from(l)
        } else {
            let n = usize::from(l & 0x7f);
            if n == 0 || n > 4 {
                return None;
            }
            let (bytes, rest) = d.split_at_checked(n)?;
            d = rest;
            bytes
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b))
        };
        d.split_at_checked(len)
    }
    let (seq, _) = tlv(der, 0x30)?;
    let (n, rest) = tlv(seq, 0x02)?;
    let (e, _) = tlv(rest, 0x02)?;
    fn unsigned(mut b: &[u8]) -> &[u8] {
        while let [0, rest @ ..] = b {
            b = rest;
        }
        b
    }
    Some((unsigned(n), unsigned(e)))
}

/// A JWK Set (`{"keys": [...]}`) of the public keys of `keys`.
pub fn jwks_json(keys: &[&SigningKey]) -> Value {
    let list: Vec<Value> = keys.iter().filter_map(|k| k.public_jwk()).collect();
    json!({ "keys": list })
}

/// What `intentgate token mint` puts in a token.
#[derive(Debug, Clone, Default)]
pub struct MintRequest {
    pub issuer: String,
    /// The agent (`aud`).
    pub agent: String,
    pub intent: String,
    pub sub: Option<String>,
    pub task: Option<String>,
    pub ttl_seconds: u64,
    pub jti: Option<String>,
    /// More claims (narrowing claims, or any other), merged last.
    pub extra: Map<String, Value>,
}

/// Mints an intent token signed by `key`.
pub fn mint(key: &SigningKey, req: &MintRequest, now: SystemTime) -> Result<String, String> {
    let iat = unix(now);
    let mut claims = Map::new();
    claims.insert("iss".into(), req.issuer.clone().into());
    claims.insert("aud".into(), req.agent.clone().into());
    claims.insert("intent".into(), req.intent.clone().into());
    if let Some(sub) = &req.sub {
        claims.insert("sub".into(), sub.clone().into());
    }
    if let Some(task) = &req.task {
        claims.insert("task".into(), task.clone().into());
    }
    claims.insert("iat".into(), iat.into());
    claims.insert("exp".into(), iat.saturating_add(req.ttl_seconds).into());
    let jti = match &req.jti {
        Some(j) => j.clone(),
        None => random_id()?,
    };
    claims.insert("jti".into(), jti.into());
    for (k, v) in &req.extra {
        claims.insert(k.clone(), v.clone());
    }
    key.sign("JWT", &Value::Object(claims))
}

/// 128 random bits as base64url.
fn random_id() -> Result<String, String> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| format!("no randomness for jti: {e}"))?;
    Ok(URL_SAFE_NO_PAD.encode(b))
}
