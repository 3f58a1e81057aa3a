//! The client-facing side of interception: the client's SNI is checked against the CONNECT
//! authority, the leaf for the tunnel's host is taken from the cache or minted (off the runtime
//! threads, `leaf::LeafMinter::get`), and a rustls `ServerConfig` per tunnel answers with it;
//! ALPN offers `h2` and `http/1.1`.

use std::fmt;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::server::{Acceptor, ClientHello, ResolvesServerCert, StoresServerSessions};
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::LazyConfigAcceptor;
use tokio_rustls::server::TlsStream;

use super::leaf::{LeafMinter, LeafName};
use crate::vocab::ErrorCode;

/// ALPN protocol ids.
pub const ALPN_H2: &[u8] = b"h2";
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// Why a client's ClientHello does not fit its tunnel.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SniRefusal {
    #[error("the TLS client sent no server name (SNI) for the tunnel to {tunnel}")]
    Missing { tunnel: LeafName },
    #[error("the TLS server name (SNI) '{sni}' does not match the tunnel's host {tunnel}")]
    Mismatch { sni: String, tunnel: LeafName },
    #[error("the TLS server name (SNI) '{sni}' is not a valid host name")]
    Invalid { sni: String },
}

impl SniRefusal {
    /// A stable code for the audit log and metrics.
    pub fn code(&self) -> ErrorCode {
        match self {
            SniRefusal::Missing { .. } => ErrorCode::SniMissing,
            SniRefusal::Mismatch { .. } => ErrorCode::SniMismatch,
            SniRefusal::Invalid { .. } => ErrorCode::SniInvalid,
        }
    }
}

/// The name to mint a leaf for, given the tunnel's host and the client's SNI: the SNI must name
/// the tunnel's host (case and a trailing dot aside); no SNI is accepted only for IP tunnels.
pub fn check_sni(tunnel: &LeafName, sni: Option<&str>) -> Result<LeafName, SniRefusal> {
    match sni {
        None if tunnel.is_ip() => Ok(tunnel.clone()),
        None => Err(SniRefusal::Missing {
            tunnel: tunnel.clone(),
        }),
        Some(s) => {
            let name = LeafName::parse(s).map_err(|_| SniRefusal::Invalid { sni: s.into() })?;
            if &name == tunnel {
                Ok(name)
            } else {
                Err(SniRefusal::Mismatch {
                    sni: s.into(),
                    tunnel: tunnel.clone(),
                })
            }
        }
    }
}

/// Answers every handshake of one tunnel with the leaf fetched before it started (`None`
/// refuses: rustls ends the handshake with an `access_denied` alert).
#[derive(Debug)]
struct Fetched(Option<Arc<CertifiedKey>>);

impl ResolvesServerCert for Fetched {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.clone()
    }
}

/// A completed interception handshake.
pub struct Intercepted<IO> {
    pub stream: TlsStream<IO>,
    /// The name the leaf was minted for.
    pub name: LeafName,
    /// The ALPN protocol agreed, if any.
    pub alpn: Option<Vec<u8>>,
}

impl<IO> Intercepted<IO> {
    /// Whether the client and proxy agreed on HTTP/2.
    pub fn is_h2(&self) -> bool {
        self.alpn.as_deref() == Some(ALPN_H2)
    }
}

/// Why an interception handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum InterceptError {
    #[error(transparent)]
    Sni(SniRefusal),
    #[error("TLS handshake with the client failed: {0}")]
    Handshake(std::io::Error),
}

/// Makes the per-tunnel server configs; one per process, shared.
pub struct Interceptor {
    minter: Arc<LeafMinter>,
    base: ServerConfig,
}

impl fmt::Debug for Interceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Interceptor")
            .field("minter", &self.minter)
            .field("alpn", &self.base.alpn_protocols)
            .finish_non_exhaustive()
    }
}

impl Interceptor {
    /// TLS 1.2 and 1.3 on aws-lc-rs, AES-128-GCM first; ALPN `h2` then `http/1.1`; session
    /// resumption shared by all tunnels (rustls only resumes a session for the server name it
    /// was made for).
    pub fn new(minter: Arc<LeafMinter>) -> Result<Self, rustls::Error> {
        // Every tunnel gets its own resolver (`accept`); this one is never asked.
        let resolver = Arc::new(Fetched(None));
        let mut base = ServerConfig::builder_with_provider(super::provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(resolver);
        base.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec()];
        // Our suite order, not the client's (most put AES-256-GCM/SHA-384 first): see
        // `super::provider`.
        base.ignore_client_order = true;
        let sessions: Arc<dyn StoresServerSessions> =
            rustls::server::ServerSessionMemoryCache::new(1024);
        base.session_storage = sessions;
        Ok(Self { minter, base })
    }

    /// Replaces the offered ALPN protocols (e.g. only `http/1.1`).
    #[cfg(test)]
    pub fn with_alpn(mut self, protocols: &[&[u8]]) -> Self {
        self.base.alpn_protocols = protocols.iter().map(|p| p.to_vec()).collect();
        self
    }

    pub fn minter(&self) -> &Arc<LeafMinter> {
        &self.minter
    }

    /// Performs the handshake with a client inside a tunnel to `tunnel`. The SNI is checked
    /// (and a refusal reported with its reason) before any certificate is minted; a refused
    /// client gets an `access_denied` alert. The caller bounds this with a timeout.
    pub async fn accept<IO>(
        &self,
        io: IO,
        tunnel: &LeafName,
    ) -> Result<Intercepted<IO>, InterceptError>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let start = LazyConfigAcceptor::new(Acceptor::default(), io)
            .await
            .map_err(InterceptError::Handshake)?;
        let verdict = check_sni(tunnel, start.client_hello().server_name());
        let key = match &verdict {
            Ok(name) => match self.minter.get(name).await {
                Ok(key) => Some(key),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot mint leaf certificate");
                    None
                }
            },
            Err(why) => {
                tracing::debug!(reason = %why, "refusing TLS client");
                None
            }
        };
        // Refused or not, the handshake runs: without a key rustls sends the client an alert
        // instead of a bare close.
        let mut cfg = self.base.clone();
        cfg.cert_resolver = Arc::new(Fetched(key));
        let result = start.into_stream(Arc::new(cfg)).await;
        let name = verdict.map_err(InterceptError::Sni)?;
        let stream = result.map_err(InterceptError::Handshake)?;
        let alpn = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        Ok(Intercepted { stream, name, alpn })
    }
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
