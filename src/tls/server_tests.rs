//! Tests of the intercepting TLS server configuration.

use super::*;

use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio_rustls::TlsConnector;

use crate::tls::ca::CertificateAuthority;
use crate::tls::test_support::{ca, client_config, client_config_with, minter};

type ClientSide = std::io::Result<tokio_rustls::client::TlsStream<DuplexStream>>;

/// One handshake in memory: the proxy accepts for `tunnel`; a client trusting the CA connects
/// to `server_name` offering `alpn`.
async fn handshake(
    ic: &Interceptor,
    ca: &CertificateAuthority,
    tunnel: &str,
    server_name: &str,
    alpn: &[&[u8]],
) -> (
    Result<Intercepted<DuplexStream>, InterceptError>,
    ClientSide,
) {
    let (c, s) = tokio::io::duplex(64 * 1024);
    let tunnel = LeafName::parse(tunnel).unwrap();
    let name = ServerName::try_from(server_name.to_string()).unwrap();
    let connector = TlsConnector::from(client_config(ca, alpn));
    tokio::join!(ic.accept(s, &tunnel), connector.connect(name, c))
}

#[tokio::test]
async fn intercepts_with_alpn_and_one_mint_per_host() {
    let ca = ca();
    let ic = Interceptor::new(minter(&ca)).unwrap();
    let (server, client) = handshake(
        &ic,
        &ca,
        "api.example.com",
        "api.example.com",
        &[ALPN_H2, ALPN_HTTP1],
    )
    .await;
    let mut server = server.unwrap();
    let mut client = client.unwrap();
    assert!(server.is_h2());
    assert_eq!(server.name, LeafName::Dns("api.example.com".into()));
    client.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    server.stream.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");

    let (server, client) = handshake(
        &ic,
        &ca,
        "api.example.com",
        "API.Example.com",
        &[ALPN_HTTP1],
    )
    .await;
    let server = server.unwrap();
    client.unwrap();
    assert_eq!(server.alpn.as_deref(), Some(ALPN_HTTP1));
    assert!(!server.is_h2());
    let s = ic.minter().stats();
    assert_eq!((s.mints, s.hits), (1, 1), "one mint per host");

    let (server, _) = handshake(&ic, &ca, "api.example.com", "api.example.com", &[]).await;
    assert_eq!(server.unwrap().alpn, None);
}

#[tokio::test]
async fn the_proxy_picks_aes_128_gcm_even_when_the_client_prefers_aes_256() {
    use rustls::CipherSuite as S;
    // A client with the stock provider, whose first suite is AES-256-GCM/SHA-384.
    let stock = rustls::crypto::aws_lc_rs::default_provider();
    assert_eq!(stock.cipher_suites[0].suite(), S::TLS13_AES_256_GCM_SHA384);
    let ca = ca();
    let cfg = client_config_with(Arc::new(stock), &ca, &[]);
    let ic = Interceptor::new(minter(&ca)).unwrap();
    let (c, s) = tokio::io::duplex(64 * 1024);
    let tunnel = LeafName::parse("api.example.com").unwrap();
    let name = ServerName::try_from("api.example.com").unwrap();
    let (server, client) = tokio::join!(
        ic.accept(s, &tunnel),
        TlsConnector::from(cfg).connect(name, c)
    );
    server.unwrap();
    let client = client.unwrap();
    let suite = client.get_ref().1.negotiated_cipher_suite().unwrap();
    assert_eq!(suite.suite(), S::TLS13_AES_128_GCM_SHA256);
}

#[tokio::test]
async fn sni_must_name_the_tunnel_host() {
    let ca = ca();
    let ic = Interceptor::new(minter(&ca)).unwrap();
    let (server, client) =
        handshake(&ic, &ca, "api.example.com", "evil.example", &[ALPN_HTTP1]).await;
    let err = server.err().unwrap();
    assert!(
        matches!(&err, InterceptError::Sni(SniRefusal::Mismatch { sni, .. }) if sni == "evil.example"),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("does not match the tunnel's host api.example.com"),
        "{err}"
    );
    let client_err = client.err().unwrap().to_string();
    assert!(
        client_err.contains("AccessDenied"),
        "the client is told: {client_err}"
    );
    assert_eq!(
        ic.minter().stats().mints,
        0,
        "nothing minted for a refused client"
    );
}

#[tokio::test]
async fn no_sni_is_accepted_only_for_ip_tunnels() {
    let ca = ca();
    let ic = Interceptor::new(minter(&ca)).unwrap();
    // rustls sends no SNI for an IP address; the client still verifies the IP SAN.
    let (server, client) = handshake(&ic, &ca, "127.0.0.1", "127.0.0.1", &[ALPN_H2]).await;
    assert_eq!(server.unwrap().name, LeafName::parse("127.0.0.1").unwrap());
    client.unwrap();
    let (server, client) = handshake(&ic, &ca, "[::1]", "::1", &[]).await;
    server.unwrap();
    client.unwrap();

    let (server, client) = handshake(&ic, &ca, "api.example.com", "127.0.0.1", &[]).await;
    let err = server.err().unwrap();
    assert!(
        matches!(err, InterceptError::Sni(SniRefusal::Missing { .. })),
        "{err}"
    );
    assert!(client.is_err());
}

