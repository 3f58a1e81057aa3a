//! Which pods the real webhook injects, skips or refuses: opt-out, host-network and Windows
//! pods, app containers that could defeat the sidecar, reserved names, AdmissionReview
//! versions, and a cluster too old for native sidecars. Real AdmissionReviews over HTTPS (curl);
//! patches applied by PyPI jsonpatch and validated by kubernetes-validate.

use serde_json::{Value, json};

use super::issuer::FakeApi;
use super::k8s::{Webhook, agent_pod, apply_and_validate, decode};
use crate::common::tls::TestCa;
use crate::common::*;

const FLOORS: &str = "
namespaces:
  support:
    service_accounts: {support-bot: [support-bot]}
  locked:
    service_accounts: {support-bot: [support-bot]}
    allow_opt_out: false
  netops:
    service_accounts: {support-bot: [support-bot]}
    allow_net_admin: true
";

fn refused(r: &Value, wanted: &[&str]) {
    assert_eq!(r["allowed"], false, "{r}");
    assert_eq!(r["status"]["code"], 403);
    assert!(r.get("patch").is_none(), "{r}");
    let msg = r["status"]["message"].as_str().unwrap();
    for w in wanted {
        assert!(msg.contains(w), "'{w}' in: {msg}");
    }
}

/// Pods that go without the sidecar: allowed with annotations saying why (the patch, applied
/// and validated, adds nothing else), or refused where the floor forbids it.
#[test]
fn opted_out_host_network_and_windows_pods_are_skipped_unless_the_floor_forbids_it() {
    let hook = Webhook::with(FLOORS);
    let change = |f: &dyn Fn(&mut Value)| {
        let mut p = agent_pod(json!({"team": "helpdesk"}));
        f(&mut p);
        p
    };
    let cases: Vec<(Value, &str)> = vec![
        (
            change(&|p| p["metadata"]["labels"]["intentgate.io/inject"] = json!("false")),
            "opted out (label intentgate.io/inject",
        ),
        (
            change(&|p| p["metadata"]["annotations"]["intentgate.io/inject"] = json!("false")),
            "opted out (annotation intentgate.io/inject",
        ),
        (
            change(&|p| p["spec"]["hostNetwork"] = json!(true)),
            "hostNetwork: true",
        ),
        (
            change(&|p| p["spec"]["os"] = json!({"name": "windows"})),
            "Windows",
        ),
        (
            change(&|p| p["spec"]["nodeSelector"] = json!({"kubernetes.io/os": "windows"})),
            "Windows",
        ),
    ];
    for (pod, why) in cases {
        let r = hook.review(&pod);
        assert_eq!(r["allowed"], true, "{why}: {r}");
        let patched = apply_and_validate(hook.dir.path(), &pod, &decode(&r));
        let ann = &patched["metadata"]["annotations"];
        assert_eq!(ann["intentgate.io/status"], "skipped", "{why}");
        assert!(
            ann["intentgate.io/skip-reason"]
                .as_str()
                .unwrap()
                .contains(why),
            "{ann}"
        );
        assert_eq!(ann["team"], "helpdesk");
        assert_eq!(patched["spec"], pod["spec"], "{why}: nothing injected");
        assert!(patched["metadata"]["labels"]["intentgate.io/sidecar"].is_null());
        // Asked again (webhook reinvocation): left as it is.
        let again = hook.review(&patched);
        assert_eq!(again["allowed"], true);
        assert!(again.get("patch").is_none(), "{again}");
        // Where the floor forbids going without the sidecar: refused, naming the floor.
        let r = hook.review_in("admission.k8s.io/v1", "locked", &pod);
        refused(&r, &[why, "namespace 'locked'", "allow_opt_out: false"]);
    }
    // An opted-out pod may not wear the injected pods' label (the egress policy lets those out).
    let mut p = change(&|p| p["metadata"]["labels"]["intentgate.io/inject"] = json!("false"));
    p["metadata"]["labels"]["intentgate.io/sidecar"] = json!("injected");
    refused(&hook.review(&p), &["intentgate.io/sidecar"]);
    // "true", or anything else, is no opt-out.
    let p = change(&|p| p["metadata"]["annotations"]["intentgate.io/inject"] = json!("no"));
    assert!(
        decode(&hook.review(&p))
            .to_string()
            .contains("intentgate-iptables")
    );
}

