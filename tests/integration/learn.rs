//! Learn mode learns only what it saw: from a real run (`intentgate run --learn` around a Python
//! agent using requests and httpx, or `serve` and curl), a catalog that grants only the calls that
//! were forwarded, each path with its own methods, per intent, ids generalised only when asked;
//! then `serve` enforcing that catalog passes the same calls and refuses anything new.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::common::tls::TestCa;
use crate::common::*;

const AGENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/agent.py");

/// A plain and a TLS upstream (`localhost`, signed by a test CA), and intentgate's own CA.
struct World {
    dir: tempfile::TempDir,
    up: Upstream,
    tls_up: Upstream,
    up_ca: PathBuf,
    ig_ca: PathBuf,
    ig_key: PathBuf,
}

fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    init_ca(dir.path());
    let test_ca = TestCa::new("learn upstream CA");
    let up_ca = test_ca.write_pem(dir.path());
    World {
        up: Upstream::start(),
        tls_up: Upstream::start_tls(test_ca.server_config(&["localhost"])),
        up_ca,
        ig_ca: dir.path().join("ca/ca.pem"),
        ig_key: dir.path().join("ca/ca-key.pem"),
        dir,
    }
}

impl World {
    fn https(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.tls_up.addr.port())
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A config file for `run`: the agent, loopback upstreams allowed, the upstream CA trusted.
    fn run_config(&self) -> PathBuf {
        let cfg = self.path("run.yaml");
        std::fs::write(
            &cfg,
            format!(
                "agent: {{id: dev-agent, owner: dev}}\negress: {{allow_cidrs: [127.0.0.0/8]}}\n\
                 tls: {{upstream_ca: \"{}\"}}\n",
                self.up_ca.display()
            ),
        )
        .unwrap();
        cfg
    }

    /// `serve` enforcing the catalog in `learned`, intercepting with intentgate's CA.
    fn enforce(&self, learned: &Path, extra: &str) -> ProxyProc {
        ProxyProc::start(&format!(
            "agent: {{id: dev-agent, owner: dev}}\nmode: enforce\n\
             tls: {{ca_cert: \"{}\", ca_key: \"{}\", upstream_ca: \"{}\"}}\n\
             policy: {{paths: [\"{}\"]}}\n{extra}",
            self.ig_ca.display(),
            self.ig_key.display(),
            self.up_ca.display(),
            learned.display()
        ))
    }

    /// curl through `proxy`, trusting its CA, with an optional intent header.
    fn curl(&self, proxy: &ProxyProc, intent: Option<&str>, method: &str, url: &str) -> CurlOut {
        let purl = proxy.url();
        let header = intent.map(|i| format!("intentgate-intent: {i}"));
        let mut args = vec!["-x", &purl, "--cacert", self.ig_ca.to_str().unwrap()];
        args.extend(["-X", method, url]);
        if let Some(h) = &header {
            args.extend(["-H", h.as_str()]);
        }
        curl(&args)
    }

    /// curl through `proxy` gets a 403 from the policy naming the call it does not permit.
    fn refused(&self, proxy: &ProxyProc, intent: Option<&str>, method: &str, url: &str) {
        let out = self.curl(proxy, intent, method, url);
        assert_eq!(out.status, 403, "{method} {url}: {out:?}");
        let j = out.json();
        assert_eq!(error_code(&j), "intent_violation", "{j}");
        let call = url.split_once("://").map_or(url, |(_, rest)| rest);
        let why = format!("does not permit {method} {call}");
        assert!(j["reason"].as_str().unwrap().contains(&why), "{why}: {j}");
    }
}

/// The learned file parsed: intent → its rules as (methods, paths) in order.
fn rules(file: &Path) -> BTreeMap<String, Vec<(serde_json::Value, serde_json::Value)>> {
    let text = std::fs::read_to_string(file).unwrap();
    let doc: serde_json::Value =
        serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{e}:\n{text}"));
    doc["intents"]
        .as_object()
        .unwrap_or_else(|| panic!("no intents:\n{text}"))
        .iter()
        .map(|(name, spec)| {
            let r = spec["allow"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| (r["methods"].clone(), r["paths"].clone()))
                .collect();
            (name.clone(), r)
        })
        .collect()
}

