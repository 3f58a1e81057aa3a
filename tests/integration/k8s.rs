//! The webhook for real: `intentgate inject` over HTTPS (a certificate made here with rcgen),
//! real AdmissionReview JSON sent with curl, the JSON patch applied by PyPI `jsonpatch`, the
//! patched pod validated against the Kubernetes schema by PyPI `kubernetes-validate` (offline:
//! it ships its schemas) and checked field by field.

use std::path::Path;
use std::process::Command;

use base64::Engine;
use serde_json::{Value, json};

use crate::common::*;

pub const FLOOR: &str = "
image: ghcr.io/intentgate/intentgate:0.1.0
namespaces:
  support:
    service_accounts: {support-bot: [support-bot]}
    min_mode: enforce
    allow_exclude_ports: [5432]
    allow_exclude_cidrs: [10.0.0.0/8]
";

/// `intentgate inject` with a self-signed certificate for localhost and a floor.
pub struct Webhook {
    pub control: super::bundles::Control,
    pub dir: tempfile::TempDir,
}

impl Webhook {
    /// With the floor above.
    pub fn start() -> Self {
        Self::with(FLOOR)
    }

    /// With `floor` (YAML of the inject config, without `bundles:`).
    pub fn with(floor: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        std::fs::write(dir.path().join("tls.crt"), ck.cert.pem()).unwrap();
        std::fs::write(dir.path().join("tls.key"), ck.signing_key.serialize_pem()).unwrap();
        // Injected sidecars are told where to poll for bundles and which CA to trust for it.
        let bundles = format!(
            "bundles:\n  url: https://intentgate-inject.intentgate-system.svc/bundles\n  ca_file: {}\n",
            dir.path().join("tls.crt").display()
        );
        // The inject config as the kubelet projects a ConfigMap (`set_config` updates it).
        let cm = dir.path().join("cm");
        kubelet_publish(&cm, &[("inject.yaml", &format!("{floor}{bundles}"))]);
        let p = |n: &str| dir.path().join(n);
        let control = super::bundles::Control::launch(
            dir.path(),
            &p("tls.crt"),
            &p("tls.key"),
            &cm.join("inject.yaml"),
            0,
        );
        Webhook { control, dir }
    }

    /// Replaces the inject config the way the kubelet updates a ConfigMap volume.
    pub fn set_config(&self, text: &str) {
        kubelet_publish(&self.dir.path().join("cm"), &[("inject.yaml", text)]);
    }

    /// POSTs an AdmissionReview v1 for `pod` in namespace support; returns the `response`.
    pub fn review(&self, pod: &Value) -> Value {
        self.review_in("admission.k8s.io/v1", "support", pod)
    }

    /// POSTs an AdmissionReview of `api` for `pod` in `namespace` to /mutate over HTTPS;
    /// checks the envelope (the version asked, the uid) and returns the `response` object.
    pub fn review_in(&self, api: &str, namespace: &str, pod: &Value) -> Value {
        let review = json!({"apiVersion": api, "kind": "AdmissionReview",
            "request": {"uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": namespace, "operation": "CREATE",
                "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
                "object": pod, "dryRun": false}});
        let out = self.post(&review);
        assert_eq!(out.status, 200, "{out:?}");
        let v = out.json();
        assert_eq!(v["kind"], "AdmissionReview");
        assert_eq!(v["apiVersion"], api);
        assert_eq!(v["response"]["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
        v["response"].clone()
    }

    /// POSTs `doc` to /mutate with curl over verified HTTPS.
    pub fn post(&self, doc: &Value) -> CurlOut {
        let file = self.dir.path().join("review.json");
        std::fs::write(&file, doc.to_string()).unwrap();
        let ca = self.dir.path().join("tls.crt");
        let url = format!("https://localhost:{}/mutate", self.control.port);
        let resolve = format!("localhost:{}:127.0.0.1", self.control.port);
        let data = format!("@{}", file.display());
        curl(&[
            "--cacert",
            ca.to_str().unwrap(),
            "--resolve",
            &resolve,
            "-H",
            "content-type: application/json",
            "--data-binary",
            &data,
            &url,
        ])
    }
}

/// Publishes `files` (paths relative to `root`) the way the kubelet updates a ConfigMap or
/// Secret volume: a new timestamped directory, a `..data` symlink swapped to it atomically
/// (rename over the old link), and top-level symlinks through `..data`.
pub fn kubelet_publish(root: &Path, files: &[(&str, &str)]) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    std::fs::create_dir_all(root).unwrap();
    let version = format!("..2026_12_06_{}", N.fetch_add(1, Ordering::Relaxed));
    for (rel, text) in files {
        let f = root.join(&version).join(rel);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, text).unwrap();
    }
    let tmp = root.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&version, &tmp).unwrap();
    std::fs::rename(&tmp, root.join("..data")).unwrap();
    for (rel, _) in files {
        let top = rel.split('/').next().unwrap();
        let link = root.join(top);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{top}"), &link).unwrap();
        }
    }
}

