//! The control deployment following its mounted files without a restart, as the kubelet
//! updates them (`..data` swapped to a new directory): the serving certificate (a real TLS
//! handshake reads the serial), the inject config (the floor) and the policy directory; a broken
//! new version leaves the last good one in force. And `:PORT` listens on IPv6 and IPv4.

use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;

use serde_json::json;

use super::bundles::{Control, WAIT, setup, write_catalog};
use super::k8s::{FLOOR, Webhook, agent_pod, kubelet_publish};
use crate::common::tls::TestCa;
use crate::common::*;

/// The serial (hex) of the first certificate in a PEM chain.
fn pem_serial(pem: &str) -> String {
    use rustls_pki_types::pem::PemObject;
    let der = rustls_pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .unwrap()
        .unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    cert.tbs_certificate.raw_serial_as_string()
}

/// The serial of the certificate a fresh TLS handshake with 127.0.0.1:`port` presents.
fn served_serial(port: u16, client: &Arc<rustls::ClientConfig>) -> String {
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut conn = rustls::ClientConnection::new(client.clone(), name).unwrap();
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).unwrap();
    }
    let der = conn.peer_certificates().unwrap()[0].clone();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    cert.tbs_certificate.raw_serial_as_string()
}

#[test]
fn the_serving_certificate_is_reloaded_when_the_kubelet_swaps_it() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("cert-manager CA");
    let client = ca.client_config();
    let secret = dir.path().join("tls");
    let pair = || ca.server_pem(&["localhost", "127.0.0.1"]);
    let (c1, k1) = pair();
    kubelet_publish(&secret, &[("tls.crt", &c1), ("tls.key", &k1)]);
    std::fs::write(dir.path().join("inject.yaml"), FLOOR).unwrap();
    let control = Control::launch(
        dir.path(),
        &secret.join("tls.crt"),
        &secret.join("tls.key"),
        &dir.path().join("inject.yaml"),
        0,
    );
    assert_eq!(served_serial(control.port, &client), pem_serial(&c1));

    // cert-manager renews: the next handshake presents the new certificate.
    let (c2, k2) = pair();
    kubelet_publish(&secret, &[("tls.crt", &c2), ("tls.key", &k2)]);
    let want = pem_serial(&c2);
    eventually("the renewed certificate served", WAIT, || {
        (served_serial(control.port, &client) == want).then_some(())
    });
    control.logged("serving certificate reloaded");

    // Broken new pairs (a key of another certificate, not PEM at all): refused, the last
    // good pair keeps serving.
    let (c3, _) = pair();
    let (_, other_key) = pair();
    for (n, (cert, key)) in [(c3.as_str(), other_key.as_str()), ("garbage", k2.as_str())]
        .into_iter()
        .enumerate()
    {
        kubelet_publish(&secret, &[("tls.crt", cert), ("tls.key", key)]);
        eventually("the broken pair refused", WAIT, || {
            (control
                .log()
                .matches("new serving certificate refused")
                .count()
                > n)
                .then_some(())
        });
        assert_eq!(served_serial(control.port, &client), want);
        // The webhook answers meanwhile.
        let out = curl(&[
            "--cacert",
            ca.write_pem(dir.path()).to_str().unwrap(),
            "--resolve",
            &format!("localhost:{}:127.0.0.1", control.port),
            &format!("https://localhost:{}/healthz", control.port),
        ]);
        assert_eq!(out.status, 200);
    }
}

#[test]
fn port_only_listens_on_ipv6_and_ipv4() {
    let dir = setup();
    std::fs::write(dir.path().join("inject.yaml"), FLOOR).unwrap();
    let p = |n: &str| dir.path().join(n);
    let control = Control::spawn(
        dir.path(),
        &p("tls.crt"),
        &p("tls.key"),
        &p("inject.yaml"),
        ":0",
    );
    for host in ["127.0.0.1", "[::1]"] {
        let out = curl(&["-k", &format!("https://{host}:{}/healthz", control.port)]);
        assert_eq!(out.status, 200, "{host}: {out:?}");
    }
}

