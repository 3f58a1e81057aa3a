//! The two namespaces of the transparent-mode tests, the servers and intentgate in them, and the
//! agent's view (uid 65534, no proxy variables).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::common::netns::Netns;
use crate::common::tls::TestCa;
use crate::common::*;

pub(super) const CLIENT_IP: &str = "10.233.0.1";
pub(super) const UPSTREAM_IP: &str = "10.233.0.2";
/// A second address of the upstream: what a client dials when it lies about the Host.
pub(super) const DECOY_IP: &str = "10.233.0.3";
/// IPv6 on the same link (unique-local, test-only): `IP6T_SO_ORIGINAL_DST`.
pub(super) const CLIENT_IP6: &str = "fd00:233::1";
pub(super) const UPSTREAM_IP6: &str = "fd00:233::2";

/// Both namespaces, the servers in them, and the client's view.
pub(super) struct Setup {
    pub(super) client: Netns,
    _upstream: Netns,
    /// The upstream servers' JSON-lines log.
    pub(super) log: PathBuf,
    /// intentgate's ready-file JSON.
    pub(super) ready: serde_json::Value,
    pub(super) ig_ca: PathBuf,
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
pub(super) fn setup(tag: &str) -> Setup {
    setup_with(tag, |yaml| yaml)
}

/// As `setup`, with intentgate's config passed through `edit` first.
pub(super) fn setup_with(tag: &str, edit: fn(String) -> String) -> Setup {
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
    let dns_log = s(&dir.join("dns.log"));
    client.spawn("python3", &[dns, &s(&port_file), &plan, &dns_log]);
    let dns_port: u16 = eventually("the test DNS server", Duration::from_secs(10), || {
        std::fs::read_to_string(&port_file)
            .ok()
            .and_then(|p| p.trim().parse().ok())
    });
    let ready = client.intentgate(&edit(policy_yaml(&dir, dns_port, &ig_ca, &up_ca)));
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
    pub(super) fn as_agent(&self, program: &str, args: &[&str]) -> Output {
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
    pub(super) fn curl(&self, args: &[&str]) -> (u16, String) {
        let mut all = vec!["-sS", "--max-time", "10", "-w", "\n%{http_code}"];
        all.extend(args);
        let out = self.as_agent("curl", &all);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    /// A server-speaks-first exchange as the agent: waits for the banner BEFORE sending
    /// anything, then says EHLO; returns everything the server said.
    pub(super) fn smtp(&self, ip: &str, port: u16) -> String {
        let script = format!(
            "exec 3<>'/dev/tcp/{ip}/{port}' || exit 9; IFS= read -r -t 5 banner <&3; \
             printf '%s\\n' \"$banner\"; [ -n \"$banner\" ] || exit 0; \
             printf 'EHLO agent\\r\\n' >&3; IFS= read -r -t 5 reply <&3; printf '%s\\n' \"$reply\""
        );
        let out = self.as_agent("bash", &["-c", &script]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A WebSocket round trip as the agent (system Python, standard library only): the upgrade
    /// to `ip`:80 with `Host: host`, one masked text frame out; prints the status line and the
    /// echoed text.
    pub(super) fn websocket(&self, ip: &str, host: &str, path: &str) -> String {
        let script = format!(
            "import socket\n\
             s = socket.create_connection(('{ip}', 80), timeout=5)\n\
             s.sendall(b'GET {path} HTTP/1.1\\r\\nHost: {host}\\r\\nConnection: Upgrade\\r\\n'\n\
             \x20         b'Upgrade: websocket\\r\\nSec-WebSocket-Version: 13\\r\\n'\n\
             \x20         b'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\\r\\n\\r\\n')\n\
             head = b''\n\
             while b'\\r\\n\\r\\n' not in head:\n\
             \x20   chunk = s.recv(1)\n\
             \x20   if not chunk: break\n\
             \x20   head += chunk\n\
             print(head.split(b'\\r\\n')[0].decode())\n\
             if b' 101 ' in head.split(b'\\r\\n')[0]:\n\
             \x20   mask = b'\\x01\\x02\\x03\\x04'\n\
             \x20   s.sendall(b'\\x81\\x85' + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(b'hello')))\n\
             \x20   frame = s.recv(2)\n\
             \x20   print(s.recv(frame[1] & 0x7f).decode())\n"
        );
        let out = self.as_agent("/usr/bin/python3", &["-c", &script]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub(super) fn upstream_log(&self) -> Vec<serde_json::Value> {
        read_lines(&self.log)
    }

    /// How many queries for `name` reached intentgate's DNS server.
    pub(super) fn dns_queries(&self, name: &str) -> usize {
        let log = read_lines(&self.client.dir().join("dns.log"));
        log.iter().filter(|q| q["name"] == name).count()
    }

    pub(super) fn audit(&self) -> Vec<serde_json::Value> {
        read_lines(&self.client.dir().join("audit.log"))
    }

    /// Waits for the audit record of `host:port` (and `path`, when given).
    pub(super) fn audit_of(&self, host: &str, port: u16, path: Option<&str>) -> serde_json::Value {
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
