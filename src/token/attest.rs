//! Attestations: for a forwarded request, a compact JWS (Ed25519) saying which agent made it,
//! for which intent and task, under which decision and policy revision, bound to the request's
//! method, authority, path and query (`req`), valid for at most 60 seconds. Upstreams verify it
//! against our JWKS (`intentgate token verify` or any JOSE library).

use std::sync::Arc;
use std::time::SystemTime;

use aws_lc_rs::digest::{Digest, SHA256, digest};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::TokenError;
use super::claims::{check_times, unix};
use super::mint::{SigningKey, b64_append};
use super::verify::verify_signature;
use crate::jws::Jwks;

/// The longest an attestation is valid.
pub const MAX_TTL_SECONDS: u64 = 60;

/// The JWS `typ` of an attestation (the IETF transaction-token drafts' media type).
pub const TYP: &str = "txntoken+jwt";

/// The request binding: base64url(SHA-256(method "\n" authority "\n" path-and-query)).
pub fn request_binding(method: &str, authority: &str, path_and_query: &str) -> String {
    let mut input = Vec::with_capacity(method.len() + authority.len() + path_and_query.len() + 2);
    let digest = binding_digest(&mut input, method, authority, path_and_query);
    URL_SAFE_NO_PAD.encode(digest)
}

/// The binding's SHA-256, its input written at the end of `buf` and taken off again: a one-shot
/// hash, without the digest context (and its allocation) of an incremental one.
fn binding_digest(buf: &mut Vec<u8>, method: &str, authority: &str, pq: &str) -> Digest {
    let at = buf.len();
    for (i, part) in [method, authority, pq].into_iter().enumerate() {
        if i > 0 {
            buf.push(b'\n');
        }
        buf.extend_from_slice(part.as_bytes());
    }
    let d = digest(&SHA256, buf.get(at..).unwrap_or_default());
    buf.truncate(at);
    d
}

/// What one attestation states.
#[derive(Debug, Clone, Copy)]
pub struct Statement<'a> {
    /// The agent (its SPIFFE id or id).
    pub sub: &'a str,
    /// The upstream host.
    pub aud: &'a str,
    pub intent: Option<&'a str>,
    pub task: Option<&'a str>,
    /// `sub` of the intent token, when the intent came with one.
    pub token_sub: Option<&'a str>,
    pub decision_id: &'a str,
    pub policy_revision: &'a str,
    pub method: &'a str,
    pub authority: &'a str,
    pub path_and_query: &'a str,
}

/// Signs attestations with one Ed25519 key as one issuer.
#[derive(Debug)]
pub struct Attester {
    key: Arc<SigningKey>,
    /// The key's encoded JWS header and its `.`, made once.
    header: String,
    issuer: String,
    /// The claims' fixed start, `{"iss":"…"`, made once.
    claims_head: Vec<u8>,
    ttl: u64,
}

impl Attester {
    /// `key` must be Ed25519; `ttl_seconds` is capped at [`MAX_TTL_SECONDS`].
    pub fn new(
        key: impl Into<Arc<SigningKey>>,
        issuer: String,
        ttl_seconds: u64,
    ) -> Result<Self, String> {
        let key = key.into();
        if key.alg() != crate::jws::Alg::EdDsa {
            return Err("attestations are signed with an Ed25519 key".into());
        }
        let mut claims_head = b"{\"iss\":".to_vec();
        json_string(&mut claims_head, &issuer)?;
        Ok(Attester {
            header: key.encoded_header(TYP) + ".",
            key,
            issuer,
            claims_head,
            ttl: ttl_seconds.clamp(1, MAX_TTL_SECONDS),
        })
    }

    /// The header value for one request.
    pub fn header_value(&self, s: &Statement<'_>, now: SystemTime) -> Result<String, String> {
        String::from_utf8(self.header_bytes(s, now)?).map_err(|e| e.to_string())
    }

    /// The header value for one request as bytes (base64url and two dots): the claims written
    /// by hand, encoded and signed into one buffer of the exact size.
    pub fn header_bytes(&self, s: &Statement<'_>, now: SystemTime) -> Result<Vec<u8>, String> {
        let claims = self.claims(s, unix(now))?;
        let encoded = base64::encoded_len(claims.len(), false).ok_or("claims too long")?;
        // header. claims . signature (64 bytes: 86 characters)
        let mut out = Vec::with_capacity(self.header.len() + encoded + 1 + 86);
        out.extend_from_slice(self.header.as_bytes());
        b64_append(&mut out, &claims)?;
        self.key.append_signature(&mut out)?;
        Ok(out)
    }

