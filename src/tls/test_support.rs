//! Helpers shared by the TLS unit tests: a CA, a minter, clients trusting the CA, and the
//! first flight of a real rustls client.

use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore};
use x509_parser::extensions::ParsedExtension;

use super::ca::CertificateAuthority;
use super::leaf::{LeafMinter, LeafSettings};

pub fn ca() -> Arc<CertificateAuthority> {
    Arc::new(CertificateAuthority::ephemeral().unwrap())
}

pub fn minter(ca: &Arc<CertificateAuthority>) -> Arc<LeafMinter> {
    Arc::new(LeafMinter::new(ca.clone(), LeafSettings::default()).unwrap())
}

/// A client config trusting only `ca`, offering `alpn`.
pub fn client_config(ca: &CertificateAuthority, alpn: &[&[u8]]) -> Arc<ClientConfig> {
    client_config_with(super::provider(), ca, alpn)
}

/// The same on another crypto provider (e.g. the stock suite order).
pub fn client_config_with(
    provider: Arc<rustls::crypto::CryptoProvider>,
    ca: &CertificateAuthority,
    alpn: &[&[u8]],
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.cert_der().clone()).unwrap();
    let mut cfg = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(cfg)
}

/// The bytes a rustls client sends first (its ClientHello) when connecting to `server`.
pub fn client_hello(server: &str, alpn: &[&[u8]]) -> Vec<u8> {
    let ca = CertificateAuthority::generate("test", std::time::Duration::from_secs(3600)).unwrap();
    let cfg = client_config(&ca, alpn);
    let name = ServerName::try_from(server.to_string()).unwrap();
    let mut conn = ClientConnection::new(cfg, name).unwrap();
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).unwrap();
    }
    out
}

/// The subjectKeyIdentifier of a certificate.
pub fn ski(der: &[u8]) -> Vec<u8> {
    let (_, x) = x509_parser::parse_x509_certificate(der).unwrap();
    x.iter_extensions()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
            _ => None,
        })
        .unwrap()
}

/// The authorityKeyIdentifier of a certificate.
pub fn aki(der: &[u8]) -> Vec<u8> {
    let (_, x) = x509_parser::parse_x509_certificate(der).unwrap();
    x.iter_extensions()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(a) => {
                a.key_identifier.as_ref().map(|k| k.0.to_vec())
            }
            _ => None,
        })
        .unwrap()
}
