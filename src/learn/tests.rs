//! Tests of learn mode: the catalog proposed from observed calls.

use std::collections::BTreeMap;

use serde_json::json;

use super::*;

/// The records as `learn` reads them from a log.
fn log(records: &[serde_json::Value]) -> AuditLog {
    let lines: Vec<String> = records.iter().map(|r| r.to_string()).collect();
    let mut log = AuditLog::default();
    log.add_lines(&lines.join("\n"), "test").unwrap();
    log
}

fn rec(intent: Option<&str>, decision: &str, m: &str, host: &str, path: &str) -> serde_json::Value {
    let connection = if m == "CONNECT" { "connect" } else { "forward" };
    json!({"agent": {"id": "a"}, "intent": {"name": intent}, "connection": connection,
           "method": m, "host": host, "port": 443, "path": path, "decision": decision,
           "reasons": [format!("why {m} {path}")]})
}

/// The catalog in the config's `intents:` format.
fn specs(c: &Catalog) -> BTreeMap<String, IntentSpec> {
    c.intents
        .iter()
        .map(|(name, l)| (name.clone(), l.spec()))
        .collect()
}

/// The YAML parsed back: the comments are comments and the catalog is exactly `specs`.
fn parsed(c: &Catalog) -> BTreeMap<String, IntentSpec> {
    let text = c.to_yaml("a test").unwrap();
    let doc: BTreeMap<String, BTreeMap<String, IntentSpec>> =
        serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{e}:\n{text}"));
    assert_eq!(doc["intents"], specs(c), "{text}");
    doc["intents"].clone()
}

fn strs(v: &[&str]) -> Option<Vec<String>> {
    Some(v.iter().map(|s| s.to_string()).collect())
}

#[test]
fn only_forwarded_calls_are_granted_and_refused_ones_are_listed() {
    let records = vec![
        rec(Some("t"), "allow", "GET", "api.x.com", "/v1/a"),
        rec(Some("t"), "would_deny", "GET", "api.x.com", "/v1/b"),
        rec(Some("t"), "deny", "DELETE", "api.x.com", "/v1/a"),
        rec(Some("t"), "deny", "GET", "evil.x.com", "/"),
        json!({"intent": {"name": "t"}, "method": "GET", "host": "10.0.0.1", "port": 80,
               "path": "/", "decision": "error", "reasons": [], "error": "destination_forbidden"}),
        // The CONNECT of an intercepted tunnel is not a call.
        json!({"intent": {"name": "t"}, "connection": "intercepted", "method": "CONNECT",
               "host": "api.x.com", "port": 443, "path": "", "decision": "allow"}),
        json!({"not": "a record"}),
    ];
    let c = Catalog::learn(&log(&records), Options::default());
    let specs = parsed(&c);
    assert_eq!(specs["t"].allow.len(), 1);
    let r = &specs["t"].allow[0];
    assert_eq!(
        (r.hosts.clone(), r.methods.clone(), r.paths.clone()),
        (
            vec!["api.x.com".to_string()],
            strs(&["GET"]),
            strs(&["/v1/a", "/v1/b"])
        )
    );
    assert_eq!(c.counts(), (2, 3));
    assert_eq!(c.unreadable, 1);
    let text = c.to_yaml("x").unwrap();
    assert!(
        text.contains("#   intent t: DELETE api.x.com:443/v1/a (1 calls): why DELETE /v1/a"),
        "{text}"
    );
    assert!(
        text.contains("#   intent t: GET 10.0.0.1:80/ (1 calls): destination_forbidden"),
        "{text}"
    );
    assert!(!text.contains("evil.x.com\n"), "{text}");
}

#[test]
fn each_path_keeps_its_own_methods() {
    let records = vec![
        rec(
            Some("t"),
            "allow",
            "POST",
            "api.x.com",
            "/v1/chat/completions",
        ),
        rec(Some("t"), "allow", "GET", "api.x.com", "/v1/models"),
        rec(Some("t"), "allow", "GET", "api.x.com", "/v1/files"),
        rec(Some("t"), "allow", "GET", "api.x.com", "/v1/files/"),
        rec(Some("t"), "allow", "PUT", "api.x.com", "/v1/files"),
        rec(Some("t"), "allow", "GET", "api.y.com", "/"),
    ];
    let specs = parsed(&Catalog::learn(&log(&records), Options::default()));
    let got: Vec<_> = specs["t"]
        .allow
        .iter()
        .map(|r| (r.hosts[0].as_str(), r.methods.clone(), r.paths.clone()))
        .collect();
    assert_eq!(
        got,
        [
            ("api.x.com", strs(&["GET"]), strs(&["/v1/models"])),
            ("api.x.com", strs(&["GET", "PUT"]), strs(&["/v1/files"])),
            (
                "api.x.com",
                strs(&["POST"]),
                strs(&["/v1/chat/completions"])
            ),
            ("api.y.com", strs(&["GET"]), strs(&["/"])),
        ]
    );
}

