//! The control deployment's serving certificate, reloaded when its files change: cert-manager
//! renews the Secret, the kubelet writes a new timestamped directory and swaps the `..data`
//! symlink to it. Each TLS handshake takes the pair in force; a new pair replaces it only once
//! both files parse and the key matches the certificate, so a half-written or broken pair
//! leaves the old one serving.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tracing::{info, warn};

/// The certificate and key files, and the pair in force.
pub struct Certs {
    cert: PathBuf,
    key: PathBuf,
    current: ArcSwap<CertifiedKey>,
    /// The bytes last tried (good or refused), so an unchanged pair is not parsed again and a
    /// refused one is reported once.
    seen: Mutex<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for Certs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certs")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// A parsed pair and what to log about it.
struct Pair {
    key: CertifiedKey,
    serial: String,
    not_after: String,
}

fn parse(cert: &Path, key: &Path, cert_pem: &[u8], key_pem: &[u8]) -> Result<Pair, String> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    let first = chain
        .first()
        .ok_or_else(|| format!("{}: no PEM certificate", cert.display()))?;
    let (_, x509) = x509_parser::parse_x509_certificate(first)
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    let serial = x509.tbs_certificate.raw_serial_as_string();
    let not_after = x509.validity().not_after.to_string();
    let der =
        PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| format!("{}: {e}", key.display()))?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let key = CertifiedKey::from_der(chain, der, &provider).map_err(|e| {
        format!(
            "{} and {}: {e} (is the key the certificate's?)",
            cert.display(),
            key.display()
        )
    })?;
    Ok(Pair {
        key,
        serial,
        not_after,
    })
}

fn read(p: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(p).map_err(|e| format!("{}: cannot read: {e}", p.display()))
}

impl Certs {
    /// Loads the pair; an error names the file (the process exits 2 at start).
    pub fn load(cert: &Path, key: &Path) -> Result<Self, String> {
        let (c, k) = (read(cert)?, read(key)?);
        let pair = parse(cert, key, &c, &k)?;
        info!(cert = %cert.display(), serial = %pair.serial, not_after = %pair.not_after, "serving certificate loaded");
        Ok(Certs {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: ArcSwap::from_pointee(pair.key),
            seen: Mutex::new((c, k)),
        })
    }

    /// Reads the files again; swaps in a changed pair once it parses. Returns whether the
    /// pair in force changed. Two small reads and a comparison when nothing changed.
    pub fn refresh(&self) -> bool {
        let (c, k) = match (read(&self.cert), read(&self.key)) {
            (Ok(c), Ok(k)) => (c, k),
            // Mid-swap or removed: try again at the next tick, the old pair serving meanwhile.
            (Err(e), _) | (_, Err(e)) => {
                warn!(error = %e, "serving certificate unreadable; the one in force stays");
                return false;
            }
        };
        let Ok(mut seen) = self.seen.lock() else {
            return false;
        };
        if seen.0 == c && seen.1 == k {
            return false;
        }
        let result = parse(&self.cert, &self.key, &c, &k);
        *seen = (c, k);
        match result {
            Ok(pair) => {
                self.current.store(Arc::new(pair.key));
                info!(serial = %pair.serial, not_after = %pair.not_after, "serving certificate reloaded");
                true
            }
            Err(e) => {
                warn!(error = %e, "new serving certificate refused; the one in force stays");
                false
            }
        }
    }

    /// A rustls server config whose every handshake presents the pair in force.
    pub fn server_config(self: &Arc<Self>) -> Result<rustls::ServerConfig, rustls::Error> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(cfg)
    }
}

impl ResolvesServerCert for Certs {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}
