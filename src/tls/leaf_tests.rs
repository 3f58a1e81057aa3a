//! Tests of leaf certificate minting and its cache.

use super::*;

use std::net::{Ipv4Addr, Ipv6Addr};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls_pki_types::{ServerName, UnixTime};
use x509_parser::extensions::GeneralName;

use crate::tls::ca::CertificateAuthority;
use crate::tls::test_support::{aki, ca, minter, ski};

fn settings(entries: usize) -> LeafSettings {
    LeafSettings {
        cache_entries: entries,
        ..LeafSettings::default()
    }
}

fn dns(s: &str) -> LeafName {
    LeafName::parse(s).unwrap()
}

/// Verifies a minted chain for `name` the way a client trusting the CA would.
fn verify(ca: &CertificateAuthority, key: &CertifiedKey, name: &str) -> Result<(), rustls::Error> {
    verify_with(ca.cert_der(), key, name)
}

/// The same for a client trusting only `root`.
fn verify_with(
    root: &rustls_pki_types::CertificateDer<'static>,
    key: &CertifiedKey,
    name: &str,
) -> Result<(), rustls::Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let v = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), crate::tls::provider())
        .build()
        .unwrap();
    v.verify_server_cert(
        &key.cert[0],
        &key.cert[1..],
        &ServerName::try_from(name.to_string()).unwrap(),
        &[],
        UnixTime::now(),
    )
    .map(|_| ())
}

#[test]
fn names_are_normalized_and_checked() {
    assert_eq!(
        dns("API.Example.COM."),
        LeafName::Dns("api.example.com".into())
    );
    assert_eq!(
        dns("under_score.example"),
        LeafName::Dns("under_score.example".into())
    );
    assert_eq!(
        dns("10.1.2.3"),
        LeafName::Ip(Ipv4Addr::new(10, 1, 2, 3).into())
    );
    assert_eq!(dns("[::1]"), LeafName::Ip(Ipv6Addr::LOCALHOST.into()));
    assert_eq!(dns("::1"), LeafName::Ip(Ipv6Addr::LOCALHOST.into()));
    for bad in [
        "",
        ".",
        "a..b",
        "*.example.com",
        "-a.example",
        "a-.example",
        "a b",
        "ex\u{e4}mple.com",
        "1.2.3",
        "[example.com]",
        &"a".repeat(64),
        &format!("{}com", "a.".repeat(126)),
    ] {
        assert!(LeafName::parse(bad).is_err(), "{bad:?} accepted");
    }
    assert_eq!(dns("Example.com").to_string(), "example.com");
}

#[test]
fn mints_a_dns_leaf_signed_by_the_ca() {
    let ca = ca();
    let m = minter(&ca);
    let key = m.mint(&dns("api.example.com")).unwrap();
    assert_eq!(key.cert.len(), 2, "leaf and CA");
    assert_eq!(key.cert[1], *ca.cert_der());
    let (_, x) = x509_parser::parse_x509_certificate(&key.cert[0]).unwrap();
    let san = x.subject_alternative_name().unwrap().unwrap().value;
    assert_eq!(
        san.general_names,
        vec![GeneralName::DNSName("api.example.com")]
    );
    assert!(x.subject().to_string().contains("CN=api.example.com"));
    assert!(!x.is_ca());
    assert!(x.extended_key_usage().unwrap().unwrap().value.server_auth);
    let now = crate::tls::ca::unix_now();
    let v = x.validity();
    assert!(
        (v.not_before.timestamp() - (now - 60)).abs() <= 5,
        "backdated 60 s"
    );
    assert!(
        (v.not_after.timestamp() - (now + 24 * 3600)).abs() <= 5,
        "24 h lifetime"
    );
    assert_eq!(
        aki(&key.cert[0]),
        ski(ca.cert_der()),
        "AKI names the CA's key"
    );
    verify(&ca, &key, "api.example.com").unwrap();
    assert!(verify(&ca, &key, "other.example.com").is_err());
    // The one leaf key, but a fresh serial every time.
    let again = m.mint(&dns("api.example.com")).unwrap();
    let (_, y) = x509_parser::parse_x509_certificate(&again.cert[0]).unwrap();
    assert_ne!(x.raw_serial(), y.raw_serial());
    assert_eq!(x.public_key().raw, y.public_key().raw);
    assert!(Arc::ptr_eq(&key.key, &again.key));
}

#[test]
fn mints_ip_leaves() {
    let ca = ca();
    let m = minter(&ca);
    for (host, ip) in [
        ("127.0.0.1", vec![127u8, 0, 0, 1]),
        ("[::1]", Ipv6Addr::LOCALHOST.octets().to_vec()),
    ] {
        let key = m.mint(&dns(host)).unwrap();
        let (_, x) = x509_parser::parse_x509_certificate(&key.cert[0]).unwrap();
        let san = x.subject_alternative_name().unwrap().unwrap().value;
        assert_eq!(san.general_names, vec![GeneralName::IPAddress(&ip)]);
        verify(&ca, &key, host.trim_matches(['[', ']'])).unwrap();
    }
}

