//! `intentgate run` with the runtimes agents are written in, each given only what `run` sets:
//! Node.js's fetch (the distribution's Node, 20 here, which ignores proxy variables, and Node 24 from the
//! npm registry, installed by scripts/test), Python's requests, httpx, urllib and aiohttp, curl,
//! git (over HTTPS) and Java (HttpURLConnection and HttpClient). HTTPS upstreams are local, signed
//! by a test CA; calls to them are intercepted, or spliced and verified against the system roots
//! that `run` puts in the child's CA bundle next to its own CA.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::common::tls::TestCa;
use crate::common::*;

const AGENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/agent.py");
const FETCH_JS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/fetch.mjs");
const FETCH_JAVA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/Fetch.java");
const STATIC_HTTPS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/static_https.py");
const DNS_SERVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/dns_server.py");

/// Node.js 24 as scripts/test installs it (`npm install node@24` into a cache folder), or
/// `$INTENTGATE_TEST_NODE24`.
fn node24() -> PathBuf {
    let path = std::env::var_os("INTENTGATE_TEST_NODE24")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/intentgate-test/node24/node_modules/node/bin/node")
        });
    assert!(
        path.is_file(),
        "Node.js 24 is not at {} (scripts/test installs it)",
        path.display()
    );
    path
}

struct World {
    dir: tempfile::TempDir,
    up: Upstream,
    /// HTTPS as `localhost` and `api.test` (intercepted). intentgate resolves `api.test` with a
    /// test DNS server: Java sends no SNI for a name without a dot, and intentgate refuses an
    /// intercepted tunnel without SNI.
    tls_up: Upstream,
    /// HTTPS as `127.0.0.1`, listed in `tls.splice`: the client verifies it itself.
    spliced: Upstream,
    /// The test CA that signed both, written as the "system roots" `run` starts from.
    roots: PathBuf,
    config: PathBuf,
    _dns: KillOnDrop,
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A test DNS server answering `api.test` and `localhost` with 127.0.0.1; its port.
fn dns(dir: &Path) -> (KillOnDrop, u16) {
    let port_file = dir.join("dns.port");
    let plan = r#"{"api.test": [["127.0.0.1"]], "localhost": [["127.0.0.1"]]}"#;
    let child = Command::new("python3")
        .args([DNS_SERVER, port_file.to_str().unwrap(), plan])
        .spawn()
        .unwrap();
    let port = eventually("the test DNS server", Duration::from_secs(20), || {
        std::fs::read_to_string(&port_file)
            .ok()?
            .trim()
            .parse()
            .ok()
    });
    (KillOnDrop(child), port)
}

/// The upstreams and a config allowing `GET /echo/ok/**` and `/repo.git/**` on them (and on
/// `extra_ports`) under intent `work`; with `splice`, `127.0.0.1` is spliced.
fn world(extra_ports: &[u16], splice: bool) -> World {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("runtimes upstream CA");
    let roots = ca.write_pem(dir.path());
    let (dns, dns_port) = dns(dir.path());
    let up = Upstream::start();
    let tls_up = Upstream::start_tls(ca.server_config(&["localhost", "api.test"]));
    let spliced = Upstream::start_tls(ca.server_config(&["127.0.0.1"]));
    let mut ports: Vec<String> = [up.addr.port(), tls_up.addr.port(), spliced.addr.port()]
        .iter()
        .chain(extra_ports)
        .map(u16::to_string)
        .collect();
    ports.sort();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "agent: {{id: rt-agent, owner: dev}}\negress: {{allow_cidrs: [127.0.0.0/8]}}\n\
             dns: {{servers: [\"127.0.0.1:{dns_port}\"]}}\n\
             tls: {{upstream_ca: \"{}\", splice: [{}]}}\n\
             intents:\n  work:\n    allow:\n      - hosts: [127.0.0.1, localhost, api.test]\n        ports: [{}]\n        methods: [GET]\n        paths: [\"/echo/ok/**\", \"/repo.git/**\"]\n",
            roots.display(),
            if splice { "\"127.0.0.1\"" } else { "" },
            ports.join(", ")
        ),
    )
    .unwrap();
    World {
        dir,
        up,
        tls_up,
        spliced,
        roots,
        config,
        _dns: dns,
    }
}

