//! Sidecars against a bundle server that is not intentgate's (tests/clients/bundle_server.py
//! serves whatever bytes the test puts in a file): another namespace's bundle replayed, and a
//! bundle whose policy does not build, then the one in force again.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use super::bundles::*;
use super::issuer::Issuer;
use crate::common::*;

/// The rogue server; killed on drop.
struct Rogue {
    child: Child,
    port: u16,
}

impl Drop for Rogue {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Rogue {
    /// Serves the bytes of `served` with the certificate in `dir` (`setup`).
    fn start(dir: &Path, served: &Path) -> Self {
        let ready = dir.join("rogue.port");
        let child = Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/clients/bundle_server.py"
            ))
            .args([served, &dir.join("tls.crt"), &dir.join("tls.key"), &ready])
            .spawn()
            .unwrap();
        let port = eventually("rogue server", WAIT, || {
            std::fs::read_to_string(&ready).ok()?.trim().parse().ok()
        });
        Rogue { child, port }
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}/bundles/support", self.port)
    }
}

/// Replaces the served bytes at once.
fn serve_bytes(served: &Path, bytes: &[u8]) {
    let tmp: PathBuf = served.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, served).unwrap();
}

#[test]
fn a_sidecar_never_takes_another_namespaces_bundle() {
    let up = Upstream::start();
    let port = up.addr.port();
    let dir = setup();
    let policy = dir.path().join("policy");
    write_catalog(&policy, "support", port, &["/echo/a/**"]);
    write_catalog(&policy, "other", port, &["/**"]);
    let control = Control::start(dir.path(), 0);
    let ca = dir.path().join("ca.pem");
    let ca = ca.to_str().unwrap();

    // Pointed at another namespace's URL, with a token the server serves it to: refused at
    // start, by serve and by check.
    let cfg = dir.path().join("sidecar.yaml");
    std::fs::write(&cfg, SIDECAR).unwrap();
    let other = control.url("other");
    let other_token = dir.path().join("other.token");
    let issuer = Issuer {
        dir: dir.path().join("issuer"),
    };
    Issuer::write_token(&other_token, &issuer.token("other"));
    let own_token = dir.path().join("token");
    for cmd in ["serve", "check"] {
        let (code, _, err) = run_cli(&[
            cmd,
            "--config",
            cfg.to_str().unwrap(),
            "--bundle-url",
            &other,
            "--bundle-ca",
            ca,
            "--bundle-token-file",
            other_token.to_str().unwrap(),
        ]);
        assert_eq!(code, 2, "{cmd}: {err}");
        assert!(
            err.contains("bundle is for namespace 'other'") && err.contains("'support'"),
            "{cmd}: {err}"
        );
    }
    let (code, out, err) = run_cli(&[
        "check",
        "--config",
        cfg.to_str().unwrap(),
        "--bundle-url",
        &control.url("support"),
        "--bundle-ca",
        ca,
        "--bundle-token-file",
        own_token.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("1 intents"), "{out}");

    // A hostile server that first serves the right bundle, then replays the other namespace's.
    let (_, _, good) = control.curl("support", &[]);
    let served = dir.path().join("served.tar.gz");
    std::fs::copy(&good, &served).unwrap();
    let rogue = Rogue::start(dir.path(), &served);
    let proxy = sidecar(&rogue.url(), &dir.path().join("ca.pem"));
    assert_eq!(status(&proxy, &up, "/echo/a/1"), 200);
    assert_eq!(status(&proxy, &up, "/echo/b/1"), 403);
    let (_, _, theirs) = control.curl("other", &[]);
    let tmp = dir.path().join("served.tmp");
    std::fs::copy(&theirs, &tmp).unwrap();
    std::fs::rename(&tmp, &served).unwrap();
    fetches_above(&proxy, "refused", 0.0);
    let info = curl(&[&proxy.admin_url("/v1/policy")]).json();
    assert!(
        info["last_reload"]["message"]
            .to_string()
            .contains("namespace 'other'"),
        "{info}"
    );
    assert_eq!(info["bundle"]["namespace"], "support");
    // Still decided by support's rules, and the replay is fetched and reported once, not at
    // every poll.
    assert_eq!(status(&proxy, &up, "/echo/b/1"), 403);
    let unchanged = fetches(&proxy, "unchanged");
    fetches_above(&proxy, "unchanged", unchanged);
    assert_eq!(fetches(&proxy, "refused"), 1.0);
}

#[test]
fn a_refused_bundle_is_reported_until_the_server_serves_the_one_in_force_again() {
    let up = Upstream::start();
    let dir = setup();
    let policy = dir.path().join("policy");
    write_catalog(&policy, "support", up.addr.port(), &["/echo/a/**"]);
    // Packed by the library, which does not check that the policy builds (the server does).
    let pack = || {
        intentgate::exposed::bundle::Bundle::from_dir(&policy, "support")
            .unwrap()
            .to_tar_gz()
            .unwrap()
    };
    let good = pack();
    let served = dir.path().join("served.tar.gz");
    serve_bytes(&served, &good);
    let rogue = Rogue::start(dir.path(), &served);
    let proxy = sidecar(&rogue.url(), &dir.path().join("ca.pem"));
    assert_eq!(status(&proxy, &up, "/echo/a/1"), 200);

    let broken = policy.join("namespaces/support/broken.rego");
    std::fs::write(
        &broken,
        "package intentgate.namespace\ndeny contains msg if {\n",
    )
    .unwrap();
    serve_bytes(&served, &pack());
    fetches_above(&proxy, "refused", 0.0);
    let info = curl(&[&proxy.admin_url("/v1/policy")]).json();
    assert_eq!(info["last_reload"]["result"], "failure", "{info}");
    assert!(
        info["last_reload"]["message"]
            .to_string()
            .contains("broken.rego"),
        "{info}"
    );
    assert_eq!(status(&proxy, &up, "/echo/a/1"), 200);

    // The server serves the bundle in force again: last_reload says so.
    serve_bytes(&served, &good);
    let info = eventually("last_reload back to success", WAIT, || {
        let info = curl(&[&proxy.admin_url("/v1/policy")]).json();
        (info["last_reload"]["result"] == "success").then_some(info)
    });
    assert_eq!(info["last_reload"]["trigger"], "bundle", "{info}");
    assert!(
        info["last_reload"]["message"]
            .to_string()
            .contains("in force again"),
        "{info}"
    );
    assert_eq!(fetches(&proxy, "refused"), 1.0);
}
