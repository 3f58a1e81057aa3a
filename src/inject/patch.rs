//! The pure part of the webhook: a pod (JSON) and the inject config in, a verdict out — no
//! patch (already injected or skipped), a JSON patch (RFC 6902), or a refusal naming the
//! annotation, container or floor setting at fault.

use serde_json::{Value, json};

use super::checks::{self, ANN_SKIPPED};
use super::floor::{FloorMode, InjectConfig, NamespaceFloor, contains};
use super::template::{Sidecar, patch, set_metadata};
use super::trust::{self, ANN_TRUST, Trust};
use crate::iptables::Cidr;

pub const ANN_AGENT: &str = "intentgate.io/agent-id";
pub const ANN_OWNER: &str = "intentgate.io/owner";
pub const ANN_INTENT: &str = "intentgate.io/intent";
pub const ANN_MODE: &str = "intentgate.io/mode";
pub const ANN_PORTS: &str = "intentgate.io/exclude-outbound-ports";
pub const ANN_CIDRS: &str = "intentgate.io/exclude-outbound-cidrs";
/// Set on injected pods; a pod carrying it is never patched again.
pub const ANN_STATUS: &str = "intentgate.io/status";
/// Label added to injected pods (egress NetworkPolicies can allow exactly these pods).
pub const LABEL_SIDECAR: &str = "intentgate.io/sidecar";
/// The sidecar's container name (also an idempotence marker).
pub const SIDECAR: &str = "intentgate";
pub const INIT: &str = "intentgate-iptables";
pub const ADMIN_PORT: u16 = 15701;
pub const TRANSPARENT_PORT: u16 = crate::iptables::DEFAULT_PORT;

/// What the webhook answers.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Allowed unchanged (already injected or skipped).
    Unchanged,
    /// Allowed with this JSON patch.
    Patch(Vec<Value>),
    /// Allowed without the sidecar; the patch says why (annotations only).
    Skipped(Vec<Value>),
    /// Refused; the message names the annotation (or what is missing).
    Refused(String),
}

fn list(raw: Option<&str>) -> impl Iterator<Item = &str> {
    raw.unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Reads and checks the annotations against the namespace's floor.
fn settings(pod: &Value, namespace: &str, floor: &NamespaceFloor) -> Result<Sidecar, String> {
    let ann = |k: &str| pod["metadata"]["annotations"][k].as_str();
    let sa = pod["spec"]["serviceAccountName"]
        .as_str()
        .unwrap_or("default");
    let agent = ann(ANN_AGENT).unwrap_or(sa).to_string();
    if !valid_name(&agent) {
        return Err(format!(
            "annotation {ANN_AGENT}: '{agent}' is not a valid agent id"
        ));
    }
    let allowed = floor.service_accounts.get(sa);
    if !allowed.is_some_and(|ids| ids.iter().any(|i| i == &agent)) {
        return Err(format!(
            "annotation {ANN_AGENT}: agent id '{agent}' is not mapped to service account '{sa}' in namespace '{namespace}' (allowed: {})",
            allowed
                .map(|v| v.join(", "))
                .unwrap_or_else(|| "none".into())
        ));
    }
    let mode = match ann(ANN_MODE) {
        None => floor.min_mode,
        Some("enforce") => FloorMode::Enforce,
        Some("monitor") => FloorMode::Monitor,
        Some(other) => {
            return Err(format!(
                "annotation {ANN_MODE}: '{other}' is not enforce or monitor"
            ));
        }
    };
    if mode < floor.min_mode {
        return Err(format!(
            "annotation {ANN_MODE}: '{}' is weaker than the platform floor '{}' for namespace '{namespace}'",
            mode.as_str(),
            floor.min_mode.as_str()
        ));
    }
    let mut ports = Vec::new();
    for p in list(ann(ANN_PORTS)) {
        let port: u16 = p
            .parse()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("annotation {ANN_PORTS}: '{p}' is not a port"))?;
        if !floor.allow_exclude_ports.contains(&port) {
            return Err(format!(
                "annotation {ANN_PORTS}: port {port} may not be excluded in namespace '{namespace}'"
            ));
        }
        ports.push(port);
    }
    let allowed: Vec<Cidr> = floor
        .allow_exclude_cidrs
        .iter()
        .filter_map(|c| c.parse().ok())
        .collect();
    let mut cidrs = Vec::new();
    for c in list(ann(ANN_CIDRS)) {
        let cidr: Cidr = c
            .parse()
            .map_err(|e| format!("annotation {ANN_CIDRS}: {e}"))?;
        if !allowed.iter().any(|a| contains(a, &cidr)) {
            return Err(format!(
                "annotation {ANN_CIDRS}: {cidr} may not be excluded in namespace '{namespace}'"
            ));
        }
        cidrs.push(cidr);
    }
    let text = |k: &str| -> Result<Option<String>, String> {
        match ann(k) {
            Some(v) if !valid_name(v) => Err(format!("annotation {k}: '{v}' is not a valid name")),
            v => Ok(v.map(str::to_string)),
        }
    };
    Ok(Sidecar {
        agent,
        owner: text(ANN_OWNER)?,
        intent: text(ANN_INTENT)?,
        mode,
        ports,
        cidrs,
        trust: Trust::parse(ann(ANN_TRUST))?,
        credential_secrets: super::credentials::parse(pod)?,
    })
}

