//! deploy/grafana/intentgate.json queries only what intentgate exports: after real traffic
//! (allowed, denied, would-deny, an upstream error, a malformed request, a budget refusal, a
//! credential loaded, a reload), every metric each panel's query
//! names is in the proxy's `/metrics`, with the labels and label values the query uses.

use std::collections::{BTreeMap, BTreeSet};

use crate::common::*;

/// Labels the scrape adds (Kubernetes service discovery) or PromQL itself uses.
const SCRAPE_LABELS: &[&str] = &["namespace", "pod", "le"];

/// `/metrics` as series name -> label -> values seen.
fn scrape(text: &str) -> BTreeMap<String, BTreeMap<String, BTreeSet<String>>> {
    let mut out: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let series = line.rsplit_once(' ').map_or(line, |(s, _)| s);
        let (name, labels) = series.split_once('{').unwrap_or((series, ""));
        let entry = out.entry(name.to_string()).or_default();
        for pair in labels
            .trim_end_matches('}')
            .split(',')
            .filter(|p| !p.is_empty())
        {
            let (k, v) = pair.split_once('=').unwrap();
            entry
                .entry(k.into())
                .or_default()
                .insert(v.trim_matches('"').into());
        }
    }
    out
}

/// A metric a query names, with the `label="value"` matchers of its selector.
type Selector = (String, Vec<(String, String)>);

/// The metrics a PromQL expression names, and the labels of its `by (...)` clauses.
fn query_parts(expr: &str) -> (Vec<Selector>, Vec<String>) {
    let mut metrics = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("intentgate_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = tail[..end].to_string();
        let mut matchers = Vec::new();
        if let Some(sel) = tail[end..].strip_prefix('{') {
            let close = sel.find('}').unwrap();
            for m in sel[..close].split(',') {
                if let Some((k, v)) = m.split_once("=\"") {
                    if !k.ends_with('~') {
                        matchers.push((k.trim().to_string(), v.trim_end_matches('"').to_string()));
                    }
                }
            }
        }
        metrics.push((name, matchers));
        rest = &tail[end..];
    }
    let mut by = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("by (") {
        let tail = &rest[i + 4..];
        let close = tail.find(')').unwrap();
        by.extend(tail[..close].split(',').map(|l| l.trim().to_string()));
        rest = &tail[close..];
    }
    (metrics, by)
}

#[test]
fn every_dashboard_query_names_metrics_and_labels_intentgate_exports() {
    let up = Upstream::start();
    let p = up.addr.port();
    // A port nothing listens on: a call there is an upstream error.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = closed.local_addr().unwrap().port();
    drop(closed);
    // A credential (loaded at start) and a budget of one call, so their metrics have series.
    let secret = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret.path(), "s3cret").unwrap();
    let yaml = format!(
        "agent: {{id: bot, owner: team}}\ncredentials: {{api: {{file: \"{}\"}}}}\nintents:\n  read:\n    allow: [{{hosts: [localhost], ports: [{p}, {dead}], methods: [GET]}}]\n  watch:\n    mode: monitor\n    allow: [{{hosts: [localhost], ports: [{p}], methods: [GET]}}]\n  once:\n    allow: [{{hosts: [localhost], ports: [{p}]}}]\n    budget: {{calls: 1}}\n",
        secret.path().display()
    );
    let proxy = ProxyProc::start(&yaml);
    let call = |intent: &str, method: &str, port: u16| {
        let url = format!("http://localhost:{port}/x");
        let h = format!("intentgate-intent: {intent}");
        curl(&["-x", &proxy.url(), "-H", &h, "-X", method, &url]).status
    };
    assert_eq!(call("read", "GET", p), 200);
    assert_eq!(call("read", "GET", p), 200);
    assert_eq!(call("read", "POST", p), 403);
    assert_eq!(call("watch", "POST", p), 200);
    assert_eq!(call("read", "GET", dead), 502);
    assert_eq!(call("once", "GET", p), 200);
    assert_eq!(call("once", "GET", p), 429);
    assert_eq!(
        proxy.metric("intentgate_refusals_total{error=\"budget_exhausted\"}"),
        1.0
    );
    // Origin-form on the proxy listener: refused before the policy.
    assert_eq!(curl(&[&format!("{}/x", proxy.url())]).status, 400);
    let reload = curl(&["-X", "POST", &proxy.admin_url("/v1/reload")]);
    assert_eq!(reload.status, 200, "{reload:?}");
    proxy.audit_n(7);
    let exported = scrape(&curl(&[&proxy.admin_url("/metrics")]).body);

    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/deploy/grafana/intentgate.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let panels = dash["panels"].as_array().unwrap();
    assert!(panels.len() >= 10, "{}", panels.len());
    let mut checked = 0;
    for panel in panels {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let (metrics, by) = query_parts(expr);
            assert!(!metrics.is_empty(), "{}: {expr}", panel["title"]);
            for (name, matchers) in &metrics {
                let labels = exported.get(name).unwrap_or_else(|| {
                    panic!(
                        "{}: {name} is not exported: {:?}",
                        panel["title"],
                        exported.keys()
                    )
                });
                for (k, v) in matchers {
                    assert!(
                        labels.get(k).is_some_and(|vs| vs.contains(v)),
                        "{}: {name} has no series {k}={v:?}: {labels:?}",
                        panel["title"]
                    );
                }
                for l in by.iter().filter(|l| !SCRAPE_LABELS.contains(&l.as_str())) {
                    assert!(
                        metrics.iter().any(|(n, _)| exported[n].contains_key(l)),
                        "{}: no metric of `{expr}` has label {l}",
                        panel["title"]
                    );
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 15, "{checked}");
}
