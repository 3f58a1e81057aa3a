//! `intentgate replay` over the audit log of the real proxy: a candidate catalog that narrows a
//! rule shows the calls it would newly deny, one that widens shows new grants, each with its exit
//! code (0, 1, 3, 4; 2 for a config it cannot use), as text, JSON and Markdown; a policy reading
//! what records do not carry is reported, not guessed.

use crate::common::*;

fn catalog(port: u16, methods: &str) -> String {
    format!(
        "agent: {{id: support-bot, owner: team}}\nintents:\n  triage:\n    allow:\n      - hosts: [localhost]\n        ports: [{port}]\n        methods: [{methods}]\n"
    )
}

#[test]
fn replay_reports_what_a_candidate_would_newly_deny_or_allow() {
    let up = Upstream::start();
    let port = up.addr.port();
    let proxy = ProxyProc::start(&catalog(port, "GET"));
    for (method, path) in [
        ("GET", "/tickets/1"),
        ("GET", "/tickets/2"),
        ("DELETE", "/tickets/1"),
    ] {
        let url = format!("http://localhost:{port}{path}");
        curl(&[
            "-x",
            &proxy.url(),
            "-H",
            "intentgate-intent: triage",
            "-X",
            method,
            &url,
        ]);
    }
    proxy.audit_n(3);
    let log = proxy.path("audit.log");
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let replay = |candidate: &str, extra: &[&str]| {
        let mut args = vec![
            "replay",
            "--audit",
            log.to_str().unwrap(),
            "--config",
            candidate,
        ];
        args.extend_from_slice(extra);
        run_cli(&args)
    };

    // The same catalog: nothing changes.
    let same = write("same.yaml", &catalog(port, "GET"));
    let (code, out, _) = replay(&same, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("replayed 3 calls") && out.contains("0 new denials, 0 new grants"),
        "{out}"
    );

    // Narrower: the two GETs would be denied.
    let narrower = write("narrower.yaml", &catalog(port, "HEAD"));
    let (code, out, _) = replay(&narrower, &["--format", "json"]);
    assert_eq!(code, 1, "{out}");
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["new_denials"]["calls"], 2, "{j}");
    assert_eq!(j["new_grants"]["calls"], 0, "{j}");
    let g = &j["new_denials"]["groups"][0];
    assert_eq!(
        (&g["agent"], &g["intent"], &g["host"], &g["port"]),
        (
            &"support-bot".into(),
            &"triage".into(),
            &"localhost".into(),
            &port.into()
        ),
        "{g}"
    );
    assert_eq!(
        (
            &g["before"]["decision"],
            &g["after"]["decision"],
            &g["after"]["code"]
        ),
        (&"allow".into(), &"deny".into(), &"intent_violation".into()),
        "{g}"
    );
    assert!(
        g["after"]["reason"].as_str().unwrap().contains("GET"),
        "{g}"
    );

    // Wider: the DELETE would be allowed.
    let wider = write("wider.yaml", &catalog(port, "GET, DELETE"));
    let (code, out, _) = replay(&wider, &[]);
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains("New grants: 1 calls") && out.contains("e.g. DELETE /tickets/1"),
        "{out}"
    );

    // Both at once, as a pull-request comment.
    let both = write("both.yaml", &catalog(port, "DELETE"));
    let (code, out, _) = replay(&both, &["--format", "markdown"]);
    assert_eq!(code, 4, "{out}");
    assert!(out.contains("**2 new denials**, **1 new grants**"), "{out}");
    assert!(
        out.contains("| calls | agent | intent | destination |"),
        "{out}"
    );

    // Against a base configuration decided the same way instead of the records.
    let (code, out, _) = replay(&wider, &["--base", &narrower]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("New grants: 3 calls"), "{out}");

    // A policy reading headers cannot be replayed from records: said, not guessed.
    let rego = write(
        "h.rego",
        "package intentgate\nimport rego.v1\ndeny contains \"h\" if input.request.headers[\"x-a\"] == \"1\"\n",
    );
    let headers = write(
        "headers.yaml",
        &format!("{}policy:\n  paths: [{rego}]\n", catalog(port, "GET")),
    );
    let (code, out, _) = replay(&headers, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("3 calls not replayed: the policy reads request.headers"),
        "{out}"
    );

    // A candidate it cannot use: exit 2, naming the file and the field.
    let broken = write(
        "broken.yaml",
        "intents: {triage: {allow: [{hostz: [x]}]}}\n",
    );
    let (code, _, err) = replay(&broken, &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("broken.yaml") && err.contains("hostz"),
        "{err}"
    );
}
