//! An empty configuration file (nothing, whitespace, comments only) is refused: at start with
//! exit 2 and a message naming the file, on reload with the last good configuration kept.

use crate::common::*;

const EMPTY: [&str; 4] = ["", "  \n\n\t\n", "# all\n  # commented out\n", "---\n# c\n"];

#[test]
fn an_empty_config_file_is_exit_2_at_start_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    for (i, text) in EMPTY.iter().enumerate() {
        let file = dir.path().join(format!("empty{i}.yaml"));
        std::fs::write(&file, text).unwrap();
        let path = file.to_str().unwrap();
        // Before the fix the file was taken for "all defaults" and served.
        let (code, err) = serve_outcome(&file, &dir.path().join(format!("ready{i}.json")));
        assert_eq!(code, Some(2), "{text:?}: {err}");
        assert!(
            err.contains(&format!("{path}: the configuration is empty")),
            "{text:?}: {err}"
        );
        let (code, _, err) = run_cli(&["check", "--config", path]);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains(path) && err.contains("empty"), "{err}");
    }
}

#[test]
fn an_emptied_config_file_is_refused_on_reload_and_the_last_good_one_stays() {
    let up = Upstream::start();
    let p = up.addr.port();
    let yaml = format!(
        "agent: {{id: cfg-bot, owner: o}}\nmode: enforce\npolicy: {{watch_interval_ms: 100}}\n\
         intents:\n  read:\n    allow:\n      - hosts: [localhost]\n        ports: [{p}]\n"
    );
    let proxy = ProxyProc::start(&yaml);
    let url = format!("http://localhost:{p}/echo");
    let get = || curl(&["-x", &proxy.url(), "-H", "intentgate-intent: read", &url]);
    assert_eq!(get().status, 200);
    let config = proxy.path("config.yaml");
    let good = std::fs::read_to_string(&config).unwrap();
    let failures = r#"intentgate_policy_reloads_total{result="failure"}"#;
    for (n, text) in EMPTY.iter().enumerate() {
        // Truncated (as an editor or a half-done copy leaves it): the watcher and the API refuse it.
        std::fs::write(&config, text).unwrap();
        let r = curl(&["-X", "POST", &proxy.admin_url("/v1/reload")]);
        assert_eq!(r.status, 422, "{text:?}: {r:?}");
        let msg = r.json()["message"].as_str().unwrap().to_string();
        assert!(
            msg.contains(&format!("{}: the configuration is empty", config.display())),
            "{msg}"
        );
        assert!(proxy.metric(failures) >= (n + 1) as f64);
        // The agent and the catalog in force are the last good ones.
        let pol = curl(&[&proxy.admin_url("/v1/policy")]).json();
        assert_eq!(pol["agent"]["id"], "cfg-bot", "{pol}");
        assert_eq!(pol["intents"], serde_json::json!(["read"]), "{pol}");
        assert_eq!(pol["last_reload"]["result"], "failure", "{pol}");
        assert_eq!(get().status, 200, "{text:?}");
    }
    assert!(proxy.stderr().contains("reload refused"));
    let recs = proxy.audit();
    assert!(
        recs.iter().all(|r| r["agent"]["id"] == "cfg-bot"),
        "{recs:?}"
    );
    // Written back: accepted again.
    std::fs::write(&config, good).unwrap();
    let r = curl(&["-X", "POST", &proxy.admin_url("/v1/reload")]);
    assert_eq!(r.status, 200, "{r:?}");
}
