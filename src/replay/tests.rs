//! Tests of `intentgate replay`: audit records decided again under another policy.

use std::path::PathBuf;

use super::*;

const CATALOG: &str = "agent: {id: a1, owner: team}\nintents:\n  triage:\n    allow:\n      - hosts: [api.example.com]\n        methods: [GET]\n";

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn record(method: &str, path: &str, decision: &str, code: Option<&str>) -> String {
    let code = code.map_or(String::new(), |c| format!(",\"code\":\"{c}\""));
    let mode = if decision == "error" { "" } else { "enforce" };
    format!(
        "{{\"agent\":{{\"id\":\"a1\",\"owner\":\"team\"}},\"intent\":{{\"name\":\"triage\",\"source\":\"header\"}},\
         \"connection\":\"forward\",\"method\":\"{method}\",\"scheme\":\"http\",\"host\":\"api.example.com\",\
         \"port\":80,\"path\":\"{path}\",\"decision\":\"{decision}\",\"mode\":\"{mode}\",\"reasons\":[]{code}}}\n"
    )
}

fn run(candidate: &str, base: Option<&str>, log: &str) -> Changes {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        audit: vec![write(dir.path(), "audit.jsonl", log)],
        candidate: write(dir.path(), "candidate.yaml", candidate),
        base: base.map(|b| write(dir.path(), "base.yaml", b)),
        format: Format::Json,
    };
    replay(&opts).unwrap()
}

#[test]
fn a_narrower_candidate_shows_new_denials_against_the_recorded_decisions() {
    let log = record("GET", "/a", "allow", None) + &record("GET", "/b", "allow", None);
    let same = run(CATALOG, None, &log);
    assert_eq!((same.decided, same.count(Change::NewDenial)), (2, 0));
    let narrower = CATALOG.replace("[GET]", "[POST]");
    let c = run(&narrower, None, &log);
    assert_eq!(c.count(Change::NewDenial), 2);
    assert_eq!(c.count(Change::NewGrant), 0);
    let j = c.json();
    assert_eq!(j["new_denials"]["groups"][0]["calls"], 2);
    assert_eq!(
        j["new_denials"]["groups"][0]["after"]["code"],
        "intent_violation"
    );
}

#[test]
fn a_wider_candidate_against_a_base_config_shows_new_grants() {
    let log = record("DELETE", "/x", "deny", Some("intent_violation"));
    let wider = CATALOG.replace("[GET]", "[GET, DELETE]");
    let c = run(&wider, Some(CATALOG), &log);
    assert_eq!(c.count(Change::NewGrant), 1);
    assert_eq!(c.count(Change::NewDenial), 0);
}

#[test]
fn calls_the_policy_never_saw_and_lines_that_are_no_record_are_counted_not_replayed() {
    let log = record("GET", "/a", "error", None) + "not json\n";
    let c = run(CATALOG, None, &log);
    assert_eq!((c.decided, c.not_decided, c.unreadable), (0, 1, 1));
}

#[test]
fn a_policy_reading_what_records_lack_makes_the_call_undecidable() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "q.rego",
        "package intentgate\nimport rego.v1\ndeny contains \"q\" if input.request.query == \"x\"\n",
    );
    let cfg = format!(
        "{CATALOG}policy:\n  paths: [{}]\n",
        dir.path().join("q.rego").display()
    );
    let c = run(&cfg, None, &record("GET", "/a", "allow", None));
    let j = c.json();
    assert_eq!((c.decided, &j["undecidable"]["calls"]), (0, &1.into()));
    assert_eq!(
        j["undecidable"]["lacking"],
        serde_json::json!(["request.query"])
    );
}

#[test]
fn a_broken_candidate_is_refused_naming_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        audit: vec![],
        candidate: write(
            dir.path(),
            "bad.yaml",
            "intents: {x: {allow: [{hostz: []}]}}\n",
        ),
        base: None,
        format: Format::Text,
    };
    let e = replay(&opts).err().unwrap();
    assert!(e.contains("bad.yaml"), "{e}");
}

#[test]
fn a_policy_reading_the_agent_is_decided_per_record_not_from_a_cache_of_another_agent() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "a.rego",
        "package intentgate.namespace\nimport rego.v1\ndeny contains \"b\" if input.agent.id == \"b1\"\n",
    );
    let cfg = format!(
        "{CATALOG}policy:\n  paths: [{}]\n",
        dir.path().join("a.rego").display()
    );
    let a1 = record("GET", "/a", "allow", None);
    let b1 = a1.replace("\"id\":\"a1\"", "\"id\":\"b1\"");
    let c = run(&cfg, None, &(a1.clone() + &b1 + &a1));
    let j = c.json();
    assert_eq!(j["new_denials"]["calls"], 1, "{j}");
    assert_eq!(j["new_denials"]["groups"][0]["agent"], "b1", "{j}");
}
