//! Leaf certificate costs: minting (one signature with the reused key), a cache hit, a miss
//! that mints and evicts, and peeking SNI/ALPN from a real ClientHello.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use intentgate::exposed::tls::ca::CertificateAuthority;
use intentgate::exposed::tls::leaf::{LeafMinter, LeafName, LeafSettings};
use intentgate::exposed::tls::sni;
use rustls::pki_types::ServerName;

fn minter(entries: usize) -> LeafMinter {
    let ca = Arc::new(CertificateAuthority::ephemeral().unwrap_or_else(|e| panic!("{e}")));
    let settings = LeafSettings {
        cache_entries: entries,
        ..LeafSettings::default()
    };
    LeafMinter::new(ca, settings).unwrap_or_else(|e| panic!("{e}"))
}

fn client_hello() -> Vec<u8> {
    let ca = CertificateAuthority::ephemeral().unwrap_or_else(|e| panic!("{e}"));
    let mut roots = rustls::RootCertStore::empty();
    let _ = roots.add(ca.cert_der().clone());
    let mut cfg = rustls::ClientConfig::builder_with_provider(intentgate::exposed::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap_or_else(|e| panic!("{e}"))
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let name = ServerName::try_from("api.example.com").unwrap_or_else(|e| panic!("{e}"));
    let mut conn = rustls::ClientConnection::new(Arc::new(cfg), name.to_owned())
        .unwrap_or_else(|e| panic!("{e}"));
    let mut out = Vec::new();
    while conn.wants_write() {
        let _ = conn.write_tls(&mut out);
    }
    out
}

fn bench(c: &mut Criterion) {
    let name = LeafName::parse("api.example.com").unwrap_or_else(|e| panic!("{e}"));
    let m = minter(1000);
    c.bench_function("leaf/mint (sign with the reused key)", |b| {
        b.iter(|| black_box(m.mint(black_box(&name))))
    });
    let _ = m.certified_key(&name);
    c.bench_function("leaf/cache hit", |b| {
        b.iter(|| black_box(m.certified_key(black_box(&name))))
    });
    let small = minter(1);
    let other = LeafName::parse("b.example.com").unwrap_or_else(|e| panic!("{e}"));
    let mut flip = false;
    c.bench_function("leaf/cache miss (mint, insert, evict)", |b| {
        b.iter(|| {
            flip = !flip;
            black_box(small.certified_key(if flip { &name } else { &other }))
        })
    });
    let hello = client_hello();
    c.bench_function("sni/parse ClientHello", |b| {
        b.iter(|| black_box(sni::parse(black_box(&hello))))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