    /// The claims as compact JSON, in the order `iss, sub, aud, intent, task, token_sub,
    /// decision_id, policy_revision, iat, exp, req` (absent options left out).
    fn claims(&self, s: &Statement<'_>, iat: u64) -> Result<Vec<u8>, String> {
        let names = [
            "sub",
            "aud",
            "intent",
            "task",
            "token_sub",
            "decision_id",
            "policy_revision",
        ];
        let texts = [
            Some(s.sub),
            Some(s.aud),
            s.intent,
            s.task,
            s.token_sub,
            Some(s.decision_id),
            Some(s.policy_revision),
        ];
        let len: usize = texts.iter().flatten().map(|t| t.len()).sum();
        // The binding's input is hashed from the buffer's end (then taken off).
        let req = s.method.len() + s.authority.len() + s.path_and_query.len() + 2;
        // The names, quotes, two numbers and the 43-character binding: under 200 bytes.
        let mut out = Vec::with_capacity(self.claims_head.len() + len + 200 + req);
        out.extend_from_slice(&self.claims_head);
        for (name, value) in names.into_iter().zip(texts) {
            if let Some(v) = value {
                field(&mut out, name);
                json_string(&mut out, v)?;
            }
        }
        out.extend_from_slice(b",\"iat\":");
        decimal(&mut out, iat);
        out.extend_from_slice(b",\"exp\":");
        decimal(&mut out, iat.saturating_add(self.ttl));
        out.extend_from_slice(b",\"req\":\"");
        let binding = binding_digest(&mut out, s.method, s.authority, s.path_and_query);
        b64_append(&mut out, binding.as_ref())?;
        out.extend_from_slice(b"\"}");
        Ok(out)
    }

    /// The JWK Set upstreams verify with.
    pub fn jwks(&self) -> serde_json::Value {
        super::mint::jwks_json(&[self.key.as_ref()])
    }

    /// The same issuer and lifetime with another key (a rotated key file).
    pub fn with_key(&self, key: Arc<SigningKey>) -> Result<Self, String> {
        Self::new(key, self.issuer.clone(), self.ttl)
    }

    /// How long its attestations are valid, in seconds.
    pub fn ttl(&self) -> u64 {
        self.ttl
    }
}

/// `,"name":`.
fn field(out: &mut Vec<u8>, name: &str) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
}

/// `n` in decimal.
fn decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    while at > 0 {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(digits.get(at..).unwrap_or_default());
}

/// `s` as a JSON string: copied as is when it holds nothing to escape (ids, names, hosts: the
/// usual case), else written by serde_json.
fn json_string(out: &mut Vec<u8>, s: &str) -> Result<(), String> {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
        Ok(())
    } else {
        serde_json::to_writer(&mut *out, s).map_err(|e| e.to_string())
    }
}

/// What an attestation must match, beyond its signature and times.
#[derive(Debug, Clone, Copy, Default)]
pub struct Expected<'a> {
    pub issuer: Option<&'a str>,
    pub audience: Option<&'a str>,
    /// (method, authority, path and query) of the request it came with.
    pub request: Option<(&'a str, &'a str, &'a str)>,
}

/// Verifies a signed token (an attestation or an intent token) against `keys`: signature,
/// `exp` (required), `nbf`/`iat`, and what `expect` names; its claims.
pub fn verify_token(
    keys: &Jwks,
    token: &str,
    expect: &Expected<'_>,
    now: SystemTime,
    skew: u64,
) -> Result<serde_json::Value, TokenError> {
    let claims = verify_signature(keys, token)?.claims;
    let num = |name: &str| match claims.get(name) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or(TokenError::InvalidClaim),
    };
    let exp = num("exp")?.ok_or(TokenError::MissingClaim)?;
    check_times(exp, num("nbf")?, num("iat")?, unix(now), skew)?;
    if let Some(iss) = expect.issuer {
        if claims["iss"].as_str() != Some(iss) {
            return Err(TokenError::UnknownIssuer);
        }
    }
    if let Some(aud) = expect.audience {
        let ok = match &claims["aud"] {
            serde_json::Value::String(a) => a == aud,
            serde_json::Value::Array(list) => list.iter().any(|a| a == aud),
            _ => false,
        };
        if !ok {
            return Err(TokenError::WrongAudience);
        }
    }
    if let Some((method, authority, pq)) = expect.request {
        if claims["req"].as_str() != Some(request_binding(method, authority, pq).as_str()) {
            return Err(TokenError::BindingMismatch);
        }
    }
    Ok(claims)
}

#[cfg(test)]
#[path = "attest_tests.rs"]
mod tests;
