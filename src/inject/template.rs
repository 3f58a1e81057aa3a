//! The containers and volumes the webhook adds to a pod, as RFC 6902 operations: the iptables
//! init container, the native sidecar (the only container that mounts the CA key and the
//! bundle token), and CA trust for app containers (`trust`).

use serde_json::{Value, json};

use super::floor::{FloorMode, InjectConfig};
use super::patch::{
    ADMIN_PORT, ANN_STATUS, INIT, LABEL_SIDECAR, SIDECAR, TRANSPARENT_PORT, add, pointer_escape,
};
use super::trust::{self, Trust};
use crate::iptables::Cidr;

/// What one pod gets, after its annotations passed the floor.
#[derive(Debug, Clone, PartialEq)]
pub struct Sidecar {
    pub agent: String,
    pub owner: Option<String>,
    pub intent: Option<String>,
    pub mode: FloorMode,
    pub ports: Vec<u16>,
    pub cidrs: Vec<Cidr>,
    pub trust: Trust,
    /// Credential Secrets mounted into the sidecar only (src/inject/credentials.rs).
    pub credential_secrets: Vec<String>,
}

pub const CONFIG_VOLUME: &str = "intentgate-config";
/// The CA Secret with its key: the sidecar's only.
pub const CA_VOLUME: &str = "intentgate-ca";
/// The CA certificate alone, for app trust.
pub const CA_CERT_VOLUME: &str = "intentgate-ca-trust";
/// The projected service-account token the sidecar presents to the bundle server.
pub const TOKEN_VOLUME: &str = "intentgate-token";
pub const CA_DIR: &str = "/var/run/intentgate/ca";
pub const TOKEN_DIR: &str = "/var/run/secrets/intentgate";
/// Files of the CA Secret and the token: readable by every UID. The kubelet owns them by root
/// (and by the pod's `fsGroup`, adding group read, when there is one); the sidecar runs as the
/// proxy UID, which is neither, and only the sidecar mounts these volumes.
pub const SIDECAR_FILE_MODE: u32 = 0o444;
/// A writable /run for the iptables init container (its root filesystem is read-only):
/// iptables-legacy takes its lock file there.
pub const XTABLES_VOLUME: &str = "intentgate-xtables";
/// The shortest expiry the kubelet issues; it rotates the token at 80 % of it.
const TOKEN_SECONDS: u32 = 600;

fn downward_env() -> Value {
    let field = |name: &str, path: &str| json!({"name": name, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}});
    json!([
        field("POD_NAMESPACE", "metadata.namespace"),
        field("POD_NAME", "metadata.name"),
        field("POD_SERVICE_ACCOUNT", "spec.serviceAccountName"),
    ])
}

fn iptables_init(s: &Sidecar, cfg: &InjectConfig) -> Value {
    let mut args = vec![
        "iptables".to_string(),
        "--proxy-uid".into(),
        cfg.proxy_uid.to_string(),
        "--port".into(),
        TRANSPARENT_PORT.to_string(),
    ];
    if !s.ports.is_empty() {
        args.push("--exclude-ports".into());
        args.push(
            s.ports
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(","),
        );
    }
    if !s.cidrs.is_empty() {
        args.push("--exclude-cidrs".into());
        args.push(
            s.cidrs
                .iter()
                .map(Cidr::to_string)
                .collect::<Vec<_>>()
                .join(","),
        );
    }
    if cfg.block_quic {
        args.push("--block-quic".into());
    }
    json!({
        "name": INIT,
        "image": cfg.init_image,
        "args": args,
        "securityContext": {
            "runAsUser": 0, "runAsNonRoot": false, "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true, "privileged": false,
            "capabilities": {"drop": ["ALL"], "add": ["NET_ADMIN", "NET_RAW"]}
        },
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}},
        "volumeMounts": [{"name": XTABLES_VOLUME, "mountPath": "/run"}]
    })
}

