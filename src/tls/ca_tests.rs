//! Tests of the local CA: generation, loading and its errors.

use super::*;

use rcgen::{CertificateParams, KeyPair};

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn generated_ca_is_a_p256_ca_with_a_fingerprint() {
    let ca = CertificateAuthority::generate("test", Duration::from_secs(3600)).unwrap();
    let (_, x) = x509_parser::parse_x509_certificate(ca.cert_der()).unwrap();
    assert!(x.is_ca());
    let bc = x.basic_constraints().unwrap().unwrap().value;
    assert_eq!(bc.path_len_constraint, Some(0));
    assert!(x.subject().to_string().contains("intentgate test CA"));
    assert_eq!(
        x.public_key().algorithm.algorithm,
        x509_parser::oid_registry::OID_KEY_TYPE_EC_PUBLIC_KEY
    );
    let now = unix_now();
    assert!((x.validity().not_before.timestamp() - (now - 60)).abs() <= 5);
    assert_eq!(ca.not_after_unix(), x.validity().not_after.timestamp());
    assert_eq!(ca.fingerprint(), Fingerprint::of(ca.cert_der()));
    let shown = ca.fingerprint().to_string();
    assert_eq!(shown.len(), 32 * 3 - 1);
    assert!(
        shown
            .split(':')
            .all(|b| b.len() == 2 && b == b.to_uppercase())
    );
    assert_eq!(ca.fingerprint().to_hex().len(), 64);
    assert_eq!(*ca.origin(), CaOrigin::Generated);
    // Two CAs never share a subject name.
    let other = CertificateAuthority::ephemeral().unwrap();
    let (_, y) = x509_parser::parse_x509_certificate(other.cert_der()).unwrap();
    assert_ne!(x.subject().to_string(), y.subject().to_string());
}

#[test]
fn init_writes_files_with_modes_and_load_and_show_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ca");
    let files = init(&out).unwrap();
    assert_eq!(files.cert, out.join(CERT_FILE));
    assert_eq!(files.key, out.join(KEY_FILE));
    assert_eq!(mode(&files.key), 0o600);
    assert_eq!(mode(&files.cert), 0o644);
    let key_text = std::fs::read_to_string(&files.key).unwrap();
    assert!(
        key_text.starts_with("-----BEGIN PRIVATE KEY-----"),
        "{key_text}"
    );

    let ca = CertificateAuthority::load(&files.cert, &files.key).unwrap();
    assert_eq!(ca.fingerprint(), files.fingerprint);
    assert_eq!(
        *ca.origin(),
        CaOrigin::Files {
            cert: files.cert.clone(),
            key: files.key.clone()
        }
    );
    assert_eq!(ca.cert_pem(), std::fs::read_to_string(&files.cert).unwrap());

    let shown = show(&files.cert).unwrap();
    assert_eq!(shown.path, files.cert);
    assert_eq!(shown.fingerprint, files.fingerprint);
    assert!(shown.subject.contains("intentgate local CA"), "{shown:?}");

    // Never overwrites.
    let err = init(&out).unwrap_err();
    assert!(matches!(err, CaError::Exists { .. }), "{err}");
    assert!(err.to_string().contains("ca.pem"), "{err}");
    assert_eq!(ca.fingerprint(), show(&files.cert).unwrap().fingerprint);
}

#[test]
fn write_cert_replaces_atomically_with_mode_0644() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("trust.pem");
    std::fs::write(&p, "old").unwrap();
    let ca = CertificateAuthority::ephemeral().unwrap();
    ca.write_cert(&p).unwrap();
    assert_eq!(std::fs::read_to_string(&p).unwrap(), ca.cert_pem());
    assert_eq!(mode(&p), 0o644);
    assert_eq!(show(&p).unwrap().fingerprint, ca.fingerprint());
}

#[test]
fn load_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let files = init(&dir.path().join("a")).unwrap();
    let missing = dir.path().join("missing.pem");
    let err = CertificateAuthority::load(&missing, &files.key).unwrap_err();
    assert!(matches!(err, CaError::Read { .. }));
    assert!(
        err.to_string().starts_with(&missing.display().to_string()),
        "{err}"
    );

    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not pem at all").unwrap();
    let err = CertificateAuthority::load(&junk, &files.key).unwrap_err();
    assert!(
        err.to_string().starts_with(&junk.display().to_string()),
        "{err}"
    );
    assert!(err.to_string().contains("no PEM CERTIFICATE"), "{err}");
    let err = CertificateAuthority::load(&files.cert, &junk).unwrap_err();
    assert!(
        err.to_string().starts_with(&junk.display().to_string()),
        "{err}"
    );
    assert!(err.to_string().contains("private key"), "{err}");
    // A key that is not the certificate's.
    let other = init(&dir.path().join("b")).unwrap();
    let err = CertificateAuthority::load(&files.cert, &other.key).unwrap_err();
    assert!(matches!(err, CaError::KeyMismatch { .. }), "{err}");
    assert!(err.to_string().contains("does not belong"), "{err}");
    // A certificate that is not a CA.
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["example.com".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (c, k) = (dir.path().join("leaf.pem"), dir.path().join("leaf-key.pem"));
    std::fs::write(&c, leaf.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    let err = CertificateAuthority::load(&c, &k).unwrap_err();
    assert!(matches!(err, CaError::NotCa { .. }), "{err}");
    assert!(
        err.to_string().starts_with(&c.display().to_string()),
        "{err}"
    );
    // An expired CA.
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.not_before = rcgen::date_time_ymd(2001, 1, 1);
    params.not_after = rcgen::date_time_ymd(2002, 1, 1);
    let old = params.self_signed(&key).unwrap();
    std::fs::write(&c, old.pem()).unwrap();
    let err = CertificateAuthority::load(&c, &k).unwrap_err();
    assert!(matches!(err, CaError::OutsideValidity { .. }), "{err}");
    assert!(err.to_string().contains("2002"), "{err}");
    let err = show(&junk).unwrap_err();
    assert!(
        err.to_string().starts_with(&junk.display().to_string()),
        "{err}"
    );
}

/// A CA made by OpenSSL (SHA-1 key identifiers, PKCS#8 and SEC1 keys) loads and keeps its own
/// subject and key identifier for the leaves it signs.
#[test]
fn loads_an_openssl_ca_in_pkcs8_and_sec1() {
    let dir = tempfile::tempdir().unwrap();
    let (c, k, k1) = (
        dir.path().join("c.pem"),
        dir.path().join("k.pem"),
        dir.path().join("k-sec1.pem"),
    );
    let ok = std::process::Command::new("openssl")
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
    let Ok(out) = ok else {
        eprintln!("openssl not found; skipping");
        return;
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = std::process::Command::new("openssl")
        .args(["ec", "-in"])
        .arg(&k)
        .arg("-out")
        .arg(&k1)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        std::fs::read_to_string(&k1)
            .unwrap()
            .contains("EC PRIVATE KEY")
    );
    for key in [&k, &k1] {
        let ca = CertificateAuthority::load(&c, key).unwrap();
        assert_eq!(ca.fingerprint(), show(&c).unwrap().fingerprint);
    }
}