#[test]
fn leaves_never_outlive_the_ca() {
    let ca = Arc::new(CertificateAuthority::generate("short", Duration::from_secs(3600)).unwrap());
    let key = minter(&ca).mint(&dns("a.example")).unwrap();
    let (_, x) = x509_parser::parse_x509_certificate(&key.cert[0]).unwrap();
    assert!(x.validity().not_after.timestamp() <= ca.not_after_unix());
}

#[test]
fn cache_hits_misses_and_lru_eviction() {
    let m = LeafMinter::new(ca(), settings(2)).unwrap();
    let (a, b, c) = (dns("a.example"), dns("b.example"), dns("c.example"));
    let first = m.certified_key(&a).unwrap();
    let second = m.certified_key(&a).unwrap();
    assert!(Arc::ptr_eq(&first, &second));
    assert_eq!(
        (m.stats().mints, m.stats().hits),
        (1, 1),
        "one mint per host"
    );
    m.certified_key(&b).unwrap();
    m.certified_key(&a).unwrap(); // a is now the most recently used
    m.certified_key(&c).unwrap(); // evicts b
    let s = m.stats();
    assert_eq!((s.mints, s.hits, s.evictions, s.entries), (3, 2, 1, 2));
    m.certified_key(&a).unwrap();
    assert_eq!(m.stats().mints, 3, "a stayed");
    m.certified_key(&b).unwrap();
    assert_eq!(m.stats().mints, 4, "b was evicted");
}

#[test]
fn cache_entries_expire_after_the_ttl() {
    let m = LeafMinter::new(ca(), settings(10)).unwrap();
    let a = dns("a.example");
    let first = m.certified_key(&a).unwrap();
    let ttl = m.settings().cache_ttl;
    let later = Instant::now() + ttl - Duration::from_secs(5);
    assert!(Arc::ptr_eq(&first, &m.certified_key_at(&a, later).unwrap()));
    let expired = Instant::now() + ttl + Duration::from_secs(1);
    let fresh = m.certified_key_at(&a, expired).unwrap();
    assert!(!Arc::ptr_eq(&first, &fresh));
    let s = m.stats();
    assert_eq!((s.mints, s.hits, s.expirations, s.entries), (2, 1, 1, 1));
}

#[test]
fn settings_are_checked() {
    let bad_ttl = LeafSettings {
        cache_ttl: Duration::from_secs(24 * 3600),
        ..LeafSettings::default()
    };
    assert!(matches!(
        LeafMinter::new(ca(), bad_ttl),
        Err(LeafError::Settings(_))
    ));
    assert!(matches!(
        LeafMinter::new(ca(), settings(0)),
        Err(LeafError::Settings(_))
    ));
}

#[test]
fn concurrent_use_is_consistent() {
    let m = Arc::new(LeafMinter::new(ca(), settings(1000)).unwrap());
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let m = m.clone();
            std::thread::spawn(move || {
                for i in 0..25 {
                    m.certified_key(&dns(&format!("h{i}.example"))).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let s = m.stats();
    assert_eq!(s.mints + s.hits, 100);
    assert!(s.mints >= 25);
    assert_eq!(s.entries, 25);
}

/// OpenSSL (which curl and Python use) builds the chain from the leaf to the CA, matching the
/// authority key identifier, for our own CA and for a CA OpenSSL made itself.
#[test]
fn openssl_verifies_minted_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let (c, k) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "30", "-subj", "/CN=Corp Root/O=Corp"])
        .args(["-addext", "basicConstraints=critical,CA:TRUE"])
        .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
        .arg("-keyout")
        .arg(&k)
        .arg("-out")
        .arg(&c)
        .output();
    let Ok(made) = made else {
        eprintln!("openssl not found; skipping");
        return;
    };
    assert!(made.status.success());
    let foreign = Arc::new(CertificateAuthority::load(&c, &k).unwrap());
    for ca in [ca(), foreign] {
        let key = minter(&ca).mint(&dns("api.example.com")).unwrap();
        assert_eq!(aki(&key.cert[0]), ski(ca.cert_der()));
        let (cafile, leaf) = (dir.path().join("ca.pem"), dir.path().join("leaf.pem"));
        std::fs::write(&cafile, ca.cert_pem()).unwrap();
        std::fs::write(
            &leaf,
            pem::encode(&pem::Pem::new("CERTIFICATE", key.cert[0].to_vec())),
        )
        .unwrap();
        let out = std::process::Command::new("openssl")
            .args([
                "verify",
                "-purpose",
                "sslserver",
                "-verify_hostname",
                "api.example.com",
                "-CAfile",
            ])
            .arg(&cafile)
            .arg(&leaf)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{text}");
    }
}