impl World {
    /// `intentgate run --intent work --report FILE -- CMD`, with the test CA as the system roots.
    fn run(&self, cmd: &[&str]) -> (i32, String, String, Value) {
        let report = self.dir.path().join("report.json");
        let _ = std::fs::remove_file(&report);
        let out = Command::new(BIN)
            .args(["run", "--config", self.config.to_str().unwrap()])
            .args([
                "--intent",
                "work",
                "--report",
                report.to_str().unwrap(),
                "--",
            ])
            .args(cmd)
            .env("SSL_CERT_FILE", &self.roots)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let report = std::fs::read_to_string(&report)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
            report,
        )
    }

    fn https(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.tls_up.addr.port())
    }

    fn https_api(&self, path: &str) -> String {
        format!("https://api.test:{}{path}", self.tls_up.addr.port())
    }

    fn spliced(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.spliced.addr.port())
    }
}

/// Requests the upstream saw for `path`, and whether intentgate tagged them.
fn tagged(up: &Upstream, path: &str) -> Vec<bool> {
    up.seen()
        .iter()
        .filter(|s| s.uri.ends_with(path))
        .map(|s| s.header("intentgate-decision-id").is_some())
        .collect()
}

#[test]
fn an_old_node_is_warned_about_and_node_24_goes_through_the_proxy() {
    let w = world(&[], false);
    // The distribution's Node (20 here): fetch ignores HTTP_PROXY. `run` says so before it starts, and
    // the summary that nothing came through.
    let (code, stdout, stderr, report) = w.run(&["node", FETCH_JS, &w.up.url("/echo/ok/node20")]);
    assert_eq!((code, stdout.trim()), (0, "200"), "{stderr}");
    assert!(
        stderr.contains("is Node.js v")
            && stderr.contains("ignores HTTP_PROXY/HTTPS_PROXY")
            && stderr.contains("--isolate"),
        "the distribution's Node is older than 24: {stderr}"
    );
    assert!(
        stderr.contains("warning: no call went through intentgate"),
        "{stderr}"
    );
    assert_eq!(report["calls"], 0, "{report}");
    assert_eq!(tagged(&w.up, "/echo/ok/node20"), [false], "it went around");

    // Node 24 with NODE_USE_ENV_PROXY=1 (set by run): through the proxy, HTTPS intercepted and
    // trusted through NODE_EXTRA_CA_CERTS.
    let node = node24();
    let (code, stdout, stderr, report) = w.run(&[
        node.to_str().unwrap(),
        FETCH_JS,
        &w.up.url("/echo/ok/node24"),
        &w.https("/echo/ok/node24s"),
        &w.https("/echo/secret"),
    ]);
    assert_eq!(
        (code, stdout.split_whitespace().collect::<Vec<_>>()),
        (0, vec!["200", "200", "403"]),
        "{stderr}"
    );
    assert!(!stderr.contains("warning"), "{stderr}");
    assert_eq!(
        (report["allowed"].as_u64(), report["blocked"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(tagged(&w.up, "/echo/ok/node24"), [true]);
    assert_eq!(tagged(&w.tls_up, "/echo/ok/node24s"), [true]);
}

#[test]
fn python_requests_httpx_urllib_and_aiohttp_use_the_proxy_and_the_bundle() {
    let w = world(&[], true);
    let libs = ["requests", "httpx", "urllib", "aiohttp"];
    let mut steps = Vec::new();
    for lib in libs {
        for url in [
            w.up.url(&format!("/echo/ok/{lib}")),
            w.https(&format!("/echo/ok/{lib}")),
            // Spliced: verified by the client against the bundle's system roots, not our CA.
            w.spliced(&format!("/echo/ok/{lib}")),
        ] {
            steps.push(serde_json::json!({"lib": lib, "method": "GET", "url": url}));
        }
    }
    let (code, stdout, stderr, report) =
        w.run(&["python3", AGENT, &Value::Array(steps).to_string()]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(
        stdout.trim(),
        format!("[{}]", ["200"; 12].join(", ")),
        "{stderr}"
    );
    assert_eq!(report["allowed"], 12, "{report}");
    for lib in libs {
        let path = format!("/echo/ok/{lib}");
        assert_eq!(tagged(&w.up, &path), [true], "{lib}");
        assert_eq!(tagged(&w.tls_up, &path), [true], "{lib}: intercepted");
        // A spliced tunnel is decided on its CONNECT; its bytes are the client's own.
        assert_eq!(tagged(&w.spliced, &path), [false], "{lib}: spliced");
    }
    // curl reads CURL_CA_BUNDLE (the same bundle) for the spliced host too.
    let (code, stdout, stderr, _) = w.run(&[
        "curl",
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &w.spliced("/echo/ok/curl"),
    ]);
    assert_eq!((code, stdout.as_str()), (0, "200"), "{stderr}");
}

#[test]
fn git_over_https_and_java_use_the_proxy_and_trust_the_ca() {
    // A repository served over HTTPS as static files (git's "dumb" protocol).
    let src = tempfile::tempdir().unwrap();
    let git = |dir: &Path, args: &[&str]| {
        let out = Command::new("git")
            .args([
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
                "-c",
                "init.defaultBranch=main",
            ])
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    git(src.path(), &["init", "-q", "work"]);
    let work = src.path().join("work");
    std::fs::write(work.join("README"), "hello from the served repository\n").unwrap();
    git(&work, &["add", "README"]);
    git(&work, &["commit", "-qm", "one"]);
    git(src.path(), &["clone", "-q", "--bare", "work", "repo.git"]);
    git(&src.path().join("repo.git"), &["update-server-info"]);
    let ca = TestCa::new("git server CA");
    let (cert, key) = ca.server_pem(&["api.test"]);
    let (cert_file, key_file) = (src.path().join("cert.pem"), src.path().join("key.pem"));
    std::fs::write(&cert_file, cert).unwrap();
    std::fs::write(&key_file, key).unwrap();
    let port_file = src.path().join("port");
    let mut server = Command::new("python3")
        .args([STATIC_HTTPS, src.path().to_str().unwrap()])
        .args([&cert_file, &key_file, &port_file])
        .spawn()
        .unwrap();
    let port: u16 = eventually("the git server", Duration::from_secs(20), || {
        std::fs::read_to_string(&port_file)
            .ok()?
            .trim()
            .parse()
            .ok()
    });
    let w = world(&[port], true);
    // intentgate verifies the git server with the test CA of `world`: add this one too.
    let mut roots = std::fs::read_to_string(&w.roots).unwrap();
    roots.push_str(&ca.cert_pem);
    std::fs::write(&w.roots, roots).unwrap();
    let dest = w.dir.path().join("clone");
    let url = format!("https://api.test:{port}/repo.git");
    let (code, _, stderr, report) = w.run(&["git", "clone", "-q", &url, dest.to_str().unwrap()]);
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        std::fs::read_to_string(dest.join("README")).unwrap(),
        "hello from the served repository\n"
    );
    let dest_key = format!("api.test:{port}");
    assert!(
        report["intents"]["work"][&dest_key]["allowed"].as_u64() >= Some(3),
        "git's requests went through the proxy: {report}"
    );

    // Java: JAVA_TOOL_OPTIONS names the proxy and a PKCS#12 trust store (system roots + our
    // CA). Java sends loopback direct by default (http.nonProxyHosts): the test's plain and
    // spliced upstreams are on loopback, so this command line clears that list.
    let (code, stdout, stderr, report) = w.run(&[
        "java",
        "-Dhttp.nonProxyHosts=",
        FETCH_JAVA,
        &w.up.url("/echo/ok/java"),
        &w.https_api("/echo/ok/java"),
        &w.spliced("/echo/ok/java"),
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(
        stdout.split_whitespace().collect::<Vec<_>>(),
        vec!["200"; 6],
        "{stderr}"
    );
    assert_eq!(report["allowed"], 6, "{report}");
    assert_eq!(tagged(&w.up, "/echo/ok/java"), [true, true]);
    assert_eq!(tagged(&w.tls_up, "/echo/ok/java"), [true, true]);
}
