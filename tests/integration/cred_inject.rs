//! The webhook mounts the credential Secrets a pod's annotation names into the intentgate
//! sidecar only (src/inject/credentials.rs): real AdmissionReviews to `intentgate inject`, the
//! patch applied by PyPI `jsonpatch` and the pod validated by `kubernetes-validate`.

use serde_json::{Value, json};

use crate::k8s::{Webhook, agent_pod, apply_and_validate, decode};

const ANN: &str = "intentgate.io/credential-secrets";

fn mounts(c: &Value) -> Vec<(String, String)> {
    c["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            let s = |k: &str| m[k].as_str().unwrap_or_default().to_string();
            (s("name"), s("mountPath"))
        })
        .collect()
}

#[test]
fn credential_secrets_are_mounted_into_the_sidecar_only() {
    let hook = Webhook::start();
    let pod = agent_pod(json!({ANN: "github-readonly, stripe.live"}));
    let resp = hook.review(&pod);
    assert_eq!(resp["allowed"], true, "{resp}");
    let patched = apply_and_validate(hook.dir.path(), &pod, &decode(&resp));
    let spec = &patched["spec"];
    let volumes: Vec<&Value> = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["name"].as_str().unwrap().starts_with("intentgate-cred-"))
        .collect();
    let secrets: Vec<&str> = volumes
        .iter()
        .map(|v| v["secret"]["secretName"].as_str().unwrap())
        .collect();
    assert_eq!(secrets, ["github-readonly", "stripe.live"], "{spec}");
    let sidecar = spec["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "intentgate")
        .unwrap();
    let m = mounts(sidecar);
    for (i, name) in ["github-readonly", "stripe.live"].iter().enumerate() {
        let want = (
            format!("intentgate-cred-{i}"),
            format!("/var/run/secrets/intentgate-credentials/{name}"),
        );
        assert!(m.contains(&want), "{m:?}");
    }
    // No other container mounts them.
    for c in ["initContainers", "containers"]
        .iter()
        .flat_map(|k| spec[*k].as_array().unwrap())
        .filter(|c| c["name"] != "intentgate")
    {
        assert!(
            !mounts(c)
                .iter()
                .any(|(n, _)| n.starts_with("intentgate-cred-")),
            "{c}"
        );
    }
}

#[test]
fn a_pod_that_reaches_a_credential_secret_itself_is_refused() {
    let hook = Webhook::start();
    let refused = |pod: Value, says: &str| {
        let r = hook.review(&pod);
        assert_eq!(r["allowed"], false, "{r}");
        let msg = r["status"]["message"].as_str().unwrap();
        assert!(msg.contains(says), "{msg}");
    };
    // The agent's env reads the Secret.
    let mut pod = agent_pod(json!({ANN: "github-readonly"}));
    pod["spec"]["containers"][0]["envFrom"] = json!([{"secretRef": {"name": "github-readonly"}}]);
    refused(pod, "container 'agent'");
    // A volume of the pod mounts it.
    let mut pod = agent_pod(json!({ANN: "github-readonly"}));
    pod["spec"]["volumes"] = json!([{"name": "gh", "secret": {"secretName": "github-readonly"}}]);
    refused(pod, "volume 'gh'");
    // An app container mounts the webhook's credential volume by name.
    let mut pod = agent_pod(json!({ANN: "github-readonly"}));
    pod["spec"]["containers"][1]["volumeMounts"] =
        json!([{"name": "intentgate-cred-0", "mountPath": "/x"}]);
    refused(pod, "intentgate-cred-0");
    refused(agent_pod(json!({ANN: "Not_A_Name"})), ANN);
}