/// Five handshakes asking at once for a name not yet cached share ONE mint, and it runs on the
/// blocking pool, not on the runtime's thread (which stays free for other connections).
#[tokio::test]
async fn concurrent_gets_share_one_mint_made_off_the_runtime_thread() {
    let m = Arc::new(LeafMinter::new(ca(), settings(10)).unwrap());
    let name = dns("new.example");
    // On this one-thread runtime all five ask before the mint can start.
    let (a, b, c, d, e) = tokio::join!(
        m.get(&name),
        m.get(&name),
        m.get(&name),
        m.get(&name),
        m.get(&name)
    );
    let keys = [a, b, c, d, e].map(Result::unwrap);
    assert!(
        keys.iter().all(|k| Arc::ptr_eq(k, &keys[0])),
        "one key for all"
    );
    let s = m.stats();
    assert_eq!((s.mints, s.hits, s.entries), (1, 4, 1));
    let on = m.minted_on.lock().unwrap().clone();
    assert_eq!(on.len(), 1);
    assert_ne!(
        on[0],
        std::thread::current().id(),
        "minted on the runtime thread"
    );
    // Later handshakes are answered from the cache, in place.
    assert!(Arc::ptr_eq(&m.get(&name).await.unwrap(), &keys[0]));
    assert_eq!(m.stats().hits, 5);
}

/// A mint that fails is reported to every waiter and not cached: the next handshake tries again.
#[tokio::test]
async fn a_failed_mint_reaches_every_waiter() {
    let m = Arc::new(LeafMinter::new(ca(), settings(10)).unwrap());
    // Not ASCII: rcgen cannot put it in a certificate (`parse` would have refused it).
    let name = LeafName::Dns("bäd.example".into());
    let (a, b, c) = tokio::join!(m.get(&name), m.get(&name), m.get(&name));
    for got in [a, b, c] {
        assert!(matches!(got, Err(LeafError::Mint { .. })), "{got:?}");
    }
    assert_eq!(m.stats().entries, 0);
    assert!(m.inflight.lock().unwrap().is_empty());
}

/// A CA of the test's own making (rcgen directly, not `CertificateAuthority`): what a minter
/// signs with is a seam (`SignLeaf`).
struct TestCa {
    issuer: rcgen::Issuer<'static, KeyPair>,
    der: rustls_pki_types::CertificateDer<'static>,
    not_after: i64,
    signed: AtomicU64,
}

impl fmt::Debug for TestCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TestCa")
    }
}

impl SignLeaf for TestCa {
    fn sign(
        &self,
        params: CertificateParams,
        leaf_key: &KeyPair,
    ) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>, String> {
        self.signed.fetch_add(1, Ordering::Relaxed);
        let leaf = params
            .signed_by(leaf_key, &self.issuer)
            .map_err(|e| e.to_string())?;
        Ok(vec![leaf.der().clone(), self.der.clone()])
    }

    fn not_after(&self) -> Result<i64, String> {
        Ok(self.not_after)
    }
}

#[test]
fn a_leaf_is_minted_by_the_ca_the_minter_is_given() {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, "test CA");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let der = params.self_signed(&key).unwrap().der().clone();
    let test_ca = Arc::new(TestCa {
        issuer: rcgen::Issuer::new(params, key),
        der,
        not_after: unix_now() + 3600,
        signed: AtomicU64::new(0),
    });
    let m = LeafMinter::new(test_ca.clone(), settings(10)).unwrap();
    // The leaf key pair is made by the first mint, not by `new`, and then kept.
    assert!(m.key.get().is_none());
    let leaf = m.mint(&dns("api.example.com")).unwrap();
    assert_eq!(test_ca.signed.load(Ordering::Relaxed), 1);
    let public = m.key.get().unwrap().pair.public_key_raw().to_vec();
    m.mint(&dns("b.example.com")).unwrap();
    assert_eq!(m.key.get().unwrap().pair.public_key_raw(), public);
    assert_eq!(leaf.cert[1], test_ca.der);
    // A client trusting the test CA accepts it for its name only; one trusting another CA not.
    verify_with(&test_ca.der, &leaf, "api.example.com").unwrap();
    assert!(verify_with(&test_ca.der, &leaf, "other.example.com").is_err());
    assert!(verify(&ca(), &leaf, "api.example.com").is_err());
    // Never outliving the CA that signed it (an hour, less than the leaf lifetime).
    let (_, x) = x509_parser::parse_x509_certificate(&leaf.cert[0]).unwrap();
    assert!(x.validity().not_after.timestamp() <= test_ca.not_after);
}