/// App containers that could go around the redirect are refused, naming the container; the
/// floor may allow the capabilities, never the proxy's UID.
#[test]
fn containers_that_could_defeat_the_sidecar_are_refused() {
    let hook = Webhook::with(FLOORS);
    let with = |f: &dyn Fn(&mut Value)| {
        let mut p = agent_pod(json!(null));
        f(&mut p);
        p
    };
    let caps = |c: &str| json!({"capabilities": {"add": [c]}});
    let cases: Vec<(Value, &[&str], bool)> = vec![
        (
            with(&|p| p["spec"]["containers"][0]["securityContext"] = json!({"runAsUser": 15700})),
            &["container 'agent'", "UID 15700"],
            false,
        ),
        (
            with(&|p| p["spec"]["securityContext"] = json!({"runAsUser": 15700})),
            &["UID 15700"],
            false,
        ),
        (
            with(&|p| {
                p["spec"]["initContainers"][0]["securityContext"] = json!({"runAsUser": 15700})
            }),
            &["init container 'migrate'", "UID 15700"],
            false,
        ),
        (
            with(&|p| p["spec"]["containers"][1]["securityContext"] = caps("NET_ADMIN")),
            &["container 'helper'", "NET_ADMIN", "allow_net_admin"],
            true,
        ),
        (
            with(&|p| p["spec"]["containers"][0]["securityContext"] = caps("CAP_NET_RAW")),
            &["NET_RAW"],
            true,
        ),
        (
            with(&|p| p["spec"]["containers"][0]["securityContext"] = caps("ALL")),
            &["capability ALL"],
            true,
        ),
        (
            with(&|p| p["spec"]["containers"][0]["securityContext"] = json!({"privileged": true})),
            &["privileged: true"],
            true,
        ),
    ];
    for (pod, wanted, floor_may_allow) in cases {
        refused(&hook.review(&pod), wanted);
        let r = hook.review_in("admission.k8s.io/v1", "netops", &pod);
        assert_eq!(
            r["allowed"], floor_may_allow,
            "{wanted:?} under allow_net_admin: {r}"
        );
    }
    // Other UIDs and capabilities are fine.
    let ok = with(&|p| {
        p["spec"]["containers"][0]["securityContext"] = json!({"runAsUser": 1000, "capabilities": {"add": ["NET_BIND_SERVICE"], "drop": ["ALL"]}})
    });
    assert_eq!(hook.review(&ok)["allowed"], true);
}