/// Injected = both our init containers are there with our images. Our names or markers without
/// them are refused: a pod must not dodge injection (or gain the egress label) by claiming it.
fn already_injected(pod: &Value, cfg: &InjectConfig) -> Result<bool, String> {
    let inits = pod["spec"]["initContainers"].as_array();
    let ours = |name: &str, image: &str| {
        inits.is_some_and(|cs| cs.iter().any(|c| c["name"] == name && c["image"] == image))
    };
    if ours(SIDECAR, &cfg.image) && ours(INIT, &cfg.init_image) {
        return Ok(true);
    }
    if pod["metadata"]["annotations"][ANN_STATUS].is_string() {
        return Err(format!(
            "annotation {ANN_STATUS} is set by the webhook only"
        ));
    }
    if pod["metadata"]["labels"][LABEL_SIDECAR].is_string() {
        return Err(format!("label {LABEL_SIDECAR} is set by the webhook only"));
    }
    let reserved = |c: &Value| {
        c["name"] == SIDECAR
            || c["name"] == INIT
            || c["name"]
                .as_str()
                .is_some_and(|n| n.starts_with(trust::INIT_PREFIX))
    };
    let named = |list: &Value| list.as_array().is_some_and(|cs| cs.iter().any(reserved));
    if named(&pod["spec"]["initContainers"]) || named(&pod["spec"]["containers"]) {
        return Err(format!(
            "container names {SIDECAR}, {INIT} and {}* are reserved for the webhook",
            trust::INIT_PREFIX
        ));
    }
    Ok(false)
}

/// Decides on one pod being created in `namespace`.
pub fn mutate(pod: &Value, namespace: &str, cfg: &InjectConfig) -> Verdict {
    let Some(floor) = cfg.floor(namespace) else {
        return Verdict::Refused(format!(
            "namespace '{namespace}' has no intentgate platform floor; ask the platform team"
        ));
    };
    if let Some(skip) = checks::skip(pod) {
        return skipped(pod, namespace, floor, skip);
    }
    match already_injected(pod, cfg) {
        Ok(true) => return Verdict::Unchanged,
        Ok(false) => {}
        Err(msg) => return Verdict::Refused(msg),
    }
    if let Err(msg) = checks::app_containers(pod, namespace, floor, cfg.proxy_uid) {
        return Verdict::Refused(msg);
    }
    if let Err(msg) = super::attestation::check(pod, cfg.attestation.as_ref()) {
        return Verdict::Refused(msg);
    }
    match settings(pod, namespace, floor) {
        Ok(s) => Verdict::Patch(patch(pod, &s, cfg)),
        Err(msg) => Verdict::Refused(msg),
    }
}

/// A pod that goes without the sidecar: marked with the reason, or refused when the floor
/// does not allow it. It may not carry the injected pods' label (the egress NetworkPolicy
/// lets those out).
fn skipped(pod: &Value, namespace: &str, floor: &NamespaceFloor, skip: checks::Skip) -> Verdict {
    let why = skip.reason();
    if !floor.allow_opt_out {
        return Verdict::Refused(format!(
            "the pod would run without the intentgate sidecar ({why}), and the platform floor of namespace '{namespace}' does not allow that (allow_opt_out: false)"
        ));
    }
    if pod["metadata"]["labels"][LABEL_SIDECAR].is_string() {
        return Verdict::Refused(format!("label {LABEL_SIDECAR} is set by the webhook only"));
    }
    let status = pod["metadata"]["annotations"][ANN_STATUS].as_str();
    if status == Some("skipped") && pod["metadata"]["annotations"][ANN_SKIPPED] == why.as_str() {
        return Verdict::Unchanged;
    }
    let mut ops = Vec::new();
    set_metadata(
        &mut ops,
        pod,
        "annotations",
        &[(ANN_STATUS, "skipped"), (ANN_SKIPPED, &why)],
    );
    Verdict::Skipped(ops)
}

/// Escapes a key for a JSON pointer (RFC 6901).
pub fn pointer_escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// `add` operation.
pub fn add(path: String, value: Value) -> Value {
    json!({"op": "add", "path": path, "value": value})
}
