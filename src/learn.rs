//! Learn mode: from audit records (of one `run --learn`, or collected across a fleet), the minimal
//! intent catalog that would have allowed exactly the calls seen — hosts exact, paths generalised
//! only where IDs vary (numeric, UUID or long hex segments → `*`). A reviewed starting point.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::config::{IntentSpec, ScopeRule};

/// The intent name given to calls that declared none.
pub const UNNAMED: &str = "learned";

/// Reads audit records (JSON lines) from files; names the file and line of a bad one.
pub fn read_audit(files: &[impl AsRef<Path>]) -> Result<Vec<serde_json::Value>, String> {
    let mut out = Vec::new();
    for f in files {
        let f = f.as_ref();
        let text =
            std::fs::read_to_string(f).map_err(|e| format!("{}: cannot read: {e}", f.display()))?;
        for (i, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let v = serde_json::from_str(line)
                .map_err(|e| format!("{}:{}: not an audit record: {e}", f.display(), i + 1))?;
            out.push(v);
        }
    }
    Ok(out)
}

/// Whether a record is a call the agent made (not the setup of an intercepted tunnel).
pub fn is_call(r: &serde_json::Value) -> bool {
    !(r["method"] == "CONNECT" && r["connection"] == "intercepted") && r["decision"] != "error"
}

