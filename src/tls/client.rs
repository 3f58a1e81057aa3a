//! TLS towards the upstream: rustls verifying the real server against the Mozilla roots
//! (`webpki-roots`) or the OS store, plus an optional extra CA bundle. A failed verification is
//! an error carrying its reason — never downgraded or skipped.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::{CertificateError, ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::server::{ALPN_H2, ALPN_HTTP1};
use crate::config::{TlsConfig, UpstreamRoots};

/// Why the upstream trust settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamTlsConfigError {
    #[error("{}: cannot read: {source}", file.display())]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {detail}", file.display())]
    Bundle { file: PathBuf, detail: String },
    #[error("no trusted roots could be loaded from the system store: {0}")]
    NoSystemRoots(String),
    #[error("cannot build the upstream TLS client: {0}")]
    Build(String),
}

/// What went wrong, as a stable code for the audit log, metrics and the `upstream_tls` answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFailure {
    /// The chain does not lead to a trusted root (self-signed, private CA, missing intermediate).
    UnknownIssuer,
    NameMismatch,
    Expired,
    NotYetValid,
    Revoked,
    /// Any other certificate problem (bad encoding, signature, unsupported algorithm, …).
    BadCertificate,
    /// The server sent a TLS alert.
    Alert,
    /// The server broke the TLS protocol (or is not speaking TLS).
    Protocol,
    /// The host cannot be used as a TLS server name.
    InvalidName,
    /// The connection failed during the handshake.
    Io,
}

impl TlsFailure {
    #[cfg(test)]
    pub fn code(self) -> &'static str {
        match self {
            TlsFailure::UnknownIssuer => "unknown_issuer",
            TlsFailure::NameMismatch => "name_mismatch",
            TlsFailure::Expired => "expired",
            TlsFailure::NotYetValid => "not_yet_valid",
            TlsFailure::Revoked => "revoked",
            TlsFailure::BadCertificate => "bad_certificate",
            TlsFailure::Alert => "alert",
            TlsFailure::Protocol => "protocol",
            TlsFailure::InvalidName => "invalid_name",
            TlsFailure::Io => "io",
        }
    }
}

/// A failed TLS handshake with an upstream: becomes a 502 with `error: "upstream_tls"`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("TLS with upstream {server} failed: {reason}")]
pub struct UpstreamTlsError {
    pub server: String,
    pub failure: TlsFailure,
    /// A sentence a person (or an agent) can act on.
    pub reason: String,
}

impl From<UpstreamTlsError> for crate::error::ProxyError {
    fn from(e: UpstreamTlsError) -> Self {
        crate::error::ProxyError::UpstreamTls {
            target: e.server,
            reason: e.reason,
        }
    }
}

/// Which ALPN protocols to offer the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamAlpn {
    /// `h2` then `http/1.1`.
    H2OrHttp1,
    /// `http/1.1` only.
    Http1,
}

/// The upstream TLS client configs; one per process, shared.
#[derive(Clone)]
pub struct UpstreamTls {
    h2_or_http1: Arc<ClientConfig>,
    http1: Arc<ClientConfig>,
    roots: usize,
}

impl fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("roots", &self.roots)
            .finish_non_exhaustive()
    }
}

impl UpstreamTls {
    /// From `tls.upstream_roots` and `tls.upstream_ca`.
    pub fn from_config(cfg: &TlsConfig) -> Result<Self, UpstreamTlsConfigError> {
        Self::new(cfg.upstream_roots, cfg.upstream_ca.as_deref())
    }

    /// Trusts `roots` plus every certificate in the PEM bundle `extra_ca`.
    pub fn new(
        roots: UpstreamRoots,
        extra_ca: Option<&Path>,
    ) -> Result<Self, UpstreamTlsConfigError> {
        let mut store = match roots {
            UpstreamRoots::Webpki => RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            },
            UpstreamRoots::System => system_roots()?,
        };
        if let Some(file) = extra_ca {
            add_bundle(&mut store, file)?;
        }
        Self::with_roots(store)
    }

    /// Trusts exactly `store` (tests; embedders with their own roots).
    pub fn with_roots(store: RootCertStore) -> Result<Self, UpstreamTlsConfigError> {
        let roots = store.len();
        let provider = super::provider();
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider.clone())
                .build()
                .map_err(|e| UpstreamTlsConfigError::Build(e.to_string()))?;
        let mut cfg = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| UpstreamTlsConfigError::Build(e.to_string()))?
            .with_webpki_verifier(verifier)
            .with_no_client_auth();
        cfg.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
        let http1 = Arc::new(cfg.clone());
        cfg.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec()];
        Ok(Self {
            h2_or_http1: Arc::new(cfg),
            http1,
            roots,
        })
    }

    /// The rustls config for `alpn` (e.g. for a pooled hyper connector).
    pub fn config(&self, alpn: UpstreamAlpn) -> Arc<ClientConfig> {
        match alpn {
            UpstreamAlpn::H2OrHttp1 => self.h2_or_http1.clone(),
            UpstreamAlpn::Http1 => self.http1.clone(),
        }
    }

    /// How many trust anchors are in use.
    #[cfg(test)]
    pub fn root_count(&self) -> usize {
        self.roots
    }

    /// TLS over `io` to `server_name` (a DNS name or an IP literal, brackets allowed),
    /// verifying its certificate. The caller bounds this with a timeout.
    pub async fn connect<IO>(
        &self,
        io: IO,
        server_name: &str,
        alpn: UpstreamAlpn,
    ) -> Result<TlsStream<IO>, UpstreamTlsError>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let bare = server_name
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(server_name);
        let name = ServerName::try_from(bare)
            .map_err(|e| UpstreamTlsError {
                server: server_name.to_string(),
                failure: TlsFailure::InvalidName,
                reason: format!("'{bare}' is not a valid TLS server name: {e}"),
            })?
            .to_owned();
        TlsConnector::from(self.config(alpn))
            .connect(name, io)
            .await
            .map_err(|e| classify(server_name, &e))
    }
}

