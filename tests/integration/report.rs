//! `intentgate report` read in a real browser: audit records written by the test (in the audit
//! log's own format) become a self-contained HTML page, headless Chromium renders it, and the test
//! reads the rendered page (bars drawn with a size, tables as the reader sees them) against counts
//! it computes from its own records; the screenshot is kept for people to look at.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use crate::common::*;
use fleet::{BILLING, Call, OLD, SUPPORT, calls, write_log};

mod fleet;
mod from_proxy;
mod inventory;

const BROWSER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/clients/report_browser.py"
);

/// Count of each key.
fn tally<K: Ord>(keys: impl Iterator<Item = K>) -> BTreeMap<K, u64> {
    let mut m = BTreeMap::new();
    for k in keys {
        *m.entry(k).or_default() += 1;
    }
    m
}

fn bars(page: &Value, chart: &str) -> Vec<Value> {
    page["charts"][chart]["bars"].as_array().unwrap().clone()
}

/// Sum of the drawn bars' counts per series; every bar must have been drawn with a size.
fn drawn(page: &Value, chart: &str) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for b in bars(page, chart) {
        assert!(
            b["w"].as_f64().unwrap() > 0.5,
            "{chart}: bar not drawn: {b}"
        );
        assert!(
            b["h"].as_f64().unwrap() > 0.5,
            "{chart}: bar not drawn: {b}"
        );
        *m.entry(b["key"].as_str().unwrap().to_string()).or_default() +=
            b["count"].as_u64().unwrap();
    }
    m
}

fn rows<'a>(page: &'a Value, table: &str) -> &'a Vec<Value> {
    page["tables"][table]
        .as_array()
        .unwrap_or_else(|| panic!("table {table} missing: {}", page["tables"]))
}

