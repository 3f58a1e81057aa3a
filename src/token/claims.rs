//! The claims of an intent token, typed, and the reasons a token is refused.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize};

/// Why a token was refused. The messages name what failed and never contain the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is not a well-formed compact JWS with a JSON claims object")]
    Malformed,
    #[error(
        "the token's algorithm is not accepted (EdDSA, ES256 and RS256 are; none and HMAC never)"
    )]
    UnsupportedAlg,
    #[error("the token's algorithm does not match the type of the key it names")]
    AlgKeyMismatch,
    #[error("the token's issuer is not a configured intent-token issuer")]
    UnknownIssuer,
    #[error("the token names a key id its issuer's JWK Set does not have")]
    UnknownKid,
    #[error("the token's signature does not verify")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet (nbf or iat in the future)")]
    NotYetValid,
    #[error("the token is not addressed to this agent (aud)")]
    WrongAudience,
    #[error("the token's jti is revoked")]
    Revoked,
    #[error("the token lacks a required claim (iss, aud, exp, intent)")]
    MissingClaim,
    #[error("a claim of the token has the wrong type or shape")]
    InvalidClaim,
    #[error("the request does not match the attestation's request binding (req)")]
    BindingMismatch,
    #[error("the issuer's JWK Set (jwks_url) has not been fetched yet")]
    KeysUnavailable,
}

impl TokenError {
    /// The stable reason code (audit field, metric label, refusal body).
    pub fn code(self) -> &'static str {
        match self {
            TokenError::Malformed => "malformed",
            TokenError::UnsupportedAlg => "unsupported_alg",
            TokenError::AlgKeyMismatch => "alg_key_mismatch",
            TokenError::UnknownIssuer => "unknown_issuer",
            TokenError::UnknownKid => "unknown_kid",
            TokenError::BadSignature => "bad_signature",
            TokenError::Expired => "expired",
            TokenError::NotYetValid => "not_yet_valid",
            TokenError::WrongAudience => "wrong_audience",
            TokenError::Revoked => "revoked",
            TokenError::MissingClaim => "missing_claim",
            TokenError::InvalidClaim => "invalid_claim",
            TokenError::BindingMismatch => "binding_mismatch",
            TokenError::KeysUnavailable => "keys_unavailable",
        }
    }
}

/// The verified claims of an intent token. Claims we do not know are ignored.
/// Serialised for the policy input (`input.intent.token`) without the absent claims.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct IntentClaims {
    pub iss: String,
    #[serde(deserialize_with = "one_or_many")]
    pub aud: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    pub intent: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    pub exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// Narrowing claims: they may only narrow what the catalog's intent allows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hosts: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub methods: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paths: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_calls: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
}

/// `aud` is a string or a list of strings (RFC 7519 §4.1.3).
fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(a) => vec![a],
        OneOrMany::Many(list) => list,
    })
}

impl IntentClaims {
    /// Reads the claims of a verified token; the required ones missing is `MissingClaim`.
    pub fn from_json(claims: serde_json::Value) -> Result<Self, TokenError> {
        for required in ["iss", "aud", "exp", "intent"] {
            if claims.get(required).is_none_or(serde_json::Value::is_null) {
                return Err(TokenError::MissingClaim);
            }
        }
        serde_json::from_value(claims).map_err(|_| TokenError::InvalidClaim)
    }

    /// Whether `aud` names one of `accepted`.
    pub fn addressed_to(&self, accepted: &[String]) -> bool {
        self.aud.iter().any(|a| accepted.contains(a))
    }
}

/// Seconds since the epoch.
pub fn unix(now: SystemTime) -> u64 {
    now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

/// `exp` (required, passed) and `nbf`/`iat` (in the future) against `now`, each widened by `skew`
/// seconds.
pub fn check_times(
    exp: u64,
    nbf: Option<u64>,
    iat: Option<u64>,
    now: u64,
    skew: u64,
) -> Result<(), TokenError> {
    if now >= exp.saturating_add(skew) {
        return Err(TokenError::Expired);
    }
    let future = |t: Option<u64>| t.is_some_and(|t| now.saturating_add(skew) < t);
    if future(nbf) || future(iat) {
        return Err(TokenError::NotYetValid);
    }
    Ok(())
}

/// Maps a JWS failure to its reason.
pub fn from_jws(e: &crate::jws::JwsError) -> TokenError {
    use crate::jws::JwsError;
    match e {
        JwsError::Malformed | JwsError::Critical => TokenError::Malformed,
        JwsError::Algorithm(_) => TokenError::UnsupportedAlg,
        JwsError::NoKey(_) => TokenError::UnknownKid,
        JwsError::Signature => TokenError::BadSignature,
        JwsError::KeySet(_) | JwsError::Claim { .. } => TokenError::Malformed,
    }
}
