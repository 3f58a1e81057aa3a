//! Credential Secrets for the sidecar only (docs/credentials.md): the pod annotation
//! `intentgate.io/credential-secrets: "github-readonly, stripe"` names Secrets of the pod's
//! namespace that the webhook mounts into the intentgate sidecar at
//! `/var/run/secrets/intentgate-credentials/NAME/` — and into no other container. A pod whose
//! own containers or volumes already reach one of those Secrets is refused: the point is that the
//! agent never holds the key.

use serde_json::{Value, json};

use super::template::SIDECAR_FILE_MODE;

/// The annotation naming the Secrets.
pub const ANN_CRED_SECRETS: &str = "intentgate.io/credential-secrets";
/// The webhook's credential volumes are named with this prefix (reserved, sidecar only).
pub const VOLUME_PREFIX: &str = "intentgate-cred-";
/// Where the sidecar finds them (a `file` source: `DIR/NAME/KEY`).
pub const DIR: &str = "/var/run/secrets/intentgate-credentials";

/// A Secret name: a DNS-1123 subdomain.
pub(super) fn valid(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

/// The Secrets the annotation names, checked: valid names, and none the pod reaches otherwise.
pub fn parse(pod: &Value) -> Result<Vec<String>, String> {
    let raw = pod["metadata"]["annotations"][ANN_CRED_SECRETS]
        .as_str()
        .unwrap_or("");
    let mut names: Vec<String> = Vec::new();
    for n in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if !valid(n) {
            return Err(format!(
                "annotation {ANN_CRED_SECRETS}: '{n}' is not a Secret name"
            ));
        }
        if !names.iter().any(|x| x == n) {
            names.push(n.to_string());
        }
    }
    for n in &names {
        if let Some(r#where) = reached_by_pod(pod, n) {
            return Err(format!(
                "annotation {ANN_CRED_SECRETS}: Secret '{n}' is also {where}; a credential Secret \
                 goes to the intentgate sidecar only"
            ));
        }
    }
    Ok(names)
}

/// Where the pod's own spec reaches Secret `name`: a volume, or a container's env.
pub(super) fn reached_by_pod(pod: &Value, name: &str) -> Option<String> {
    let spec = &pod["spec"];
    for v in spec["volumes"].as_array().into_iter().flatten() {
        let projected = v["projected"]["sources"].as_array().into_iter().flatten();
        if v["secret"]["secretName"] == name
            || projected.into_iter().any(|s| s["secret"]["name"] == name)
        {
            return Some(format!(
                "mounted by volume '{}'",
                v["name"].as_str().unwrap_or("?")
            ));
        }
    }
    let containers = ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .flat_map(|k| spec[*k].as_array().into_iter().flatten());
    for c in containers {
        let env_ref = c["env"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| e["valueFrom"]["secretKeyRef"]["name"] == name);
        let from_ref = c["envFrom"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| e["secretRef"]["name"] == name);
        if env_ref || from_ref {
            return Some(format!(
                "in the environment of container '{}'",
                c["name"].as_str().unwrap_or("?")
            ));
        }
    }
    None
}

/// The pod volumes for `names` (the files readable by the sidecar's UID only through its mount).
pub fn volumes(names: &[String]) -> Vec<Value> {
    names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            json!({"name": format!("{VOLUME_PREFIX}{i}"),
                   "secret": {"secretName": n, "defaultMode": SIDECAR_FILE_MODE}})
        })
        .collect()
}

/// The sidecar's mounts of those volumes.
pub fn mounts(names: &[String]) -> Vec<Value> {
    names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            json!({"name": format!("{VOLUME_PREFIX}{i}"), "mountPath": format!("{DIR}/{n}"),
                   "readOnly": true})
        })
        .collect()
}
