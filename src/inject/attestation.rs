//! Attestation keys for a fleet (`attestation:` of the inject config): the webhook mounts each
//! namespace's signing-key Secret (`secret`, key `key.pem`: an Ed25519 PKCS#8 key, `intentgate
//! token keygen`) into the intentgate sidecar only and points it there (`--attestation-key`),
//! and this server serves that namespace's public JWK Set at `GET /jwks/NAMESPACE` from
//! `jwks_dir/NAMESPACE.json` (e.g. a ConfigMap the platform writes beside each Secret: the
//! control deployment never holds the private keys). Upstreams then verify attestations of a
//! whole namespace against one URL. A pod that reaches the key Secret itself is refused.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Value, json};

use super::template::SIDECAR_FILE_MODE;

/// The webhook's volume for the key (reserved, sidecar only).
pub const VOLUME: &str = "intentgate-attestation";
/// Where the sidecar finds it.
pub const DIR: &str = "/var/run/secrets/intentgate-attestation";
/// The Secret's key, and the file name in `DIR`.
pub const KEY: &str = "key.pem";
/// The largest JWK Set file served.
const MAX_JWKS_BYTES: u64 = 256 * 1024;

/// `attestation:` of the inject config.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AttestationKeys {
    /// The Secret (in each injected pod's namespace) holding `key.pem`.
    pub secret: String,
    /// A directory of public JWK Sets, `NAMESPACE.json`, served at `GET /jwks/NAMESPACE`.
    pub jwks_dir: Option<PathBuf>,
}

/// The sidecar's flag and value.
pub fn args(keys: Option<&AttestationKeys>) -> Vec<String> {
    match keys {
        Some(_) => vec!["--attestation-key".into(), format!("{DIR}/{KEY}")],
        None => Vec::new(),
    }
}

/// The sidecar's mount of the key.
pub fn mount(keys: Option<&AttestationKeys>) -> Option<Value> {
    keys.map(|_| json!({"name": VOLUME, "mountPath": DIR, "readOnly": true}))
}

/// The pod's volume of the key Secret.
pub fn volume(keys: Option<&AttestationKeys>) -> Option<Value> {
    keys.map(|k| {
        json!({"name": VOLUME, "secret": {"secretName": k.secret,
            "items": [{"key": KEY, "path": KEY}], "defaultMode": SIDECAR_FILE_MODE}})
    })
}

/// Refuses a pod whose own containers or volumes reach the key Secret: the agent must not be
/// able to sign attestations itself.
pub fn check(pod: &Value, keys: Option<&AttestationKeys>) -> Result<(), String> {
    let Some(k) = keys else { return Ok(()) };
    match super::credentials::reached_by_pod(pod, &k.secret) {
        Some(r#where) => Err(format!(
            "Secret '{}' (the attestation key) is also {where}; it goes to the intentgate \
             sidecar only",
            k.secret
        )),
        None => Ok(()),
    }
}

/// A namespace name: a DNS-1123 label (so it names a file of `jwks_dir`, nothing else).
fn valid_namespace(ns: &str) -> bool {
    !ns.is_empty()
        && ns.len() <= 63
        && !ns.starts_with('-')
        && !ns.ends_with('-')
        && ns
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Why a namespace's JWK Set is not served.
#[derive(Debug, PartialEq)]
pub enum NoJwks {
    /// No `attestation.jwks_dir`, not a namespace name, or no file for it.
    NotFound(String),
    /// Its file is there but not a JWK Set with a usable key (the platform's to fix).
    Invalid(String),
}

/// The JWK Set of namespace `ns`, read from `dir` now (a changed file is served at once).
pub fn jwks(dir: Option<&Path>, ns: &str) -> Result<Vec<u8>, NoJwks> {
    let Some(dir) = dir else {
        return Err(NoJwks::NotFound(
            "this server serves no JWK Sets (attestation.jwks_dir is unset)".into(),
        ));
    };
    if !valid_namespace(ns) {
        return Err(NoJwks::NotFound(format!("'{ns}' is not a namespace name")));
    }
    let file = dir.join(format!("{ns}.json"));
    let text = match std::fs::metadata(&file) {
        Ok(m) if m.len() > MAX_JWKS_BYTES => Err(format!("over {MAX_JWKS_BYTES} bytes")),
        Ok(_) => std::fs::read(&file).map_err(|e| e.to_string()),
        Err(_) => {
            return Err(NoJwks::NotFound(format!(
                "namespace '{ns}' has no attestation JWK Set"
            )));
        }
    }
    .map_err(|e| NoJwks::Invalid(format!("{}: {e}", file.display())))?;
    let invalid = |e: String| NoJwks::Invalid(format!("{}: {e}", file.display()));
    crate::jws::Jwks::parse(&text).map_err(|e| invalid(e.to_string()))?;
    if holds_private_parts(&text) {
        // A private key put here by mistake is never served.
        return Err(invalid("holds private key material ('d' or 'k')".into()));
    }
    Ok(text)
}

/// Whether any key of a JWK Set carries a private part (`d` of RSA/EC/OKP, `k` of oct).
fn holds_private_parts(text: &[u8]) -> bool {
    let doc: Value = serde_json::from_slice(text).unwrap_or(Value::Null);
    doc["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|k| k.get("d").is_some() || k.get("k").is_some())
}
