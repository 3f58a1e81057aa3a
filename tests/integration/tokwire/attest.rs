//! Attestations out: an upstream written with PyPI PyJWT (tests/clients/attest_upstream.py)
//! fetches our JWK Set from the admin API and verifies each request's `Txn-Token`, including
//! its binding to the request; a request changed after signing fails that check.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use serde_json::Value;

use super::*;
use crate::common::tls::TestCa;
use crate::common::*;

const UPSTREAM: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/clients/attest_upstream.py"
);
const SIDECAR: &str = "https://sidecar.example";

/// The PyJWT upstream; killed when dropped.
struct PyUpstream {
    child: Child,
    port: u16,
    /// Where the test writes the JWKS URL (known once the proxy listens).
    url_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl PyUpstream {
    fn start(issuer: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (url_file, port_file) = (dir.path().join("jwks-url"), dir.path().join("port"));
        let child = Command::new("python3")
            .args([UPSTREAM, p(&url_file), issuer, p(&port_file)])
            .spawn()
            .unwrap();
        let port = eventually("the PyJWT upstream", Duration::from_secs(20), || {
            std::fs::read_to_string(&port_file)
                .ok()?
                .trim()
                .parse()
                .ok()
        });
        PyUpstream {
            child,
            port,
            url_file,
            _dir: dir,
        }
    }

    fn trust(&self, proxy: &ProxyProc) {
        let url = proxy.admin_url("/.well-known/jwks.json");
        std::fs::write(&self.url_file, url).unwrap();
    }

    fn url(&self, path: &str) -> String {
        format!("http://localhost:{}{path}", self.port)
    }

    /// A request straight to it (not through intentgate) with `token` as its Txn-Token.
    fn direct(&self, method: &str, path: &str, token: &str) -> CurlOut {
        let h = format!("txn-token: {token}");
        curl(&["-X", method, "-H", &h, &self.url(path)])
    }
}

impl Drop for PyUpstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn every_forwarded_request_carries_an_attestation_the_upstream_verifies() {
    let py = PyUpstream::start(SIDECAR);
    let intent = format!(
        "  attested:\n    allow: [{{hosts: [localhost], ports: [{}]}}]\n",
        py.port
    );
    let env = Env::start_with(
        &format!("attestation: {{enabled: true, issuer: \"{SIDECAR}\"}}\n"),
        &intent,
    );
    py.trust(&env.proxy);
    let keys: Value = curl(&[&env.proxy.admin_url("/.well-known/jwks.json")]).json();
    assert_eq!(keys["keys"][0]["crv"], "Ed25519", "{keys}");
    let t = env.mint("attested", &["--sub", "alice", "--task", "T-7"]);
    let url = py.url("/issues/1?q=a%20b");
    // The agent's own Txn-Token is never passed on: ours replaces it.
    let out = curl(&[
        "-x",
        &env.proxy.url(),
        "-H",
        &tok(&t),
        "-H",
        "txn-token: forged",
        &url,
    ]);
    assert_eq!(out.status, 200, "{out:?}");
    let got = out.json();
    let claims = &got["claims"];
    let rec = env.proxy.audit_n(1).pop().unwrap();
    assert_eq!(claims["intent"], "attested", "{got}");
    assert_eq!(claims["task"], "T-7", "{got}");
    assert_eq!(claims["token_sub"], "alice", "{got}");
    assert_eq!(claims["sub"], AGENT, "{got}");
    assert_eq!(claims["aud"], "localhost", "{got}");
    assert_eq!(claims["decision_id"], rec["decision_id"], "{got} {rec}");
    assert_eq!(
        claims["policy_revision"], rec["policy_revision"],
        "{got} {rec}"
    );
    let ttl = claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap();
    assert!(ttl <= 60, "{got}");
    // A Python client (requests) with a bare intent name: verified as well.
    let out = python(
        "requests",
        &env.proxy.url(),
        "POST",
        &py.url("/upload"),
        &["{}", "--header", "intentgate-intent: attested"],
    );
    assert_eq!(out.status, 200, "{}", out.body);
    assert_eq!(out.json()["claims"]["intent"], "attested");

