//! `--tls`: interception's work with intentgate's TLS stack (rustls on aws-lc-rs, its cipher
//! suite order): one leaf for 127.0.0.1/localhost signed by the CA at start (intentgate mints
//! one per host and caches it: a kept tunnel pays neither), each CONNECT tunnel's TLS terminated
//! with it and served by hyper, the upstream reached over rustls verified against a CA bundle.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use http::uri::Authority;
use hyper::server::conn::http1 as server;
use hyper::service::service_fn;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use rcgen::{
    CertificateParams, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, SanType,
};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::forward::{self, Conn};

pub(crate) struct Tls {
    acceptor: TlsAcceptor,
    connector: TlsConnector,
}

/// intentgate's provider (src/tls/mod.rs `provider`): aws-lc-rs, AES-128-GCM suites first.
fn provider() -> Arc<CryptoProvider> {
    use rustls::CipherSuite as S;
    let mut p = rustls::crypto::aws_lc_rs::default_provider();
    p.cipher_suites.sort_by_key(|s| {
        !matches!(
            s.suite(),
            S::TLS13_AES_128_GCM_SHA256
                | S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                | S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
        )
    });
    Arc::new(p)
}

impl Tls {
    pub(crate) fn new(ca_cert: &Path, ca_key: &Path, upstream_ca: &Path) -> Result<Self, String> {
        let read =
            |p: &Path| std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()));
        let err = |what: &'static str| move |e: rcgen::Error| format!("{what}: {e}");
        let issuer_key = KeyPair::from_pem(&read(ca_key)?).map_err(err("CA key"))?;
        let issuer = Issuer::from_ca_cert_pem(&read(ca_cert)?, issuer_key).map_err(err("CA"))?;
        let ca_der = CertificateDer::from_pem_file(ca_cert).map_err(|e| format!("CA: {e}"))?;
        // As intentgate's leaves (src/tls/leaf.rs `mint`): P-256, server auth, chain leaf + CA.
        let leaf_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(err("leaf key"))?;
        let mut params =
            CertificateParams::new(vec!["localhost".to_string()]).map_err(err("leaf"))?;
        params
            .subject_alt_names
            .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        params
            .distinguished_name
            .push(DnType::CommonName, "127.0.0.1");
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let leaf = params.signed_by(&leaf_key, &issuer).map_err(err("leaf"))?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));

        let tls_err = |e: rustls::Error| e.to_string();
        let mut server = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(tls_err)?
            .with_no_client_auth()
            .with_single_cert(vec![leaf.der().clone(), ca_der], key)
            .map_err(tls_err)?;
        // HTTP/1 only (intentgate also offers h2; oha asks for http/1.1).
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        server.ignore_client_order = true;
        server.session_storage = rustls::server::ServerSessionMemoryCache::new(1024);

        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(upstream_ca).map_err(|e| format!("{e}"))? {
            roots
                .add(cert.map_err(|e| format!("upstream CA: {e}"))?)
                .map_err(tls_err)?;
        }
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| e.to_string())?;
        let mut client = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(tls_err)?
            .with_webpki_verifier(verifier)
            .with_no_client_auth();
        client.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            connector: TlsConnector::from(Arc::new(client)),
        })
    }

    /// TLS to `host` over `tcp`, the certificate verified for that name.
    pub(crate) async fn connect(
        &self,
        host: &str,
        tcp: TcpStream,
    ) -> std::io::Result<TlsStream<TcpStream>> {
        let name = ServerName::try_from(host.to_string()).map_err(std::io::Error::other)?;
        self.connector.connect(name, tcp).await
    }
}

/// A CONNECT tunnel once hyper hands it over: TLS terminated, its requests served like the
/// listener's (the same server settings), each sent to `target` over a kept TLS connection.
/// Boxed as `Send`: its service is `forward::handle` again, whose future spawns this one.
pub(crate) fn intercept(
    upgrade: OnUpgrade,
    target: Authority,
    tls: Arc<Tls>,
    builder: Arc<server::Builder>,
) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let Ok(stream) = tls.acceptor.accept(TokioIo::new(upgraded)).await else {
            return;
        };
        let conn = Arc::new(Conn::new(Some(target), Some(tls), builder.clone()));
        let service = service_fn(move |req| forward::handle(conn.clone(), req));
        let _ = builder
            .serve_connection(TokioIo::new(stream), service)
            .await;
    })
}
