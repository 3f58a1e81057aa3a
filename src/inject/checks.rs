//! What the webhook checks on a pod before it patches it: pods that go without the sidecar
//! (opted out, host network, Windows) and whether the namespace's floor lets them, and app
//! containers that could defeat the sidecar (the proxy's UID, `NET_ADMIN`/`NET_RAW`,
//! `privileged`, our reserved volume names).

use serde_json::Value;

use super::floor::NamespaceFloor;
use super::{template, trust};

/// The label or annotation a pod opts out with (`"false"`) in an opted-in namespace.
pub const OPT_OUT: &str = "intentgate.io/inject";
/// Why a pod went without the sidecar (with `intentgate.io/status: skipped`).
pub const ANN_SKIPPED: &str = "intentgate.io/skip-reason";

/// Volume names the webhook adds: a pod may not declare them.
pub const RESERVED_VOLUMES: [&str; 6] = [
    template::CONFIG_VOLUME,
    template::CA_VOLUME,
    template::CA_CERT_VOLUME,
    trust::TRUST_VOLUME,
    template::TOKEN_VOLUME,
    template::XTABLES_VOLUME,
];
/// Those only the sidecar mounts (the CA key, its token): no other container may.
pub const SIDECAR_ONLY_VOLUMES: [&str; 2] = [template::CA_VOLUME, template::TOKEN_VOLUME];

/// Why a pod goes without the sidecar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// `intentgate.io/inject: "false"` as a label or an annotation.
    OptOut(&'static str),
    HostNetwork,
    Windows,
}

impl Skip {
    pub fn reason(self) -> String {
        match self {
            Skip::OptOut(kind) => format!("opted out ({kind} {OPT_OUT}: \"false\")"),
            Skip::HostNetwork => {
                "hostNetwork: true (the iptables init container would rewrite the node's rules)"
                    .into()
            }
            Skip::Windows => "a Windows pod (redirection is Linux iptables)".into(),
        }
    }
}

/// Whether the pod goes without the sidecar, and why.
pub fn skip(pod: &Value) -> Option<Skip> {
    let meta = &pod["metadata"];
    if meta["labels"][OPT_OUT] == "false" {
        return Some(Skip::OptOut("label"));
    }
    if meta["annotations"][OPT_OUT] == "false" {
        return Some(Skip::OptOut("annotation"));
    }
    let spec = &pod["spec"];
    if spec["hostNetwork"] == true {
        return Some(Skip::HostNetwork);
    }
    if spec["os"]["name"] == "windows" || spec["nodeSelector"]["kubernetes.io/os"] == "windows" {
        return Some(Skip::Windows);
    }
    None
}

/// Every container the pod declares (ours are not there yet), with its kind for messages.
fn containers(pod: &Value) -> impl Iterator<Item = (&'static str, &Value)> {
    ["containers", "initContainers"]
        .into_iter()
        .flat_map(move |list| {
            let kind = if list == "containers" {
                "container"
            } else {
                "init container"
            };
            pod["spec"][list]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |c| (kind, c))
        })
}

/// A capability name as Kubernetes writes it (`NET_ADMIN`), whatever the case or `CAP_` prefix.
fn capability(v: &Value) -> String {
    let s = v.as_str().unwrap_or("").to_ascii_uppercase();
    s.strip_prefix("CAP_").map(str::to_string).unwrap_or(s)
}

/// Refuses app containers that could defeat the sidecar; the message names the container.
pub fn app_containers(
    pod: &Value,
    namespace: &str,
    floor: &NamespaceFloor,
    proxy_uid: u32,
) -> Result<(), String> {
    let pod_uid = pod["spec"]["securityContext"]["runAsUser"].as_u64();
    for v in pod["spec"]["volumes"].as_array().into_iter().flatten() {
        let name = v["name"].as_str().unwrap_or("");
        if RESERVED_VOLUMES.contains(&name) || name.starts_with(super::credentials::VOLUME_PREFIX) {
            return Err(format!("volume name '{name}' is reserved for the webhook"));
        }
    }
    for (kind, c) in containers(pod) {
        let name = c["name"].as_str().unwrap_or("?");
        let sc = &c["securityContext"];
        if sc["runAsUser"].as_u64().or(pod_uid) == Some(u64::from(proxy_uid)) {
            return Err(format!(
                "{kind} '{name}' runs as UID {proxy_uid}, the sidecar's UID, whose traffic is not redirected; run it as another UID"
            ));
        }
        for m in c["volumeMounts"].as_array().into_iter().flatten() {
            let vol = m["name"].as_str().unwrap_or("");
            if SIDECAR_ONLY_VOLUMES.contains(&vol)
                || vol.starts_with(super::credentials::VOLUME_PREFIX)
            {
                return Err(format!(
                    "{kind} '{name}' mounts volume '{vol}', which only the intentgate sidecar may mount"
                ));
            }
        }
        if floor.allow_net_admin {
            continue;
        }
        let dangerous = if sc["privileged"] == true {
            Some("privileged: true".to_string())
        } else {
            sc["capabilities"]["add"]
                .as_array()
                .into_iter()
                .flatten()
                .map(capability)
                .find(|c| matches!(c.as_str(), "NET_ADMIN" | "NET_RAW" | "ALL"))
                .map(|c| format!("capability {c}"))
        };
        if let Some(what) = dangerous {
            return Err(format!(
                "{kind} '{name}' has {what}, which can undo or go around the redirect; the platform floor of namespace '{namespace}' does not allow it (allow_net_admin)"
            ));
        }
    }
    Ok(())
}
