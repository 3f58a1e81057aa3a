//! Files read and re-read on change: an issuer's JWK Set (`jwks_file`), the revocation list
//! (`revoked`, one `jti` a line) and the attestation signing key (`attestation.key_file`). A
//! file that turns unreadable or invalid is logged and the last good content is kept.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;

use super::mint::SigningKey;
use crate::jws::Jwks;

/// What identifies a version of a file without reading it.
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Content parsed from a file, swapped when the file changes and the new content parses.
pub struct Watched<T> {
    path: PathBuf,
    parse: fn(&[u8]) -> Result<T, String>,
    current: ArcSwap<T>,
    stamp: std::sync::Mutex<Stamp>,
}

impl<T> std::fmt::Debug for Watched<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watched").field("path", &self.path).finish()
    }
}

impl<T> Watched<T> {
    /// Reads and parses `path`; an error names the file.
    pub fn load(path: &Path, parse: fn(&[u8]) -> Result<T, String>) -> Result<Self, String> {
        let before = stamp(path);
        let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let value = parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Watched {
            path: path.to_path_buf(),
            parse,
            current: ArcSwap::from_pointee(value),
            stamp: std::sync::Mutex::new(before),
        })
    }

    /// The last good content.
    pub fn get(&self) -> Arc<T> {
        self.current.load_full()
    }

    /// Re-reads the file if its modification time or size changed; true when new content was
    /// taken. A file that cannot be read or parsed keeps the last good content (and is retried
    /// at the next change).
    pub fn refresh(&self) -> bool {
        let now = stamp(&self.path);
        {
            let Ok(mut seen) = self.stamp.lock() else {
                return false;
            };
            if *seen == now {
                return false;
            }
            *seen = now;
        }
        let parsed = std::fs::read(&self.path)
            .map_err(|e| e.to_string())
            .and_then(|t| (self.parse)(&t));
        match parsed {
            Ok(v) => {
                self.current.store(Arc::new(v));
                tracing::info!(file = %self.path.display(), "token keys: file reloaded");
                true
            }
            Err(error) => {
                tracing::warn!(file = %self.path.display(), %error,
                    "token keys: file not reloaded, the last good content is kept");
                false
            }
        }
    }
}

/// Parses a JWK Set document.
pub fn parse_jwks(text: &[u8]) -> Result<Jwks, String> {
    Jwks::parse(text).map_err(|e| e.to_string())
}

/// Parses an Ed25519 signing key (PKCS#8 PEM), as attestations are signed with.
pub fn parse_ed25519(text: &[u8]) -> Result<SigningKey, String> {
    let key = SigningKey::from_pem(text)?;
    if key.alg() != crate::jws::Alg::EdDsa {
        return Err("attestations are signed with an Ed25519 key".into());
    }
    Ok(key)
}

/// Parses a revocation list: one `jti` a line; blank lines and `#` comments are skipped.
pub fn parse_revoked(text: &[u8]) -> Result<HashSet<String>, String> {
    let text = std::str::from_utf8(text).map_err(|_| "not UTF-8 text".to_string())?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect())
}
