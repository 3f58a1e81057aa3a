//! JSON Web Signatures in compact form (RFC 7515) verified against a JWK Set (RFC 7517), and
//! the registered JWT claims checked (RFC 7519: `iss`, `aud`, `exp`, `nbf`). RS256 and ES256 —
//! what Kubernetes service-account issuers sign with — and EdDSA (Ed25519, RFC 8037) on
//! aws-lc-rs; `none`, HMAC and anything
//! else are refused, and a key is only ever used with the algorithm of its own type. The bundle
//! server verifies projected service-account tokens with it; signed intent tokens can use the same.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ED25519, ParsedPublicKey, RSA_PKCS1_2048_8192_SHA256,
    RsaPublicKeyComponents,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

/// The longest token accepted (Kubernetes tokens are about 1 KiB).
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// A signature algorithm we verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    Rs256,
    Es256,
    EdDsa,
}

impl Alg {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "RS256" => Some(Alg::Rs256),
            "ES256" => Some(Alg::Es256),
            "EdDSA" => Some(Alg::EdDsa),
            _ => None,
        }
    }

    /// The name in a JWS header.
    pub fn as_str(self) -> &'static str {
        match self {
            Alg::Rs256 => "RS256",
            Alg::Es256 => "ES256",
            Alg::EdDsa => "EdDSA",
        }
    }
}

/// A token or key set that is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwsError {
    #[error("not a compact JWS (three base64url parts, at most {MAX_TOKEN_BYTES} bytes)")]
    Malformed,
    #[error("unsupported algorithm '{0}' (RS256, ES256 and EdDSA are accepted)")]
    Algorithm(String),
    #[error("the header names critical extensions, none of which is supported")]
    Critical,
    #[error("no key in the key set matches (kid '{0}')")]
    NoKey(String),
    #[error("the signature does not verify")]
    Signature,
    #[error("invalid JWK Set: {0}")]
    KeySet(String),
    #[error("claim '{claim}': {problem}")]
    Claim {
        claim: &'static str,
        problem: String,
    },
}

struct Key {
    kid: Option<String>,
    alg: Alg,
    key: ParsedPublicKey,
}

/// The verification keys of a JWK Set; keys of other types, curves or uses are skipped.
pub struct Jwks {
    keys: Vec<Key>,
}

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kids: Vec<&str> = self.keys.iter().filter_map(|k| k.kid.as_deref()).collect();
        f.debug_struct("Jwks").field("kids", &kids).finish()
    }
}

fn b64(v: &Value, field: &str) -> Result<Vec<u8>, JwsError> {
    let s = v[field]
        .as_str()
        .ok_or_else(|| JwsError::KeySet(format!("a key has no '{field}'")))?;
    URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|_| JwsError::KeySet(format!("'{field}' is not base64url")))
}

/// Big-endian bytes without leading zeros (what aws-lc-rs requires of RSA components).
fn unpadded(mut b: &[u8]) -> &[u8] {
    while let [0, rest @ ..] = b {
        b = rest;
    }
    b
}