/// Turns a handshake error into a failure code and a reason a person can act on.
pub fn classify(server: &str, err: &std::io::Error) -> UpstreamTlsError {
    let tls = err
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    let (failure, reason) = match tls {
        Some(rustls::Error::InvalidCertificate(c)) => certificate_reason(server, c),
        Some(rustls::Error::AlertReceived(a)) => (
            TlsFailure::Alert,
            format!("the server ended the handshake with the alert '{a:?}'"),
        ),
        Some(e @ rustls::Error::NoApplicationProtocol) => (TlsFailure::Protocol, e.to_string()),
        Some(e) => (
            TlsFailure::Protocol,
            format!("the server does not speak TLS as expected: {e}"),
        ),
        None => (
            TlsFailure::Io,
            format!("the connection failed during the TLS handshake: {err}"),
        ),
    };
    UpstreamTlsError {
        server: server.to_string(),
        failure,
        reason,
    }
}

fn certificate_reason(server: &str, c: &CertificateError) -> (TlsFailure, String) {
    use CertificateError as C;
    let failure = match c {
        C::UnknownIssuer => TlsFailure::UnknownIssuer,
        C::NotValidForName | C::NotValidForNameContext { .. } => TlsFailure::NameMismatch,
        C::Expired | C::ExpiredContext { .. } => TlsFailure::Expired,
        C::NotValidYet | C::NotValidYetContext { .. } => TlsFailure::NotYetValid,
        C::Revoked => TlsFailure::Revoked,
        _ => TlsFailure::BadCertificate,
    };
    let reason = match failure {
        TlsFailure::UnknownIssuer => format!(
            "the certificate of {server} is not signed by a trusted CA (self-signed, a private CA, \
             or a missing intermediate); if this server is yours, add its CA to tls.upstream_ca"
        ),
        _ => format!("the certificate of {server} was rejected: {c}"),
    };
    (failure, reason)
}

fn system_roots() -> Result<RootCertStore, UpstreamTlsConfigError> {
    let found = rustls_native_certs::load_native_certs();
    let mut store = RootCertStore::empty();
    let (added, ignored) = store.add_parsable_certificates(found.certs);
    for e in &found.errors {
        tracing::warn!(error = %e, "while loading system root certificates");
    }
    if ignored > 0 {
        tracing::warn!(ignored, "system root certificates that could not be parsed");
    }
    if added == 0 {
        let why = found
            .errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        return Err(UpstreamTlsConfigError::NoSystemRoots(if why.is_empty() {
            "the store is empty".into()
        } else {
            why
        }));
    }
    Ok(store)
}

/// A store holding exactly the certificates of a PEM bundle (`source` names it in errors).
pub fn pem_roots(bytes: &[u8], source: &Path) -> Result<RootCertStore, UpstreamTlsConfigError> {
    let mut store = RootCertStore::empty();
    add_pem(&mut store, bytes, source)?;
    Ok(store)
}

/// Adds every certificate of a PEM bundle file; the bundle must hold at least one, all valid.
fn add_bundle(store: &mut RootCertStore, file: &Path) -> Result<(), UpstreamTlsConfigError> {
    let bytes = std::fs::read(file).map_err(|source| UpstreamTlsConfigError::Read {
        file: file.to_path_buf(),
        source,
    })?;
    add_pem(store, &bytes, file)
}

fn add_pem(
    store: &mut RootCertStore,
    bytes: &[u8],
    source: &Path,
) -> Result<(), UpstreamTlsConfigError> {
    let bundle = |detail: String| UpstreamTlsConfigError::Bundle {
        file: source.to_path_buf(),
        detail,
    };
    let mut n = 0;
    for (i, cert) in CertificateDer::pem_slice_iter(bytes).enumerate() {
        let cert = cert.map_err(|e| bundle(format!("certificate {}: invalid PEM: {e}", i + 1)))?;
        store
            .add(cert)
            .map_err(|e| bundle(format!("certificate {}: not usable as a root: {e}", i + 1)))?;
        n += 1;
    }
    if n == 0 {
        return Err(bundle("no PEM CERTIFICATE block found".into()));
    }
    Ok(())
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
