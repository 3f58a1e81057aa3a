//! CA trust for app containers: the trust step the real webhook renders (an init container in
//! the app's own image) is run here with this machine's `/bin/sh` against this machine's system
//! roots, standing in for the image's; then real clients — Python requests
//! (`REQUESTS_CA_BUNDLE`), Python's urllib on OpenSSL (`SSL_CERT_FILE`), Node
//! (`NODE_EXTRA_CA_CERTS`) — verify TLS
//! servers signed by intentgate's CA and by an app's own CA with the bundle it wrote.

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use super::k8s::{Webhook, agent_pod, apply_and_validate, decode};
use crate::common::tls::TestCa;
use crate::common::*;

const SYSTEM: &str = "/etc/ssl/certs/ca-certificates.crt";

fn env_of(c: &Value) -> Vec<(String, String)> {
    c["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| Some((e["name"].as_str()?.into(), e["value"].as_str()?.into())))
        .collect()
}

/// Runs a rendered trust init container's command with its env (literal values), writing to
/// `out` and reading intentgate's CA from `ca` instead of the pod's paths.
fn run_step(c: &Value, out: &Path, ca: &Path) -> std::process::Output {
    let cmd: Vec<&str> = c["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let mut p = Command::new(cmd[0]);
    p.args(&cmd[1..]).env_clear().env("PATH", "/usr/bin:/bin");
    for (k, v) in env_of(c) {
        p.env(k, v);
    }
    p.env("IG_OUT", out).env("IG_CA", ca).output().unwrap()
}

/// The status a client gets from `url` trusting `bundle` through `var`, or 0 on a TLS failure.
fn client_status(var: &str, bundle: &Path, url: &str) -> u16 {
    let out = match var {
        "REQUESTS_CA_BUNDLE" => Command::new("python3")
            .args(["-c", "import requests,sys\ntry:\n print(requests.get(sys.argv[1], timeout=10).status_code)\nexcept requests.exceptions.SSLError:\n print(0)", url])
            .env(var, bundle)
            .output(),
        // Python's standard library: OpenSSL's default verify paths, which SSL_CERT_FILE sets.
        "SSL_CERT_FILE" => Command::new("python3")
            .args(["-c", "import urllib.request,sys\ntry:\n print(urllib.request.urlopen(sys.argv[1], timeout=10).status)\nexcept Exception:\n print(0)", url])
            .env(var, bundle)
            .output(),
        _ => Command::new("node")
            .args(["-e", "const done = c => { console.log(c); process.exit(0) };\nrequire('https').get(process.argv[1], r => done(r.statusCode)).on('error', () => done(0))", url])
            .env(var, bundle)
            .output(),
    }
    .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

#[test]
fn each_app_container_trusts_its_own_roots_plus_intentgates_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ours = TestCa::new("intentgate CA");
    let corp = TestCa::new("corporate CA");
    let ca_file = dir.path().join("intentgate-ca.pem");
    std::fs::write(&ca_file, &ours.cert_pem).unwrap();
    let corp_file = dir.path().join("corp.pem");
    std::fs::write(&corp_file, &corp.cert_pem).unwrap();

    // "agent" brings its own roots (a mounted file); "helper" relies on its image's.
    let hook = Webhook::start();
    let mut pod = agent_pod(json!(null));
    pod["spec"]["containers"][0]["env"] = json!([
        {"name": "LOG", "value": "1"},
        {"name": "SSL_CERT_FILE", "value": corp_file.display().to_string()}]);
    pod["spec"]["containers"][0]["volumeMounts"] =
        json!([{"name": "corp", "mountPath": "/etc/corp", "mountPropagation": "None"}]);
    pod["spec"]["volumes"] = json!([{"name": "corp", "configMap": {"name": "corp-ca"}}]);
    let patched = apply_and_validate(hook.dir.path(), &pod, &decode(&hook.review(&pod)));
    let inits = patched["spec"]["initContainers"].as_array().unwrap();
    let apps = patched["spec"]["containers"].as_array().unwrap();

    for (i, app) in apps.iter().enumerate() {
        let name = app["name"].as_str().unwrap();
        let step = inits
            .iter()
            .find(|c| c["name"] == format!("intentgate-trust-{i}"))
            .unwrap();
        // In the app's image, as the app's user, with nothing more.
        assert_eq!(step["image"], app["image"]);
        assert_eq!(step["command"][0], "/bin/sh");
        let sc = &step["securityContext"];
        assert_eq!(sc["capabilities"], json!({"drop": ["ALL"]}));
        assert_eq!(
            (
                &sc["allowPrivilegeEscalation"],
                &sc["readOnlyRootFilesystem"]
            ),
            (&json!(false), &json!(true))
        );
        let bundle = format!("/var/run/intentgate/trust/{name}.pem");
        assert!(
            env_of(step).contains(&("IG_OUT".into(), bundle.clone())),
            "{step}"
        );
        // The app's trust variables name its bundle, once each; its other env stays.
        let env = env_of(app);
        for var in ["SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS"] {
            let set: Vec<_> = env.iter().filter(|(k, _)| k == var).collect();
            assert_eq!(set, [&(var.to_string(), bundle.clone())], "{name}");
        }
        assert!(env.contains(&(
            "INTENTGATE_CA_FILE".into(),
            "/var/run/intentgate/ca-trust/ca.pem".into()
        )));

        let out = dir.path().join(format!("{name}.pem"));
        let run = run_step(step, &out, &ca_file);
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        let text = std::fs::read_to_string(&out).unwrap();
        assert!(text.ends_with(&ours.cert_pem), "intentgate's CA last");
        let system = std::fs::read_to_string(SYSTEM).unwrap();
        if name == "agent" {
            assert_eq!(
                text,
                format!("{}{}", corp.cert_pem, ours.cert_pem),
                "the app's own file replaces the system roots"
            );
            let m = step["volumeMounts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["name"] == "corp")
                .unwrap();
            assert_eq!(m["readOnly"], true);
            assert!(m.get("mountPropagation").is_none());
        } else {
            assert_eq!(
                text,
                format!("{system}{}", ours.cert_pem),
                "the image's roots, then ours"
            );
        }
    }

    // Real clients with those bundles: intentgate's interception CA verifies everywhere; the
    // corporate CA where the app had it.
    let up_ours = Upstream::start_tls(ours.server_config(&["localhost"]));
    let up_corp = Upstream::start_tls(corp.server_config(&["localhost"]));
    let url = |u: &Upstream| format!("https://localhost:{}/echo/x", u.addr.port());
    for var in ["REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "NODE_EXTRA_CA_CERTS"] {
        let (agent, helper) = (dir.path().join("agent.pem"), dir.path().join("helper.pem"));
        assert_eq!(client_status(var, &agent, &url(&up_ours)), 200, "{var}");
        assert_eq!(client_status(var, &agent, &url(&up_corp)), 200, "{var}");
        assert_eq!(client_status(var, &helper, &url(&up_ours)), 200, "{var}");
        assert_eq!(
            client_status(var, &helper, &url(&up_corp)),
            0,
            "{var}: not trusted"
        );
    }
}

#[test]
fn a_missing_app_file_fails_the_step_and_manual_trust_leaves_it_to_the_app() {
    let dir = tempfile::tempdir().unwrap();
    let hook = Webhook::start();
    let mut pod = agent_pod(json!(null));
    pod["spec"]["containers"][0]["env"] =
        json!([{"name": "REQUESTS_CA_BUNDLE", "value": "/nonexistent/corp.pem"}]);
    let patched = apply_and_validate(hook.dir.path(), &pod, &decode(&hook.review(&pod)));
    let step = &patched["spec"]["initContainers"][2];
    assert_eq!(step["name"], "intentgate-trust-0");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, TestCa::new("x").cert_pem).unwrap();
    let run = run_step(step, &dir.path().join("out.pem"), &ca);
    assert!(!run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        err.contains("REQUESTS_CA_BUNDLE=/nonexistent/corp.pem cannot be read"),
        "{err}"
    );

    // manual: no step, the app's variables untouched, the CA file offered.
    pod["metadata"]["annotations"] = json!({"intentgate.io/ca-trust": "manual"});
    let patched = apply_and_validate(hook.dir.path(), &pod, &decode(&hook.review(&pod)));
    let names = patched["spec"]["initContainers"].to_string();
    assert!(!names.contains("intentgate-trust-"), "{names}");
    let env = env_of(&patched["spec"]["containers"][0]);
    assert_eq!(
        env.iter()
            .filter(|(k, _)| k == "REQUESTS_CA_BUNDLE")
            .count(),
        1
    );
    assert!(env.contains(&("REQUESTS_CA_BUNDLE".into(), "/nonexistent/corp.pem".into())));
    assert!(!env.iter().any(|(k, _)| k == "SSL_CERT_FILE"));
    assert!(env.iter().any(|(k, _)| k == "INTENTGATE_CA_FILE"));
    let bad = hook.review(&agent_pod(json!({"intentgate.io/ca-trust": "sometimes"})));
    assert_eq!(bad["allowed"], false);
    assert!(
        bad["status"]["message"]
            .as_str()
            .unwrap()
            .contains("intentgate.io/ca-trust")
    );
}
