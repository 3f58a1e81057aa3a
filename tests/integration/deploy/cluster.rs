//! An installation without a cluster: a rendered overlay's control Deployment run here as the
//! kubelet would run it (its ConfigMap and projected volumes laid out under a temp root standing
//! for the pod's filesystem, a serving certificate in the TLS Secret's place, its args and env),
//! and pods reviewed by it as the API server would send them. The API server it asks for the
//! service-account issuer's keys and `/version` (through its `kube-api` volume) is an HTTPS
//! stand-in on 127.0.0.1 (`issuer::FakeApi`) serving the keys of the test's own issuer, whose
//! tokens (PyPI joserfc) the sidecars present for their bundles.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use serde_json::{Map, Value, json};

use super::{find, validate_all};
use crate::common::tls::TestCa;
use crate::common::*;
use crate::issuer::{FakeApi, ISSUER, Issuer};

/// The control Deployment's `inject` container, running on 127.0.0.1.
pub(super) struct Installation {
    pub docs: Vec<Value>,
    pub root: tempfile::TempDir,
    child: Child,
    pub port: u16,
    /// The cluster's service-account issuer.
    pub issuer: Issuer,
    /// The API server's stand-in.
    pub api: FakeApi,
}

impl Drop for Installation {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where the control container's volumes are mounted: moved under the temp root.
const MOUNTS: [&str; 2] = ["/etc/intentgate/", "/var/run/secrets/intentgate/"];
/// The API server as the control container reaches it (the issuer is another name for it).
const API: &str = "https://kubernetes.default.svc";
/// The token the kubelet projects into the control container (`serviceAccountToken`).
const CONTROL_TOKEN: &str = "control-token";

impl Installation {
    /// Runs the control container of `docs` (a rendered base or overlay).
    pub fn start(docs: Vec<Value>) -> Self {
        let root = tempfile::tempdir().unwrap();
        let (issuer, api, cluster_ca) = api_server(root.path());
        let local = |s: &str| {
            let mut s = s.to_string();
            for m in MOUNTS {
                s = s.replace(m, &format!("{}{m}", root.path().display()));
            }
            // The API server's URL (followed by a path or the line's end), not the issuer's.
            for end in ["/", "\n"] {
                s = s.replace(&format!("{API}{end}"), &format!("{}{end}", api.url()));
            }
            s
        };
        let deployment = find(&docs, "Deployment", "intentgate-inject");
        let spec = &deployment["spec"]["template"]["spec"];
        let container = &spec["containers"][0];
        assert_eq!(container["name"], "inject");
        for mount in container["volumeMounts"].as_array().unwrap() {
            let path = format!("{}/", mount["mountPath"].as_str().unwrap());
            assert!(MOUNTS.iter().any(|m| path.starts_with(m)), "{path}");
            let dir = PathBuf::from(local(&path));
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
                if let Some(path) = source["serviceAccountToken"]["path"].as_str() {
                    std::fs::write(dir.join(path), CONTROL_TOKEN).unwrap();
                    continue;
                }
                let cm = &source["configMap"];
                let data = match cm["name"].as_str().unwrap() {
                    // Published by the cluster in every namespace: the API server's CA.
                    "kube-root-ca.crt" => {
                        Map::from_iter([("ca.crt".to_string(), json!(cluster_ca.cert_pem))])
                    }
                    name => config_map(&docs, name),
                };
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
        let log = std::fs::File::create(root.path().join("inject.log")).unwrap();
        let child = cmd.stdout(Stdio::null()).stderr(log).spawn().unwrap();
        let listen: String = eventually("the control container", Duration::from_secs(20), || {
            let v: Value = serde_json::from_str(&std::fs::read_to_string(&ready).ok()?).ok()?;
            v["listen"].as_str().map(str::to_string)
        });
        let port = listen.rsplit(':').next().unwrap().parse().unwrap();
        let installation = Installation {
            docs,
            root,
            child,
            port,
            issuer,
            api,
        };
        // Bundles are refused (503) until the issuer's keys are in.
        eventually("the issuer's keys fetched", Duration::from_secs(30), || {
            installation
                .log()
                .contains("service-account issuer keys fetched")
                .then_some(())
        });
        installation
    }

    /// What the control container logged (its stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.root.path().join("inject.log")).unwrap()
    }

