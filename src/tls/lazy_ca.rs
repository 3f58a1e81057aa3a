//! The interception CA, made on first use when the configuration gives none.

use std::sync::OnceLock;

use rcgen::{CertificateParams, KeyPair};
use rustls_pki_types::CertificateDer;

use super::ca::{CertificateAuthority, SignLeaf};

/// The CA that signs leaf certificates: the configured one (`tls.ca_cert`/`tls.ca_key`),
/// loaded at start, or an ephemeral one made the first time it is needed — the first
/// intercepted tunnel's mint (on the blocking pool) or `run` handing it to its child. A proxy
/// that never intercepts never generates the key, and the key generation's code and tables
/// stay out of its resident memory.
#[derive(Debug)]
pub struct LazyCa(OnceLock<CertificateAuthority>);

impl LazyCa {
    /// A CA loaded at start.
    pub fn given(ca: CertificateAuthority) -> Self {
        Self(OnceLock::from(ca))
    }

    /// An ephemeral CA, made on first use.
    pub fn ephemeral() -> Self {
        Self(OnceLock::new())
    }

    /// The CA, made now if it was not yet (`get_or_make`).
    pub fn get(&self) -> Result<&CertificateAuthority, String> {
        get_or_make(&self.0, || {
            CertificateAuthority::ephemeral().map_err(|e| format!("ephemeral CA: {e}"))
        })
    }

    /// Whether the CA exists yet (tests: start-up does not make it).
    #[cfg(test)]
    pub fn is_made(&self) -> bool {
        self.0.get().is_some()
    }
}

impl SignLeaf for LazyCa {
    fn sign(
        &self,
        params: CertificateParams,
        leaf_key: &KeyPair,
    ) -> Result<Vec<CertificateDer<'static>>, String> {
        self.get()?.sign(params, leaf_key)
    }

    fn not_after(&self) -> Result<i64, String> {
        self.get()?.not_after()
    }
}

/// What `cell` holds, made by `make` if it holds nothing yet. A failure is not kept: the next
/// call tries again. Two first calls at once may both make one; one is kept and both get it.
pub(crate) fn get_or_make<T>(
    cell: &OnceLock<T>,
    make: impl FnOnce() -> Result<T, String>,
) -> Result<&T, String> {
    if let Some(made) = cell.get() {
        return Ok(made);
    }
    let made = make()?;
    Ok(cell.get_or_init(|| made))
}
