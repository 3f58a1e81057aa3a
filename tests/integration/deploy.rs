//! deploy/: the Kustomize base rendered (`kubectl kustomize`, or each listed file when kubectl is
//! absent) and every document validated with kubernetes-validate --strict; the Dockerfile checked
//! statically (no image is built here).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use super::k8s::validate;
use crate::common::*;

/// Unlabelled pods never reach the webhook: the selectors in the rendered
/// MutatingWebhookConfiguration match the inject label on the namespace or the pod.
#[test]
fn deploy_manifests_render_and_validate() {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes");
    let dir = tempfile::tempdir().unwrap();
    let docs = render(&base);
    assert!(docs.len() >= 12, "{} documents", docs.len());
    let mut kinds = Vec::new();
    for (i, doc) in docs.iter().enumerate() {
        let f = dir.path().join(format!("doc{i}.json"));
        std::fs::write(&f, doc.to_string()).unwrap();
        validate(&f);
        kinds.push(doc["kind"].as_str().unwrap().to_string());
    }
    for k in [
        "Namespace",
        "Deployment",
        "Service",
        "MutatingWebhookConfiguration",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "ConfigMap",
        "NetworkPolicy",
    ] {
        assert!(kinds.iter().any(|x| x == k), "{k} in {kinds:?}");
    }
    let hook = docs
        .iter()
        .find(|d| d["kind"] == "MutatingWebhookConfiguration")
        .unwrap();
    let selectors = hook["webhooks"].to_string();
    assert!(selectors.contains("intentgate.io/inject"), "{selectors}");
    for w in hook["webhooks"].as_array().unwrap() {
        assert!(w["failurePolicy"].is_string());
        assert_eq!(w["clientConfig"]["service"]["path"], "/mutate");
    }
    // The floor ConfigMap is served for real by deploy_policy_is_served_as_bundles_….
    // The example sidecar config is a valid intentgate config.
    let side = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == "intentgate-sidecar")
        .unwrap();
    let f = dir.path().join("sidecar.yaml");
    std::fs::write(&f, side["data"]["config.yaml"].as_str().unwrap()).unwrap();
    let (code, out, err) = run_cli(&["check", "--config", f.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
}

/// `kubectl kustomize` when available; else each file listed in kustomization.yaml (which must
/// all exist), concatenated.
fn render(base: &Path) -> Vec<Value> {
    let kubectl = Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success());
    let text = if kubectl {
        let out = Command::new("kubectl")
            .arg("kustomize")
            .arg(base)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    } else {
        let k: Value = serde_yaml::from_str(
            &std::fs::read_to_string(base.join("kustomization.yaml")).unwrap(),
        )
        .unwrap();
        let mut all = String::new();
        for r in k["resources"].as_array().unwrap() {
            let file: PathBuf = base.join(r.as_str().unwrap());
            all.push_str(&std::fs::read_to_string(&file).unwrap());
            all.push_str("\n---\n");
        }
        all
    };
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| <Value as serde::Deserialize>::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

/// The Dockerfile, statically (no image is built here): multi-stage, every COPY source exists,
/// the final stage runs as the documented non-root UID.
#[test]
fn dockerfile_is_multi_stage_and_non_root() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("deploy/Dockerfile")).unwrap();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect();
    let froms: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].starts_with("FROM "))
        .collect();
    assert!(froms.len() >= 2, "multi-stage");
    assert!(lines[froms[0]].contains(" AS build"));
    for l in lines
        .iter()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from="))
    {
        let words: Vec<&str> = l.split_whitespace().collect();
        for src in &words[1..words.len() - 1] {
            assert!(root.join(src).exists(), "COPY source {src} exists");
        }
    }
    let last = &lines[*froms.last().unwrap()..];
    let user = last
        .iter()
        .rev()
        .find(|l| l.starts_with("USER "))
        .expect("USER in the final stage");
    assert_eq!(*user, "USER 15700:15700");
    assert!(
        last.iter()
            .any(|l| l.starts_with("ENTRYPOINT [\"/usr/local/bin/intentgate\"]"))
    );
    assert!(last.iter().any(|l| l.contains("--from=build")));
}

