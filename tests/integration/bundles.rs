//! Policy bundles for real: `intentgate inject` serves a policy directory as bundles over HTTPS
//! (a CA made here) to sidecars presenting a service-account token (minted by PyPI joserfc,
//! `issuer`), real sidecars (`intentgate serve --bundle-url`) poll it and decide real
//! requests with it; the server's files change, the server goes away and comes back, and a
//! hostile server (Python) replays another namespace's bundle.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::issuer::Issuer;
use crate::common::tls::TestCa;
use crate::common::*;

pub const WAIT: Duration = Duration::from_secs(20);

/// The platform's policy directory: a `fetch` intent for namespace `ns` allowing GET on `paths`
/// of the test upstream.
pub fn write_catalog(root: &Path, ns: &str, port: u16, paths: &[&str]) {
    let dir = root.join("namespaces").join(ns);
    std::fs::create_dir_all(&dir).unwrap();
    let paths: Vec<String> = paths.iter().map(|p| format!("\"{p}\"")).collect();
    let text = format!(
        "intents:\n  fetch:\n    claimable_by: {{namespaces: [support, other]}}\n    allow:\n      \
         - {{hosts: [127.0.0.1], ports: [{port}], methods: [GET], paths: [{}]}}\n",
        paths.join(", ")
    );
    let tmp = dir.join(".intents.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(tmp, dir.join("intents.yaml")).unwrap();
}

/// A running `intentgate inject` (webhook and bundle server), killed when dropped.
pub struct Control {
    child: Child,
    pub port: u16,
    dir: PathBuf,
}

impl Drop for Control {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Control {
    /// Starts on `port` (0: any) serving `dir`/policy; `dir` holds tls.crt, tls.key, ca.pem and
    /// the issuer whose tokens it accepts (`setup`).
    pub fn start(dir: &Path, port: u16) -> Self {
        let config = dir.join("inject.yaml");
        std::fs::write(&config, inject_config(dir)).unwrap();
        Self::launch(
            dir,
            &dir.join("tls.crt"),
            &dir.join("tls.key"),
            &config,
            port,
        )
    }

    /// Starts `intentgate inject` with these files; `dir` gets its ready file, its log
    /// (`control.log`) and curl's output.
    pub fn launch(dir: &Path, cert: &Path, key: &Path, config: &Path, port: u16) -> Self {
        Self::spawn(dir, cert, key, config, &format!("127.0.0.1:{port}"))
    }

    /// As `launch`, listening on `listen` as given to `--listen`.
    pub fn spawn(dir: &Path, cert: &Path, key: &Path, config: &Path, listen: &str) -> Self {
        let ready = dir.join("ready.json");
        let _ = std::fs::remove_file(&ready);
        let log = std::fs::File::create(dir.join("control.log")).unwrap();
        let child = Command::new(BIN)
            .arg("inject")
            .arg("--tls-cert")
            .arg(cert)
            .arg("--tls-key")
            .arg(key)
            .args(["--listen", listen, "--watch-interval", "100ms"])
            .arg("--config")
            .arg(config)
            .arg("--ready-file")
            .arg(&ready)
            .env("INTENTGATE_LOG", "info,intentgate=debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let listen: String = eventually("bundle server ready", WAIT, || {
            let v: Value = serde_json::from_str(&std::fs::read_to_string(&ready).ok()?).ok()?;
            v["listen"].as_str().map(str::to_string)
        });
        let port = listen.rsplit(':').next().unwrap().parse().unwrap();
        Control {
            child,
            port,
            dir: dir.to_path_buf(),
        }
    }

    /// Its directory (`setup`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("control.log")).unwrap_or_default()
    }

    /// Waits until its log contains `text`.
    pub fn logged(&self, text: &str) {
        eventually(&format!("control log: {text}"), WAIT, || {
            self.log().contains(text).then_some(())
        });
    }

    pub fn url(&self, ns: &str) -> String {
        format!("https://127.0.0.1:{}/bundles/{ns}", self.port)
    }

    /// GETs a bundle with curl and a token of `ns`: (status, ETag, body file).
    pub fn curl(&self, ns: &str, headers: &[&str]) -> (u16, String, PathBuf) {
        let token = Issuer {
            dir: self.dir.join("issuer"),
        }
        .token(ns);
        let auth = format!("Authorization: Bearer {token}");
        let mut all = vec![auth.as_str()];
        all.extend_from_slice(headers);
        self.curl_raw(ns, &all)
    }

    /// GETs a bundle with curl and exactly `headers`: (status, ETag, body file).
    pub fn curl_raw(&self, ns: &str, headers: &[&str]) -> (u16, String, PathBuf) {
        let out = self.dir.join(format!("{ns}.tar.gz"));
        let hdrs = self.dir.join("headers.txt");
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--cacert"])
            .arg(self.dir.join("ca.pem"))
            .arg("-o")
            .arg(&out)
            .arg("-D")
            .arg(&hdrs)
            .args(["-w", "%{http_code}"]);
        for h in headers {
            cmd.args(["-H", h]);
        }
        let o = cmd.arg(self.url(ns)).output().unwrap();
        let status = String::from_utf8_lossy(&o.stdout).parse().unwrap();
        let etag = std::fs::read_to_string(&hdrs)
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("etag: ").map(|v| v.trim().to_string()))
            .unwrap_or_default();
        (status, etag, out)
    }
}