#[test]
fn a_floor_change_applies_without_a_restart_and_a_broken_one_is_refused() {
    let hook = Webhook::start();
    let billing =
        |hook: &Webhook| hook.review_in("admission.k8s.io/v1", "billing", &agent_pod(json!(null)));
    let r = billing(&hook);
    assert_eq!(r["allowed"], false);
    assert!(
        r["status"]["message"]
            .as_str()
            .unwrap()
            .contains("no intentgate platform floor")
    );
    let bundles = "bundles: {url: https://intentgate-inject.intentgate-system.svc/bundles}\n";
    let with_billing = format!(
        "{FLOOR}  billing:\n    service_accounts: {{support-bot: [support-bot]}}\n{bundles}"
    );
    hook.set_config(&with_billing);
    eventually("the new namespace's floor in force", WAIT, || {
        (billing(&hook)["allowed"] == true).then_some(())
    });
    // A broken config: refused with file and line, the last good floor stays.
    hook.set_config(&format!("{with_billing}typo: 1\n"));
    hook.control.logged("inject config refused");
    assert!(
        hook.control.log().contains("inject.yaml:"),
        "{}",
        hook.control.log()
    );
    assert_eq!(billing(&hook)["allowed"], true);
    // The next good one applies (billing gone again).
    hook.set_config(&format!("{FLOOR}{bundles}"));
    eventually("billing's floor removed", WAIT, || {
        (billing(&hook)["allowed"] == false).then_some(())
    });
}

/// The control deployment's policy volume as the kubelet projects it: a namespace added, a rule
/// changed, a broken module refused (the last good snapshot served), a fix applied.
#[test]
fn the_policy_volume_is_followed_whole_and_the_last_good_one_kept() {
    let dir = setup();
    let src = tempfile::tempdir().unwrap();
    let volume = dir.path().join("policy");
    std::fs::remove_dir(&volume).unwrap();
    let publish = |src: &Path| {
        let mut files = Vec::new();
        for ns in ["support", "billing"] {
            let f = format!("namespaces/{ns}/intents.yaml");
            if let Ok(text) = std::fs::read_to_string(src.join(&f)) {
                files.push((f, text));
            }
        }
        if let Ok(text) = std::fs::read_to_string(src.join("namespaces/support/extra.rego")) {
            files.push(("namespaces/support/extra.rego".into(), text));
        }
        let refs: Vec<(&str, &str)> = files
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        kubelet_publish(&volume, &refs);
    };
    write_catalog(src.path(), "support", 80, &["/a"]);
    publish(src.path());
    let control = Control::start(dir.path(), 0);
    let etag = |ns: &str| {
        let (code, etag, _) = control.curl(ns, &[]);
        assert_eq!(code, 200, "{ns}");
        etag
    };
    let support = etag("support");
    let billing_global = etag("billing");

    // A namespace is added and a rule changes, in one update.
    write_catalog(src.path(), "support", 80, &["/a", "/b"]);
    write_catalog(src.path(), "billing", 80, &["/c"]);
    publish(src.path());
    eventually("the new snapshot served", WAIT, || {
        (etag("support") != support).then_some(())
    });
    let (support, billing) = (etag("support"), etag("billing"));
    assert_ne!(
        billing, billing_global,
        "billing has a folder of its own now"
    );

    // A module that does not build: refused whole, both namespaces keep their bundles.
    let extra = src.path().join("namespaces/support/extra.rego");
    std::fs::write(&extra, "package intentgate.namespace\nnot rego {\n").unwrap();
    write_catalog(src.path(), "billing", 80, &["/d"]);
    publish(src.path());
    control.logged("policy directory refused");
    assert_eq!(
        (etag("support"), etag("billing")),
        (support.clone(), billing.clone())
    );

    // Fixed: the update applies.
    std::fs::write(&extra, "package intentgate.namespace\n").unwrap();
    publish(src.path());
    eventually("the fixed snapshot served", WAIT, || {
        (etag("support") != support && etag("billing") != billing).then_some(())
    });
}
