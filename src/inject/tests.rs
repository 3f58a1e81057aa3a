//! Unit tests of the webhook: the platform floor and the JSON patch (pure functions).

use serde_json::{Value, json};

use super::checks::RESERVED_VOLUMES;
use super::floor::{self, InjectConfig, contains};
use super::patch::{Verdict, mutate};
use super::server::review;

const FLOOR: &str = "
namespaces:
  support:
    service_accounts: {support-bot: [support-bot, triage-bot]}
    min_mode: enforce
    allow_exclude_ports: [5432]
    allow_exclude_cidrs: [10.0.0.0/8]
  sandbox:
    service_accounts: {default: [play]}
    min_mode: monitor
";

fn cfg() -> InjectConfig {
    floor::parse("floor.yaml", FLOOR).unwrap()
}

fn pod(annotations: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "p", "annotations": annotations},
           "spec": {"serviceAccountName": "support-bot",
                    "containers": [{"name": "app", "image": "python:3.12"}]}})
}

fn refused(v: Verdict, annotation: &str) {
    match v {
        Verdict::Refused(msg) => assert!(msg.contains(annotation), "{msg}"),
        other => panic!("expected a refusal naming {annotation}, got {other:?}"),
    }
}

#[test]
fn a_pod_within_the_floor_is_patched_with_both_init_containers() {
    let Verdict::Patch(ops) = mutate(&pod(json!({})), "support", &cfg()) else {
        panic!("expected a patch")
    };
    let inits = &ops[0];
    assert_eq!(inits["path"], "/spec/initContainers");
    assert_eq!(inits["value"][0]["name"], "intentgate-iptables");
    assert_eq!(inits["value"][1]["name"], "intentgate");
    assert_eq!(inits["value"][1]["restartPolicy"], "Always");
    let args = inits["value"][1]["args"].as_array().unwrap();
    assert!(args.contains(&json!("support-bot")) && args.contains(&json!("enforce")));
    assert!(ops.iter().any(|o| o["path"] == "/spec/containers/0/env"));
    assert!(
        ops.iter()
            .any(|o| o["path"] == "/metadata/annotations/intentgate.io~1status")
    );
}

#[test]
fn annotations_may_tighten_but_never_loosen() {
    let c = cfg();
    refused(
        mutate(
            &pod(json!({"intentgate.io/mode": "monitor"})),
            "support",
            &c,
        ),
        "intentgate.io/mode",
    );
    refused(
        mutate(&pod(json!({"intentgate.io/mode": "loud"})), "support", &c),
        "intentgate.io/mode",
    );
    refused(
        mutate(
            &pod(json!({"intentgate.io/agent-id": "root-bot"})),
            "support",
            &c,
        ),
        "intentgate.io/agent-id",
    );
    refused(
        mutate(
            &pod(json!({"intentgate.io/exclude-outbound-ports": "22"})),
            "support",
            &c,
        ),
        "intentgate.io/exclude-outbound-ports",
    );
    refused(
        mutate(
            &pod(json!({"intentgate.io/exclude-outbound-ports": "x"})),
            "support",
            &c,
        ),
        "intentgate.io/exclude-outbound-ports",
    );
    refused(
        mutate(
            &pod(json!({"intentgate.io/exclude-outbound-cidrs": "0.0.0.0/0"})),
            "support",
            &c,
        ),
        "intentgate.io/exclude-outbound-cidrs",
    );
    refused(mutate(&pod(json!({})), "elsewhere", &c), "platform floor");
    // Allowed: a second mapped agent id, an allowed port, a CIDR inside an allowed block.
    let ok = pod(json!({"intentgate.io/agent-id": "triage-bot",
                        "intentgate.io/exclude-outbound-ports": "5432",
                        "intentgate.io/exclude-outbound-cidrs": "10.1.0.0/16"}));
    let Verdict::Patch(ops) = mutate(&ok, "support", &c) else {
        panic!()
    };
    let init_args = ops[0]["value"][0]["args"].to_string();
    assert!(
        init_args.contains("\"5432\"") && init_args.contains("10.1.0.0/16"),
        "{init_args}"
    );
    // Tightening in a monitor namespace is fine.
    let mut p = pod(json!({"intentgate.io/mode": "enforce", "intentgate.io/agent-id": "play"}));
    p["spec"]["serviceAccountName"] = json!("default");
    assert!(matches!(mutate(&p, "sandbox", &c), Verdict::Patch(_)));
}