    /// The projected token a pod of `namespace` presents to the bundle server, as a file.
    pub fn token_file(&self, namespace: &str) -> PathBuf {
        let file = self.root.path().join(format!("token-{namespace}"));
        if !file.exists() {
            Issuer::write_token(&file, &self.issuer.token(namespace));
        }
        file
    }

    /// The status of `GET /bundles/NAMESPACE`, with `token`'s as the bearer token if given.
    pub fn bundle_status(&self, namespace: &str, token: Option<&Path>) -> u16 {
        let mut cmd = Command::new("curl");
        cmd.args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "10",
        ])
        .arg("--cacert")
        .arg(self.etc("tls/ca.crt"));
        if let Some(t) = token {
            let bearer = std::fs::read_to_string(t).unwrap();
            cmd.arg("-H")
                .arg(format!("authorization: Bearer {}", bearer.trim()));
        }
        let out = cmd.arg(self.bundle_url(namespace)).output().unwrap();
        String::from_utf8(out.stdout).unwrap().parse().unwrap()
    }

    /// A kubeconfig for the API server's stand-in (as a cluster admin's would be).
    pub fn kubeconfig(&self) -> PathBuf {
        let file = self.root.path().join("kubeconfig");
        let ca = self.api.dir.join("ca.crt");
        let cfg = json!({"apiVersion": "v1", "kind": "Config", "current-context": "c",
            "clusters": [{"name": "c", "cluster": {"server": self.api.url(),
                                                   "certificate-authority": ca}}],
            "users": [{"name": "u", "user": {"token": CONTROL_TOKEN}}],
            "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]});
        std::fs::write(&file, cfg.to_string()).unwrap();
        file
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

/// The API server's stand-in serving the issuer's discovery document and keys, and `/version`
/// (1.30), to the control container's token only; the cluster CA that signs its certificate.
fn api_server(root: &Path) -> (Issuer, FakeApi, TestCa) {
    let dir = root.join("kube-api");
    std::fs::create_dir_all(&dir).unwrap();
    let issuer = Issuer::init(&root.join("issuer"));
    std::fs::copy(issuer.jwks(), dir.join("jwks.json")).unwrap();
    let discovery = json!({"issuer": ISSUER, "jwks_uri": format!("{API}/openid/v1/jwks"),
        "response_types_supported": ["id_token"], "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"]});
    let version = json!({"major": "1", "minor": "30", "gitVersion": "v1.30.4"});
    for (file, text) in [
        ("discovery.json", discovery.to_string()),
        ("version.json", version.to_string()),
        ("bearer", CONTROL_TOKEN.to_string()),
    ] {
        std::fs::write(dir.join(file), text).unwrap();
    }
    let ca = TestCa::new("cluster CA");
    let (cert, key) = ca.server_pem(&["127.0.0.1"]);
    std::fs::write(dir.join("ca.crt"), &ca.cert_pem).unwrap();
    std::fs::write(dir.join("tls.crt"), cert).unwrap();
    std::fs::write(dir.join("tls.key"), key).unwrap();
    let api = FakeApi::start(&dir, &dir.join("tls.crt"), &dir.join("tls.key"));
    (issuer, api, ca)
}

/// What cert-manager (or webhook-cert.sh) puts into Secret intentgate-inject-tls, for 127.0.0.1.
fn write_serving_secret(dir: &Path) {
    let ca = TestCa::new("webhook CA");
    let (cert, key) = ca.server_pem(&["127.0.0.1"]);
    std::fs::write(dir.join("tls.crt"), cert).unwrap();
    std::fs::write(dir.join("tls.key"), key).unwrap();
    std::fs::write(dir.join("ca.crt"), &ca.cert_pem).unwrap();
}
