//! An installation without a cluster: a rendered overlay's control Deployment run here as the
//! kubelet would run it (its ConfigMap and projected volumes laid out under a temp root standing
//! for the pod's filesystem, a serving certificate in the TLS Secret's place, its args and env),
//! and pods reviewed by it as the API server would send them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use serde_json::{Map, Value, json};

use super::{find, validate_all};
use crate::common::tls::TestCa;
use crate::common::*;

/// The control Deployment's `inject` container, running on 127.0.0.1.
pub(super) struct Installation {
    pub docs: Vec<Value>,
    pub root: tempfile::TempDir,
    child: Child,
    pub port: u16,
}

impl Drop for Installation {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const ETC: &str = "/etc/intentgate/";

impl Installation {
    /// Runs the control container of `docs` (a rendered base or overlay).
    pub fn start(docs: Vec<Value>) -> Self {
        let root = tempfile::tempdir().unwrap();
        let local = |s: &str| {
            s.replace(
                ETC,
                &format!("{}/", root.path().join("etc/intentgate").display()),
            )
        };
        let deployment = find(&docs, "Deployment", "intentgate-inject");
        let spec = &deployment["spec"]["template"]["spec"];
        let container = &spec["containers"][0];
        assert_eq!(container["name"], "inject");
        for mount in container["volumeMounts"].as_array().unwrap() {
            let dir = PathBuf::from(local(&format!("{}/", mount["mountPath"].as_str().unwrap())));
            std::fs::create_dir_all(&dir).unwrap();
            let volume = spec["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["name"] == mount["name"])
                .unwrap();
            let sources = match volume["projected"]["sources"].as_array() {
                Some(s) => s.clone(),
                None => vec![volume.clone()],
            };
            for source in sources {
                if let Some(secret) = source["secret"]["secretName"].as_str() {
                    assert_eq!(secret, "intentgate-inject-tls");
                    write_serving_secret(&dir);
                    continue;
                }
                let cm = &source["configMap"];
                let data = config_map(&docs, cm["name"].as_str().unwrap());
                for (key, path) in items(cm, &data) {
                    let file = dir.join(path);
                    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
                    std::fs::write(file, local(data[&key].as_str().unwrap())).unwrap();
                }
            }
        }
        let ready = root.path().join("ready.json");
        let mut cmd = Command::new(BIN);
        for arg in container["args"].as_array().unwrap() {
            let arg = arg.as_str().unwrap();
            cmd.arg(match arg.strip_prefix("--listen=") {
                Some(_) => "--listen=127.0.0.1:0".to_string(),
                None => local(arg),
            });
        }
        cmd.arg("--ready-file").arg(&ready);
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("INTENTGATE_")) {
            cmd.env_remove(k);
        }
        for e in container["env"].as_array().into_iter().flatten() {
            let value = e["value"].as_str().expect("env values are literals");
            cmd.env(e["name"].as_str().unwrap(), value);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let listen: String = eventually("the control container", Duration::from_secs(20), || {
            let v: Value = serde_json::from_str(&std::fs::read_to_string(&ready).ok()?).ok()?;
            v["listen"].as_str().map(str::to_string)
        });
        let port = listen.rsplit(':').next().unwrap().parse().unwrap();
        Installation {
            docs,
            root,
            child,
            port,
        }
    }

    /// The pod's /etc/intentgate/… here.
    pub fn etc(&self, rel: &str) -> PathBuf {
        self.root.path().join("etc/intentgate").join(rel)
    }

    pub fn bundle_url(&self, namespace: &str) -> String {
        format!("https://127.0.0.1:{}/bundles/{namespace}", self.port)
    }

    /// POSTs an AdmissionReview (v1, CREATE) for `pod` to /mutate; the `response`.
    pub fn review(&self, namespace: &str, pod: &Value) -> Value {
        let review = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "3f0b5c8e-0c6a-4c39-9d7e-6f1f3d2a7b10",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": namespace, "operation": "CREATE",
                "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
                "object": pod}});
        let body = self.root.path().join("review.json");
        std::fs::write(&body, review.to_string()).unwrap();
        let out = Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "10",
                "-H",
                "content-type: application/json",
            ])
            .arg("--cacert")
            .arg(self.etc("tls/ca.crt"))
            .arg("--data-binary")
            .arg(format!("@{}", body.display()))
            .arg(format!("https://127.0.0.1:{}/mutate", self.port))
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        v["response"].clone()
    }

    /// The pod the rendered Deployment `name` creates, injected: the patch applied with PyPI
    /// jsonpatch and the result validated (Kubernetes 1.29 and the newest schema).
    pub fn inject(&self, namespace: &str, name: &str) -> Value {
        let pod = pod_of(find(&self.docs, "Deployment", name), namespace);
        let resp = self.review(namespace, &pod);
        assert_eq!(resp["allowed"], true, "{resp}");
        let patch = base64::engine::general_purpose::STANDARD
            .decode(resp["patch"].as_str().unwrap())
            .unwrap();
        let w = |n: &str, v: &[u8]| {
            let p = self.root.path().join(n);
            std::fs::write(&p, v).unwrap();
            p
        };
        let (podf, patchf) = (
            w("pod.json", pod.to_string().as_bytes()),
            w("patch.json", &patch),
        );
        let out = self.root.path().join("patched.json");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/jsonpatch_apply.py");
        let st = Command::new("python3")
            .arg(script)
            .args([&podf, &patchf, &out])
            .status()
            .unwrap();
        assert!(st.success(), "jsonpatch failed");
        let patched: Value = serde_json::from_str(&std::fs::read_to_string(out).unwrap()).unwrap();
        validate_all(std::slice::from_ref(&patched));
        patched
    }
}

/// The Pod a Deployment's template makes, in `namespace`.
pub(super) fn pod_of(deployment: &Value, namespace: &str) -> Value {
    let mut meta = deployment["spec"]["template"]["metadata"].clone();
    meta["name"] = json!(format!(
        "{}-7d9f8-x2x4q",
        deployment["metadata"]["name"].as_str().unwrap()
    ));
    meta["namespace"] = json!(namespace);
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta,
           "spec": deployment["spec"]["template"]["spec"]})
}

/// A rendered ConfigMap's data.
pub(super) fn config_map(docs: &[Value], name: &str) -> Map<String, Value> {
    find(docs, "ConfigMap", name)["data"]
        .as_object()
        .unwrap()
        .clone()
}

/// (key, path) of a configMap volume source: its `items`, else every key.
fn items(cm: &Value, data: &Map<String, Value>) -> Vec<(String, String)> {
    match cm["items"].as_array() {
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
    }
}

/// What cert-manager (or webhook-cert.sh) puts into Secret intentgate-inject-tls, for 127.0.0.1.
fn write_serving_secret(dir: &Path) {
    let ca = TestCa::new("webhook CA");
    let (cert, key) = ca.server_pem(&["127.0.0.1"]);
    std::fs::write(dir.join("tls.crt"), cert).unwrap();
    std::fs::write(dir.join("tls.key"), key).unwrap();
    std::fs::write(dir.join("ca.crt"), &ca.cert_pem).unwrap();
}
