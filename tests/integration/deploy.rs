//! deploy/: the Kustomize base (deploy/kubernetes, the control plane) and the example overlay
//! (deploy/example, one agent namespace) rendered with `kubectl kustomize` and validated with
//! kubernetes-validate --strict for Kubernetes 1.29 (the minimum: native sidecars) and the newest
//! schema it ships; the control Deployment run here as rendered (`cluster`); the NetworkPolicy,
//! Pod Security (`pss`), the images (`docker`) and the docs' install walk (`walk`) checked.

mod cluster;
mod docker;
mod netpol;
mod pss;
mod walk;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

use crate::common::*;
use cluster::Installation;

pub(crate) fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `kubectl kustomize DIR`, one JSON value per document.
pub(crate) fn render(dir: &Path) -> Vec<Value> {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .expect("kubectl is installed (scripts/test installs it)");
    assert!(
        out.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    parse_yaml(&String::from_utf8(out.stdout).unwrap())
}

pub(crate) fn parse_yaml(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| <Value as serde::Deserialize>::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

/// The base and the example overlay, rendered.
fn base() -> Vec<Value> {
    render(&repo().join("deploy/kubernetes"))
}
fn example() -> Vec<Value> {
    render(&repo().join("deploy/example"))
}

/// The one document of `kind` named `name`.
pub(crate) fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    let all: Vec<_> = docs
        .iter()
        .filter(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .collect();
    assert_eq!(all.len(), 1, "one {kind} {name}");
    all[0]
}

/// 1.29 and the newest schema kubernetes-validate ships (e.g. "1.37.0").
fn versions() -> &'static [String] {
    static V: OnceLock<Vec<String>> = OnceLock::new();
    V.get_or_init(|| {
        let out = Command::new("python3")
            .args([
                "-c",
                "import kubernetes_validate, os\n\
                 d = os.path.join(os.path.dirname(kubernetes_validate.__file__), 'kubernetes-json-schema')\n\
                 v = [tuple(int(x) for x in n[1:].split('-')[0].split('.')) for n in os.listdir(d) if n.endswith('-local-strict')]\n\
                 print('.'.join(map(str, max(v))))",
            ])
            .output()
            .expect("python3 with kubernetes-validate");
        let newest = String::from_utf8(out.stdout).unwrap().trim().to_string();
        assert!(newest.starts_with("1."), "newest schema: {newest:?}");
        vec!["1.29.0".to_string(), newest]
    })
}

/// kubernetes-validate --strict of every document, for each of [`versions`].
pub(crate) fn validate_all(docs: &[Value]) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("docs.yaml");
    let text: Vec<String> = docs.iter().map(Value::to_string).collect();
    std::fs::write(&file, text.join("\n---\n")).unwrap();
    for v in versions() {
        let out = Command::new("kubernetes-validate")
            .args(["--strict", "-k", v])
            .arg(&file)
            .output()
            .expect("kubernetes-validate is installed (scripts/test installs it)");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "Kubernetes {v}: {stdout}{stderr}");
        let passed = stdout.lines().filter(|l| l.contains(" passed ")).count();
        assert_eq!(passed, docs.len(), "Kubernetes {v}: {stdout}{stderr}");
    }
}

const LABELS: [&str; 6] = [
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/component",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/managed-by",
];