#[test]
fn already_injected_pods_are_left_alone() {
    let c = cfg();
    let Verdict::Patch(ops) = mutate(&pod(json!({})), "support", &c) else {
        panic!()
    };
    let mut p = pod(json!({"intentgate.io/status": "injected"}));
    p["spec"]["initContainers"] = ops[0]["value"].clone();
    assert_eq!(mutate(&p, "support", &c), Verdict::Unchanged);
    // Claiming injection without the containers (or with another image) is refused.
    refused(
        mutate(
            &pod(json!({"intentgate.io/status": "injected"})),
            "support",
            &c,
        ),
        "intentgate.io/status",
    );
    p["spec"]["initContainers"][1]["image"] = json!("evil/proxy:1");
    refused(mutate(&p, "support", &c), "intentgate.io/status");
    let mut l = pod(json!({}));
    l["metadata"]["labels"] = json!({"intentgate.io/sidecar": "injected"});
    refused(mutate(&l, "support", &c), "intentgate.io/sidecar");
}

/// Every volume the patch adds is reserved: a pod that declares one of them is refused, naming it
/// (it would otherwise get a duplicate volume name).
#[test]
fn every_volume_the_patch_adds_is_reserved() {
    let mut c = cfg();
    c.bundles.url = Some("https://bundles.example/bundles".into());
    let Verdict::Patch(ops) = mutate(&pod(json!({})), "support", &c) else {
        panic!("expected a patch")
    };
    let added: Vec<&str> = ops
        .iter()
        .filter(|o| o["path"] == "/spec/volumes")
        .flat_map(|o| o["value"].as_array().unwrap())
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert!(added.len() >= 6, "{added:?}");
    for name in added {
        assert!(RESERVED_VOLUMES.contains(&name), "{name} is not reserved");
        let mut p = pod(json!({}));
        p["spec"]["volumes"] = json!([{"name": name, "emptyDir": {}}]);
        refused(mutate(&p, "support", &c), name);
    }
}

#[test]
fn review_wraps_the_verdict_with_the_uid() {
    let body = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "u-1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                    "namespace": "support", "operation": "CREATE",
                    "object": pod(json!({"intentgate.io/mode": "monitor"}))}});
    let out = review(&body, &cfg(), None).unwrap();
    assert_eq!(out["response"]["uid"], "u-1");
    assert_eq!(out["response"]["allowed"], false);
    assert!(
        out["response"]["status"]["message"]
            .as_str()
            .unwrap()
            .contains("intentgate.io/mode")
    );
}

#[test]
fn floor_config_is_strict_and_cidr_containment_works() {
    let err = floor::parse("f.yaml", "namespaces: {a: {min_mode: enforce, typo: 1}}").unwrap_err();
    assert!(err.to_string().starts_with("f.yaml:1"), "{err}");
    let err = floor::parse(
        "f.yaml",
        "namespaces:\n  a:\n    allow_exclude_cidrs: [10.0.0.0/99]\n",
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("f.yaml:3") && err.to_string().contains("allow_exclude_cidrs"),
        "{err}"
    );
    let c = |s: &str| s.parse().unwrap();
    assert!(contains(&c("10.0.0.0/8"), &c("10.200.0.0/16")));
    assert!(!contains(&c("10.0.0.0/8"), &c("11.0.0.0/16")));
    assert!(!contains(&c("10.0.0.0/16"), &c("10.0.0.0/8")));
    assert!(contains(&c("0.0.0.0/0"), &c("1.2.3.4")));
    assert!(!contains(&c("10.0.0.0/8"), &c("fd00::/8")));
    assert!(contains(&c("fd00::/8"), &c("fd12::/16")));
}

