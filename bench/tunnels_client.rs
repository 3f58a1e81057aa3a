//! The client of bench/tunnels.py: opens TLS connections to many hosts, through intentgate
//! (TCP connect, CONNECT, handshake inside the tunnel) or straight to them, each with one GET,
//! and prints per connection the microseconds from the start of its TCP connect to the CONNECT's
//! answer (direct: to the connect), to the end of the handshake, and to the end of the answer.
//! One runtime thread and rustls (a full handshake each: no session resumption), so the client
//! costs little next to what it measures (an OpenSSL client in Python cost ~1 ms of CPU each).
//!
//! cargo build --release --example tunnels-client; see bench/tunnels.py for the arguments.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsConnector;

#[derive(Parser)]
struct Args {
    /// The proxy's port on 127.0.0.1; without it the connections go straight to the hosts.
    #[arg(long)]
    proxy: Option<u16>,
    /// The hosts' TLS port.
    #[arg(long)]
    port: u16,
    /// The CA (PEM) the client trusts.
    #[arg(long)]
    ca: std::path::PathBuf,
    /// The hosts, comma-separated IP addresses.
    #[arg(long, value_delimiter = ',')]
    hosts: Vec<IpAddr>,
    /// Connections per host.
    #[arg(long, default_value_t = 1)]
    per_host: usize,
    /// Seconds over which the connections are opened at an even rate (0: all at once).
    #[arg(long, default_value_t = 0.0)]
    spread: f64,
    /// No GET: each connection ends with its handshake (its answer time is the handshake's).
    #[arg(long)]
    handshake_only: bool,
}

/// Microseconds from the start to: the CONNECT's answer (direct: the TCP connect), the end of the
/// handshake, the end of the first answer.
type Times = [u128; 3];

/// One connection, its times, and its stream (kept open by the caller).
async fn one(
    args: &Args,
    tls: &TlsConnector,
    host: IpAddr,
) -> anyhow::Result<(Times, tokio_rustls::client::TlsStream<TcpStream>)> {
    let t0 = Instant::now();
    let authority = SocketAddr::new(host, args.port);
    let tcp = match args.proxy {
        Some(p) => {
            let mut tcp = TcpStream::connect(("127.0.0.1", p)).await?;
            tcp.set_nodelay(true)?;
            let req = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n");
            tcp.write_all(req.as_bytes()).await?;
            let head = read_head(&mut tcp).await?;
            if !head.starts_with(b"HTTP/1.1 200") {
                bail!("CONNECT answered {}", String::from_utf8_lossy(&head));
            }
            tcp
        }
        None => {
            let tcp = TcpStream::connect(authority).await?;
            tcp.set_nodelay(true)?;
            tcp
        }
    };
    let t_connect = t0.elapsed().as_micros();
    let mut tls = tls.connect(ServerName::from(host), tcp).await?;
    let t_hs = t0.elapsed().as_micros();
    if args.handshake_only {
        return Ok(([t_connect, t_hs, t_hs], tls));
    }
    let req = format!("GET / HTTP/1.1\r\nHost: {authority}\r\n\r\n");
    tls.write_all(req.as_bytes()).await?;
    let head = read_head(&mut tls).await?;
    if !head.starts_with(b"HTTP/1.1 200") {
        bail!("GET answered {}", String::from_utf8_lossy(&head));
    }
    Ok(([t_connect, t_hs, t0.elapsed().as_micros()], tls))
}

/// Reads up to the end of an answer's head, and its (small, Content-Length) body when it is a 200
/// to a GET; a CONNECT's 200 has none.
async fn read_head<R: AsyncRead + Unpin>(r: &mut R) -> anyhow::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(512);
    let mut byte = [0u8; 1];
    // Byte by byte: nothing after the head may be taken from the stream (the TLS bytes of a
    // tunnel follow the CONNECT's answer).
    while !buf.ends_with(b"\r\n\r\n") {
        if r.read(&mut byte).await? == 0 {
            bail!("closed after {} bytes", buf.len());
        }
        buf.extend_from_slice(&byte);
    }
    let text = String::from_utf8_lossy(&buf).to_ascii_lowercase();
    let length = text
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse::<usize>())
        .transpose()?
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    r.read_exact(&mut body).await?;
    Ok(buf)
}

fn connector(ca: &std::path::Path) -> anyhow::Result<TlsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).context("reading the CA")? {
        roots.add(cert?)?;
    }
    // The suite intentgate prefers (AES-128-GCM/SHA-256) first, for both paths alike.
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider
        .cipher_suites
        .sort_by_key(|s| s.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    cfg.resumption = rustls::client::Resumption::disabled();
    Ok(TlsConnector::from(Arc::new(cfg)))
}

fn main() -> anyhow::Result<()> {
    let args = Arc::new(Args::parse());
    let tls = connector(&args.ca)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let targets: Vec<IpAddr> = (0..args.per_host)
            .flat_map(|_| args.hosts.iter().copied())
            .collect();
        let (tx, mut rx) = mpsc::unbounded_channel();
        // Every connection stays open until the last one has its answer.
        let (release, held) = watch::channel(false);
        let start = tokio::time::Instant::now();
        let step = Duration::from_secs_f64(args.spread / targets.len().max(1) as f64);
        for (k, host) in targets.iter().copied().enumerate() {
            tokio::time::sleep_until(start + step * k as u32).await;
            let (args, tls, tx, mut held) = (args.clone(), tls.clone(), tx.clone(), held.clone());
            tokio::spawn(async move {
                match one(&args, &tls, host).await {
                    Ok((times, _open)) => {
                        let _ = tx.send(Ok(times));
                        let _ = held.wait_for(|r| *r).await;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(format!("{host}: {e:#}")));
                    }
                }
            });
        }
        let mut errors = Vec::new();
        for _ in 0..targets.len() {
            match rx.recv().await {
                Some(Ok([c, h, a])) => println!("{c} {h} {a}"),
                Some(Err(e)) => errors.push(e),
                None => break,
            }
        }
        let _ = release.send(true);
        if let Some(first) = errors.first() {
            eprintln!(
                "{} of {} failed; the first: {first}",
                errors.len(),
                targets.len()
            );
        }
    });
    Ok(())
}
