//! TLS: the local CA (`ca`), leaf certificates minted per intercepted host (`leaf`), the
//! client-facing interception config (`server`), the ClientHello peeker that tells TLS from
//! plain HTTP and reads SNI/ALPN (`sni`) with its read-and-replay stream (`rewind`), the
//! verifying upstream client (`client`), one-shot HTTPS reads for the control plane (`fetch`) and
//! the reads of a TLS stream polled again only once woken (`woken`).
//!
//! Everything runs on rustls with the aws-lc-rs provider, passed explicitly to every config.

use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;

pub mod ca;
pub mod client;
pub mod fetch;
pub mod lazy_ca;
pub mod leaf;
pub mod rewind;
pub mod server;
pub mod sni;
#[cfg(test)]
mod test_support;
pub(crate) mod woken;

/// The crypto provider every intentgate TLS config is built with (aws-lc-rs), preferring the
/// AES-128-GCM/SHA-256 suites. The stock order puts AES-256-GCM/SHA-384 first, and a TLS 1.3
/// handshake runs ~25 HKDF expansions of its hash: SHA-384 has no CPU instructions (and on AMD
/// no vectorised code in aws-lc), SHA-256 has SHA-NI, so SHA-384 was 15 % of the CPU of a
/// new intercepted connection. AES-128-GCM is TLS 1.3's mandatory suite (128-bit security).
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            use rustls::CipherSuite as S;
            let mut p = rustls::crypto::aws_lc_rs::default_provider();
            // Stable: the rest keeps the stock order.
            p.cipher_suites.sort_by_key(|s| {
                !matches!(
                    s.suite(),
                    S::TLS13_AES_128_GCM_SHA256
                        | S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                        | S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
                )
            });
            Arc::new(p)
        })
        .clone()
}

/// Installs the provider as the process default, for code that builds rustls configs without
/// naming one. Call once at start-up; later calls (or another default already set) are no-ops.
pub fn install_default_provider() {
    let _ = CryptoProvider::install_default((*provider()).clone());
}

/// Why the TLS parts could not be set up from the configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error(transparent)]
    Ca(#[from] ca::CaError),
    #[error(transparent)]
    Leaf(#[from] leaf::LeafError),
    #[error(transparent)]
    Upstream(#[from] client::UpstreamTlsConfigError),
    #[error("cannot build the interception TLS config: {0}")]
    Server(#[from] rustls::Error),
}

/// Everything TLS that `serve` needs, built once from the `tls` section.
#[derive(Debug)]
pub struct Tls {
    pub ca: Arc<lazy_ca::LazyCa>,
    /// Whether the CA came from `tls.ca_cert`/`tls.ca_key` (`intercept: auto` then intercepts).
    pub ca_configured: bool,
    pub interceptor: Arc<server::Interceptor>,
    pub upstream: client::UpstreamTls,
}

impl Tls {
    /// Loads the configured CA (an ephemeral one is made on first use), the leaf minter and
    /// cache, the interception config and the upstream trust roots. Errors name the file at
    /// fault.
    pub fn from_config(cfg: &crate::config::TlsConfig) -> Result<Self, TlsSetupError> {
        let (ca, ca_configured) = match (&cfg.ca_cert, &cfg.ca_key) {
            (Some(cert), Some(key)) => (
                lazy_ca::LazyCa::given(ca::CertificateAuthority::load(cert, key)?),
                true,
            ),
            _ => (lazy_ca::LazyCa::ephemeral(), false),
        };
        let ca = Arc::new(ca);
        let settings = leaf::LeafSettings {
            cache_entries: cfg.leaf_cache_entries,
            ..leaf::LeafSettings::default()
        };
        let minter = Arc::new(leaf::LeafMinter::new(ca.clone(), settings)?);
        Ok(Self {
            ca,
            ca_configured,
            interceptor: Arc::new(server::Interceptor::new(minter)?),
            upstream: client::UpstreamTls::from_config(cfg)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TlsConfig;

    #[test]
    fn from_config_loads_or_makes_a_ca() {
        let t = Tls::from_config(&TlsConfig::default()).unwrap();
        assert!(!t.ca_configured);
        assert!(t.upstream.root_count() > 100);
        // No key is made at start: the ephemeral CA is made by the first mint, then kept.
        assert!(!t.ca.is_made());
        let minter = t.interceptor.minter();
        let leaf = minter
            .mint(&leaf::LeafName::parse("a.example").unwrap())
            .unwrap();
        assert!(t.ca.is_made());
        let made = t.ca.get().unwrap();
        assert_eq!(&leaf.cert[1], made.cert_der());
        assert_eq!(t.ca.get().unwrap().fingerprint(), made.fingerprint());
        let again = minter
            .mint(&leaf::LeafName::parse("b.example").unwrap())
            .unwrap();
        assert_eq!(&again.cert[1], made.cert_der());

        let dir = tempfile::tempdir().unwrap();
        let files = ca::init(dir.path()).unwrap();
        let cfg = TlsConfig {
            ca_cert: Some(files.cert.clone()),
            ca_key: Some(files.key.clone()),
            leaf_cache_entries: 5,
            ..TlsConfig::default()
        };
        let t = Tls::from_config(&cfg).unwrap();
        assert!(t.ca_configured);
        assert!(t.ca.is_made());
        assert_eq!(t.ca.get().unwrap().fingerprint(), files.fingerprint);
        assert_eq!(t.interceptor.minter().settings().cache_entries, 5);

        let missing = dir.path().join("nope.pem");
        let cfg = TlsConfig {
            ca_key: Some(missing.clone()),
            ..cfg
        };
        let err = Tls::from_config(&cfg).unwrap_err().to_string();
        assert!(err.starts_with(&missing.display().to_string()), "{err}");
    }
}
