//! `intentgate explain` shows what the proxy would do: the destination resolved and vetted by the
//! egress rules (checked against the real proxy with curl), and output a reader may cut short.

use std::process::Command;

use serde_json::json;

use crate::common::*;

/// `explain METHOD URL` with `args` before it: (exit code, the JSON it printed).
fn explain_json(args: &[&str], method: &str, url: &str) -> (i32, serde_json::Value) {
    let mut all = vec!["explain"];
    all.extend(args);
    all.extend([method, url]);
    let (code, stdout, stderr) = run_cli(&all);
    let j = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}{stderr}"));
    (code, j)
}

#[test]
fn explain_resolves_and_applies_the_egress_address_classes_as_the_proxy_does() {
    let up = Upstream::start();
    let p = up.addr.port();
    let dir = tempfile::tempdir().unwrap();
    // The catalog allows the upstream by IP and by name; the egress rules decide the addresses.
    let catalog = format!(
        "agent: {{id: bot, owner: me}}\nmode: enforce\nintents:\n  read:\n    allow:\n\
         \x20     - hosts: [127.0.0.1, localhost, api.example.com]\n        ports: [{p}, 443]\n"
    );
    let closed = dir.path().join("closed.yaml");
    std::fs::write(&closed, format!("{catalog}egress: {{deny_cidrs: []}}\n")).unwrap();
    let c = closed.to_str().unwrap();
    let loopback = up.url("/x");

    // The proxy refuses the loopback upstream, and so does explain (exit 1), naming the class.
    let proxy = ProxyProc::start(&format!("{catalog}egress: {{deny_cidrs: []}}\n"));
    let out = curl(&[
        "-x",
        &proxy.url(),
        "-H",
        "intentgate-intent: read",
        &loopback,
    ]);
    assert_eq!(out.status, 403, "{out:?}");
    assert!(out.body.contains("destination_forbidden"), "{out:?}");
    assert_eq!(up.requests(), 0);
    let (code, j) = explain_json(&["--config", c, "--intent", "read"], "GET", &loopback);
    assert_eq!(code, 1, "{j}");
    let d = &j["decision"];
    assert_eq!(
        (&d["allow"], &d["code"], &d["would_block"]),
        (&json!(false), &json!("destination_forbidden"), &json!(true)),
        "{j}"
    );
    assert!(
        d["reasons"][0].as_str().unwrap().contains("loopback"),
        "{j}"
    );
    assert!(
        d["hint"].as_str().unwrap().contains("egress.allow_cidrs"),
        "{j}"
    );
    // What the policy alone says: the catalog would allow it.
    assert_eq!(d["policy"]["allow"], true, "{j}");
    let dest = &j["destination"];
    assert_eq!(
        (&dest["class"], &dest["allowed"], &dest["resolved_by"]),
        (&json!("loopback"), &json!(false), &json!("ip literal")),
        "{j}"
    );

    // A name: the system resolver (localhost from /etc/hosts), the same verdict.
    let named = format!("http://localhost:{p}/x");
    let (code, j) = explain_json(&["--config", c, "--intent", "read"], "GET", &named);
    assert_eq!(code, 1, "{j}");
    assert_eq!(j["destination"]["resolved_by"], "system resolver", "{j}");
    assert_eq!(j["destination"]["class"], "loopback", "{j}");

    // --resolve HOST=IP: a private address is refused, a public one allowed and given to the
    // policy; with both, the proxy would dial the allowed one.
    let https = "https://api.example.com/v1/things";
    let pin = |ip: &str| format!("api.example.com={ip}");
    let (private, public) = (pin("10.1.2.3"), pin("93.184.216.34"));
    let (code, j) = explain_json(
        &["--config", c, "--intent", "read", "--resolve", &private],
        "GET",
        https,
    );
    assert_eq!(
        (code, &j["destination"]["class"]),
        (1, &json!("private")),
        "{j}"
    );
    assert_eq!(j["decision"]["code"], "destination_forbidden", "{j}");
    let (code, j) = explain_json(
        &[
            "--config",
            c,
            "--intent",
            "read",
            "--resolve",
            &private,
            "--resolve",
            &public,
        ],
        "GET",
        https,
    );
    assert_eq!(code, 0, "{j}");
    assert_eq!(
        j["input"]["destination"],
        json!({"ip": "93.184.216.34", "class": "public"}),
        "{j}"
    );
    assert_eq!(j["destination"]["addresses"][0]["allowed"], false, "{j}");
    assert_eq!(j["destination"]["resolved_by"], "--resolve", "{j}");

    // Where egress allows loopback, both allow it; the proxy's own listener stays refused.
    let open = dir.path().join("open.yaml");
    std::fs::write(
        &open,
        format!(
            "{catalog}egress: {{allow_cidrs: [127.0.0.0/8]}}\nlisten: {{proxy: 127.0.0.1:15799}}\n"
        ),
    )
    .unwrap();
    let o = open.to_str().unwrap();
    let (code, j) = explain_json(&["--config", o, "--intent", "read"], "GET", &loopback);
    assert_eq!(code, 0, "{j}");
    assert_eq!(j["input"]["destination"]["class"], "loopback", "{j}");
    let proxy = ProxyProc::start(&format!(
        "{catalog}egress: {{allow_cidrs: [127.0.0.0/8]}}\n"
    ));
    let out = curl(&[
        "-x",
        &proxy.url(),
        "-H",
        "intentgate-intent: read",
        &loopback,
    ]);
    assert_eq!(out.status, 200, "{out:?}");
    let (code, j) = explain_json(
        &["--config", o, "--intent", "read"],
        "GET",
        "http://127.0.0.1:15799/",
    );
    assert_eq!(
        (code, &j["destination"]["class"]),
        (1, &json!("proxy")),
        "{j}"
    );

    // A bad --resolve is refused by the command line.
    let (code, _, stderr) = run_cli(&[
        "explain",
        "--config",
        c,
        "--resolve",
        "nohost",
        "GET",
        https,
    ]);
    assert_eq!(code, 2, "{stderr}");
}

