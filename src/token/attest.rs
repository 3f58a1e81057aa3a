//! Attestations: for a forwarded request, a compact JWS (Ed25519) saying which agent made it,
//! for which intent and task, under which decision and policy revision, bound to the request's
//! method, authority, path and query (`req`), valid for at most 60 seconds. Upstreams verify it
//! against our JWKS (`intentgate token verify` or any JOSE library).

use std::sync::Arc;
use std::time::SystemTime;

use aws_lc_rs::digest::{Context, SHA256};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;

use super::TokenError;
use super::claims::{check_times, unix};
use super::mint::SigningKey;
use super::verify::verify_signature;
use crate::jws::Jwks;

/// The longest an attestation is valid.
pub const MAX_TTL_SECONDS: u64 = 60;

/// The JWS `typ` of an attestation (the IETF transaction-token drafts' media type).
pub const TYP: &str = "txntoken+jwt";

/// The request binding: base64url(SHA-256(method "\n" authority "\n" path-and-query)).
pub fn request_binding(method: &str, authority: &str, path_and_query: &str) -> String {
    let mut ctx = Context::new(&SHA256);
    for (i, part) in [method, authority, path_and_query].into_iter().enumerate() {
        if i > 0 {
            ctx.update(b"\n");
        }
        ctx.update(part.as_bytes());
    }
    URL_SAFE_NO_PAD.encode(ctx.finish())
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

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    intent: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    task: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token_sub: Option<&'a str>,
    decision_id: &'a str,
    policy_revision: &'a str,
    iat: u64,
    exp: u64,
    req: String,
}

/// Signs attestations with one Ed25519 key as one issuer.
#[derive(Debug)]
pub struct Attester {
    key: Arc<SigningKey>,
    /// The key's encoded JWS header, made once.
    header: String,
    issuer: String,
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
        Ok(Attester {
            header: key.encoded_header(TYP),
            key,
            issuer,
            ttl: ttl_seconds.clamp(1, MAX_TTL_SECONDS),
        })
    }

    /// The header value for one request.
    pub fn header_value(&self, s: &Statement<'_>, now: SystemTime) -> Result<String, String> {
        let iat = unix(now);
        let claims = Claims {
            iss: &self.issuer,
            sub: s.sub,
            aud: s.aud,
            intent: s.intent,
            task: s.task,
            token_sub: s.token_sub,
            decision_id: s.decision_id,
            policy_revision: s.policy_revision,
            iat,
            exp: iat + self.ttl,
            req: request_binding(s.method, s.authority, s.path_and_query),
        };
        self.key.sign_under(&self.header, &claims)
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
