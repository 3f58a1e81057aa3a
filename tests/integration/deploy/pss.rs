//! Pod Security Standards, as the PodSecurity admission plugin checks them (the subset a pod
//! spec here can break), applied to the rendered control pods, the example agent's template and a
//! pod injected by the rendered control Deployment: intentgate-system can be `restricted`; an
//! injected pod breaks `baseline` only through the iptables init container (its sidecar and CA
//! trust step meet `restricted`), which is why agent namespaces are labelled `privileged`
//! (docs/kubernetes.md, "Pod Security").

use serde_json::Value;

use super::cluster::{Installation, pod_of};
use super::{find, repo};

/// Capabilities `baseline` allows a container to add.
const BASELINE_CAPS: [&str; 13] = [
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];
/// Volume types `restricted` allows.
const RESTRICTED_VOLUMES: [&str; 8] = [
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

#[derive(Clone, Copy, PartialEq)]
enum Level {
    Baseline,
    Restricted,
}

/// The violations of `level` in a pod spec, each as "CONTAINER: what" ("pod: what").
fn violations(spec: &Value, level: Level) -> Vec<String> {
    let mut v = Vec::new();
    for host in ["hostNetwork", "hostPID", "hostIPC"] {
        if spec[host] == true {
            v.push(format!("pod: {host}"));
        }
    }
    let pod_sc = &spec["securityContext"];
    let containers = ["initContainers", "containers"]
        .iter()
        .flat_map(|k| spec[k].as_array().cloned().unwrap_or_default());
    for c in containers {
        let name = c["name"].as_str().unwrap_or("?");
        let sc = &c["securityContext"];
        let mut bad = |what: &str| v.push(format!("{name}: {what}"));
        if sc["privileged"] == true {
            bad("privileged");
        }
        let adds: Vec<&str> = sc["capabilities"]["add"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        for cap in &adds {
            let allowed = match level {
                Level::Baseline => BASELINE_CAPS.contains(cap),
                Level::Restricted => *cap == "NET_BIND_SERVICE",
            };
            if !allowed {
                bad(&format!("adds capability {cap}"));
            }
        }
        let ports = c["ports"].as_array().cloned().unwrap_or_default();
        if ports
            .iter()
            .any(|p| p["hostPort"].as_u64().unwrap_or(0) != 0)
        {
            bad("hostPort");
        }
        let seccomp = |sc: &Value| sc["seccompProfile"]["type"].as_str().map(str::to_string);
        let profile = seccomp(sc).or_else(|| seccomp(pod_sc));
        if profile.as_deref() == Some("Unconfined") {
            bad("seccomp Unconfined");
        }
        if level == Level::Baseline {
            continue;
        }
        if sc["allowPrivilegeEscalation"] != false {
            bad("allowPrivilegeEscalation is not false");
        }
        let non_root = match sc["runAsNonRoot"].as_bool() {
            Some(b) => b,
            None => pod_sc["runAsNonRoot"] == true,
        };
        if !non_root {
            bad("runAsNonRoot is not true");
        }
        if sc["runAsUser"] == 0 || (sc["runAsUser"].is_null() && pod_sc["runAsUser"] == 0) {
            bad("runAsUser 0");
        }
        if !matches!(profile.as_deref(), Some("RuntimeDefault" | "Localhost")) {
            bad("no RuntimeDefault seccomp profile");
        }
        let drops = sc["capabilities"]["drop"].to_string();
        if !drops.contains("\"ALL\"") {
            bad("does not drop ALL capabilities");
        }
    }
    for vol in spec["volumes"].as_array().cloned().unwrap_or_default() {
        let obj = vol.as_object().unwrap();
        for kind in obj.keys().filter(|k| *k != "name") {
            if kind == "hostPath"
                || (level == Level::Restricted && !RESTRICTED_VOLUMES.contains(&kind.as_str()))
            {
                v.push(format!("pod: volume type {kind}"));
            }
        }
    }
    v
}

#[test]
fn deploy_pod_security_restricted_control_plane_and_privileged_agent_namespaces() {
    let example = super::example();
    // intentgate-system enforces restricted, and its pods meet it.
    let ns = find(&example, "Namespace", "intentgate-system");
    for mode in ["enforce", "warn", "audit"] {
        assert_eq!(
            ns["metadata"]["labels"][format!("pod-security.kubernetes.io/{mode}")],
            "restricted"
        );
    }
    let control = find(&example, "Deployment", "intentgate-inject");
    let got = violations(&control["spec"]["template"]["spec"], Level::Restricted);
    assert!(got.is_empty(), "{got:?}");
    // The agent's own template meets restricted: `warn: restricted` stays quiet for it.
    let agent = find(&example, "Deployment", "support-bot");
    let got = violations(&agent["spec"]["template"]["spec"], Level::Restricted);
    assert!(got.is_empty(), "{got:?}");

    // Injected, it meets neither restricted nor baseline, and only because of the init container:
    // the sidecar and the CA trust step (in the agent's image, as its user) meet restricted.
    let installation = Installation::start(example.clone());
    let pod = installation.inject("support", "support-bot");
    let names: Vec<&str> = pod["spec"]["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["intentgate-iptables", "intentgate", "intentgate-trust-0"]
    );
    let baseline = violations(&pod["spec"], Level::Baseline);
    assert_eq!(
        baseline,
        [
            "intentgate-iptables: adds capability NET_ADMIN",
            "intentgate-iptables: adds capability NET_RAW"
        ]
    );
    let restricted = violations(&pod["spec"], Level::Restricted);
    assert!(!restricted.is_empty());
    assert!(
        restricted
            .iter()
            .all(|v| v.starts_with("intentgate-iptables: ")),
        "{restricted:?}"
    );
    // So the agent namespace enforces privileged, and warns at restricted; the docs show it.
    let labels = &find(&example, "Namespace", "support")["metadata"]["labels"];
    assert_eq!(labels["pod-security.kubernetes.io/enforce"], "privileged");
    assert_eq!(labels["pod-security.kubernetes.io/warn"], "restricted");
    assert_eq!(labels["intentgate.io/inject"], "true");
    for doc in ["docs/kubernetes.md", "docs/security.md"] {
        let text = std::fs::read_to_string(repo().join(doc)).unwrap();
        for needle in [
            "pod-security.kubernetes.io/enforce: privileged",
            "NET_ADMIN",
            "CNI",
        ] {
            assert!(text.contains(needle), "{doc} says {needle}");
        }
    }
    // The checker itself refuses what it should (a pod that is not injected, made worse).
    let mut worse = pod_of(agent, "support");
    worse["spec"]["hostNetwork"] = true.into();
    worse["spec"]["containers"][0]["securityContext"]["privileged"] = true.into();
    let got = violations(&worse["spec"], Level::Baseline);
    assert_eq!(got, ["pod: hostNetwork", "agent: privileged"]);
}
