//! Attestation keys for a fleet (src/inject/attestation.rs): the webhook mounts the namespace's
//! signing-key Secret into the intentgate sidecar only and passes `--attestation-key`, and
//! `intentgate inject` serves the namespace's public JWK Set at `GET /jwks/NAMESPACE`; a sidecar
//! started with that flag signs attestations that verify against that JWK Set.

use serde_json::{Value, json};

use crate::common::*;
use crate::k8s::{FLOOR, Webhook, agent_pod, apply_and_validate, decode};

const PY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/pyjwt_tokens.py");

/// `GET /jwks/NS` on the control deployment, over verified HTTPS.
fn get_jwks(hook: &Webhook, ns: &str, more: &[&str]) -> CurlOut {
    let ca = hook.dir.path().join("tls.crt");
    let port = hook.control.port;
    let (resolve, url) = (
        format!("localhost:{port}:127.0.0.1"),
        format!("https://localhost:{port}/jwks/{ns}"),
    );
    let mut args = more.to_vec();
    args.extend([
        "--cacert",
        ca.to_str().unwrap(),
        "--resolve",
        &resolve,
        &url,
    ]);
    curl(&args)
}

#[test]
fn inject_mounts_the_namespace_key_and_serves_its_jwks() {
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("support.pem");
    let (code, public, err) = run_cli(&["token", "keygen", "--out", key.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    std::fs::write(keys.path().join("support.json"), &public).unwrap();
    std::fs::write(keys.path().join("broken.json"), "{\"keys\": []}").unwrap();
    // A private JWK put in the directory by mistake is not served.
    let mut private: Value = serde_json::from_str(&public).unwrap();
    private["keys"][0]["d"] = json!("bm90LXNlcnZlZA");
    std::fs::write(keys.path().join("private.json"), private.to_string()).unwrap();
    let hook = Webhook::with(&format!(
        "{FLOOR}attestation:\n  secret: intentgate-attestation\n  jwks_dir: {}\n",
        keys.path().display()
    ));
    // The patch: the Secret's key.pem mounted into the sidecar only, and the flag naming it.
    let pod = agent_pod(json!({}));
    let resp = hook.review(&pod);
    assert_eq!(resp["allowed"], true, "{resp}");
    let patched = apply_and_validate(hook.dir.path(), &pod, &decode(&resp));
    let spec = &patched["spec"];
    let volume = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "intentgate-attestation")
        .unwrap_or_else(|| panic!("no attestation volume: {spec}"));
    assert_eq!(volume["secret"]["secretName"], "intentgate-attestation");
    let item = &volume["secret"]["items"][0];
    assert_eq!(item["key"], "key.pem");
    let containers: Vec<&Value> = ["initContainers", "containers"]
        .iter()
        .flat_map(|k| spec[*k].as_array().unwrap())
        .collect();
    for c in &containers {
        let mounted = c["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|m| m["name"] == "intentgate-attestation");
        assert_eq!(mounted, c["name"] == "intentgate", "{c}");
    }
    let sidecar = containers
        .iter()
        .find(|c| c["name"] == "intentgate")
        .unwrap();
    let mount = sidecar["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "intentgate-attestation")
        .unwrap();
    let args: Vec<&str> = sidecar["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let at = args.iter().position(|a| *a == "--attestation-key").unwrap();
    // The Secret's key.pem as the kubelet lays it out under the rendered mount, at `root`; the
    // flag must name that file.
    let root = tempfile::tempdir().unwrap();
    let under_root = |p: &str| root.path().join(p.trim_start_matches('/'));
    let laid =
        under_root(mount["mountPath"].as_str().unwrap()).join(item["path"].as_str().unwrap());
    std::fs::create_dir_all(laid.parent().unwrap()).unwrap();
    std::fs::copy(&key, &laid).unwrap();
    let flag_key = under_root(args[at + 1]);
    assert_eq!(
        flag_key, laid,
        "the flag names a file the mount does not provide"
    );

    // A pod that reaches the key Secret itself (a volume, or env) is refused.
    for spec_part in [
        json!({"volumes": [{"name": "k", "secret": {"secretName": "intentgate-attestation"}}]}),
        json!({"containers": [{"name": "agent", "image": "agent:1", "env": [{"name": "K",
            "valueFrom": {"secretKeyRef": {"name": "intentgate-attestation", "key": "key.pem"}}}]}]}),
    ] {
        let mut sneaky = agent_pod(json!({}));
        for (k, v) in spec_part.as_object().unwrap() {
            sneaky["spec"][k] = v.clone();
        }
        let resp = hook.review(&sneaky);
        assert_eq!(resp["allowed"], false, "{resp}");
        let msg = resp["status"]["message"].as_str().unwrap();
        assert!(msg.contains("intentgate-attestation"), "{msg}");
    }

    // GET /jwks/NS serves the namespace's public keys; other names get the one error shape.
    let out = get_jwks(&hook, "support", &[]);
    assert_eq!(out.status, 200, "{out:?}");
    let served = out.json();
    let want: Value = serde_json::from_str(&public).unwrap();
    assert_eq!(served, want);
    assert!(!out.body.contains("\"d\""), "a private key part is served");
    let post = get_jwks(&hook, "support", &["-X", "POST"]);
    assert_eq!(post.status, 405, "{post:?}");
    assert_eq!(error_code(&post.json()), "method_not_allowed", "{post:?}");
    for (ns, status, code) in [
        ("elsewhere", 404, "not_found"),
        ("..%2Fsupport", 404, "not_found"),
        ("broken", 404, "not_found"),
        ("private", 404, "not_found"),
    ] {
        let out = get_jwks(&hook, ns, &[]);
        assert_eq!(out.status, status, "{ns}: {out:?}");
        let j = out.json();
        assert_eq!(error_code(&j), code, "{ns}: {j}");
        assert!(j["decision_id"].is_string() && j["hint"].is_string(), "{j}");
    }

    // A sidecar started with the rendered flag on the laid-out Secret signs with that key: its attestation
    // verifies against the JWK Set the control deployment serves.
    let up = Upstream::start();
    let proxy = ProxyProc::start_with(
        &format!(
            "attestation: {{enabled: true}}\n\
             intents:\n  t:\n    allow: [{{hosts: [localhost], ports: [{}]}}]\n",
            up.addr.port()
        ),
        &["--attestation-key", flag_key.to_str().unwrap()],
        &[],
    );
    let url = format!("http://localhost:{}/x", up.addr.port());
    let out = curl(&["-x", &proxy.url(), "-H", "intentgate-intent: t", &url]);
    assert_eq!(out.status, 200, "{out:?}");
    let token = up.last_header("txn-token").unwrap();
    let jwks_file = keys.path().join("served.json");
    std::fs::write(&jwks_file, served.to_string()).unwrap();
    let authority = format!("localhost:{}", up.addr.port());
    let verified = std::process::Command::new("python3")
        .args([
            PY,
            "verify",
            jwks_file.to_str().unwrap(),
            &token,
            "test-agent",
        ])
        .args(["localhost", "GET", &authority, "/x"])
        .output()
        .unwrap();
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stderr)
    );
}
