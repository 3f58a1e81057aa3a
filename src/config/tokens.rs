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
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TokenIssuer {
    /// The `iss` its tokens carry.
    pub issuer: String,
    /// Its JWK Set as a file (re-read on change; the last good set is kept).
    pub jwks_file: Option<PathBuf>,
    /// Its JWK Set over HTTPS: fetched at start (in the background), refreshed, and the last
    /// good set kept when a fetch fails (src/token/remote.rs).
    pub jwks_url: Option<String>,
    /// The `aud` values accepted; empty means this agent's id and SPIFFE id.
    pub audiences: Vec<String>,
    /// PEM roots trusted for `jwks_url` (default: the system roots).
    pub ca_file: Option<PathBuf>,
    /// How often `jwks_url` is fetched again when its answer has no `Cache-Control: max-age`.
    pub refresh_seconds: u64,
    /// The shortest refresh interval: a smaller `max-age` is raised to it, a failed fetch is
    /// retried after it, and a token naming a key the set lacks fetches the set again at most
    /// this often.
    pub min_refresh_seconds: u64,
}

impl Default for TokenIssuer {
    fn default() -> Self {
        Self {
            issuer: String::new(),
            jwks_file: None,
            jwks_url: None,
            audiences: Vec::new(),
            ca_file: None,
            refresh_seconds: 300,
            min_refresh_seconds: 30,
        }
    }
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
            (Some(_), None) if is.ca_file.is_some() => {
                return Err((at("ca_file"), "is only for jwks_url".into()));
            }
            (Some(file), None) => {
                let text = std::fs::read(file)
                    .map_err(|e| (at("jwks_file"), format!("{}: {e}", file.display())))?;
                crate::jws::Jwks::parse(&text)
                    .map_err(|e| (at("jwks_file"), format!("{}: {e}", file.display())))?;
            }
            (None, Some(url)) => validate_jwks_url(is, url).map_err(|(f, m)| (at(f), m))?,
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

/// The longest refresh interval of a `jwks_url` (a day).
pub const MAX_REFRESH_SECONDS: u64 = 86_400;

/// Checks a `jwks_url` issuer's fields: an https URL, a readable `ca_file`, sane intervals.
fn validate_jwks_url(is: &TokenIssuer, url: &str) -> Result<(), (&'static str, String)> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| ("jwks_url", format!("'{url}': {e}")))?;
    if uri.scheme_str() != Some("https") || uri.host().is_none() {
        return Err(("jwks_url", format!("'{url}' must be an https:// URL")));
    }
    if let Some(ca) = &is.ca_file {
        std::fs::read(ca).map_err(|e| ("ca_file", format!("{}: {e}", ca.display())))?;
    }
    if !(1..=MAX_REFRESH_SECONDS).contains(&is.min_refresh_seconds) {
        return Err((
            "min_refresh_seconds",
            format!("must be between 1 and {MAX_REFRESH_SECONDS}"),
        ));
    }
    if !(is.min_refresh_seconds..=MAX_REFRESH_SECONDS).contains(&is.refresh_seconds) {
        return Err((
            "refresh_seconds",
            format!("must be between min_refresh_seconds and {MAX_REFRESH_SECONDS}"),
        ));
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