/// The inject config serving `dir`/policy to tokens of the issuer in `dir`/issuer.
pub fn inject_config(dir: &Path) -> String {
    format!(
        "bundles:\n  policy_dir: {}\n  auth:\n    issuer: {}\n    keys: {{jwks_file: {}}}\n",
        dir.join("policy").display(),
        super::issuer::ISSUER,
        dir.join("issuer/jwks.json").display()
    )
}

/// A temp dir with the CA, the server's certificate for 127.0.0.1, an empty policy dir and an
/// issuer (`issuer/`) with a token for namespace support (`token`).
pub fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("intentgate bundle test CA");
    let (cert, key) = ca.server_pem(&["127.0.0.1", "localhost"]);
    std::fs::write(dir.path().join("tls.crt"), cert).unwrap();
    std::fs::write(dir.path().join("tls.key"), key).unwrap();
    std::fs::write(dir.path().join("ca.pem"), &ca.cert_pem).unwrap();
    std::fs::create_dir_all(dir.path().join("policy")).unwrap();
    let issuer = Issuer::init(&dir.path().join("issuer"));
    Issuer::write_token(&dir.path().join("token"), &issuer.token("support"));
    dir
}

pub const SIDECAR: &str = "agent: {id: bot, owner: team, namespace: support}
mode: enforce
intent: fetch
policy: {bundle_poll_ms: 150, bundle_wait_ms: 10000}
";

/// A sidecar of namespace support polling `url`, trusting `ca`, presenting the token in the
/// directory of `ca` (`setup`).
pub fn sidecar(url: &str, ca: &Path) -> ProxyProc {
    let token = ca.with_file_name("token");
    ProxyProc::start_with(
        SIDECAR,
        &[
            "--bundle-url",
            url,
            "--bundle-ca",
            ca.to_str().unwrap(),
            "--bundle-token-file",
            token.to_str().unwrap(),
        ],
        &[],
    )
}

pub fn status(proxy: &ProxyProc, up: &Upstream, path: &str) -> u16 {
    let out = curl(&["-x", &proxy.url(), &up.url(path)]);
    out.status
}

/// `intentgate_bundle_fetches_total{result="RESULT"}` of `proxy`.
pub fn fetches(proxy: &ProxyProc, result: &str) -> f64 {
    proxy.metric(&format!(
        "intentgate_bundle_fetches_total{{result=\"{result}\"}}"
    ))
}

/// Waits until that count is above `above`.
pub fn fetches_above(proxy: &ProxyProc, result: &str, above: f64) {
    eventually(&format!("bundle fetches {result} > {above}"), WAIT, || {
        (fetches(proxy, result) > above).then_some(())
    });
}

/// Waits until `path` answers `code` through `proxy`.
pub fn answers(proxy: &ProxyProc, up: &Upstream, path: &str, code: u16) {
    eventually(&format!("{path} answering {code}"), WAIT, || {
        (status(proxy, up, path) == code).then_some(())
    });
}

