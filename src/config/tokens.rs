//! The `intent_tokens` section: who may sign intent tokens for this agent, and how they are
//! checked.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Signed intent tokens (`intentgate-intent-token` header).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct IntentTokensConfig {
    /// The issuers whose tokens are accepted, each with its keys.
    pub issuers: Vec<TokenIssuer>,
    /// Tolerance on `exp`, `nbf` and `iat`, in seconds (at most 300).
    pub clock_skew_seconds: u64,
    /// A file of revoked `jti`s, one a line; re-read when it changes.
    pub revoked: Option<PathBuf>,
    /// Refuse a bare intent name: every intent must come with a token.
    pub required: bool,
    /// The request header that carries the token.
    pub header: String,
    /// Verified tokens kept (by hash, until `exp`).
    pub cache_entries: usize,
    /// `run --intent-token FILE`: the token presented for the calls that bring none.
    #[serde(skip)]
    pub presented: Option<PresentedToken>,
}

/// A token text that is never printed (`Debug` shows only that there is one).
#[derive(Clone, PartialEq)]
pub struct PresentedToken(pub String);

impl std::fmt::Debug for PresentedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PresentedToken(..)")
    }
}

impl Default for IntentTokensConfig {
    fn default() -> Self {
        Self {
            issuers: Vec::new(),
            clock_skew_seconds: 30,
            revoked: None,
            required: false,
            header: "intentgate-intent-token".into(),
            cache_entries: 4096,
            presented: None,
        }
    }
}

/// One issuer of intent tokens.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TokenIssuer {
    /// The `iss` its tokens carry.
    pub issuer: String,
    /// Its JWK Set as a file (re-read on change; the last good set is kept).
    pub jwks_file: Option<PathBuf>,
    /// Its JWK Set over HTTPS (not fetched yet in this version: refused at load).
    pub jwks_url: Option<String>,
    /// The `aud` values accepted; empty means this agent's id and SPIFFE id.
    pub audiences: Vec<String>,
}

/// Checks the section; the error names the field.
pub fn validate_intent_tokens(t: &IntentTokensConfig) -> Result<(), (String, String)> {
    let field = |f: &str| format!("intent_tokens.{f}");
    if t.clock_skew_seconds > 300 {
        return Err((field("clock_skew_seconds"), "must be at most 300".into()));
    }
    if t.cache_entries == 0 {
        return Err((field("cache_entries"), "must be greater than 0".into()));
    }
    if http::HeaderName::from_bytes(t.header.as_bytes()).is_err()
        || t.header.chars().any(|c| c.is_ascii_uppercase())
    {
        return Err((
            field("header"),
            format!("'{}' is not a valid lowercase header name", t.header),
        ));
    }
    if t.required && t.issuers.is_empty() {
        return Err((
            field("required"),
            "needs at least one entry in intent_tokens.issuers".into(),
        ));
    }
    for (i, is) in t.issuers.iter().enumerate() {
        let at = |f: &str| field(&format!("issuers[{i}].{f}"));
        if is.issuer.is_empty() {
            return Err((at("issuer"), "must not be empty".into()));
        }
        if t.issuers[..i].iter().any(|o| o.issuer == is.issuer) {
            return Err((at("issuer"), format!("'{}' is listed twice", is.issuer)));
        }
        match (&is.jwks_file, &is.jwks_url) {
            (Some(file), None) => {
                let text = std::fs::read(file)
                    .map_err(|e| (at("jwks_file"), format!("{}: {e}", file.display())))?;
                crate::jws::Jwks::parse(&text)
                    .map_err(|e| (at("jwks_file"), format!("{}: {e}", file.display())))?;
            }
            (None, Some(_)) => {
                return Err((
                    at("jwks_url"),
                    "is not supported yet in this version; use jwks_file".into(),
                ));
            }
            _ => {
                return Err((
                    at("jwks_file"),
                    "exactly one of jwks_file and jwks_url must be set".into(),
                ));
            }
        }
    }
    if let Some(r) = &t.revoked {
        std::fs::read(r).map_err(|e| (field("revoked"), format!("{}: {e}", r.display())))?;
    }
    Ok(())
}

/// Attestations of forwarded requests (`attestation:`): a signed statement (compact JWS,
/// Ed25519) of what was vetted, added to each forwarded request for the upstream to verify.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AttestationConfig {
    /// Attest every forwarded request; else only those under intents with `attest: true`.
    pub enabled: bool,
    /// The request header that carries it (lowercase; `Txn-Token` on the wire is the same).
    pub header: String,
    /// An Ed25519 PKCS#8 PEM key (`intentgate token keygen`), read at start. Without one, a
    /// key is made at start (local use: it changes at every start).
    pub key_file: Option<PathBuf>,
    /// `iss` of the attestations; default this agent's SPIFFE id, else its id.
    pub issuer: Option<String>,
    /// How long an attestation is valid, in seconds (1 to 60).
    pub ttl_seconds: u64,
}

impl Default for AttestationConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            header: "txn-token".into(),
            key_file: None,
            issuer: None,
            ttl_seconds: 60,
        }
    }
}

/// Checks the `attestation` section; the error names the field.
pub fn validate_attestation(a: &AttestationConfig) -> Result<(), (String, String)> {
    let field = |f: &str| format!("attestation.{f}");
    if !(1..=60).contains(&a.ttl_seconds) {
        return Err((field("ttl_seconds"), "must be between 1 and 60".into()));
    }
    if http::HeaderName::from_bytes(a.header.as_bytes()).is_err()
        || a.header.chars().any(|c| c.is_ascii_uppercase())
    {
        return Err((
            field("header"),
            format!("'{}' is not a valid lowercase header name", a.header),
        ));
    }
    if let Some(k) = &a.key_file {
        // Read here; that it is an Ed25519 key is checked where it is loaded (src/proxy/attest.rs).
        let text =
            std::fs::read(k).map_err(|e| (field("key_file"), format!("{}: {e}", k.display())))?;
        match pem::parse(&text) {
            Ok(b) if b.tag() == "PRIVATE KEY" => {}
            _ => {
                return Err((
                    field("key_file"),
                    format!("{}: not a PKCS#8 'PRIVATE KEY' PEM file", k.display()),
                ));
            }
        }
    }
    Ok(())
}