#[test]
fn bundle_settings_are_checked_at_load_and_name_the_field() {
    for (text, field, line) in [
        ("bundles:\n  url: http://ctl/bundles\n", "bundles.url", 2),
        ("bundles:\n  url: https://ctl/bundles/\n", "bundles.url", 2),
        (
            "\nbundles:\n  ca_file: /nonexistent/ca.pem\n",
            "bundles.ca_file",
            3,
        ),
        (
            "bundles:\n  policy_dir: /nonexistent\n",
            "bundles.policy_dir",
            2,
        ),
    ] {
        let err = floor::parse("f.yaml", text).unwrap_err().to_string();
        assert!(
            err.contains(field) && err.starts_with(&format!("f.yaml:{line}")),
            "{text}: {err}"
        );
    }
    // Without bundles.url the sidecar gets no --bundle-url.
    let patch = serde_json::to_string(&super::template::patch(
        &pod(json!({})),
        &super::template::Sidecar {
            agent: "a".into(),
            owner: None,
            intent: None,
            mode: super::floor::FloorMode::Enforce,
            ports: vec![],
            cidrs: vec![],
            trust: super::trust::Trust::Bundle,
            credential_secrets: vec![],
        },
        &cfg(),
    ))
    .unwrap();
    assert!(!patch.contains("--bundle-url"));
}

#[test]
fn a_port_alone_listens_everywhere_and_versions_are_read_as_providers_write_them() {
    use super::version::KubeVersion;
    assert_eq!(
        super::parse_listen(":8443").unwrap().to_string(),
        "[::]:8443"
    );
    assert_eq!(
        super::parse_listen("8443").unwrap().to_string(),
        "[::]:8443"
    );
    assert_eq!(
        super::parse_listen("0.0.0.0:8443").unwrap().to_string(),
        "0.0.0.0:8443"
    );
    let v = |major: &str, minor: &str| {
        KubeVersion::parse(&json!({"major": major, "minor": minor, "gitVersion": "v"}))
    };
    assert!(v("1", "28+").unwrap().refusal().is_some());
    assert!(v("1", "29").unwrap().refusal().is_none());
    assert!(v("1", "30+").unwrap().refusal().is_none());
    assert!(v("2", "0").unwrap().refusal().is_none());
    assert!(v("1", "").is_none() && v("x", "29").is_none());
}

#[test]
fn serving_bundles_needs_auth_and_endpoints_are_https() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("bundles:\n  policy_dir: {}\n", dir.path().display());
    let err = floor::parse("f.yaml", &text).unwrap_err().to_string();
    assert!(err.contains("bundles.auth"), "{err}");
    let with_auth = format!(
        "{text}  auth:\n    issuer: https://issuer\n    keys: {{jwks_url: {{url: http://x/jwks}}}}\n"
    );
    let err = floor::parse("f.yaml", &with_auth).unwrap_err().to_string();
    assert!(
        err.contains("bundles.auth.keys") && err.contains("https://"),
        "{err}"
    );
    let ok = with_auth.replace("http://x", "https://x");
    let cfg = floor::parse("f.yaml", &ok).unwrap();
    assert_eq!(cfg.bundles.audience(), "intentgate-bundles");
    let err = floor::parse("f.yaml", "kubernetes: {url: http://api}\n").unwrap_err();
    assert!(err.to_string().contains("kubernetes.url"), "{err}");
}

#[test]
fn an_attestation_secret_that_is_not_a_secret_name_is_refused_at_load() {
    let err = floor::parse("f.yaml", "attestation: {secret: Bad_Name}")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("f.yaml") && err.contains("attestation.secret"),
        "{err}"
    );
    let ok = floor::parse("f.yaml", "attestation: {secret: ns-key}").unwrap();
    assert_eq!(ok.attestation.map(|a| a.secret).as_deref(), Some("ns-key"));
}