fn learn(audit: &Path, out: &Path, flags: &[&str]) -> String {
    let mut args = vec![
        "learn",
        "--from-audit",
        audit.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend(flags);
    let (code, stdout, stderr) = run_cli(&args);
    assert_eq!(code, 0, "{stdout}{stderr}");
    std::fs::read_to_string(out).unwrap()
}

/// Runs the Python agent with `plan` through `proxy` (as `run` would point it there).
fn agent_through(proxy: &ProxyProc, ca: &Path, plan: &serde_json::Value) -> String {
    let out = Command::new("python3")
        .args([AGENT, &plan.to_string()])
        .env("HTTP_PROXY", proxy.url())
        .env("HTTPS_PROXY", proxy.url())
        .env("NO_PROXY", "")
        .env("no_proxy", "")
        .env("REQUESTS_CA_BUNDLE", ca)
        .env("SSL_CERT_FILE", ca)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn round_trip_run_learn_then_serve_passes_the_same_run_and_refuses_anything_new() {
    let w = world();
    let learned = w.path("learned.yaml");
    let ticket = w.up.url("/tickets/4711");
    let plan = serde_json::json!([
        {"lib": "requests", "method": "POST", "url": w.https("/v1/chat/completions")},
        {"lib": "httpx", "method": "GET", "url": w.https("/v1/models")},
        {"lib": "requests", "method": "GET", "url": ticket},
        {"lib": "httpx", "method": "PUT", "url": w.up.url("/tickets/4711/labels")},
    ]);
    // Learn: `run --learn` forwards everything (monitor) and writes what the agent called.
    let (code, stdout, stderr) = run_cli(&[
        "run",
        "--config",
        w.run_config().to_str().unwrap(),
        "--intent",
        "assistant",
        "--learn",
        learned.to_str().unwrap(),
        "--",
        "python3",
        AGENT,
        &plan.to_string(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.trim(), "[200, 200, 200, 200]", "{stderr}");
    assert!(
        stderr.contains("learned 1 intents from 4 forwarded calls"),
        "{stderr}"
    );

    // Enforce: `serve` with the learned catalog; the same run passes.
    let proxy = w.enforce(
        &learned,
        "intent: assistant
",
    );
    assert_eq!(
        agent_through(&proxy, &w.ig_ca, &plan),
        "[200, 200, 200, 200]",
        "{}",
        std::fs::read_to_string(&learned).unwrap()
    );
    let (tls_before, plain_before) = (w.tls_up.requests(), w.up.requests());
    // A new method on a seen path: PUT and GET were each seen, but not on this path.
    let chat = w.https("/v1/chat/completions");
    w.refused(&proxy, None, "PUT", &chat);
    w.refused(&proxy, None, "GET", &chat);
    // An unseen path on a seen host, and an unseen host (same server, another name).
    w.refused(&proxy, None, "GET", &w.https("/v1/files"));
    let other_host = format!("http://localhost:{}/tickets/4711", w.up.addr.port());
    w.refused(&proxy, None, "GET", &other_host);
    // A seen call made with curl passes too.
    assert_eq!(w.curl(&proxy, None, "GET", &ticket).status, 200);
    assert_eq!(
        (w.tls_up.requests(), w.up.requests()),
        (tls_before, plain_before + 1),
        "refused calls never reach the upstream"
    );
}

#[test]
fn learning_from_an_enforce_log_grants_only_what_was_forwarded_and_lists_the_refused() {
    let w = world();
    let p = w.up.addr.port();
    let proxy = ProxyProc::start(&format!(
        "agent: {{id: dev-agent, owner: dev}}\nmode: enforce\nintents:\n  work:\n    allow:\n\
         \x20     - hosts: [127.0.0.1]\n        ports: [{p}]\n        methods: [GET]\n\
         \x20       paths: [\"/echo/ok/**\"]\n"
    ));
    let url = |path: &str| w.up.url(path);
    let work = Some("work");
    assert_eq!(w.curl(&proxy, work, "GET", &url("/echo/ok/1")).status, 200);
    assert_eq!(w.curl(&proxy, work, "POST", &url("/echo/ok/1")).status, 403);
    assert_eq!(
        w.curl(&proxy, work, "GET", &url("/echo/secret")).status,
        403
    );
    assert_eq!(
        w.curl(&proxy, Some("other"), "GET", &url("/echo/ok/1"))
            .status,
        403
    );
    let records = proxy.audit_n(4);
    let learned = w.path("learned.yaml");
    let text = learn(&proxy.path("audit.log"), &learned, &[]);
    assert_eq!(records.len(), 4);

    // Only the forwarded call is granted, exactly.
    let r = rules(&learned);
    assert_eq!(r.keys().collect::<Vec<_>>(), ["work"], "{text}");
    assert_eq!(
        r["work"],
        [(
            serde_json::json!(["GET"]),
            serde_json::json!(["/echo/ok/1"])
        )],
        "{text}"
    );
    // The refused calls are listed as comments, with their reasons.
    let dest = format!("127.0.0.1:{p}");
    for line in [
        format!(
            "#   intent work: POST {dest}/echo/ok/1 (1 calls): intent 'work' does not permit POST"
        ),
        format!(
            "#   intent work: GET {dest}/echo/secret (1 calls): intent 'work' does not permit GET"
        ),
        format!("#   intent other: GET {dest}/echo/ok/1 (1 calls): "),
    ] {
        assert!(text.contains(&line), "{line}\n{text}");
    }

    // Enforced, the refused calls stay refused.
    let enforced = w.enforce(&learned, "");
    assert_eq!(
        w.curl(&enforced, work, "GET", &url("/echo/ok/1")).status,
        200
    );
    w.refused(&enforced, work, "POST", &url("/echo/ok/1"));
    w.refused(&enforced, work, "GET", &url("/echo/secret"));
}

#[test]
fn ids_are_generalised_only_under_the_flag_at_its_threshold_and_each_is_noted() {
    let w = world();
    let proxy = ProxyProc::start("agent: {id: dev-agent, owner: dev}\nmode: monitor\n");
    for path in ["/echo/tickets/4711", "/echo/tickets/4712", "/echo/users/42"] {
        assert_eq!(
            w.curl(&proxy, Some("t"), "GET", &w.up.url(path)).status,
            200
        );
    }
    proxy.audit_n(3);
    let audit = proxy.path("audit.log");
    // Learns into a file of its own per set of flags: (the paths of t's rule, the file's text).
    let paths = |flags: &[&str]| -> (serde_json::Value, String) {
        let out = w.path(&format!("learned{}.yaml", flags.join("")));
        let text = learn(&audit, &out, flags);
        (rules(&out)["t"][0].1.clone(), text)
    };
    // Without the flag: exactly as seen.
    let (exact, text) = paths(&[]);
    assert_eq!(
        exact,
        serde_json::json!(["/echo/tickets/4711", "/echo/tickets/4712", "/echo/users/42"]),
        "{text}"
    );
    assert!(!text.contains("generalises"), "{text}");
    // --generalise (2 by default): two tickets make a pattern, one user does not.
    let (two, text) = paths(&["--generalise"]);
    assert_eq!(
        two,
        serde_json::json!(["/echo/tickets/*", "/echo/users/42"]),
        "{text}"
    );
    assert!(
        text.contains(
            "    # /echo/tickets/* generalises 2 paths seen (/echo/tickets/4711, /echo/tickets/4712) (--generalise 2)\n    - hosts:"
        ),
        "{text}"
    );
    assert_eq!(paths(&["--generalise", "3"]).0, exact);
    assert_eq!(
        paths(&["--generalise", "1"]).0,
        serde_json::json!(["/echo/tickets/*", "/echo/users/*"])
    );
    // The generalised catalog, enforced: another ticket passes, another user does not.
    let enforced = w.enforce(&w.path("learned--generalise.yaml"), "");
    let t = Some("t");
    assert_eq!(
        w.curl(&enforced, t, "GET", &w.up.url("/echo/tickets/9999"))
            .status,
        200
    );
    w.refused(&enforced, t, "GET", &w.up.url("/echo/users/43"));
    // The flag needs a learn mode to apply to, and a threshold of at least 1.
    let (code, _, stderr) = run_cli(&["run", "--generalise", "--", "true"]);
    assert_eq!(code, 2, "{stderr}");
    let (code, _, stderr) = run_cli(&[
        "learn",
        "--from-audit",
        audit.to_str().unwrap(),
        "--out",
        w.path("x.yaml").to_str().unwrap(),
        "--generalise",
        "0",
    ]);
    assert_eq!(code, 2, "{stderr}");
}

#[test]
fn learned_catalogs_are_per_intent_as_declared_at_the_time() {
    let w = world();
    let learned = w.path("learned.yaml");
    let doc = w.up.url("/echo/docs/1");
    // The agent moves between tasks through the session API (intents the catalog does not have
    // yet) and a header; its last call declares none.
    let plan = serde_json::json!([
        {"set_intent": "reader"},
        {"lib": "requests", "method": "GET", "url": doc},
        {"set_intent": "writer"},
        {"lib": "httpx", "method": "PUT", "url": doc},
        {"lib": "requests", "method": "GET", "url": w.up.url("/echo/search"),
         "headers": {"intentgate-intent": "searcher"}},
        {"clear_intent": true},
        {"lib": "requests", "method": "GET", "url": w.up.url("/echo/health")},
    ]);
    let (code, stdout, stderr) = run_cli(&[
        "run",
        "--config",
        w.run_config().to_str().unwrap(),
        "--learn",
        learned.to_str().unwrap(),
        "--",
        "python3",
        AGENT,
        &plan.to_string(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stdout.trim(),
        "[200, 200, 200, 200, 200, 200, 200]",
        "{stderr}"
    );
    let r = rules(&learned);
    let one = |m: &str, p: &str| vec![(serde_json::json!([m]), serde_json::json!([p]))];
    assert_eq!(r["reader"], one("GET", "/echo/docs/1"));
    assert_eq!(r["writer"], one("PUT", "/echo/docs/1"));
    assert_eq!(r["searcher"], one("GET", "/echo/search"));
    assert_eq!(r["learned"], one("GET", "/echo/health"));
    assert_eq!(r.len(), 4);

    // Enforced, each task gets only its own calls.
    let enforced = w.enforce(&learned, "");
    assert_eq!(w.curl(&enforced, Some("reader"), "GET", &doc).status, 200);
    w.refused(&enforced, Some("reader"), "PUT", &doc);
    assert_eq!(w.curl(&enforced, Some("writer"), "PUT", &doc).status, 200);
    w.refused(&enforced, Some("writer"), "GET", &doc);
    w.refused(&enforced, Some("searcher"), "GET", &doc);
}