#[test]
fn ids_become_wildcards_only_when_asked_and_at_the_threshold() {
    let records = vec![
        rec(Some("t"), "allow", "GET", "h", "/tickets/4711"),
        rec(Some("t"), "allow", "PUT", "h", "/tickets/4712"),
        rec(Some("t"), "allow", "GET", "h", "/tickets/4712/labels"),
        rec(
            Some("t"),
            "allow",
            "GET",
            "h",
            "/users/550e8400-e29b-41d4-a716-446655440000",
        ),
        rec(
            Some("t"),
            "allow",
            "GET",
            "h",
            "/users/550e8400-e29b-41d4-a716-446655440001",
        ),
        rec(
            Some("t"),
            "allow",
            "GET",
            "h",
            "/users/550e8400-e29b-41d4-a716-446655440002",
        ),
    ];
    let paths = |min: Option<u32>| -> Vec<String> {
        let c = Catalog::learn(&log(&records), Options { generalise: min });
        parsed(&c)["t"]
            .allow
            .iter()
            .flat_map(|r| r.paths.clone().unwrap())
            .collect()
    };
    assert_eq!(paths(None).len(), 6);
    assert!(paths(None).contains(&"/tickets/4711".to_string()));
    assert_eq!(
        paths(Some(2)),
        ["/tickets/4712/labels", "/users/*", "/tickets/*"]
    );
    let two = Catalog::learn(
        &log(&records),
        Options {
            generalise: Some(2),
        },
    );
    let specs = parsed(&two);
    let tickets = specs["t"]
        .allow
        .iter()
        .find(|r| {
            r.paths
                .as_ref()
                .unwrap()
                .contains(&"/tickets/*".to_string())
        })
        .unwrap();
    assert_eq!(tickets.methods, strs(&["GET", "PUT"]));
    let text = two.to_yaml("x").unwrap();
    assert!(
        text.contains(
            "# /tickets/* generalises 2 paths seen (/tickets/4711, /tickets/4712) (--generalise 2)"
        ),
        "{text}"
    );
    assert!(
        text.contains("# /users/* generalises 3 paths seen ("),
        "{text}"
    );
    assert!(text.contains("/tickets/4712/labels"), "{text}");
    // At 3 only the users are generalised.
    let three = paths(Some(3));
    assert!(three.contains(&"/users/*".to_string()), "{three:?}");
    assert!(three.contains(&"/tickets/4711".to_string()), "{three:?}");
}

#[test]
fn intents_tunnels_and_awkward_names_and_paths() {
    let records = vec![
        rec(Some("reader"), "allow", "GET", "h", "/a"),
        rec(Some("writer"), "allow", "PUT", "h", "/a"),
        rec(None, "allow", "CONNECT", "db.x.com", ""),
        rec(
            Some("odd: name\nwith a newline"),
            "allow",
            "GET",
            "h",
            "/search/a*b",
        ),
        rec(
            Some("odd: name\nwith a newline"),
            "allow",
            "GET",
            "h",
            "/ok",
        ),
        rec(Some("yes"), "deny", "GET", "h", "/x\ny"),
    ];
    let c = Catalog::learn(&log(&records), Options::default());
    let specs = parsed(&c);
    assert_eq!(specs["reader"].allow[0].methods, strs(&["GET"]));
    assert_eq!(specs["writer"].allow[0].methods, strs(&["PUT"]));
    let l = &specs[UNNAMED].allow[0];
    assert_eq!(
        (l.hosts.clone(), l.methods.clone(), l.paths.clone()),
        (vec!["db.x.com".to_string()], None, None)
    );
    assert_eq!(
        specs["odd: name\nwith a newline"].allow[0].paths,
        strs(&["/ok"])
    );
    let text = c.to_yaml("x").unwrap();
    assert!(text.contains("# not learned: /search/a*b"), "{text}");
    assert!(
        text.contains("enforce them with `--intent learned`"),
        "{text}"
    );
    assert!(
        text.contains("#   intent yes: GET h:443/x y (1 calls)"),
        "{text}"
    );
    assert!(
        describe(&log(&records).records).contains("agent a, intent reader: 1 calls to h:443\n")
    );
    assert!(
        describe(&log(&records).records)
            .contains("agent a, intent yes: 0 calls; 1 refused (not learned)")
    );
}

#[test]
fn nothing_forwarded_is_an_empty_catalog() {
    let c = Catalog::learn(
        &log(&[rec(Some("t"), "deny", "GET", "h", "/")]),
        Options::default(),
    );
    assert!(parsed(&c).is_empty());
    assert!(
        c.outcome(Path::new("o.yaml"))
            .contains("learned 0 intents from 0 forwarded calls")
    );
}

#[test]
fn mcp_calls_teach_the_tools_of_each_intent() {
    let mcp = |intent: &str, decision: &str, method: &str, tool: Option<&str>| {
        let mut r = rec(Some(intent), decision, "POST", "mcp.x.com", "/mcp");
        r["mcp"] = json!({"method": method, "tool": tool});
        r
    };
    let records = vec![
        mcp("support", "allow", "initialize", None),
        mcp("support", "allow", "tools/call", Some("read_ticket")),
        mcp("support", "would_deny", "tools/call", Some("add_note")),
        mcp("support", "deny", "tools/call", Some("delete_customer")),
        mcp("billing", "allow", "tools/call", Some("refund")),
        rec(Some("support"), "allow", "GET", "api.x.com", "/v1/a"),
    ];
    let specs = parsed(&Catalog::learn(&log(&records), Options::default()));
    let mcp_rule = |intent: &str| {
        specs[intent]
            .allow
            .iter()
            .find(|r| r.hosts == ["mcp.x.com"])
            .cloned()
            .unwrap()
    };
    let r = mcp_rule("support");
    assert_eq!(r.protocol, Some(crate::config::RuleProtocol::Mcp));
    assert_eq!(r.mcp.unwrap().tools, strs(&["add_note", "read_ticket"]));
    assert_eq!(mcp_rule("billing").mcp.unwrap().tools, strs(&["refund"]));
    let plain = specs["support"]
        .allow
        .iter()
        .find(|r| r.hosts == ["api.x.com"]);
    assert_eq!(plain.unwrap().protocol, None);
}