#[test]
fn report_renders_in_chromium_with_the_counts_of_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let (log, html) = (
        dir.path().join("audit.jsonl"),
        dir.path().join("report.html"),
    );
    let calls = calls();
    write_log(&log, &calls);
    let (code, out, err) = run_cli(&[
        "report",
        "--audit",
        log.to_str().unwrap(),
        "--out",
        html.to_str().unwrap(),
        "--as-of",
        "2026-12-05T10:50:00Z",
        "--idle",
        "30m",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    // The summary line (always), no progress bar (stderr is not a terminal).
    let n = calls.len();
    assert!(
        err.contains(&format!("report: {} records ({n} calls, 3 agents)", n + 1)),
        "{err}"
    );
    assert!(err.contains("1 lines were not audit records"), "{err}");
    assert!(!err.contains('\r'), "{err:?}");

    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("report-screenshot.png");
    let o = Command::new("python3")
        .arg(BROWSER)
        .arg(&html)
        .arg(&shot)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let page: Value = serde_json::from_slice(&o.stdout).unwrap();
    eprintln!("screenshot: {}", shot.display());
    assert!(std::fs::metadata(&shot).unwrap().len() > 50_000);
    assert_eq!(page["external"], 0, "the page must load nothing");
    assert_eq!(
        page["sections"],
        json!([
            "timeline",
            "refusals",
            "would-deny",
            "destinations",
            "inventory",
            "learn"
        ])
    );

    // Summary cards.
    let by_decision = tally(calls.iter().map(|c| c.decision));
    let card = |k: &str| page["totals"][k].as_str().unwrap().replace(',', "");
    assert_eq!(card("calls"), n.to_string());
    for (card_id, decision) in [
        ("allowed", "allow"),
        ("would-deny", "would_deny"),
        ("denied", "deny"),
        ("errors", "error"),
    ] {
        assert_eq!(
            card(card_id),
            by_decision[decision].to_string(),
            "{card_id}"
        );
    }
    assert_eq!(card("agents"), "3");

    // Calls over time: one bar per intent (agent) and minute with calls, counts per series.
    let intent = |c: &Call| c.intent.unwrap_or("learned").to_string();
    let minutes = |key: &dyn Fn(&Call) -> String| {
        calls
            .iter()
            .map(|c| (key(c), c.minute))
            .collect::<BTreeSet<_>>()
            .len()
    };
    assert_eq!(bars(&page, "chart-timeline-intent").len(), minutes(&intent));
    assert_eq!(
        drawn(&page, "chart-timeline-intent"),
        tally(calls.iter().map(intent))
    );
    let agent = |c: &Call| c.agent.id.to_string();
    assert_eq!(bars(&page, "chart-timeline-agent").len(), minutes(&agent));
    assert_eq!(
        drawn(&page, "chart-timeline-agent"),
        tally(calls.iter().map(agent))
    );

    // Refusals by code (bars) and by code and reason (table).
    let refused: Vec<&Call> = calls
        .iter()
        .filter(|c| matches!(c.decision, "deny" | "error"))
        .collect();
    let codes = tally(refused.iter().map(|c| c.code.unwrap().to_string()));
    assert_eq!(drawn(&page, "chart-refusals"), codes);
    let reasons = tally(
        refused
            .iter()
            .map(|c| (c.code.unwrap().to_string(), c.reason.clone().unwrap())),
    );
    let shown: BTreeMap<(String, String), u64> = rows(&page, "refusal-reasons")
        .iter()
        .map(|r| {
            let cells = r["cells"].as_array().unwrap();
            let cell = |i: usize| cells[i].as_str().unwrap().to_string();
            ((cell(0), cell(1)), cell(2).parse().unwrap())
        })
        .collect();
    assert_eq!(shown, reasons);

    // What enforcing would break: per agent, intent and destination.
    let would = tally(
        calls
            .iter()
            .filter(|c| c.decision == "would_deny")
            .map(|c| (c.agent.id.to_string(), intent(c), format!("{}:443", c.host))),
    );
    let shown: BTreeMap<(String, String, String), u64> = rows(&page, "would-deny-calls")
        .iter()
        .map(|r| {
            let d = &r["data"];
            let s = |k: &str| d[k].as_str().unwrap().to_string();
            (
                (s("agent"), s("intent"), s("dest")),
                s("count").parse().unwrap(),
            )
        })
        .collect();
    assert_eq!(shown, would);
    let first = &rows(&page, "would-deny-calls")[0]["cells"];
    assert!(
        first[3].as_str().unwrap().contains("/v1/refunds"),
        "{first}"
    );

    // Top destinations per intent: forwarded and refused per destination.
    for (name, ds) in calls.iter().fold(
        BTreeMap::<String, BTreeMap<String, (u64, u64)>>::new(),
        |mut m, c| {
            let e = m
                .entry(intent(c))
                .or_default()
                .entry(format!("{}:443", c.host))
                .or_default();
            if matches!(c.decision, "allow" | "would_deny") {
                e.0 += 1
            } else {
                e.1 += 1
            }
            m
        },
    ) {
        let shown: BTreeMap<String, (u64, u64)> = rows(&page, &format!("dests:{name}"))
            .iter()
            .map(|r| {
                let cells = r["cells"].as_array().unwrap();
                let n = |i: usize| cells[i].as_str().unwrap().replace(',', "").parse().unwrap();
                (cells[0].as_str().unwrap().to_string(), (n(2), n(3)))
            })
            .collect();
        assert_eq!(shown, ds, "intent {name}");
    }

    // The inventory: owner, namespace, service account, intents, counts and flags.
    let agents: BTreeMap<String, &Value> = rows(&page, "agents")
        .iter()
        .map(|r| (r["data"]["agent"].as_str().unwrap().to_string(), r))
        .collect();
    assert_eq!(agents.len(), 3);
    for (a, flags, cells) in [
        (
            &SUPPORT,
            "",
            [
                "support-bot",
                "team-helpdesk",
                "support",
                "support-bot",
                "triage-tickets learned",
            ],
        ),
        (
            &BILLING,
            "no-owner",
            [
                "billing-bot",
                "—",
                "billing",
                "billing-bot",
                "billing-lookup",
            ],
        ),
        (
            &OLD,
            "expired idle",
            ["old-bot", "team-legacy", "legacy", "old-bot", "crm-sync"],
        ),
    ] {
        let row = agents[a.id];
        assert_eq!(row["data"]["flags"], flags, "{}", a.id);
        let shown = row["cells"].as_array().unwrap();
        for (i, want) in cells.iter().enumerate() {
            assert_eq!(
                shown[i]
                    .as_str()
                    .unwrap()
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" "),
                *want,
                "{} column {i}",
                a.id
            );
        }
        let mine: Vec<&Call> = calls.iter().filter(|c| c.agent.id == a.id).collect();
        let count = |d: &[&str]| {
            mine.iter()
                .filter(|c| d.contains(&c.decision))
                .count()
                .to_string()
        };
        assert_eq!(row["data"]["calls"], mine.len().to_string());
        assert_eq!(row["data"]["refused"], count(&["deny", "error"]));
        assert_eq!(row["data"]["wouldDeny"], count(&["would_deny"]));
    }
    assert_eq!(agents["support-bot"]["cells"][7], "2027-06-30 00:00");
    assert_eq!(agents["old-bot"]["cells"][6], "2026-12-05 10:03");
    // Flagged agents first.
    assert_ne!(rows(&page, "agents")[2]["data"]["flags"], "expired idle");

    // The suggested catalog: what was forwarded (ids generalised), refused calls not granted.
    let learned = page["learned"].as_str().unwrap();
    assert!(
        learned.contains("triage-tickets:") && learned.contains("billing-lookup:"),
        "{learned}"
    );
    assert!(learned.contains("/api/v2/tickets/*"), "{learned}");
    for l in learned.lines().filter(|l| l.contains("slack.com")) {
        assert!(l.trim_start().starts_with('#'), "refused call granted: {l}");
    }
}

/// On a terminal (a pseudo-terminal from `script`, util-linux), a progress bar is drawn on stderr
/// while a large log is read, then cleared before the summary line.
#[test]
fn report_draws_a_progress_bar_on_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let (log, html) = (
        dir.path().join("audit.jsonl"),
        dir.path().join("report.html"),
    );
    let calls = calls();
    let mut text = String::new();
    // More lines than one progress step (65,536): each of the fleet's calls, repeated.
    for i in 0..70_000 {
        text.push_str(&fleet::line(&calls[i % calls.len()], i, "intercepted"));
        text.push('\n');
    }
    std::fs::write(&log, text).unwrap();
    let cmd = format!(
        "{BIN} report --audit {} --out {}",
        log.display(),
        html.display()
    );
    let o = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .output()
        .unwrap();
    let tty = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{tty}");
    assert!(
        tty.contains("\r[") && tty.contains("%  65536 lines"),
        "{tty:?}"
    );
    assert!(tty.contains("\r\x1b[2K"), "the bar is cleared: {tty:?}");
    assert!(
        tty.contains("report: 70000 records (70000 calls, 3 agents)"),
        "{tty:?}"
    );
}