/// deploy/ as one system: the control Deployment's projected policy volume laid out from the
/// rendered ConfigMaps, its inject config (paths under a temp root standing for the pod's
/// filesystem) served by the real `intentgate inject`, and the example sidecar config checked
/// against the bundle it serves to namespace support: the namespace's catalog arrives, the global
/// Rego tests pass, and the injected bundle URL names the Service.
#[test]
fn deploy_policy_is_served_as_bundles_and_passes_its_rego_tests() {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes");
    let docs = render(&base);
    let root = tempfile::tempdir().unwrap();
    let etc = root.path().join("etc/intentgate");
    let config_map = |name: &str| {
        docs.iter()
            .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("ConfigMap {name}"))["data"]
            .as_object()
            .unwrap()
            .clone()
    };
    // The policy volume, as the kubelet would project it.
    let deployment = docs
        .iter()
        .find(|d| d["kind"] == "Deployment" && d["metadata"]["name"] == "intentgate-inject")
        .unwrap();
    let spec = &deployment["spec"]["template"]["spec"];
    let mount = spec["containers"][0]["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "policy")
        .unwrap();
    assert_eq!(mount["mountPath"], "/etc/intentgate/policy");
    let volume = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "policy")
        .unwrap();
    for source in volume["projected"]["sources"].as_array().unwrap() {
        let cm = &source["configMap"];
        let data = config_map(cm["name"].as_str().unwrap());
        let items: Vec<(String, String)> = match cm["items"].as_array() {
            Some(items) => items
                .iter()
                .map(|i| {
                    (
                        i["key"].as_str().unwrap().into(),
                        i["path"].as_str().unwrap().into(),
                    )
                })
                .collect(),
            None => data.keys().map(|k| (k.clone(), k.clone())).collect(),
        };
        for (key, path) in items {
            let file = etc.join("policy").join(path);
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(file, data[&key].as_str().unwrap()).unwrap();
        }
    }
    // The serving certificate Secret (tls.crt, tls.key, ca.crt), for the Service's name.
    let ca = crate::common::tls::TestCa::new("webhook CA");
    let (cert, key) = ca.server_pem(&["127.0.0.1"]);
    std::fs::create_dir_all(etc.join("tls")).unwrap();
    std::fs::write(etc.join("tls/tls.crt"), cert).unwrap();
    std::fs::write(etc.join("tls/tls.key"), key).unwrap();
    std::fs::write(etc.join("tls/ca.crt"), &ca.cert_pem).unwrap();
    let inject = config_map("intentgate-inject")["inject.yaml"]
        .as_str()
        .unwrap()
        .replace("/etc/intentgate/", &format!("{}/", etc.display()));
    assert!(
        inject.contains("url: https://intentgate-inject.intentgate-system.svc/bundles"),
        "sidecars are sent to the Service: {inject}"
    );
    // The API server (issuer keys, version): a stand-in for 127.0.0.1 with the mounted CA and
    // token; tokens minted for its keys by PyPI joserfc.
    let kube = root.path().join("var/run/secrets/intentgate/kube");
    std::fs::create_dir_all(&kube).unwrap();
    std::fs::write(kube.join("ca.crt"), &ca.cert_pem).unwrap();
    std::fs::write(kube.join("token"), "control-token").unwrap();
    std::fs::write(kube.join("bearer"), "control-token").unwrap();
    std::fs::write(
        kube.join("version.json"),
        r#"{"major": "1", "minor": "30"}"#,
    )
    .unwrap();
    let issuer = super::issuer::Issuer::init(&root.path().join("issuer"));
    std::fs::copy(issuer.jwks(), kube.join("jwks.json")).unwrap();
    let api =
        super::issuer::FakeApi::start(&kube, &etc.join("tls/tls.crt"), &etc.join("tls/tls.key"));
    let inject = inject
        .replace(
            "https://kubernetes.default.svc/",
            &format!("{}/", api.url()),
        )
        .replace(
            "url: https://kubernetes.default.svc\n",
            &format!("url: {}\n", api.url()),
        )
        .replace(
            "/var/run/secrets/intentgate/kube/",
            &format!("{}/", kube.display()),
        );
    let token = root.path().join("bundle-token");
    std::fs::write(&token, issuer.token("support")).unwrap();
    let inject_file = root.path().join("inject.yaml");
    std::fs::write(&inject_file, inject).unwrap();
    let control = super::bundles::Control::launch(
        root.path(),
        &etc.join("tls/tls.crt"),
        &etc.join("tls/tls.key"),
        &inject_file,
        0,
    );
    let sidecar = root.path().join("sidecar.yaml");
    std::fs::write(
        &sidecar,
        config_map("intentgate-sidecar")["config.yaml"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let with_bundle = |args: &[&str]| {
        let mut all = vec![args[0], "--config", sidecar.to_str().unwrap()];
        all.extend_from_slice(&args[1..]);
        run_cli(&all)
    };
    let url = control.url("support");
    let ca_file = etc.join("tls/ca.crt");
    let bundle = [
        "--bundle-url",
        url.as_str(),
        "--bundle-ca",
        ca_file.to_str().unwrap(),
        "--bundle-token-file",
        token.to_str().unwrap(),
        "--namespace",
        "support",
        "--agent",
        "support-bot",
        "--owner",
        "team-helpdesk",
    ];
    let mut check = vec!["check"];
    check.extend_from_slice(&bundle);
    // Until the control deployment has fetched the issuer's keys, bundles are refused.
    let (code, stdout, stderr) = eventually("the bundle served", Duration::from_secs(20), || {
        let r = with_bundle(&check);
        (r.0 == 0).then_some(r)
    });
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("2 passed, 0 failed"), "{stdout}");
    assert!(stdout.contains("1 intents"), "{stdout}");
    // The namespace's catalog grants the ticket API; the global deny still holds.
    let mut explain = vec!["explain"];
    explain.extend_from_slice(&bundle);
    explain.extend_from_slice(&[
        "--intent",
        "triage-tickets",
        "GET",
        "https://acme.zendesk.com/api/v2/tickets/42",
    ]);
    let (code, stdout, stderr) = with_bundle(&explain);
    assert_eq!(code, 0, "{stdout}{stderr}");
}
