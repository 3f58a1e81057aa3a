//! `intentgate inventory` on a realistic `kubectl get pods -A -o json`: injected pods (native
//! sidecar), an agent pod created without the sidecar, one let through without it, an injected pod
//! without an owner, and pods that are none of intentgate's business.

use serde_json::{Value, json};

use crate::common::*;

/// A pod as kubectl prints it; `sidecar` adds the injected init containers and markers.
fn pod(
    ns: &str,
    name: &str,
    labels: Value,
    annotations: Value,
    sidecar: bool,
    phase: &str,
) -> Value {
    let mut labels = labels;
    let mut annotations = annotations;
    let mut init = vec![];
    if sidecar {
        labels["intentgate.io/sidecar"] = json!("injected");
        annotations["intentgate.io/status"] = json!("injected");
        init = vec![
            json!({"name": "intentgate-iptables", "image": "ghcr.io/intentgate/intentgate:0.9.0",
                   "args": ["iptables", "--port", "15001"]}),
            json!({"name": "intentgate", "image": "ghcr.io/intentgate/intentgate:0.9.0",
                   "restartPolicy": "Always", "args": ["serve", "--config", "/etc/intentgate/config.yaml"]}),
        ];
    }
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{name}"),
                     "labels": labels, "annotations": annotations,
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("{name}-rs")}]},
        "spec": {"serviceAccountName": name, "initContainers": init,
                 "containers": [{"name": "agent", "image": "registry.example/agent:1.4"}]},
        "status": {"phase": phase, "podIP": "10.42.0.17"}
    })
}

fn pods() -> Value {
    let agent = json!({"app": "agent", "intentgate.io/inject": "true"});
    json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": [
        pod("support", "support-bot-7f9c", agent.clone(),
            json!({"intentgate.io/agent-id": "support-bot", "intentgate.io/owner": "team-helpdesk"}), true, "Running"),
        pod("billing", "billing-bot-5d2a", agent.clone(),
            json!({"intentgate.io/agent-id": "billing-bot"}), true, "Running"),
        pod("support", "triage-bot-0", agent.clone(), json!({}), false, "Running"),
        pod("research", "crawler-6b1", json!({"app": "crawler"}),
            json!({"intentgate.io/status": "skipped",
                   "intentgate.io/skip-reason": "opted out (annotation intentgate.io/inject: \"false\")"}),
            false, "Running"),
        pod("research", "scraper-1", json!({"app": "scraper"}), json!({}), false, "Pending"),
        pod("support", "old-job-x", agent, json!({}), false, "Succeeded"),
        pod("kube-system", "coredns-5d78c", json!({"k8s-app": "kube-dns"}), json!({}), false, "Running"),
    ]})
}

fn namespaces() -> Value {
    json!({"apiVersion": "v1", "kind": "List", "items": [
        {"metadata": {"name": "research", "labels": {"intentgate.io/inject": "true"}}},
        {"metadata": {"name": "kube-system", "labels": {}}},
    ]})
}

#[test]
fn inventory_lists_pods_without_the_sidecar_or_an_owner() {
    let dir = tempfile::tempdir().unwrap();
    let (p, n) = (dir.path().join("pods.json"), dir.path().join("ns.json"));
    std::fs::write(&p, pods().to_string()).unwrap();
    std::fs::write(&n, namespaces().to_string()).unwrap();
    let (p, n) = (p.to_str().unwrap(), n.to_str().unwrap());

    let (code, out, err) = run_cli(&["inventory", "--pods", p, "--namespaces", n, "--json"]);
    assert_eq!(code, 1, "{out}{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["agent_pods"], 5, "{v}");
    assert_eq!(v["injected"], 2, "{v}");
    let found: Vec<(&str, &str, &str)> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["namespace"].as_str().unwrap(),
                f["pod"].as_str().unwrap(),
                f["problem"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        found,
        [
            ("billing", "billing-bot-5d2a", "no_owner"),
            ("research", "crawler-6b1", "no_sidecar"),
            ("research", "scraper-1", "no_sidecar"),
            ("support", "triage-bot-0", "no_sidecar"),
        ]
    );
    assert!(
        v["findings"][1]["detail"]
            .as_str()
            .unwrap()
            .contains("opted out"),
        "{v}"
    );

    // Text: a table and a summary; without --namespaces the unlabelled scraper is not an agent.
    let (code, out, _) = run_cli(&["inventory", "--pods", p]);
    assert_eq!(code, 1);
    assert!(out.starts_with("NAMESPACE"), "{out}");
    assert!(
        out.contains("support    triage-bot-0") || out.contains("triage-bot-0"),
        "{out}"
    );
    assert!(
        !out.contains("scraper-1") && !out.contains("coredns") && !out.contains("old-job-x"),
        "{out}"
    );
    assert!(
        out.ends_with(
            "4 agent pods: 2 injected, 2 without the sidecar, 1 injected without an owner\n"
        ),
        "{out}"
    );

    // Only the compliant pod: nothing to report, exit 0; from stdin too.
    let clean = json!({"kind": "List", "items": [pods()["items"][0]]}).to_string();
    let out = std::process::Command::new(BIN)
        .args(["inventory", "--pods", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(clean.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "1 agent pods: 1 injected, 0 without the sidecar, 0 injected without an owner\n"
    );

    // Not a pod list: exit 2, naming the file.
    std::fs::write(dir.path().join("bad.json"), "{\"items\": 3}").unwrap();
    let bad = dir.path().join("bad.json");
    let (code, _, err) = run_cli(&["inventory", "--pods", bad.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(
        err.contains("bad.json") && err.contains("not a pod list"),
        "{err}"
    );
}