pub fn agent_pod(annotations: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "support-bot-7d9f", "namespace": "support",
                     "labels": {"app": "support-bot", "intentgate.io/inject": "true"},
                     "annotations": annotations},
        "spec": {"serviceAccountName": "support-bot",
                 "initContainers": [{"name": "migrate", "image": "busybox:1.36"}],
                 "containers": [
                    {"name": "agent", "image": "python:3.12-slim",
                     "env": [{"name": "LOG", "value": "1"}]},
                    {"name": "helper", "image": "busybox:1.36"}]}})
}

/// Applies the patch with PyPI jsonpatch and validates the result with kubernetes-validate.
pub fn apply_and_validate(dir: &Path, pod: &Value, patch: &Value) -> Value {
    let w = |n: &str, v: &Value| {
        let p = dir.join(n);
        std::fs::write(&p, v.to_string()).unwrap();
        p
    };
    let (podf, patchf, out) = (
        w("pod.json", pod),
        w("patch.json", patch),
        dir.join("out.json"),
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/jsonpatch_apply.py");
    let st = Command::new("python3")
        .arg(script)
        .args([&podf, &patchf, &out])
        .status()
        .unwrap();
    assert!(st.success(), "jsonpatch failed");
    validate(&out);
    serde_json::from_str(&std::fs::read_to_string(out).unwrap()).unwrap()
}

/// kubernetes-validate --strict (unknown fields are errors), offline.
pub fn validate(file: &Path) {
    let out = Command::new("kubernetes-validate")
        .args(["--strict", "--no-warn"])
        .arg(file)
        .output()
        .expect("kubernetes-validate is installed (scripts/test installs it)");
    assert!(
        out.status.success(),
        "{}: {}{}",
        file.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn decode(resp: &Value) -> Value {
    assert_eq!(resp["patchType"], "JSONPatch", "{resp}");
    let raw = base64::engine::general_purpose::STANDARD
        .decode(resp["patch"].as_str().unwrap())
        .unwrap();
    serde_json::from_slice(&raw).unwrap()
}

#[test]
fn webhook_injects_a_schema_valid_sidecar_and_enforces_the_floor() {
    let hook = Webhook::start();
    let pod = agent_pod(json!({"intentgate.io/intent": "triage-tickets",
        "intentgate.io/owner": "team-helpdesk", "intentgate.io/exclude-outbound-ports": "5432",
        "intentgate.io/exclude-outbound-cidrs": "10.96.0.0/12"}));
    let resp = hook.review(&pod);
    assert_eq!(resp["allowed"], true, "{resp}");
    let patched = apply_and_validate(hook.dir.path(), &pod, &decode(&resp));

    let inits = patched["spec"]["initContainers"].as_array().unwrap();
    let names: Vec<_> = inits.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "intentgate-iptables",
            "intentgate",
            "intentgate-trust-0",
            "intentgate-trust-1",
            "migrate"
        ]
    );
    let ipt = &inits[0];
    assert_eq!(
        ipt["args"],
        json!([
            "iptables",
            "--proxy-uid",
            "15700",
            "--port",
            "15702",
            "--exclude-ports",
            "5432",
            "--exclude-cidrs",
            "10.96.0.0/12",
            "--block-quic"
        ])
    );
    assert_eq!(
        ipt["securityContext"]["capabilities"],
        json!({"drop": ["ALL"], "add": ["NET_ADMIN", "NET_RAW"]})
    );
    let side = &inits[1];
    assert_eq!(side["restartPolicy"], "Always");
    let sc = &side["securityContext"];
    assert_eq!(sc["runAsUser"], 15700);
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"], json!({"drop": ["ALL"]}));
    assert!(side["resources"]["requests"]["cpu"].is_string());
    assert!(side["resources"]["limits"]["memory"].is_string());
    assert_eq!(
        side["readinessProbe"]["httpGet"],
        json!({"path": "/readyz", "port": 15701})
    );
    // The app containers start only after the sidecar is up with its policy.
    assert_eq!(
        side["startupProbe"]["httpGet"],
        json!({"path": "/readyz", "port": 15701})
    );
    let args = side["args"].as_array().unwrap();
    for want in [
        "support-bot",
        "enforce",
        "triage-tickets",
        "team-helpdesk",
        "0.0.0.0:15701",
    ] {
        assert!(args.contains(&json!(want)), "{want} in {args:?}");
    }
    let bundle_url = args.iter().position(|a| a == "--bundle-url").unwrap();
    assert_eq!(
        args[bundle_url + 1],
        "https://intentgate-inject.intentgate-system.svc/bundles/$(POD_NAMESPACE)",
        "each pod polls its own namespace's bundle (the kubelet expands the variable)"
    );
    let ca = std::fs::read_to_string(hook.dir.path().join("tls.crt")).unwrap();
    assert!(
        side["env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "INTENTGATE_BUNDLE_CA" && e["value"] == ca.as_str()),
        "{}",
        side["env"]
    );
    let env: Vec<(String, String)> = side["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["valueFrom"].is_object())
        .map(|e| {
            (
                e["name"].as_str().unwrap().into(),
                e["valueFrom"]["fieldRef"]["fieldPath"]
                    .as_str()
                    .unwrap()
                    .into(),
            )
        })
        .collect();
    assert_eq!(
        env,
        [
            ("POD_NAMESPACE".into(), "metadata.namespace".into()),
            ("POD_NAME".into(), "metadata.name".into()),
            (
                "POD_SERVICE_ACCOUNT".into(),
                "spec.serviceAccountName".into()
            )
        ]
    );
    // Each app container trusts the bundle its own trust step builds (`k8s_trust`).
    for c in patched["spec"]["containers"].as_array().unwrap() {
        let env = c["env"].as_array().unwrap();
        let bundle = format!(
            "/var/run/intentgate/trust/{}.pem",
            c["name"].as_str().unwrap()
        );
        for var in ["SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS"] {
            let set: Vec<_> = env.iter().filter(|e| e["name"] == var).collect();
            assert_eq!(set.len(), 1, "{var} once in {c}");
            assert_eq!(set[0]["value"], bundle.as_str(), "{var} in {c}");
        }
        for vol in ["intentgate-ca-trust", "intentgate-trust"] {
            assert!(
                c["volumeMounts"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|m| m["name"] == vol && m["readOnly"] == true),
                "{vol} in {c}"
            );
        }
    }
    assert_eq!(
        patched["spec"]["containers"][0]["env"][0]["name"], "LOG",
        "existing env kept"
    );
    let trust = patched["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "intentgate-ca-trust")
        .unwrap();
    assert_eq!(
        trust["secret"]["items"],
        json!([{"key": "tls.crt", "path": "ca.pem"}]),
        "apps get the certificate, never the key"
    );
    assert_eq!(
        patched["metadata"]["annotations"]["intentgate.io/status"],
        "injected"
    );
    assert_eq!(
        patched["metadata"]["labels"]["intentgate.io/sidecar"],
        "injected"
    );

    // Already injected: allowed, no patch.
    let again = hook.review(&patched);
    assert_eq!(again["allowed"], true);
    assert!(again.get("patch").is_none(), "{again}");

    // Bad and floor-violating annotations: refused, the annotation named.
    for (ann, value) in [
        ("intentgate.io/mode", "monitor"),
        ("intentgate.io/mode", "sometimes"),
        ("intentgate.io/agent-id", "billing-bot"),
        ("intentgate.io/exclude-outbound-ports", "22"),
        ("intentgate.io/exclude-outbound-ports", "http"),
        ("intentgate.io/exclude-outbound-cidrs", "0.0.0.0/0"),
        ("intentgate.io/exclude-outbound-cidrs", "not-a-cidr"),
    ] {
        let r = hook.review(&agent_pod(json!({ann: value})));
        assert_eq!(r["allowed"], false, "{ann}={value}: {r}");
        assert_eq!(r["status"]["code"], 403);
        let msg = r["status"]["message"].as_str().unwrap();
        assert!(msg.contains(ann), "{ann}={value}: {msg}");
        assert!(r.get("patch").is_none());
    }
    // A pod without annotations in the floor's namespace: injected with the floor's defaults.
    let plain = hook.review(&agent_pod(json!(null)));
    assert_eq!(plain["allowed"], true);
    let ops = decode(&plain);
    assert!(
        ops.as_array()
            .unwrap()
            .iter()
            .any(|o| o["path"] == "/metadata/annotations")
    );
    let hc = curl(&[
        "-k",
        &format!("https://127.0.0.1:{}/healthz", hook.control.port),
    ]);
    assert_eq!(hc.status, 200);
    let bad = curl(&[
        "-k",
        "--data",
        "{}",
        &format!("https://127.0.0.1:{}/mutate", hook.control.port),
    ]);
    assert_eq!(bad.status, 400);
}
