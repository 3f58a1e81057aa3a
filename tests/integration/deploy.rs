//! deploy/: the Kustomize base rendered (`kubectl kustomize`, or each listed file when kubectl is
//! absent) and every document validated with kubernetes-validate --strict; the Dockerfile checked
//! statically (no image is built here).

use std::path::{Path, PathBuf};
use std::process::Command;

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
    // The floor ConfigMap is a valid inject config.
    let floor = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == "intentgate-inject")
        .unwrap();
    let text = floor["data"]["inject.yaml"].as_str().unwrap();
    let f = dir.path().join("inject.yaml");
    std::fs::write(&f, text).unwrap();
    let (code, _, err) = run_cli(&[
        "inject",
        "--tls-cert",
        "/nonexistent",
        "--tls-key",
        "/nonexistent",
        "--config",
        f.to_str().unwrap(),
    ]);
    assert_eq!(code, 2);
    assert!(
        err.contains("/nonexistent"),
        "the config loaded, the certificate did not: {err}"
    );
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

/// The policy ConfigMaps in deploy/ load as a policy directory (global modules at the top, the
/// support namespace's catalog under namespaces/support/) and pass their own Rego tests: the
/// global deny is enforced by the decision whatever a namespace grants.
#[test]
fn deploy_policy_config_maps_load_and_their_rego_tests_pass() {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes");
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy");
    let support = policy.join("namespaces/support");
    std::fs::create_dir_all(&support).unwrap();
    for (file, into) in [
        ("policy-global.yaml", &policy),
        ("example/policy.yaml", &support),
    ] {
        let doc: Value =
            serde_yaml::from_str(&std::fs::read_to_string(base.join(file)).unwrap()).unwrap();
        let data = doc["data"].as_object().unwrap();
        assert!(!data.is_empty(), "{file} has no data");
        for (name, text) in data {
            std::fs::write(into.join(name), text.as_str().unwrap()).unwrap();
        }
    }
    let cfg = dir.path().join("sidecar.yaml");
    std::fs::write(
        &cfg,
        "agent: {id: support-bot, namespace: support, owner: support-team}\npolicy: {paths: [policy]}\n",
    )
    .unwrap();
    let (code, stdout, stderr) = run_cli(&["check", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("2 passed, 0 failed"), "{stdout}");
    // The namespace's catalog is loaded: its intent grants the ticket API.
    let (code, stdout, stderr) = run_cli(&[
        "explain",
        "--config",
        cfg.to_str().unwrap(),
        "--intent",
        "triage-tickets",
        "GET",
        "https://acme.zendesk.com/api/v2/tickets/42",
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
}