/// Both renders validate for 1.29 and the newest schema; the base is the control plane only
/// (no agent namespace, nothing injected until an overlay lists one); the MutatingWebhook
/// selectors match the inject label: every pod of a labelled namespace, labelled pods elsewhere.
#[test]
fn deploy_manifests_render_and_validate() {
    let base = base();
    validate_all(&base);
    let kinds: Vec<&str> = base.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    for k in [
        "Namespace",
        "PriorityClass",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "ConfigMap",
        "Deployment",
        "PodDisruptionBudget",
        "Service",
        "MutatingWebhookConfiguration",
    ] {
        assert!(kinds.contains(&k), "{k} in {kinds:?}");
    }
    assert!(
        !kinds.contains(&"NetworkPolicy"),
        "agent namespaces are the overlay's"
    );
    let namespaces: Vec<_> = base
        .iter()
        .filter_map(|d| d["metadata"]["namespace"].as_str())
        .collect();
    assert!(
        namespaces.iter().all(|n| *n == "intentgate-system"),
        "{namespaces:?}"
    );
    let hook = find(&base, "MutatingWebhookConfiguration", "intentgate-inject");
    assert!(
        hook["webhooks"]
            .to_string()
            .contains("intentgate.io/inject")
    );
    for w in hook["webhooks"].as_array().unwrap() {
        assert_eq!(w["clientConfig"]["service"]["path"], "/mutate");
    }
    // In a labelled namespace every pod reaches the webhook, labelled or not (no object
    // selector); elsewhere only a labelled pod does. docs/kubernetes.md says so.
    let hooks = hook["webhooks"].as_array().unwrap();
    let named = |n: &str| hooks.iter().find(|w| w["name"] == n).unwrap();
    let ns = named("namespace.inject.intentgate.io");
    assert!(ns["objectSelector"].is_null(), "{ns}");
    assert!(
        ns["namespaceSelector"]
            .to_string()
            .contains("intentgate.io/inject")
    );
    let pod = named("pod.inject.intentgate.io");
    assert_eq!(
        pod["objectSelector"]["matchLabels"]["intentgate.io/inject"],
        "true"
    );
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/kubernetes.md"))
        .unwrap()
        .replace('\n', " ");
    assert!(
        doc.contains("In a labelled namespace every pod reaches the webhook, labelled or not"),
        "docs/kubernetes.md"
    );

    let example = example();
    validate_all(&example);
    assert_eq!(
        example.len(),
        base.len() + 7,
        "the base and the support namespace"
    );
    // The example sidecar config is a valid intentgate config.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("sidecar.yaml");
    let side = cluster::config_map(&example, "intentgate-sidecar");
    std::fs::write(&f, side["config.yaml"].as_str().unwrap()).unwrap();
    let (code, out, err) = run_cli(&["check", "--config", f.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
}

/// Every rendered object (and the pod templates) carries the six recommended labels; the
/// control plane's say name intentgate, part-of intentgate, managed-by kustomize.
#[test]
fn deploy_every_rendered_object_carries_the_recommended_labels() {
    let base = base();
    for (what, docs) in [("base", &base), ("example", &example())] {
        for d in docs.iter() {
            let mut labelled = vec![&d["metadata"]["labels"]];
            if d["kind"] == "Deployment" {
                labelled.push(&d["spec"]["template"]["metadata"]["labels"]);
            }
            for labels in labelled {
                for l in LABELS {
                    assert!(
                        labels[l].as_str().is_some_and(|v| !v.is_empty()),
                        "{what}: {} {} lacks {l}: {labels}",
                        d["kind"],
                        d["metadata"]["name"]
                    );
                }
            }
        }
    }
    for d in &base {
        let labels = &d["metadata"]["labels"];
        assert_eq!(labels["app.kubernetes.io/name"], "intentgate");
        assert_eq!(labels["app.kubernetes.io/part-of"], "intentgate");
        assert_eq!(labels["app.kubernetes.io/managed-by"], "kustomize");
        assert_eq!(
            labels["app.kubernetes.io/version"],
            env!("CARGO_PKG_VERSION")
        );
    }
}

/// A relative path from `from` to `to` (kustomize refuses absolute resource paths).
fn relative(from: &Path, to: &Path) -> PathBuf {
    let mut p = PathBuf::new();
    for _ in from.components().skip(1) {
        p.push("..");
    }
    p.join(to.strip_prefix("/").unwrap())
}

/// The image is named once: an overlay's `images:` entries change the control Deployment's
/// image, and the sidecar and init images it injects (run here: a pod reviewed by the rendered
/// control container gets the overridden images). Without the override, the release's images.
#[test]
fn deploy_images_override_reaches_the_control_deployment_and_the_injected_pod() {
    let plain = Installation::start(example());
    let pod = plain.inject("support", "support-bot");
    let inits = &pod["spec"]["initContainers"];
    let release = |name: &str| format!("ghcr.io/intentgate/{name}:{}", env!("CARGO_PKG_VERSION"));
    assert_eq!(inits[0]["image"], release("intentgate-init"), "{inits}");
    assert_eq!(inits[1]["image"], release("intentgate"), "{inits}");
    let control = &find(&plain.docs, "Deployment", "intentgate-inject")["spec"]["template"]["spec"];
    assert_eq!(control["containers"][0]["image"], release("intentgate"));
    // The image is written once in the sources, in the control container.
    let mut named = 0;
    for f in ["deploy/kubernetes", "deploy/example"] {
        for e in std::fs::read_dir(repo().join(f)).unwrap() {
            let text = std::fs::read_to_string(e.unwrap().path()).unwrap();
            named += text.matches("ghcr.io/intentgate/intentgate:").count();
        }
    }
    assert_eq!(named, 1, "the sidecar image is named once in deploy/");

    let dir = tempfile::tempdir().unwrap();
    let digest = format!("sha256:{}", "ab".repeat(32));
    std::fs::write(
        dir.path().join("kustomization.yaml"),
        format!(
            "resources:\n  - {}\nimages:\n\
             \x20 - {{name: ghcr.io/intentgate/intentgate, newName: registry.example.com/mirror/intentgate, newTag: 0.1.0-rc1}}\n\
             \x20 - {{name: ghcr.io/intentgate/intentgate-init, newName: registry.example.com/mirror/intentgate-init, digest: \"{digest}\"}}\n",
            relative(dir.path(), &repo().join("deploy/example")).display()
        ),
    )
    .unwrap();
    let docs = render(dir.path());
    validate_all(&docs);
    let mirrored = Installation::start(docs);
    let control =
        &find(&mirrored.docs, "Deployment", "intentgate-inject")["spec"]["template"]["spec"];
    assert_eq!(
        control["containers"][0]["image"],
        "registry.example.com/mirror/intentgate:0.1.0-rc1"
    );
    let pod = mirrored.inject("support", "support-bot");
    let inits = &pod["spec"]["initContainers"];
    assert_eq!(inits[0]["name"], "intentgate-iptables");
    assert_eq!(
        inits[0]["image"],
        format!("registry.example.com/mirror/intentgate-init@{digest}")
    );
    assert_eq!(inits[1]["name"], "intentgate");
    assert_eq!(
        inits[1]["image"],
        "registry.example.com/mirror/intentgate:0.1.0-rc1"
    );
    // The agent's own image is not ours to change.
    assert_eq!(pod["spec"]["containers"][0]["image"], "python:3.12-slim");
}

/// The control Deployment stays available: a PodDisruptionBudget and topology spread over
/// nodes and zones that select its pods, a priority class that exists, rolling updates that keep
/// every ready replica; and the webhook's failurePolicy and timeoutSeconds are the values
/// docs/kubernetes.md states (with their trade-off).
#[test]
fn deploy_control_deployment_is_highly_available_and_its_webhook_settings_are_documented() {
    let docs = base();
    let d = find(&docs, "Deployment", "intentgate-inject");
    let labels = d["spec"]["template"]["metadata"]["labels"]
        .as_object()
        .unwrap();
    let selects = |selector: &Value| {
        let m = selector["matchLabels"].as_object().unwrap();
        !m.is_empty() && m.iter().all(|(k, v)| labels.get(k) == Some(v))
    };
    let replicas = d["spec"]["replicas"].as_u64().unwrap();
    assert!(replicas >= 2);
    assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"], 0);
    let pdb = find(&docs, "PodDisruptionBudget", "intentgate-inject");
    assert!(selects(&pdb["spec"]["selector"]));
    let min = pdb["spec"]["minAvailable"].as_u64().unwrap();
    assert!(
        min >= 1 && min < replicas,
        "drains can proceed, one pod at a time"
    );
    let spec = &d["spec"]["template"]["spec"];
    let spread = spec["topologySpreadConstraints"].as_array().unwrap();
    let keys: Vec<_> = spread
        .iter()
        .map(|c| c["topologyKey"].as_str().unwrap())
        .collect();
    assert_eq!(
        keys,
        ["kubernetes.io/hostname", "topology.kubernetes.io/zone"]
    );
    assert!(spread.iter().all(|c| selects(&c["labelSelector"])));
    let class = find(
        &docs,
        "PriorityClass",
        spec["priorityClassName"].as_str().unwrap(),
    );
    let value = class["value"].as_i64().unwrap();
    assert!(
        value > 0 && value < 1_000_000_000,
        "above workloads, below system-*"
    );
    let service = &find(&docs, "Service", "intentgate-inject")["spec"]["selector"];
    assert!(selects(&serde_json::json!({ "matchLabels": service })));

    let doc = std::fs::read_to_string(repo().join("docs/kubernetes.md")).unwrap();
    let documented = |setting: &str| -> String {
        let row = doc
            .lines()
            .find(|l| l.starts_with(&format!("| `{setting}` |")))
            .unwrap_or_else(|| panic!("docs/kubernetes.md has a row for {setting}"));
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        assert!(cells[3].len() > 40, "{setting}: its trade-off is explained");
        cells[2].trim_matches('`').to_string()
    };
    let hook = find(&docs, "MutatingWebhookConfiguration", "intentgate-inject");
    for w in hook["webhooks"].as_array().unwrap() {
        assert_eq!(w["failurePolicy"], documented("failurePolicy").as_str());
        assert_eq!(
            w["timeoutSeconds"].to_string(),
            documented("timeoutSeconds")
        );
    }
}

/// deploy/ as one system: the example's control Deployment run as rendered (its projected
/// policy volume, its inject config, the issuer's keys from the API server), and the example
/// sidecar config checked against the bundle it serves to namespace support: the namespace's
/// catalog arrives, the global Rego tests pass, the injected bundle URL names the Service; only
/// a token of namespace support gets that bundle.
#[test]
fn deploy_policy_is_served_as_bundles_and_passes_its_rego_tests() {
    let control = Installation::start(example());
    let inject = cluster::config_map(&control.docs, "intentgate-inject");
    assert!(
        inject["inject.yaml"]
            .as_str()
            .unwrap()
            .contains("url: https://intentgate-inject.intentgate-system.svc/bundles"),
        "sidecars are sent to the Service"
    );
    let (code, stdout, stderr) = walk::with_bundle(&control, &["check"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("2 passed, 0 failed"), "{stdout}");
    assert!(stdout.contains("1 intents"), "{stdout}");
    // The namespace's catalog grants the ticket API.
    let (code, stdout, stderr) = walk::with_bundle(
        &control,
        &[
            "explain",
            "--intent",
            "triage-tickets",
            "GET",
            "https://acme.zendesk.com/api/v2/tickets/42",
        ],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    // Bundle auth as deployed: no token 401, another namespace's bundle or token 403.
    let support = control.token_file("support");
    assert_eq!(control.bundle_status("support", Some(&support)), 200);
    assert_eq!(control.bundle_status("support", None), 401);
    assert_eq!(control.bundle_status("billing", Some(&support)), 403);
    let billing = control.token_file("billing");
    assert_eq!(control.bundle_status("support", Some(&billing)), 403);
}

/// The example restates the base's whole inject config (a ConfigMap value is one string): apart
/// from its floor (`namespaces`) it must say what the base says, so a key added to the base (e.g.
/// `bundles.auth`) cannot go missing from the overlay.
#[test]
fn deploy_example_inject_config_is_the_base_s_with_its_floor() {
    // Each inject.yaml without its floor, and the floor.
    let split = |docs: &[Value]| {
        let cm = cluster::config_map(docs, "intentgate-inject");
        let mut v: Value = serde_yaml::from_str(cm["inject.yaml"].as_str().unwrap()).unwrap();
        let floor = v.as_object_mut().unwrap().remove("namespaces").unwrap();
        (v, floor)
    };
    let ((base, none), (example, floor)) = (split(&base()), split(&example()));
    assert!(none.as_object().unwrap().is_empty() && floor["support"].is_object());
    assert_eq!(base, example);
}