fn sidecar(s: &Sidecar, cfg: &InjectConfig) -> Value {
    let mut args = vec![
        "serve".to_string(),
        "--config".into(),
        "/etc/intentgate/config.yaml".into(),
        "--admin".into(),
        format!("0.0.0.0:{ADMIN_PORT}"),
        "--agent".into(),
        s.agent.clone(),
        "--mode".into(),
        s.mode.as_str().into(),
    ];
    for (flag, v) in [("--owner", &s.owner), ("--intent", &s.intent)] {
        if let Some(v) = v {
            args.push(flag.into());
            args.push(v.clone());
        }
    }
    let mut env = downward_env();
    let mut mounts = vec![
        json!({"name": CONFIG_VOLUME, "mountPath": "/etc/intentgate", "readOnly": true}),
        json!({"name": CA_VOLUME, "mountPath": CA_DIR, "readOnly": true}),
    ];
    if let Some(url) = &cfg.bundles.url {
        // The kubelet expands $(POD_NAMESPACE) from the env above: each pod polls its own.
        args.push("--bundle-url".into());
        args.push(format!("{url}/$(POD_NAMESPACE)"));
        args.push("--bundle-token-file".into());
        args.push(format!("{TOKEN_DIR}/token"));
        mounts.push(json!({"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": true}));
        if let (Some(pem), Some(list)) = (&cfg.bundles.ca_pem, env.as_array_mut()) {
            list.push(json!({"name": "INTENTGATE_BUNDLE_CA", "value": pem}));
        }
    }
    mounts.extend(super::credentials::mounts(&s.credential_secrets));
    let keys = cfg.attestation.as_ref();
    args.extend(super::attestation::args(keys));
    mounts.extend(super::attestation::mount(keys));
    json!({
        "name": SIDECAR,
        "image": cfg.image,
        "args": args,
        // Native sidecar: starts before the app containers, stops after them.
        "restartPolicy": "Always",
        "env": env,
        "ports": [{"name": "ig-admin", "containerPort": ADMIN_PORT, "protocol": "TCP"}],
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": ADMIN_PORT},
            "periodSeconds": 5, "failureThreshold": 3
        },
        // The kubelet starts the app containers only once a native sidecar's startup probe
        // passes: the agent never runs before its policy (e.g. the first bundle) is in force.
        "startupProbe": {
            "httpGet": {"path": "/readyz", "port": ADMIN_PORT},
            "periodSeconds": 1, "failureThreshold": 60
        },
        "securityContext": {
            "runAsUser": cfg.proxy_uid, "runAsGroup": cfg.proxy_uid, "runAsNonRoot": true,
            "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
            "privileged": false, "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"}
        },
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
        "volumeMounts": mounts
    })
}

fn volumes(s: &Sidecar, cfg: &InjectConfig) -> Vec<Value> {
    let mut v = vec![
        json!({"name": CONFIG_VOLUME, "configMap": {"name": cfg.sidecar_config_map}}),
        json!({"name": CA_VOLUME, "secret": {"secretName": cfg.ca_secret,
               "defaultMode": SIDECAR_FILE_MODE}}),
        // App containers get the certificate only, never the key.
        json!({"name": CA_CERT_VOLUME, "secret": {"secretName": cfg.ca_secret,
               "items": [{"key": "tls.crt", "path": "ca.pem"}]}}),
        json!({"name": XTABLES_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}}),
    ];
    if cfg.bundles.url.is_some() {
        v.push(
            json!({"name": TOKEN_VOLUME, "projected": {"defaultMode": SIDECAR_FILE_MODE,
            "sources": [{"serviceAccountToken": {"audience": cfg.bundles.audience(),
                "expirationSeconds": TOKEN_SECONDS, "path": "token"}}]}}),
        );
    }
    v.extend(trust::volume(s.trust));
    v.extend(super::credentials::volumes(&s.credential_secrets));
    v.extend(super::attestation::volume(cfg.attestation.as_ref()));
    v
}

/// Appends `items` to the array at `path` (creating it when the pod has none).
pub fn append(ops: &mut Vec<Value>, pod: &Value, path: &str, items: Vec<Value>) {
    let existing = pod.pointer(path).and_then(Value::as_array).is_some();
    if existing {
        for item in items {
            ops.push(add(format!("{path}/-"), item));
        }
    } else {
        ops.push(add(path.to_string(), Value::Array(items)));
    }
}

/// The JSON patch for a pod that passed the floor.
pub fn patch(pod: &Value, s: &Sidecar, cfg: &InjectConfig) -> Vec<Value> {
    let mut ops = Vec::new();
    // The iptables init container runs first, then the sidecar, then the CA trust steps; all
    // before existing init containers, so their traffic is already decided by policy.
    let mut ours = vec![iptables_init(s, cfg), sidecar(s, cfg)];
    ours.extend(trust::init_containers(pod, s.trust));
    if pod["spec"]["initContainers"].as_array().is_some() {
        for (i, c) in ours.into_iter().enumerate() {
            ops.push(add(format!("/spec/initContainers/{i}"), c));
        }
    } else {
        ops.push(add("/spec/initContainers".into(), Value::Array(ours)));
    }
    append(&mut ops, pod, "/spec/volumes", volumes(s, cfg));
    trust::app_containers(&mut ops, pod, s.trust);
    set_metadata(&mut ops, pod, "annotations", &[(ANN_STATUS, "injected")]);
    set_metadata(&mut ops, pod, "labels", &[(LABEL_SIDECAR, "injected")]);
    ops
}

/// Sets `entries` in the pod's `metadata.<field>` (annotations or labels), creating the map
/// when the pod has none.
pub fn set_metadata(ops: &mut Vec<Value>, pod: &Value, field: &str, entries: &[(&str, &str)]) {
    if pod["metadata"][field].is_object() {
        for (k, v) in entries {
            ops.push(add(
                format!("/metadata/{field}/{}", pointer_escape(k)),
                json!(v),
            ));
        }
    } else {
        let map: serde_json::Map<String, Value> = entries
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        ops.push(add(format!("/metadata/{field}"), Value::Object(map)));
    }
}
