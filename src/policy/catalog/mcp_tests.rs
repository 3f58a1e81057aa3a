//! Tests of the catalog's MCP rules (tools, resources, methods).

use std::collections::BTreeMap;

use super::super::{Catalog, ScopeCode, ScopeQuery, ScopeVerdict};
use crate::config::{IntentSpec, McpScope, Mode, RuleProtocol, ScopeRule};
use crate::identity::Agent;
use crate::mcp::Call;

fn catalog(rules: Vec<ScopeRule>) -> Result<Catalog, super::super::CatalogError> {
    let mut m = BTreeMap::new();
    m.insert(
        "support".to_string(),
        IntentSpec {
            allow: rules,
            ..IntentSpec::default()
        },
    );
    Catalog::compile(&[("test.yaml".into(), m)], Mode::Enforce)
}

fn mcp_rule(host: &str, tools: &[&str]) -> ScopeRule {
    ScopeRule {
        hosts: vec![host.into()],
        protocol: Some(RuleProtocol::Mcp),
        mcp: Some(Box::new(McpScope {
            tools: Some(tools.iter().map(|t| t.to_string()).collect()),
            ..McpScope::default()
        })),
        ..ScopeRule::default()
    }
}

fn check(c: &Catalog, host: &str, method: &str, mcp: Option<&Call>) -> ScopeVerdict {
    let q = ScopeQuery {
        method,
        host,
        port: 443,
        path: "/mcp",
        destination_only: false,
        mcp,
        llm: None,
    };
    let agent = Agent {
        id: "bot".into(),
        namespace: None,
        service_account: None,
        owner: Some("o".into()),
        owner_source: None,
        spiffe_id: None,
        labels: Default::default(),
        expires: None,
    };
    c.verdict(&agent, Some("support"), &q)
}

fn tool_call(tool: &str) -> Call {
    let body =
        format!(r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"{tool}"}}}}"#);
    crate::mcp::parse(body.as_bytes(), true, None).unwrap()
}

#[test]
fn an_mcp_rule_permits_only_its_tools_and_names_the_one_refused() {
    let c = catalog(vec![mcp_rule("mcp.example.com", &["read_*"])]).unwrap();
    let ok = check(
        &c,
        "mcp.example.com",
        "POST",
        Some(&tool_call("read_ticket")),
    );
    assert!(ok.matched, "{}", ok.why);
    let no = check(
        &c,
        "mcp.example.com",
        "POST",
        Some(&tool_call("delete_customer")),
    );
    assert!(!no.matched);
    assert_eq!(no.code, ScopeCode::McpNotInScope);
    assert_eq!(
        no.why,
        "intent 'support' does not permit POST mcp.example.com/mcp: the MCP tool \
         'delete_customer' is not in scope (allowed: read_*) (rule 1)"
    );
    // The event stream's GET and the session's DELETE carry no message: HTTP fields decide.
    assert!(check(&c, "mcp.example.com", "GET", None).matched);
}

#[test]
fn hosts_of_mcp_rules_are_read_as_mcp_and_others_are_not() {
    let c = catalog(vec![
        mcp_rule("mcp.example.com", &["x"]),
        mcp_rule("*.tools.example.net", &["x"]),
        ScopeRule {
            hosts: vec!["api.example.com".into()],
            ..ScopeRule::default()
        },
    ])
    .unwrap();
    assert!(c.speaks_mcp("mcp.example.com"));
    assert!(c.speaks_mcp("a.b.tools.example.net"));
    assert!(!c.speaks_mcp("tools.example.net"));
    assert!(!c.speaks_mcp("api.example.com"));
    assert!(c.speaks_protocols());
    let plain = catalog(vec![]).unwrap();
    assert!(!plain.speaks_mcp("mcp.example.com"));
    assert!(
        !plain.speaks_protocols(),
        "a catalog of plain rules: no request is read as MCP"
    );
}

#[test]
fn an_mcp_scope_without_protocol_mcp_is_refused_at_load() {
    let mut r = mcp_rule("mcp.example.com", &["x"]);
    r.protocol = None;
    let e = catalog(vec![r]).unwrap_err().to_string();
    assert_eq!(
        e,
        "test.yaml: intent 'support' rule 1: `mcp:` needs `protocol: mcp`"
    );
}
