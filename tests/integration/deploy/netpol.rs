//! The example's egress NetworkPolicies, evaluated as the NetworkPolicy API defines them (the
//! subset they use: matchLabels selectors, numeric ports, `to` peers): an injected pod reaches
//! the bundle server on the control pods' own port and DNS only at kube-dns; a pod without the
//! sidecar reaches nothing.

use serde_json::{Map, Value, json};

use super::cluster::Installation;
use super::find;

/// Where a connection goes: a pod (its namespace's labels and its own) or an outside address.
enum Dest<'a> {
    Pod { ns: &'a Value, labels: &'a Value },
    External,
}

/// Does `selector` (matchLabels only) select `labels`? An empty selector selects everything.
fn selects(selector: &Value, labels: &Value) -> bool {
    assert!(
        selector.get("matchExpressions").is_none(),
        "not evaluated here"
    );
    let empty = Map::new();
    let want = selector["matchLabels"].as_object().unwrap_or(&empty);
    want.iter().all(|(k, v)| &labels[k] == v)
}

fn peer_matches(peer: &Value, policy_ns: &str, dest: &Dest) -> bool {
    assert!(peer.get("ipBlock").is_none(), "not evaluated here");
    let Dest::Pod { ns, labels } = dest else {
        return false; // pod and namespace selectors never match an outside address
    };
    let ns_ok = match peer.get("namespaceSelector") {
        Some(sel) => selects(sel, ns),
        None => ns["kubernetes.io/metadata.name"] == policy_ns,
    };
    ns_ok
        && peer
            .get("podSelector")
            .is_none_or(|sel| selects(sel, labels))
}

/// Is egress from a pod (`labels` in namespace `ns`) to `dest` on `port`/`proto` allowed?
fn allowed(
    policies: &[&Value],
    ns: &str,
    labels: &Value,
    dest: &Dest,
    port: u16,
    proto: &str,
) -> bool {
    let mine: Vec<_> = policies
        .iter()
        .filter(|p| p["metadata"]["namespace"] == ns)
        .filter(|p| selects(&p["spec"]["podSelector"], labels))
        .filter(|p| p["spec"]["policyTypes"].to_string().contains("Egress"))
        .collect();
    if mine.is_empty() {
        return true; // not isolated for egress
    }
    mine.iter().any(|p| {
        p["spec"]["egress"].as_array().unwrap().iter().any(|rule| {
            let port_ok = rule["ports"].as_array().is_none_or(|ports| {
                ports.is_empty()
                    || ports.iter().any(|p| {
                        p["protocol"].as_str().unwrap_or("TCP") == proto
                            && p.get("port")
                                .is_none_or(|n| n.as_u64() == Some(port.into()))
                    })
            });
            let to_ok = rule["to"].as_array().is_none_or(|to| {
                to.is_empty() || to.iter().any(|peer| peer_matches(peer, ns, dest))
            });
            port_ok && to_ok
        })
    })
}

/// A namespace's labels as the API server has them (its name label is added automatically).
fn namespace_labels(docs: &[Value], name: &str) -> Value {
    let mut labels = find(docs, "Namespace", name)["metadata"]["labels"].clone();
    labels["kubernetes.io/metadata.name"] = json!(name);
    labels
}

#[test]
fn deploy_networkpolicy_allows_the_bundle_server_pod_port_and_dns_only_at_kube_dns() {
    let docs = super::example();
    let policies: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] == "NetworkPolicy")
        .collect();
    assert!(policies.len() >= 2);
    // The pod as injected by the rendered control Deployment (it gains the sidecar label).
    let installation = Installation::start(docs.clone());
    let pod = installation.inject("support", "support-bot");
    let injected = &pod["metadata"]["labels"];
    assert_eq!(injected["intentgate.io/sidecar"], "injected");
    let plain = &find(&docs, "Deployment", "support-bot")["spec"]["template"]["metadata"]["labels"];

    let control = find(&docs, "Deployment", "intentgate-inject");
    let control_labels = &control["spec"]["template"]["metadata"]["labels"];
    let port = control["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"]
        .as_u64()
        .unwrap() as u16;
    assert_eq!(port, 8443);
    let system = namespace_labels(&docs, "intentgate-system");
    let kube_system = json!({"kubernetes.io/metadata.name": "kube-system"});
    let support = namespace_labels(&docs, "support");
    let bundles = Dest::Pod {
        ns: &system,
        labels: control_labels,
    };
    let dns = Dest::Pod {
        ns: &kube_system,
        labels: &json!({"k8s-app": "kube-dns"}),
    };
    let other_system = Dest::Pod {
        ns: &kube_system,
        labels: &json!({"k8s-app": "metrics-server"}),
    };
    let neighbour = Dest::Pod {
        ns: &support,
        labels: &json!({"app": "db"}),
    };
    let other_ns = Dest::Pod {
        ns: &system,
        labels: &json!({"app": "something-else"}),
    };

    let from = |labels: &Value, dest: &Dest, port: u16, proto: &str| {
        allowed(&policies, "support", labels, dest, port, proto)
    };
    // Bundles: the control pods' own port (what network plugins match, after the Service's 443).
    assert!(from(injected, &bundles, port, "TCP"));
    assert!(
        !from(injected, &other_ns, port, "TCP"),
        "8443 only to the control pods"
    );
    // DNS: kube-dns only.
    assert!(from(injected, &dns, 53, "UDP"));
    assert!(from(injected, &dns, 53, "TCP"));
    for dest in [&other_system, &neighbour, &Dest::External] {
        assert!(!from(injected, dest, 53, "UDP"));
    }
    // The internet on 80/443, decided by intentgate; nothing else.
    assert!(from(injected, &Dest::External, 443, "TCP"));
    assert!(from(injected, &Dest::External, 80, "TCP"));
    assert!(!from(injected, &Dest::External, 22, "TCP"));
    assert!(
        !from(injected, &Dest::External, 443, "UDP"),
        "no QUIC around the proxy"
    );
    // Without the sidecar: nothing at all.
    for (dest, port, proto) in [
        (&dns, 53, "UDP"),
        (&bundles, port, "TCP"),
        (&Dest::External, 443, "TCP"),
    ] {
        assert!(!from(plain, dest, port, proto));
    }
}