#[test]
fn explain_and_check_stop_quietly_when_their_reader_goes_away() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.yaml");
    std::fs::write(
        &cfg,
        "agent: {id: bot, owner: me}\nintents:\n  read:\n    allow:\n      - hosts: [93.184.216.34]\n",
    )
    .unwrap();
    let c = cfg.to_str().unwrap();
    // stdout is a pipe whose reader has already gone (what `| head` leaves once it has its
    // lines): every write fails with EPIPE.
    let script = "import os, subprocess, sys\n\
                  r, w = os.pipe()\n\
                  os.close(r)\n\
                  p = subprocess.run(sys.argv[1:], stdout=w, stderr=subprocess.PIPE)\n\
                  sys.stdout.write(str(p.returncode) + '\\n' + p.stderr.decode())\n";
    let ca_dir = dir.path().join("ca");
    // Public IP literals: nothing to resolve.
    let explain = |method: &'static str, url: &'static str| {
        vec!["explain", "--config", c, "--intent", "read", method, url]
    };
    let ca = vec!["ca", "init", "--out", ca_dir.to_str().unwrap()];
    let cases = [
        (explain("GET", "https://93.184.216.34/"), 0),
        (explain("POST", "https://93.184.216.35/"), 1),
        (vec!["check", "--config", c], 0),
        (ca, 0),
    ];
    for (args, want) in cases {
        let out = Command::new("python3")
            .args(["-c", script, BIN])
            .args(&args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let (code, stderr) = text.split_once('\n').unwrap();
        assert_eq!(code, want.to_string(), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(!stderr.contains("Broken pipe"), "{args:?}: {stderr}");
    }
}

#[test]
fn explain_shows_the_tunnel_rule_an_https_url_meets_first() {
    // A Rego policy that allows everything, and no catalog: the tunnel rule (native code in the
    // policy step) still lets an intercepted tunnel open only to egress.connect_ports (443).
    let dir = tempfile::tempdir().unwrap();
    let rego = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/variants/allow-all.rego");
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "agent: {{id: bot, owner: me}}\nmode: enforce\npolicy: {{builtin: false, paths: [\"{rego}\"]}}\n"
        ),
    )
    .unwrap();
    let c = config.to_str().unwrap();
    let explain = |url| {
        explain_json(
            &["--config", c, "--resolve", "api.example.com=93.184.216.34"],
            "GET",
            url,
        )
    };
    let (code, j) = explain("https://api.example.com:8443/x");
    assert_eq!(code, 1, "{j}");
    let d = &j["decision"];
    assert_eq!(
        (&d["allow"], &d["code"], &d["would_block"]),
        (&json!(false), &json!("port_not_in_scope"), &json!(true)),
        "{j}"
    );
    assert!(
        d["reasons"][0]
            .as_str()
            .unwrap()
            .contains("egress.connect_ports"),
        "{j}"
    );
    assert_eq!(
        (&d["tunnel"]["allow"], &d["tunnel"]["code"]),
        (&json!(false), &json!("port_not_in_scope")),
        "{j}"
    );
    // What the policy alone says of the request inside: allowed.
    assert_eq!(d["policy"]["allow"], true, "{j}");

    // Port 443: the tunnel opens, and the request is the policy's.
    let (code, j) = explain("https://api.example.com/x");
    assert_eq!(code, 0, "{j}");
    assert_eq!(j["decision"]["tunnel"]["allow"], true, "{j}");
    assert_eq!(j["decision"]["code"], "allowed", "{j}");
    // Plain HTTP has no tunnel.
    let (_, j) = explain("http://api.example.com:8443/x");
    assert!(j["decision"].get("tunnel").is_none(), "{j}");
}