fn generalise(path: &str) -> String {
    let segs: Vec<&str> = path.split('/').collect();
    segs.iter()
        .map(|s| {
            let id_like = (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                || (s.len() == 36
                    && s.bytes().filter(|b| *b == b'-').count() == 4
                    && s.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'))
                || (s.len() >= 16 && s.bytes().all(|b| b.is_ascii_hexdigit()));
            if id_like { "*" } else { s }
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[derive(Default)]
struct Seen {
    methods: BTreeSet<String>,
    paths: BTreeSet<String>,
    /// A spliced tunnel was seen: its paths are unknown, so none may be required.
    any_path: bool,
}

/// The catalog that permits exactly the calls in `records` (per intent, per host and port).
pub fn catalog(records: &[serde_json::Value]) -> BTreeMap<String, IntentSpec> {
    let mut by: BTreeMap<String, BTreeMap<(String, u16), Seen>> = BTreeMap::new();
    let mut calls: BTreeMap<String, usize> = BTreeMap::new();
    for r in records.iter().filter(|r| is_call(r)) {
        let intent = r["intent"]["name"].as_str().unwrap_or(UNNAMED).to_string();
        let (Some(host), Some(port)) = (r["host"].as_str(), r["port"].as_u64()) else {
            continue;
        };
        *calls.entry(intent.clone()).or_default() += 1;
        let seen = by
            .entry(intent)
            .or_default()
            .entry((host.to_string(), port as u16))
            .or_default();
        match (r["method"].as_str(), r["path"].as_str()) {
            (Some("CONNECT"), _) | (_, None) | (_, Some("")) => seen.any_path = true,
            (Some(m), Some(p)) => {
                seen.methods.insert(m.to_string());
                seen.paths.insert(generalise(p));
            }
            _ => {}
        }
    }
    by.into_iter()
        .map(|(intent, dests)| {
            let allow = dests
                .into_iter()
                .map(|((host, port), s)| ScopeRule {
                    hosts: vec![host],
                    ports: Some(vec![port]),
                    methods: (!s.any_path && !s.methods.is_empty())
                        .then(|| s.methods.into_iter().collect()),
                    paths: (!s.any_path && !s.paths.is_empty())
                        .then(|| s.paths.into_iter().collect()),
                    body_methods: None,
                })
                .collect();
            let n = calls.get(&intent).copied().unwrap_or(0);
            let spec = IntentSpec {
                description: format!("learned from {n} calls; review before enforcing"),
                allow,
                ..IntentSpec::default()
            };
            (intent, spec)
        })
        .collect()
}

/// The catalog as YAML, in the config's own `intents:` format.
pub fn to_yaml(catalog: &BTreeMap<String, IntentSpec>, source: &str) -> String {
    let body =
        serde_yaml::to_string(&serde_json::json!({ "intents": catalog })).unwrap_or_default();
    format!(
        "# Learned by intentgate from {source}.\n# A least-privilege starting point: review it, then enforce it.\n{body}"
    )
}

/// Learns from the records of this process run in `audit` and writes the catalog to `out`;
/// the number of intents written.
pub fn write_learned(audit: &Path, out: &Path, source: &str) -> Result<usize, String> {
    let boot = format!("{:016x}", crate::ids::boot_id());
    let records: Vec<serde_json::Value> = read_audit(&[audit])?
        .into_iter()
        .filter(|r| r["boot_id"] == boot.as_str())
        .collect();
    let c = catalog(&records);
    std::fs::write(out, to_yaml(&c, source))
        .map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    Ok(c.len())
}

/// A per-agent, per-intent count of what was seen, for people.
pub fn describe(records: &[serde_json::Value]) -> String {
    let mut counts: BTreeMap<(String, String), (usize, BTreeSet<String>)> = BTreeMap::new();
    for r in records.iter().filter(|r| is_call(r)) {
        let agent = r["agent"]["id"].as_str().unwrap_or("?").to_string();
        let intent = r["intent"]["name"].as_str().unwrap_or(UNNAMED).to_string();
        let e = counts.entry((agent, intent)).or_default();
        e.0 += 1;
        if let (Some(h), Some(p)) = (r["host"].as_str(), r["port"].as_u64()) {
            e.1.insert(format!("{h}:{p}"));
        }
    }
    let mut out = String::new();
    for ((agent, intent), (n, dests)) in counts {
        out.push_str(&format!(
            "  agent {agent}, intent {intent}: {n} calls to {}\n",
            dests.into_iter().collect::<Vec<_>>().join(", ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn learns_minimal_rules_and_generalises_ids() {
        let rec = |intent: Option<&str>,
                   m: &str,
                   h: &str,
                   port: u16,
                   p: Option<&str>,
                   conn: &str| {
            json!({"intent": {"name": intent}, "method": m, "host": h, "port": port, "path": p, "connection": conn, "decision": "would_deny", "agent": {"id": "a"}})
        };
        let records = vec![
            rec(
                Some("t"),
                "GET",
                "api.x.com",
                443,
                Some("/v2/tickets/4711"),
                "intercepted",
            ),
            rec(
                Some("t"),
                "GET",
                "api.x.com",
                443,
                Some("/v2/tickets/4712"),
                "intercepted",
            ),
            rec(
                Some("t"),
                "PUT",
                "api.x.com",
                443,
                Some("/v2/tickets/4712/labels"),
                "intercepted",
            ),
            rec(
                Some("t"),
                "GET",
                "api.x.com",
                443,
                Some("/v2/users/550e8400-e29b-41d4-a716-446655440000"),
                "intercepted",
            ),
            rec(Some("t"), "CONNECT", "api.x.com", 443, None, "intercepted"),
            rec(None, "CONNECT", "db.x.com", 5432, None, "connect"),
        ];
        let c = catalog(&records);
        let t = &c["t"].allow[0];
        assert_eq!(t.hosts, ["api.x.com"]);
        assert_eq!(
            t.methods.as_deref(),
            Some(&["GET".to_string(), "PUT".to_string()][..])
        );
        assert_eq!(
            t.paths.as_deref(),
            Some(
                &[
                    "/v2/tickets/*".to_string(),
                    "/v2/tickets/*/labels".to_string(),
                    "/v2/users/*".to_string()
                ][..]
            )
        );
        let l = &c[UNNAMED].allow[0];
        assert_eq!(
            (l.ports.as_deref(), l.paths.is_none(), l.methods.is_none()),
            (Some(&[5432u16][..]), true, true)
        );
        let yaml = to_yaml(&c, "a test");
        let back: BTreeMap<String, BTreeMap<String, IntentSpec>> =
            serde_yaml::from_str(yaml.split_once('\n').unwrap().1).unwrap();
        assert_eq!(back["intents"]["t"].allow.len(), 1);
        assert!(describe(&records).contains("agent a, intent t: 4 calls to api.x.com:443"));
    }
}