impl Jwks {
    /// Parses `{"keys": [...]}`; fails when no usable key is left.
    pub fn parse(text: &[u8]) -> Result<Self, JwsError> {
        let doc: Value =
            serde_json::from_slice(text).map_err(|e| JwsError::KeySet(e.to_string()))?;
        let list = doc["keys"]
            .as_array()
            .ok_or_else(|| JwsError::KeySet("no 'keys' array".into()))?;
        let mut keys = Vec::new();
        for k in list {
            if k["use"].as_str().is_some_and(|u| u != "sig") {
                continue;
            }
            let declared = k["alg"].as_str();
            let (alg, key) = match (k["kty"].as_str(), k["crv"].as_str()) {
                (Some("RSA"), _) if declared.is_none_or(|a| a == "RS256") => {
                    let (n, e) = (b64(k, "n")?, b64(k, "e")?);
                    let c = RsaPublicKeyComponents {
                        n: unpadded(&n),
                        e: unpadded(&e),
                    };
                    let key = c
                        .to_parsed_public_key(&RSA_PKCS1_2048_8192_SHA256)
                        .map_err(|e| JwsError::KeySet(format!("RSA key: {e}")))?;
                    (Alg::Rs256, key)
                }
                (Some("EC"), Some("P-256")) if declared.is_none_or(|a| a == "ES256") => {
                    let (x, y) = (b64(k, "x")?, b64(k, "y")?);
                    if x.len() != 32 || y.len() != 32 {
                        return Err(JwsError::KeySet("P-256 coordinates are 32 bytes".into()));
                    }
                    let point = [&[4u8][..], &x, &y].concat();
                    let key = ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point)
                        .map_err(|e| JwsError::KeySet(format!("EC key: {e}")))?;
                    (Alg::Es256, key)
                }
                (Some("OKP"), Some("Ed25519")) if declared.is_none_or(|a| a == "EdDSA") => {
                    let x = b64(k, "x")?;
                    if x.len() != 32 {
                        return Err(JwsError::KeySet("Ed25519 keys are 32 bytes".into()));
                    }
                    let key = ParsedPublicKey::new(&ED25519, x)
                        .map_err(|e| JwsError::KeySet(format!("Ed25519 key: {e}")))?;
                    (Alg::EdDsa, key)
                }
                _ => continue,
            };
            let kid = k["kid"].as_str().map(str::to_string);
            keys.push(Key { kid, alg, key });
        }
        if keys.is_empty() {
            return Err(JwsError::KeySet(
                "no RS256, ES256 or EdDSA signing key".into(),
            ));
        }
        Ok(Jwks { keys })
    }

    /// Whether a key with this id is in the set.
    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Verifies a compact JWS; its payload (the claims) as JSON.
    pub fn verify(&self, token: &str) -> Result<Verified, JwsError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(JwsError::Malformed);
        }
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwsError::Malformed);
        };
        let decode = |part: &str| {
            URL_SAFE_NO_PAD
                .decode(part)
                .map_err(|_| JwsError::Malformed)
        };
        let header: Value = serde_json::from_slice(&decode(h)?).map_err(|_| JwsError::Malformed)?;
        let name = header["alg"].as_str().unwrap_or("");
        let alg = Alg::parse(name).ok_or_else(|| JwsError::Algorithm(name.to_string()))?;
        if !header["crit"].is_null() {
            return Err(JwsError::Critical);
        }
        let kid = header["kid"].as_str();
        let signature = decode(s)?;
        // The signing input is the two encoded parts as they arrived.
        let input = &token.as_bytes()[..h.len() + 1 + p.len()];
        let mut candidates = self
            .keys
            .iter()
            .filter(|k| k.alg == alg && (kid.is_none() || k.kid.as_deref() == kid))
            .peekable();
        if candidates.peek().is_none() {
            return Err(JwsError::NoKey(kid.unwrap_or("none").to_string()));
        }
        if !candidates.any(|k| k.key.verify_sig(input, &signature).is_ok()) {
            return Err(JwsError::Signature);
        }
        let claims: Value = serde_json::from_slice(&decode(p)?).map_err(|_| JwsError::Malformed)?;
        if !claims.is_object() {
            return Err(JwsError::Malformed);
        }
        Ok(Verified { claims })
    }
}

/// The key id a token names in its header, read without verifying anything (to tell a token
/// signed by a key we have not fetched yet from a forged one).
pub fn unverified_kid(token: &str) -> Option<String> {
    let h = token.split('.').next()?;
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).ok()?).ok()?;
    header["kid"].as_str().map(str::to_string)
}

/// A token whose signature verified.
#[derive(Debug, Clone)]
pub struct Verified {
    pub claims: Value,
}

/// What the registered claims must say.
#[derive(Debug, Clone)]
pub struct Expect<'a> {
    pub issuer: &'a str,
    pub audience: &'a str,
    /// Clock skew tolerated on `exp` and `nbf`.
    pub leeway: Duration,
    pub now: SystemTime,
}

impl Verified {
    /// Checks `iss`, `aud` (a string or a list), `exp` (required) and `nbf`.
    pub fn check(&self, e: &Expect<'_>) -> Result<(), JwsError> {
        let bad = |claim, problem: String| Err(JwsError::Claim { claim, problem });
        let c = &self.claims;
        if c["iss"].as_str() != Some(e.issuer) {
            return bad("iss", format!("{} is not '{}'", c["iss"], e.issuer));
        }
        let aud_ok = match &c["aud"] {
            Value::String(a) => a == e.audience,
            Value::Array(list) => list.iter().any(|a| a == e.audience),
            _ => false,
        };
        if !aud_ok {
            return bad(
                "aud",
                format!("{} does not include '{}'", c["aud"], e.audience),
            );
        }
        let now = e.now.duration_since(UNIX_EPOCH).unwrap_or_default();
        let leeway = e.leeway.as_secs();
        let Some(exp) = c["exp"].as_u64() else {
            return bad(
                "exp",
                "missing (tokens without an expiry are refused)".into(),
            );
        };
        if now.as_secs() >= exp.saturating_add(leeway) {
            return bad("exp", format!("the token expired at {exp}"));
        }
        if let Some(nbf) = c["nbf"].as_u64() {
            if now.as_secs().saturating_add(leeway) < nbf {
                return bad("nbf", format!("the token is not valid before {nbf}"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "jws_tests.rs"]
mod tests;
