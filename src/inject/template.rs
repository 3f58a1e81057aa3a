//! The containers, volumes and environment the webhook adds to a pod, as RFC 6902 `add`
//! operations: the iptables init container, the native sidecar, and CA trust for app containers.

use serde_json::{Value, json};

use super::floor::{FloorMode, InjectConfig};
use super::patch::{
    ADMIN_PORT, ANN_STATUS, CA_FILE, CA_TRUST_DIR, INIT, LABEL_SIDECAR, SIDECAR, TRANSPARENT_PORT,
    add, pointer_escape,
};
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
}

const CONFIG_VOLUME: &str = "intentgate-config";
const CA_VOLUME: &str = "intentgate-ca";
const TRUST_VOLUME: &str = "intentgate-ca-trust";
/// A writable /run for the init container (its root filesystem is read-only): iptables-legacy
/// takes its lock file there.
const XTABLES_VOLUME: &str = "intentgate-xtables";

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
    if let Some(url) = &cfg.bundles.url {
        // The kubelet expands $(POD_NAMESPACE) from the env above: each pod polls its own.
        args.push("--bundle-url".into());
        args.push(format!("{url}/$(POD_NAMESPACE)"));
        if let (Some(pem), Some(list)) = (&cfg.bundles.ca_pem, env.as_array_mut()) {
            list.push(json!({"name": "INTENTGATE_BUNDLE_CA", "value": pem}));
        }
    }
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
        "volumeMounts": [
            {"name": CONFIG_VOLUME, "mountPath": "/etc/intentgate", "readOnly": true},
            {"name": CA_VOLUME, "mountPath": "/var/run/intentgate/ca", "readOnly": true}
        ]
    })
}

fn volumes(cfg: &InjectConfig) -> Vec<Value> {
    vec![
        json!({"name": CONFIG_VOLUME, "configMap": {"name": cfg.sidecar_config_map}}),
        json!({"name": CA_VOLUME, "secret": {"secretName": cfg.ca_secret, "defaultMode": 0o440}}),
        // App containers get the certificate only, never the key.
        json!({"name": TRUST_VOLUME, "secret": {"secretName": cfg.ca_secret,
               "items": [{"key": "tls.crt", "path": "ca.pem"}]}}),
        json!({"name": XTABLES_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}}),
    ]
}

/// Appends `items` to the array at `path` (creating it when the pod has none).
fn append(ops: &mut Vec<Value>, pod: &Value, path: &str, items: Vec<Value>) {
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
    // The iptables init container runs first, then the sidecar; both before existing init
    // containers, so their traffic is already decided by policy.
    if pod["spec"]["initContainers"].as_array().is_some() {
        ops.push(add("/spec/initContainers/0".into(), sidecar(s, cfg)));
        ops.push(add("/spec/initContainers/0".into(), iptables_init(s, cfg)));
    } else {
        ops.push(add(
            "/spec/initContainers".into(),
            json!([iptables_init(s, cfg), sidecar(s, cfg)]),
        ));
    }
    append(&mut ops, pod, "/spec/volumes", volumes(cfg));
    let trust_env = ["SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS"]
        .map(|n| json!({"name": n, "value": CA_FILE}));
    let count = pod["spec"]["containers"].as_array().map_or(0, Vec::len);
    for i in 0..count {
        let base = format!("/spec/containers/{i}");
        append(&mut ops, pod, &format!("{base}/env"), trust_env.to_vec());
        let mount = json!({"name": TRUST_VOLUME, "mountPath": CA_TRUST_DIR, "readOnly": true});
        append(&mut ops, pod, &format!("{base}/volumeMounts"), vec![mount]);
    }
    if pod["metadata"]["annotations"].is_object() {
        ops.push(add(
            format!("/metadata/annotations/{}", pointer_escape(ANN_STATUS)),
            json!("injected"),
        ));
    } else {
        ops.push(add(
            "/metadata/annotations".into(),
            json!({ANN_STATUS: "injected"}),
        ));
    }
    if pod["metadata"]["labels"].is_object() {
        ops.push(add(
            format!("/metadata/labels/{}", pointer_escape(LABEL_SIDECAR)),
            json!("injected"),
        ));
    } else {
        ops.push(add(
            "/metadata/labels".into(),
            json!({LABEL_SIDECAR: "injected"}),
        ));
    }
    ops
}
