//! Transparent mode for real: a client namespace and an upstream namespace joined by a veth pair
//! (test-only addresses 10.233.0.0/24), the nat rules applied by `intentgate iptables` itself,
//! intentgate running as root (uid 0, excluded by the rules) and a client running as uid 65534
//! with no proxy variables. Its HTTP, HTTPS and raw TCP connections are redirected, decided by
//! policy, and either reach the upstream (tagged) or never arrive.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::common::netns::Netns;
use crate::common::tls::TestCa;
use crate::common::*;

const CLIENT_IP: &str = "10.233.0.1";
const UPSTREAM_IP: &str = "10.233.0.2";
/// A second address of the upstream: what a client dials when it lies about the Host.
const DECOY_IP: &str = "10.233.0.3";
/// IPv6 on the same link (unique-local, test-only): `IP6T_SO_ORIGINAL_DST`.
const CLIENT_IP6: &str = "fd00:233::1";
const UPSTREAM_IP6: &str = "fd00:233::2";

/// Both namespaces, the servers in them, and the client's view.
struct Setup {
    client: Netns,
    _upstream: Netns,
    /// The upstream servers' JSON-lines log.
    log: PathBuf,
    /// intentgate's ready-file JSON.
    ready: serde_json::Value,
    ig_ca: PathBuf,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn policy_yaml(dir: &Path, dns_port: u16, ig_ca: &Path, up_ca: &Path) -> String {
    let rego = dir.join("tcp.rego");
    // Proves `connection.protocol` and `connection.mode` reach the policy: in scope by the
    // catalog, refused here.
    std::fs::write(
        &rego,
        "package intentgate\nimport rego.v1\n\ndeny contains \"no plain SMTP from agents\" if {\n\
         \tinput.connection.mode == \"transparent\"\n\tinput.connection.protocol == \"tcp\"\n\
         \tinput.request.port == 2525\n}\n",
    )
    .unwrap();
    format!(
        "listen: {{proxy: 127.0.0.1:0, admin: 127.0.0.1:0, transparent: \"[::]:15702\"}}\n\
         agent: {{id: tp-agent, owner: tp-owner}}\n\
         intent: ops\n\
         audit: {{path: \"{audit}\"}}\n\
         egress: {{allow_cidrs: [10.233.0.0/24, \"fd00:233::/64\"]}}\n\
         dns: {{servers: [\"127.0.0.1:{dns_port}\"]}}\n\
         tls: {{ca_cert: \"{ca}\", ca_key: \"{key}\", upstream_ca: \"{up_ca}\", splice: [spliced.tp.test, hidden.tp.test]}}\n\
         limits: {{sniff_timeout_ms: 300, connect_timeout_ms: 3000}}\n\
         policy: {{paths: [\"{rego}\"]}}\n\
         intents:\n  ops:\n    allow:\n\
         \x20     - hosts: [api.tp.test]\n        ports: [80, 443]\n        paths: [\"/allowed/**\"]\n\
         \x20     - hosts: [spliced.tp.test]\n        ports: [443]\n\
         \x20     - hosts: [{UPSTREAM_IP}, \"{UPSTREAM_IP6}\"]\n        ports: [5432, 2525]\n",
        audit = dir.join("audit.log").display(),
        ca = ig_ca.display(),
        key = ig_ca.with_file_name("ca-key.pem").display(),
        up_ca = up_ca.display(),
        rego = rego.display(),
    )
}

/// `tag` keeps the namespaces of tests running at the same time apart.
fn setup(tag: &str) -> Setup {
    let mut client = Netns::new(&format!("tc{tag}"), &[]);
    let mut upstream = Netns::new(&format!("tu{tag}"), &[]);
    ip(&[
        "-n",
        &client.name,
        "link",
        "add",
        "vc0",
        "type",
        "veth",
        "peer",
        "name",
        "vu0",
        "netns",
        &upstream.name,
    ]);
    ip(&[
        "-n",
        &client.name,
        "addr",
        "add",
        &format!("{CLIENT_IP}/24"),
        "dev",
        "vc0",
    ]);
    ip(&[
        "-n",
        &client.name,
        "addr",
        "add",
        &format!("{CLIENT_IP6}/64"),
        "dev",
        "vc0",
        "nodad",
    ]);
    ip(&["-n", &client.name, "link", "set", "vc0", "up"]);
    for a in [UPSTREAM_IP, DECOY_IP] {
        ip(&[
            "-n",
            &upstream.name,
            "addr",
            "add",
            &format!("{a}/24"),
            "dev",
            "vu0",
        ]);
    }
    ip(&[
        "-n",
        &upstream.name,
        "addr",
        "add",
        &format!("{UPSTREAM_IP6}/64"),
        "dev",
        "vu0",
        "nodad",
    ]);
    ip(&["-n", &upstream.name, "link", "set", "vu0", "up"]);

    // The client (uid 65534) must read the CA certificates: the directory is opened up; the
    // keys stay 0600.
    let dir = client.dir().to_path_buf();
    set_mode(&dir, 0o755);
    let (code, out, err) = run_cli(&["ca", "init", "--out", dir.join("ca").to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    set_mode(&dir.join("ca"), 0o755);
    let ig_ca = dir.join("ca/ca.pem");
    set_mode(&ig_ca, 0o644);
    let test_ca = TestCa::new("transparent upstream CA");
    let up_ca = test_ca.write_pem(&dir);
    set_mode(&up_ca, 0o644);
    let (cert, key) = test_ca.server_pem(&["api.tp.test", "spliced.tp.test", "hidden.tp.test"]);
    std::fs::write(dir.join("up-cert.pem"), cert).unwrap();
    std::fs::write(dir.join("up-key.pem"), key).unwrap();

    let log = dir.join("upstream.log");
    let up_ready = dir.join("upstream.ready");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/transparent_upstream.py"
    );
    let s = |p: &Path| p.to_str().unwrap().to_string();
    upstream.spawn(
        "python3",
        &[
            script,
            &s(&log),
            &s(&up_ready),
            &s(&dir.join("up-cert.pem")),
            &s(&dir.join("up-key.pem")),
            "5432",
            "2525",
            "2526",
        ],
    );
    eventually("the upstream servers", Duration::from_secs(10), || {
        up_ready.exists().then_some(())
    });

    // intentgate's resolver: every name is the upstream's first address.
    let port_file = dir.join("dns.port");
    let plan = format!(
        r#"{{"api.tp.test": [["{UPSTREAM_IP}"]], "spliced.tp.test": [["{UPSTREAM_IP}"]], "hidden.tp.test": [["{UPSTREAM_IP}"]]}}"#
    );
    let dns = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/dns_server.py");
    client.spawn("python3", &[dns, &s(&port_file), &plan]);
    let dns_port: u16 = eventually("the test DNS server", Duration::from_secs(10), || {
        std::fs::read_to_string(&port_file)
            .ok()
            .and_then(|p| p.trim().parse().ok())
    });
    let ready = client.intentgate(&policy_yaml(&dir, dns_port, &ig_ca, &up_ca));
    assert_eq!(ready["transparent"], "[::]:15702", "{ready}");

    // The rules, applied by intentgate itself (IPv4 and IPv6): everything uid 0 sends is left
    // alone.
    let out = client.run(BIN, &["iptables", "--proxy-uid", "0", "--port", "15702"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        !err.contains("warning"),
        "IPv6 must be redirected too: {err}"
    );
    Setup {
        client,
        _upstream: upstream,
        log,
        ready,
        ig_ca,
    }
}

fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

impl Setup {
    /// Runs a program in the client namespace as uid/gid 65534, without proxy variables.
    fn as_agent(&self, program: &str, args: &[&str]) -> Output {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.client.name, "setpriv"])
            .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
            .arg(program)
            .args(args);
        for v in [
            "http_proxy",
            "HTTP_PROXY",
            "https_proxy",
            "HTTPS_PROXY",
            "ALL_PROXY",
        ] {
            c.env_remove(v);
        }
        c.output().unwrap()
    }

    /// curl as the agent: (status, body); status 0 when no HTTP answer came.
    fn curl(&self, args: &[&str]) -> (u16, String) {
        let mut all = vec!["-sS", "--max-time", "10", "-w", "\n%{http_code}"];
        all.extend(args);
        let out = self.as_agent("curl", &all);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    /// A server-speaks-first exchange as the agent: waits for the banner BEFORE sending
    /// anything, then says EHLO; returns everything the server said.
    fn smtp(&self, ip: &str, port: u16) -> String {
        let script = format!(
            "exec 3<>'/dev/tcp/{ip}/{port}' || exit 9; IFS= read -r -t 5 banner <&3; \
             printf '%s\\n' \"$banner\"; [ -n \"$banner\" ] || exit 0; \
             printf 'EHLO agent\\r\\n' >&3; IFS= read -r -t 5 reply <&3; printf '%s\\n' \"$reply\""
        );
        let out = self.as_agent("bash", &["-c", &script]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn upstream_log(&self) -> Vec<serde_json::Value> {
        read_lines(&self.log)
    }

    fn audit(&self) -> Vec<serde_json::Value> {
        read_lines(&self.client.dir().join("audit.log"))
    }

    /// Waits for the audit record of `host:port` (and `path`, when given).
    fn audit_of(&self, host: &str, port: u16, path: Option<&str>) -> serde_json::Value {
        eventually(
            &format!("the audit record of {host}:{port}"),
            Duration::from_secs(10),
            || {
                self.audit().into_iter().find(|r| {
                    r["host"] == host && r["port"] == port && path.is_none_or(|p| r["path"] == p)
                })
            },
        )
    }
}

fn read_lines(p: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn tagged(entry: &serde_json::Value) -> bool {
    entry["headers"]["intentgate-agent"] == "tp-agent"
        && entry["headers"]["intentgate-intent"] == "ops"
}

#[test]
fn transparent_http_is_decided_on_its_host_and_dialled_at_intentgates_own_resolution() {
    let s = setup("h");
    let resolve = |name: &str, ip: &str| format!("{name}:80:{ip}");
    // Allowed: reaches the upstream tagged, at the address intentgate resolved.
    let (code, body) = s.curl(&[
        "--resolve",
        &resolve("api.tp.test", UPSTREAM_IP),
        "http://api.tp.test/allowed/one",
    ]);
    assert_eq!(code, 200, "{body}");
    let rec = s.audit_of("api.tp.test", 80, Some("/allowed/one"));
    assert_eq!(rec["connection"], "transparent", "{rec}");
    assert_eq!(rec["decision"], "allow", "{rec}");
    assert_eq!(rec["agent"]["id"], "tp-agent", "{rec}");
    let got: Vec<_> = s
        .upstream_log()
        .into_iter()
        .filter(|e| e["path"] == "/allowed/one")
        .collect();
    // Exactly once, tagged: intentgate's own connection (uid 0) was not redirected back to it.
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(tagged(&got[0]), "{:?}", got[0]);
    assert_eq!(got[0]["local"], UPSTREAM_IP);
    assert_eq!(
        s.audit()
            .iter()
            .filter(|r| r["path"] == "/allowed/one")
            .count(),
        1
    );

    // A Host naming an allowed name on a connection to another address: intentgate dials its own
    // resolution of the name, so the decision and the connection are about the same host.
    let (code, body) = s.curl(&[
        "--resolve",
        &resolve("api.tp.test", DECOY_IP),
        "http://api.tp.test/allowed/decoy",
    ]);
    assert_eq!(code, 200, "{body}");
    let log = s.upstream_log();
    let decoy = log.iter().find(|e| e["path"] == "/allowed/decoy").unwrap();
    assert_eq!(decoy["local"], UPSTREAM_IP, "{decoy}");
    assert!(!log.iter().any(|e| e["local"] == DECOY_IP), "{log:?}");

    // Denied by path and by host: a JSON refusal, and nothing arrives upstream.
    let (code, body) = s.curl(&[
        "--resolve",
        &resolve("api.tp.test", UPSTREAM_IP),
        "http://api.tp.test/secret",
    ]);
    assert_eq!(code, 403, "{body}");
    let j: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(j["decision_id"].is_string() && j["hint"].is_string(), "{j}");
    let (code, body) = s.curl(&[
        "--resolve",
        &resolve("hidden.tp.test", UPSTREAM_IP),
        "http://hidden.tp.test/allowed/two",
    ]);
    assert_eq!(code, 403, "{body}");
    assert_eq!(s.audit_of("hidden.tp.test", 80, None)["decision"], "deny");
    let log = s.upstream_log();
    assert!(
        !log.iter()
            .any(|e| e["path"] == "/secret" || e["path"] == "/allowed/two"),
        "{log:?}"
    );

    // No loops: the listener's own address, redirected, is a forbidden destination; connecting to
    // the listener directly (not redirected) is refused outright.
    let (code, body) = s.curl(&[&format!("http://{CLIENT_IP}:15702/")]);
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("destination_forbidden"), "{body}");
    let (code, body) = s.curl(&["http://127.0.0.1:15702/"]);
    assert_eq!(code, 0, "{body}");
    let admin = s.ready["admin"].as_str().unwrap();
    let metrics = s.client.curl(&[&format!("http://{admin}/metrics")]);
    assert!(
        metrics.contains(r#"intentgate_refusals_total{error="transparent_not_redirected"} 1"#),
        "{metrics}"
    );
    // Five HTTP connections were served (the allowed, decoy and three refused ones).
    assert!(
        metrics.contains(r#"intentgate_transparent_connections_total{protocol="http"} 5"#),
        "{metrics}"
    );
}

#[test]
fn transparent_https_is_intercepted_or_spliced_on_its_sni() {
    let s = setup("s");
    let ig_ca = s.ig_ca.to_str().unwrap().to_string();
    let up_ca = s.client.dir().join("test-ca.pem");
    let up_ca = up_ca.to_str().unwrap();
    let resolve = |name: &str, ip: &str| format!("{name}:443:{ip}");
    // Intercepted (a CA is configured): decided per request, HTTP/1.1 and HTTP/2, tagged.
    for (proto, path) in [("--http1.1", "/allowed/tls1"), ("--http2", "/allowed/tls2")] {
        let (code, body) = s.curl(&[
            proto,
            "--cacert",
            &ig_ca,
            "--resolve",
            &resolve("api.tp.test", UPSTREAM_IP),
            &format!("https://api.tp.test{path}"),
        ]);
        assert_eq!(code, 200, "{proto}: {body}");
        let rec = s.audit_of("api.tp.test", 443, Some(path));
        assert_eq!(rec["connection"], "transparent", "{rec}");
        assert_eq!(rec["scheme"], "https", "{rec}");
    }
    let log = s.upstream_log();
    for path in ["/allowed/tls1", "/allowed/tls2"] {
        let e = log.iter().find(|e| e["path"] == path).unwrap();
        assert_eq!(e["kind"], "https", "{e}");
        assert!(tagged(e), "{e}");
    }
    let (code, body) = s.curl(&[
        "--cacert",
        &ig_ca,
        "--resolve",
        &resolve("api.tp.test", UPSTREAM_IP),
        "https://api.tp.test/secret",
    ]);
    assert_eq!(code, 403, "{body}");

    // Spliced (tls.splice): decided on the SNI, dialled at intentgate's own resolution of it
    // (the client aimed at the decoy address), end-to-end TLS with the upstream's certificate.
    let (code, body) = s.curl(&[
        "--cacert",
        up_ca,
        "--resolve",
        &resolve("spliced.tp.test", DECOY_IP),
        "https://spliced.tp.test/through",
    ]);
    assert_eq!(code, 200, "{body}");
    let rec = s.audit_of("spliced.tp.test", 443, None);
    assert_eq!(
        (&rec["decision"], &rec["scheme"], &rec["method"]),
        (&"allow".into(), &"tls".into(), &"CONNECT".into()),
        "{rec}"
    );
    let log = s.upstream_log();
    let e = log.iter().find(|e| e["path"] == "/through").unwrap();
    assert_eq!(e["local"], UPSTREAM_IP, "{e}");
    assert!(
        e["headers"]["intentgate-agent"].is_null(),
        "not intercepted: {e}"
    );
    // A spliced name outside the catalog: the connection is closed, nothing arrives.
    let (code, body) = s.curl(&[
        "--cacert",
        up_ca,
        "--resolve",
        &resolve("hidden.tp.test", UPSTREAM_IP),
        "https://hidden.tp.test/never",
    ]);
    assert_eq!(code, 0, "{body}");
    assert_eq!(s.audit_of("hidden.tp.test", 443, None)["decision"], "deny");
    let log = s.upstream_log();
    assert!(
        !log.iter()
            .any(|e| e["path"] == "/never" || e["path"] == "/secret"),
        "{log:?}"
    );
}

#[test]
fn transparent_tcp_is_decided_on_ip_and_port_when_the_server_speaks_first() {
    let s = setup("t");
    // In scope by IP and port: the banner arrives (the client sent nothing until then).
    let said = s.smtp(UPSTREAM_IP, 5432);
    assert_eq!(said, "220 hello\r\n250 EHLO agent\r\n", "{said:?}");
    let rec = s.audit_of(UPSTREAM_IP, 5432, None);
    assert_eq!(
        (&rec["decision"], &rec["scheme"], &rec["connection"]),
        (&"allow".into(), &"tcp".into(), &"transparent".into()),
        "{rec}"
    );
    // Out of scope (port 2526), and in scope but refused by a Rego rule that reads
    // `connection.protocol == "tcp"` (port 2525): closed before any byte, nothing arrives.
    for port in [2526, 2525] {
        assert_eq!(s.smtp(UPSTREAM_IP, port), "\n", "port {port}");
        let rec = s.audit_of(UPSTREAM_IP, port, None);
        assert_eq!(rec["decision"], "deny", "{rec}");
    }
    let rego = s.audit_of(UPSTREAM_IP, 2525, None);
    assert!(
        rego["reasons"]
            .to_string()
            .contains("no plain SMTP from agents"),
        "{rego}"
    );
    // IPv6: the original destination comes from IP6T_SO_ORIGINAL_DST on the same dual-stack
    // listener.
    let said = s.smtp(UPSTREAM_IP6, 5432);
    assert_eq!(said, "220 hello\r\n250 EHLO agent\r\n", "{said:?}");
    assert_eq!(s.audit_of(UPSTREAM_IP6, 5432, None)["decision"], "allow");
    assert_eq!(s.smtp(UPSTREAM_IP6, 2526), "\n");
    assert_eq!(s.audit_of(UPSTREAM_IP6, 2526, None)["decision"], "deny");
    let log = s.upstream_log();
    let tcp: Vec<_> = log.iter().filter(|e| e["kind"] == "tcp").collect();
    assert_eq!(tcp.len(), 2, "{tcp:?}");
    assert!(tcp.iter().all(|e| e["port"] == 5432), "{tcp:?}");
    assert!(tcp.iter().any(|e| e["local"] == UPSTREAM_IP6), "{tcp:?}");
}