    // Replayed as it was signed, the attestation verifies; changed in any bound part, not.
    let token = got["token"].as_str().unwrap();
    assert_eq!(py.direct("GET", "/issues/1?q=a%20b", token).status, 200);
    for (method, path) in [
        ("GET", "/issues/2?q=a%20b"),
        ("GET", "/issues/1?q=other"),
        ("DELETE", "/issues/1?q=a%20b"),
    ] {
        let out = py.direct(method, path, token);
        assert_eq!(out.status, 401, "{method} {path}: {out:?}");
        assert!(out.body.contains("binding"), "{}", out.body);
    }
    // A token made up by the agent does not verify.
    assert_eq!(py.direct("GET", "/issues/1", "forged").status, 401);
}

#[test]
fn attestation_is_per_intent_when_off_globally() {
    let py = PyUpstream::start(AGENT);
    let intent = format!(
        "  attested:\n    attest: true\n    allow: [{{hosts: [localhost], ports: [{}]}}]\n",
        py.port
    );
    let env = Env::start_with("", &intent);
    py.trust(&env.proxy);
    // The default issuer is the agent (no SPIFFE id here: its id).
    let bare = ["-H", "intentgate-intent: attested"];
    let out = curl(&["-x", &env.proxy.url(), bare[0], bare[1], &py.url("/x")]);
    assert_eq!(out.status, 200, "{out:?}");
    assert_eq!(out.json()["claims"]["intent"], "attested");
    // An intent without `attest` sends none.
    let out = env.get(
        "GET",
        "/issues/1",
        &["intentgate-intent: read-issues".into()],
    );
    assert_eq!(out.status, 200, "{out:?}");
    assert_eq!(env.up.requests(), 1);
    assert_eq!(env.up.last_header("txn-token"), None);
}

#[test]
fn an_intercepted_request_carries_an_attestation_bound_to_it() {
    let dir = tempfile::tempdir().unwrap();
    init_ca(dir.path());
    let test_ca = TestCa::new("upstream test CA");
    let up_ca = test_ca.write_pem(dir.path());
    let up = Upstream::start_tls(test_ca.server_config(&["localhost"]));
    let port = up.addr.port();
    let ig_ca = dir.path().join("ca/ca.pem");
    let proxy = ProxyProc::start(&format!(
        "tls: {{ca_cert: \"{}\", ca_key: \"{}\", upstream_ca: \"{}\"}}\n\
         attestation: {{enabled: true, issuer: \"{SIDECAR}\", ttl_seconds: 30}}\n\
         intents:\n  tickets:\n    allow: [{{hosts: [localhost], ports: [{port}]}}]\n",
        ig_ca.display(),
        dir.path().join("ca/ca-key.pem").display(),
        up_ca.display()
    ));
    let url = format!("https://localhost:{port}/echo/t?id=7");
    let out = curl(&[
        "-x",
        &proxy.url(),
        "--cacert",
        p(&ig_ca),
        "-H",
        "intentgate-intent: tickets",
        &url,
    ]);
    assert_eq!(out.status, 200, "{out:?}");
    let token = up.last_header("txn-token").unwrap();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(
        &jwks,
        curl(&[&proxy.admin_url("/.well-known/jwks.json")]).body,
    )
    .unwrap();
    let authority = format!("localhost:{port}");
    let verify = |method: &str, pq: &str| {
        Command::new("python3")
            .args([PY, "verify", p(&jwks), &token, SIDECAR, "localhost"])
            .args([method, &authority, pq])
            .output()
            .unwrap()
    };
    let ok = verify("GET", "/echo/t?id=7");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let claims: Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(claims["intent"], "tickets");
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        30
    );
    let changed = verify("GET", "/echo/t?id=8");
    assert!(!changed.status.success(), "a changed request verified");
}

/// The `kid` in the header of a compact JWS.
fn kid(token: &str) -> String {
    use base64::Engine;
    let head = token.split('.').next().unwrap();
    let head = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(head)
        .unwrap();
    let head: Value = serde_json::from_slice(&head).unwrap();
    head["kid"].as_str().unwrap().to_string()
}

#[test]
fn a_rotated_key_file_changes_the_kid_and_the_jwks_keeps_the_old_key() {
    let py = PyUpstream::start(SIDECAR);
    let dir = tempfile::tempdir().unwrap();
    let keygen = |name: &str| {
        let f = dir.path().join(name);
        let (code, _, err) = run_cli(&["token", "keygen", "--out", p(&f)]);
        assert_eq!(code, 0, "{err}");
        f
    };
    let (first, second) = (keygen("first.pem"), keygen("second.pem"));
    let key_file = dir.path().join("attest.pem");
    std::fs::copy(&first, &key_file).unwrap();
    let intent = format!(
        "  attested:\n    allow: [{{hosts: [localhost], ports: [{}]}}]\n",
        py.port
    );
    let env = Env::start_with(
        &format!(
            "attestation: {{enabled: true, issuer: \"{SIDECAR}\", key_file: \"{}\"}}\n",
            key_file.display()
        ),
        &intent,
    );
    py.trust(&env.proxy);
    // The upstream verifies each attestation against the JWK Set it fetches for the request.
    let call = || {
        let out = curl(&[
            "-x",
            &env.proxy.url(),
            "-H",
            "intentgate-intent: attested",
            &py.url("/r"),
        ]);
        assert_eq!(out.status, 200, "{out:?}");
        out.json()["token"].as_str().unwrap().to_string()
    };
    let old = call();
    let old_kid = kid(&old);
    // The key file is swapped (renamed over, as a Secret update does): the next requests carry
    // the new kid, and verify.
    let swap = |from: &Path| {
        let tmp = dir.path().join("attest.pem.new");
        std::fs::copy(from, &tmp).unwrap();
        std::fs::rename(&tmp, &key_file).unwrap();
    };
    swap(&second);
    let new = eventually("the new key to sign", Duration::from_secs(30), || {
        let t = call();
        (kid(&t) != old_kid).then_some(t)
    });
    let new_kid = kid(&new);
    let jwks: Value = curl(&[&env.proxy.admin_url("/.well-known/jwks.json")]).json();
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert!(kids.contains(&old_kid.as_str()), "{jwks}");
    assert!(kids.contains(&new_kid.as_str()), "{jwks}");
    // An attestation signed with the old key before the swap still verifies (overlap).
    assert_eq!(py.direct("GET", "/r", &old).status, 200);
    // A broken key file keeps the key in use, and says so.
    std::fs::write(dir.path().join("broken.pem"), "not a key\n").unwrap();
    swap(&dir.path().join("broken.pem"));
    eventually(
        "the broken file to be noticed",
        Duration::from_secs(30),
        || {
            let t = call();
            assert_eq!(kid(&t), new_kid, "a broken key file replaced the key");
            let logs = format!("{}{}", env.proxy.stdout(), env.proxy.stderr());
            logs.contains("file not reloaded").then_some(())
        },
    );
    assert_eq!(kid(&call()), new_kid);
}