/// Our volume names are reserved (no duplicate `intentgate-config`), the CA key and the bundle
/// token are the sidecar's alone, and a v1beta1 review is answered as v1beta1.
#[test]
fn reserved_names_sidecar_only_volumes_and_review_versions() {
    let hook = Webhook::start();
    let mut p = agent_pod(json!(null));
    p["spec"]["volumes"] = json!([{"name": "intentgate-config", "emptyDir": {}}]);
    refused(
        &hook.review(&p),
        &["volume name 'intentgate-config' is reserved"],
    );
    for vol in ["intentgate-ca", "intentgate-token"] {
        let mut p = agent_pod(json!(null));
        p["spec"]["containers"][0]["volumeMounts"] = json!([{"name": vol, "mountPath": "/steal"}]);
        refused(
            &hook.review(&p),
            &["container 'agent'", vol, "only the intentgate sidecar"],
        );
    }
    // The CA certificate alone may be mounted by the pod's own containers.
    let mut p = agent_pod(json!(null));
    p["spec"]["initContainers"][0]["volumeMounts"] =
        json!([{"name": "intentgate-ca-trust", "mountPath": "/ca"}]);
    let r = hook.review(&p);
    let patched = apply_and_validate(hook.dir.path(), &p, &decode(&r));
    // The sidecar alone mounts the key and the token (audience intentgate-bundles, 10 min).
    let volumes = patched["spec"]["volumes"].as_array().unwrap();
    let names: Vec<&str> = volumes
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names.iter().filter(|n| **n == "intentgate-config").count(),
        1
    );
    let token = volumes
        .iter()
        .find(|v| v["name"] == "intentgate-token")
        .unwrap();
    assert_eq!(
        token["projected"]["sources"][0]["serviceAccountToken"],
        json!({"audience": "intentgate-bundles", "expirationSeconds": 600, "path": "token"})
    );
    let spec = &patched["spec"];
    for c in spec["containers"]
        .as_array()
        .unwrap()
        .iter()
        .chain(spec["initContainers"].as_array().unwrap())
    {
        let mounts = c["volumeMounts"].to_string();
        let sidecar = c["name"] == "intentgate";
        for vol in ["\"intentgate-ca\"", "\"intentgate-token\""] {
            assert_eq!(mounts.contains(vol), sidecar, "{vol} in {}", c["name"]);
        }
    }
    let side = spec["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "intentgate")
        .unwrap();
    let args = side["args"].as_array().unwrap();
    let at = args
        .iter()
        .position(|a| a == "--bundle-token-file")
        .unwrap();
    assert_eq!(args[at + 1], "/var/run/secrets/intentgate/token");

    // v1beta1: answered in kind; anything else is a 400 with a JSON error.
    let r = hook.review_in(
        "admission.k8s.io/v1beta1",
        "support",
        &agent_pod(json!(null)),
    );
    assert_eq!(r["allowed"], true);
    assert_eq!(r["patchType"], "JSONPatch");
    for doc in [
        json!({"apiVersion": "admission.k8s.io/v2", "kind": "AdmissionReview", "request": {}}),
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "Pod"}),
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}),
    ] {
        let out = hook.post(&doc);
        assert_eq!(out.status, 400, "{doc}");
        let e = out.json();
        assert_eq!(error_code(&e), "bad_request", "{e}");
    }
}

/// With `kubernetes:` set, the webhook asks the API server for its version: below 1.29 it
/// refuses to inject (a native sidecar would never let the pod start) and says why; skipped
/// pods still pass. The API server is a Python stand-in serving `/version`.
#[test]
fn a_cluster_without_native_sidecars_is_refused_with_the_reason() {
    for (minor, injects) in [("28+", false), ("29", true), ("31+", true)] {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new("API server CA");
        let (cert, key) = ca.server_pem(&["127.0.0.1"]);
        let p = |n: &str| dir.path().join(n);
        std::fs::write(p("api.crt"), cert).unwrap();
        std::fs::write(p("api.key"), key).unwrap();
        std::fs::write(p("api-ca.pem"), &ca.cert_pem).unwrap();
        std::fs::write(p("bearer"), "control-token").unwrap();
        std::fs::write(p("token"), "control-token\n").unwrap();
        std::fs::write(
            p("version.json"),
            json!({"major": "1", "minor": minor,
                   "gitVersion": format!("v1.{}.3-gke.1", minor.trim_end_matches('+'))})
            .to_string(),
        )
        .unwrap();
        let api = FakeApi::start(dir.path(), &p("api.crt"), &p("api.key"));
        let floor = format!(
            "{}kubernetes: {{url: {}, ca_file: {}, token_file: {}}}\n",
            super::k8s::FLOOR,
            api.url(),
            p("api-ca.pem").display(),
            p("token").display()
        );
        let hook = Webhook::with(&floor);
        eventually("version asked", super::bundles::WAIT, || {
            api.requests()
                .iter()
                .any(|r| r == "/version token")
                .then_some(())
        });
        hook.control.logged("v1.");
        let r = hook.review(&agent_pod(json!(null)));
        if injects {
            assert_eq!(r["allowed"], true, "1.{minor}: {r}");
        } else {
            refused(
                &r,
                &["Kubernetes 1.29", "v1.28.3-gke.1", "restartPolicy: Always"],
            );
            let mut skip = agent_pod(json!(null));
            skip["spec"]["hostNetwork"] = json!(true);
            assert_eq!(hook.review(&skip)["allowed"], true);
        }
    }
}
