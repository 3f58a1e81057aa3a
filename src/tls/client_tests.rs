//! Tests of the upstream TLS client configuration.

use super::*;

use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::tls::leaf::LeafName;
use crate::tls::test_support::{ca, minter};

/// Serves one fixed certificate whatever the client asks for.
#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// A TLS server on 127.0.0.1 presenting a leaf for `cert_name` from `ca`; it writes `hello`
/// to each client after the handshake.
async fn tls_upstream(
    ca: &Arc<crate::tls::ca::CertificateAuthority>,
    cert_name: &str,
) -> std::net::SocketAddr {
    let key = minter(ca)
        .mint(&LeafName::parse(cert_name).unwrap())
        .unwrap();
    let mut cfg = ServerConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Fixed(Arc::new(key))));
    cfg.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut s) = acceptor.accept(tcp).await {
                    let _ = s.write_all(b"hello").await;
                    let _ = s.shutdown().await;
                }
            });
        }
    });
    addr
}

fn ca_file(dir: &Path, ca: &crate::tls::ca::CertificateAuthority) -> PathBuf {
    let p = dir.join("upstream-ca.pem");
    // A bundle: another CA first, then the one that matters.
    let other = crate::tls::ca::CertificateAuthority::ephemeral().unwrap();
    std::fs::write(&p, format!("{}{}", other.cert_pem(), ca.cert_pem())).unwrap();
    p
}

#[tokio::test]
async fn untrusted_self_signed_upstream_is_refused_with_a_reason() {
    let ca = ca();
    let addr = tls_upstream(&ca, "localhost").await;
    let up = UpstreamTls::new(UpstreamRoots::Webpki, None).unwrap();
    assert!(up.root_count() > 100, "the Mozilla roots");
    let tcp = TcpStream::connect(addr).await.unwrap();
    let err = up
        .connect(tcp, "localhost", UpstreamAlpn::H2OrHttp1)
        .await
        .err()
        .unwrap();
    assert_eq!(err.failure, TlsFailure::UnknownIssuer);
    assert_eq!(err.failure.code(), "unknown_issuer");
    assert!(
        err.reason.contains("not signed by a trusted CA"),
        "{}",
        err.reason
    );
    assert!(err.reason.contains("tls.upstream_ca"), "{}", err.reason);
    assert!(
        err.to_string()
            .starts_with("TLS with upstream localhost failed"),
        "{err}"
    );
}

#[tokio::test]
async fn an_extra_ca_bundle_is_trusted_and_alpn_is_offered() {
    let ca = ca();
    let dir = tempfile::tempdir().unwrap();
    let addr = tls_upstream(&ca, "localhost").await;
    let up = UpstreamTls::new(UpstreamRoots::Webpki, Some(&ca_file(dir.path(), &ca))).unwrap();
    for (alpn, want) in [
        (UpstreamAlpn::H2OrHttp1, ALPN_H2),
        (UpstreamAlpn::Http1, ALPN_HTTP1),
    ] {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let mut s = up.connect(tcp, "localhost", alpn).await.unwrap();
        assert_eq!(s.get_ref().1.alpn_protocol(), Some(want));
        let mut got = String::new();
        s.read_to_string(&mut got).await.unwrap();
        assert_eq!(got, "hello");
    }
    // IP literals are verified against IP SANs.
    let addr = tls_upstream(&ca, "127.0.0.1").await;
    let tcp = TcpStream::connect(addr).await.unwrap();
    up.connect(tcp, "127.0.0.1", UpstreamAlpn::Http1)
        .await
        .unwrap();
}

#[tokio::test]
async fn wrong_name_and_not_tls_are_distinguished() {
    let ca = ca();
    let dir = tempfile::tempdir().unwrap();
    let up = UpstreamTls::new(UpstreamRoots::Webpki, Some(&ca_file(dir.path(), &ca))).unwrap();
    let addr = tls_upstream(&ca, "other.example").await;
    let tcp = TcpStream::connect(addr).await.unwrap();
    let err = up
        .connect(tcp, "localhost", UpstreamAlpn::Http1)
        .await
        .err()
        .unwrap();
    assert_eq!(err.failure, TlsFailure::NameMismatch, "{err}");
    assert!(err.reason.contains("localhost"), "{}", err.reason);

    let plain = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = plain.local_addr().unwrap();
    tokio::spawn(async move {
        if let Ok((mut s, _)) = plain.accept().await {
            let _ = s
                .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                .await;
        }
    });
    let tcp = TcpStream::connect(addr).await.unwrap();
    let err = up
        .connect(tcp, "localhost", UpstreamAlpn::Http1)
        .await
        .err()
        .unwrap();
    assert_eq!(err.failure, TlsFailure::Protocol, "{err}");

    let (c, _s) = tokio::io::duplex(1024);
    let err = up
        .connect(c, "bad name", UpstreamAlpn::Http1)
        .await
        .err()
        .unwrap();
    assert_eq!(err.failure, TlsFailure::InvalidName, "{err}");
}

#[test]
fn bundle_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let err = UpstreamTls::new(UpstreamRoots::Webpki, Some(&missing)).unwrap_err();
    assert!(
        err.to_string().starts_with(&missing.display().to_string()),
        "{err}"
    );
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "no certificates here").unwrap();
    let err = UpstreamTls::new(UpstreamRoots::Webpki, Some(&junk)).unwrap_err();
    assert!(
        err.to_string().starts_with(&junk.display().to_string()),
        "{err}"
    );
    assert!(err.to_string().contains("no PEM CERTIFICATE"), "{err}");
    let cfg = TlsConfig {
        upstream_ca: Some(junk.clone()),
        ..TlsConfig::default()
    };
    assert!(UpstreamTls::from_config(&cfg).is_err());
}

#[test]
fn system_roots_load_or_say_why() {
    match UpstreamTls::new(UpstreamRoots::System, None) {
        Ok(up) => assert!(up.root_count() > 0),
        Err(e) => assert!(matches!(e, UpstreamTlsConfigError::NoSystemRoots(_)), "{e}"),
    }
}