#[tokio::test]
async fn alpn_can_be_narrowed_and_non_tls_fails_the_handshake() {
    let ca = ca();
    let ic = Interceptor::new(minter(&ca))
        .unwrap()
        .with_alpn(&[ALPN_HTTP1]);
    let (server, _) = handshake(&ic, &ca, "a.example", "a.example", &[ALPN_H2, ALPN_HTTP1]).await;
    assert_eq!(server.unwrap().alpn.as_deref(), Some(ALPN_HTTP1));

    let (mut c, s) = tokio::io::duplex(4096);
    c.write_all(b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n")
        .await
        .unwrap();
    let err = ic
        .accept(s, &LeafName::parse("a.example").unwrap())
        .await
        .err()
        .unwrap();
    assert!(matches!(err, InterceptError::Handshake(_)), "{err}");
}

#[test]
fn check_sni_rules() {
    let tunnel = LeafName::parse("api.example.com").unwrap();
    assert_eq!(
        check_sni(&tunnel, Some("API.EXAMPLE.COM.")).unwrap(),
        tunnel
    );
    let e = check_sni(&tunnel, Some("bad name")).unwrap_err();
    assert_eq!(e.code(), ErrorCode::SniInvalid);
    let e = check_sni(&tunnel, Some("x.api.example.com")).unwrap_err();
    assert_eq!(e.code(), ErrorCode::SniMismatch);
    let e = check_sni(&tunnel, None).unwrap_err();
    assert_eq!(e.code(), ErrorCode::SniMissing);
    assert!(e.to_string().contains("no server name"), "{e}");
    let ip = LeafName::parse("10.0.0.1").unwrap();
    assert_eq!(check_sni(&ip, None).unwrap(), ip);
    assert_eq!(check_sni(&ip, Some("10.0.0.1")).unwrap(), ip);
    assert_eq!(
        check_sni(&ip, Some("a.example")).unwrap_err().code(),
        ErrorCode::SniMismatch
    );
}

/// Serves HTTP/1.1 or HTTP/2 (by ALPN) behind `accept` on 127.0.0.1, answering with the
/// protocol version, for real clients (curl and Python, both on OpenSSL).
async fn serve_intercepted(ic: Arc<Interceptor>, tunnel: &str) -> std::net::SocketAddr {
    use hyper::service::service_fn;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let tunnel = LeafName::parse(tunnel).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (ic, tunnel) = (ic.clone(), tunnel.clone());
            tokio::spawn(async move {
                let Ok(conn) = ic.accept(tcp, &tunnel).await else {
                    return;
                };
                let h2 = conn.is_h2();
                let svc = service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                    let body = format!("{:?}", req.version());
                    Ok::<_, std::convert::Infallible>(http::Response::new(
                        http_body_util::Full::new(bytes::Bytes::from(body)),
                    ))
                });
                let io = TokioIo::new(conn.stream);
                let _ = if h2 {
                    hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(io, svc)
                        .await
                } else {
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, svc)
                        .await
                };
            });
        }
    });
    addr
}

async fn run(cmd: &'static str, args: Vec<String>) -> Option<std::process::Output> {
    tokio::task::spawn_blocking(move || std::process::Command::new(cmd).args(args).output().ok())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_and_python_trust_minted_leaves() {
    let ca = ca();
    let dir = tempfile::tempdir().unwrap();
    let ca_pem = dir.path().join("ca.pem");
    ca.write_cert(&ca_pem).unwrap();
    let ca_pem = ca_pem.display().to_string();
    let ic = Arc::new(Interceptor::new(minter(&ca)).unwrap());

    let addr = serve_intercepted(ic.clone(), "api.example.com").await;
    let url = format!("https://api.example.com:{}/x", addr.port());
    let resolve = format!("api.example.com:{}:127.0.0.1", addr.port());
    for (flag, want) in [("--http1.1", "HTTP/1.1"), ("--http2", "HTTP/2.0")] {
        let args = [
            "-sS",
            "--cacert",
            &ca_pem,
            "--resolve",
            &resolve,
            flag,
            &url,
        ];
        let Some(out) = run("curl", args.iter().map(|s| s.to_string()).collect()).await else {
            eprintln!("curl not found; skipping");
            return;
        };
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "curl {flag}: {text}");
        assert_eq!(text, want);
    }
    assert_eq!(ic.minter().stats().mints, 1, "one mint per host");

    // Python's ssl module (OpenSSL) verifies an IP leaf.
    let addr = serve_intercepted(ic.clone(), "127.0.0.1").await;
    let script = format!(
        "import ssl, urllib.request\n\
         ctx = ssl.create_default_context(cafile={ca_pem:?})\n\
         print(urllib.request.urlopen('https://127.0.0.1:{}/y', context=ctx).read().decode(), end='')",
        addr.port()
    );
    let Some(out) = run("python3", vec!["-c".into(), script]).await else {
        eprintln!("python3 not found; skipping");
        return;
    };
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "python: {text}");
    assert_eq!(text, "HTTP/1.1");
}