#[test]
fn a_sidecar_follows_its_bundle_and_keeps_the_last_good_one_while_the_server_is_away() {
    let up = Upstream::start();
    let port = up.addr.port();
    let dir = setup();
    let policy = dir.path().join("policy");
    write_catalog(&policy, "support", port, &["/echo/a/**"]);
    let control = Control::start(dir.path(), 0);
    let proxy = sidecar(&control.url("support"), &dir.path().join("ca.pem"));
    assert_eq!(status(&proxy, &up, "/echo/a/1"), 200);
    assert_eq!(status(&proxy, &up, "/echo/b/1"), 403);
    let pid = proxy.pid();

    // A new rule on the server is enforced without a restart.
    write_catalog(&policy, "support", port, &["/echo/a/**", "/echo/b/**"]);
    answers(&proxy, &up, "/echo/b/1", 200);
    assert_eq!(proxy.pid(), pid);
    assert!(fetches(&proxy, "updated") >= 1.0);
    let info = curl(&[&proxy.admin_url("/v1/policy")]).json();
    assert_eq!(info["bundle"]["namespace"], "support");
    assert_eq!(info["last_reload"]["trigger"], "bundle");
    assert!(
        info["modules"].to_string().contains("bundle:support@")
            || info["data_sources"].to_string().contains("bundle:support@"),
        "{info}"
    );

    // A policy that does not build is refused by the server, which keeps serving the last
    // good bundle: sidecars never see it (a sidecar's own refusal: the rogue-server tests).
    let broken = policy.join("namespaces/support/broken.rego");
    std::fs::write(
        &broken,
        "package intentgate.namespace\ndeny contains msg if {\n",
    )
    .unwrap();
    control.logged("the policy of namespace 'support' does not build");
    assert!(control.log().contains("broken.rego"), "{}", control.log());
    let (refused, unchanged) = (fetches(&proxy, "refused"), fetches(&proxy, "unchanged"));
    fetches_above(&proxy, "unchanged", unchanged);
    assert_eq!(fetches(&proxy, "refused"), refused);
    assert_eq!(status(&proxy, &up, "/echo/b/1"), 200);
    assert_eq!(status(&proxy, &up, "/echo/c/1"), 403);
    std::fs::remove_file(&broken).unwrap();

    // The server goes away: polls fail, decisions go on with the last good bundle.
    let port_ctl = control.port;
    drop(control);
    let errors = fetches(&proxy, "error");
    fetches_above(&proxy, "error", errors);
    assert_eq!(status(&proxy, &up, "/echo/a/1"), 200);
    assert_eq!(status(&proxy, &up, "/echo/b/1"), 200);
    assert_eq!(status(&proxy, &up, "/echo/c/1"), 403);

    // It comes back with a change made meanwhile: picked up, still the same process.
    write_catalog(&policy, "support", port, &["/echo/c/**"]);
    let _control = Control::start(dir.path(), port_ctl);
    answers(&proxy, &up, "/echo/c/1", 200);
    assert_eq!(status(&proxy, &up, "/echo/a/1"), 403);
    assert_eq!(proxy.pid(), pid);
}

#[test]
fn the_server_answers_bundles_with_etags_and_refuses_bad_names() {
    let dir = setup();
    write_catalog(&dir.path().join("policy"), "support", 80, &["/x"]);
    let control = Control::start(dir.path(), 0);
    let (code, etag, file) = control.curl("support", &[]);
    assert_eq!(code, 200);
    assert_eq!(etag.len(), 66, "{etag}");
    // A real gzip'd tar (read by GNU tar, which nobody here wrote).
    let list = Command::new("tar").arg("tzf").arg(&file).output().unwrap();
    let names = String::from_utf8_lossy(&list.stdout).to_string();
    assert_eq!(names, ".manifest\nnamespaces/support/intents.yaml\n");
    let (code, again, _) = control.curl("support", &[&format!("If-None-Match: {etag}")]);
    assert_eq!((code, again), (304, etag.clone()));
    // Another namespace (no folder of its own): the global files only, another revision.
    let (code, other, _) = control.curl("billing", &[]);
    assert_eq!(code, 200);
    assert_ne!(other, etag);
    for bad in ["UPPER", "a..b", "-x", "%2e%2e"] {
        assert_eq!(control.curl(bad, &[]).0, 400, "{bad}");
    }
}

#[test]
fn a_sidecar_without_a_first_bundle_does_not_start() {
    let dir = setup();
    let cfg = dir.path().join("sidecar.yaml");
    std::fs::write(
        &cfg,
        SIDECAR.replace("bundle_wait_ms: 10000", "bundle_wait_ms: 300"),
    )
    .unwrap();
    // A port nothing listens on (bound, then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (code, _, err) = run_cli(&[
        "serve",
        "--config",
        cfg.to_str().unwrap(),
        "--bundle-url",
        &format!("https://127.0.0.1:{port}/bundles/support"),
        "--bundle-ca",
        dir.path().join("ca.pem").to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no policy bundle within"), "{err}");
}
