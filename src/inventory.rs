//! `intentgate inventory`: from `kubectl get pods -A -o json`, the agent pods that run without
//! the intentgate sidecar and the injected pods without an owner — what the webhook's audit
//! cannot show (a pod created while the webhook was bypassed, or let through without it).
//!
//! An agent pod is one the webhook's selection names (label `intentgate.io/inject=true`, or a
//! namespace so labelled given with `--namespaces`), one carrying any of the webhook's
//! annotations or its label, or one with the sidecar container. Finished pods are left out.
//! Exit codes: 0 nothing found, 1 something found, 2 the input could not be read.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::Path;
use std::process::ExitCode;

use serde::{Deserialize, Serialize};

use crate::inject::checks::{ANN_SKIPPED, OPT_OUT};
use crate::inject::patch::{
    ANN_AGENT, ANN_INTENT, ANN_MODE, ANN_OWNER, ANN_STATUS, LABEL_SIDECAR, SIDECAR,
};

/// `kind: List` (or `PodList`, `NamespaceList`) as kubectl prints it.
#[derive(Deserialize)]
struct List<T> {
    #[serde(default = "Vec::new")]
    items: Vec<T>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Meta {
    name: String,
    namespace: String,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct Pod {
    #[serde(default)]
    metadata: Meta,
    #[serde(default)]
    spec: PodSpec,
    #[serde(default)]
    status: PodStatus,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct PodSpec {
    containers: Vec<Named>,
    init_containers: Vec<Named>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Named {
    name: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PodStatus {
    phase: Option<String>,
}

#[derive(Deserialize)]
struct Namespace {
    #[serde(default)]
    metadata: Meta,
}

/// What is wrong with an agent pod.
#[derive(Serialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "snake_case")]
pub enum Problem {
    /// It runs without the intentgate sidecar: its calls are not governed.
    NoSidecar,
    /// It has the sidecar but no `intentgate.io/owner`: nobody answers for it.
    NoOwner,
}

impl Problem {
    fn text(self) -> &'static str {
        match self {
            Problem::NoSidecar => "no sidecar",
            Problem::NoOwner => "no owner",
        }
    }
}

/// One pod to look at.
#[derive(Serialize, Debug)]
pub struct Finding {
    pub namespace: String,
    pub pod: String,
    pub agent: Option<String>,
    pub problem: Problem,
    pub detail: String,
}

/// What the inventory found.
#[derive(Serialize, Debug, Default)]
pub struct Inventory {
    pub agent_pods: usize,
    pub injected: usize,
    pub findings: Vec<Finding>,
}

/// Looks through `pods` (a `kubectl get pods -o json` document); pods in `namespaces` (labelled
/// for injection) count as agent pods too.
pub fn inspect(pods: &str, namespaces: Option<&str>) -> Result<Inventory, String> {
    let pods: List<Pod> = serde_json::from_str(pods).map_err(|e| format!("not a pod list: {e}"))?;
    let selected: BTreeSet<String> = match namespaces {
        None => BTreeSet::new(),
        Some(text) => serde_json::from_str::<List<Namespace>>(text)
            .map_err(|e| format!("not a namespace list: {e}"))?
            .items
            .into_iter()
            .filter(|n| n.metadata.labels.get(OPT_OUT).is_some_and(|v| v == "true"))
            .map(|n| n.metadata.name)
            .collect(),
    };
    let mut inv = Inventory::default();
    for pod in pods.items {
        if matches!(pod.status.phase.as_deref(), Some("Succeeded" | "Failed")) {
            continue;
        }
        let m = &pod.metadata;
        let injected = pod
            .spec
            .containers
            .iter()
            .chain(&pod.spec.init_containers)
            .any(|c| c.name == SIDECAR);
        let marked = m.labels.get(OPT_OUT).is_some_and(|v| v == "true")
            || m.labels.contains_key(LABEL_SIDECAR)
            || [ANN_AGENT, ANN_OWNER, ANN_INTENT, ANN_MODE, ANN_STATUS]
                .iter()
                .any(|a| m.annotations.contains_key(*a));
        if !(injected || marked || selected.contains(&m.namespace)) {
            continue;
        }
        inv.agent_pods += 1;
        let finding = |problem, detail: String| Finding {
            namespace: m.namespace.clone(),
            pod: m.name.clone(),
            agent: m.annotations.get(ANN_AGENT).cloned(),
            problem,
            detail,
        };
        if !injected {
            let detail = match m.annotations.get(ANN_SKIPPED) {
                Some(why) => format!("let through without it: {why}"),
                None => "not injected (created while the webhook was not called, or before it)"
                    .to_string(),
            };
            inv.findings.push(finding(Problem::NoSidecar, detail));
            continue;
        }
        inv.injected += 1;
        if m.annotations
            .get(ANN_OWNER)
            .is_none_or(|o| o.trim().is_empty())
        {
            inv.findings.push(finding(
                Problem::NoOwner,
                format!("injected, but the pod has no {ANN_OWNER} annotation"),
            ));
        }
    }
    inv.findings
        .sort_by(|a, b| (&a.namespace, &a.pod).cmp(&(&b.namespace, &b.pod)));
    Ok(inv)
}

/// Reads a file, or stdin for `-`.
fn read(path: &Path) -> Result<String, String> {
    let mut text = String::new();
    let r = if path == Path::new("-") {
        std::io::stdin().read_to_string(&mut text).map(|_| ())
    } else {
        std::fs::read_to_string(path).map(|t| text = t)
    };
    r.map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    Ok(text)
}

/// Runs `intentgate inventory`.
pub fn main(pods: &Path, namespaces: Option<&Path>, json: bool) -> ExitCode {
    let inv = read(pods).and_then(|p| {
        let ns = namespaces.map(read).transpose()?;
        inspect(&p, ns.as_deref()).map_err(|e| format!("{}: {e}", pods.display()))
    });
    let inv = match inv {
        Ok(i) => i,
        Err(e) => {
            eprintln!("intentgate: {e}");
            return ExitCode::from(2);
        }
    };
    let output = if json {
        match serde_json::to_string_pretty(&inv) {
            Ok(s) => s + "\n",
            Err(e) => {
                eprintln!("intentgate: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        text(&inv)
    };
    // A reader that went away (`| head`) is not an error.
    if let Err(e) = std::io::stdout().lock().write_all(output.as_bytes()) {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("intentgate: cannot write the output: {e}");
            return ExitCode::from(2);
        }
    }
    if inv.findings.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// The inventory as an aligned table and a summary line.
pub fn text(inv: &Inventory) -> String {
    let mut rows = vec![[
        "NAMESPACE".to_string(),
        "POD".to_string(),
        "AGENT".to_string(),
        "PROBLEM".to_string(),
        "DETAIL".to_string(),
    ]];
    for f in &inv.findings {
        rows.push([
            f.namespace.clone(),
            f.pod.clone(),
            f.agent.clone().unwrap_or_else(|| "-".to_string()),
            f.problem.text().to_string(),
            f.detail.clone(),
        ]);
    }
    let mut out = String::new();
    if !inv.findings.is_empty() {
        let widths: Vec<usize> = (0..4)
            .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
            .collect();
        for r in &rows {
            for (i, w) in widths.iter().enumerate() {
                out.push_str(&format!("{:<w$}  ", r[i]));
            }
            out.push_str(&r[4]);
            out.push('\n');
        }
    }
    let no_sidecar = inv
        .findings
        .iter()
        .filter(|f| f.problem == Problem::NoSidecar)
        .count();
    out.push_str(&format!(
        "{} agent pods: {} injected, {} without the sidecar, {} injected without an owner\n",
        inv.agent_pods,
        inv.injected,
        no_sidecar,
        inv.findings.len() - no_sidecar
    ));
    out
}
