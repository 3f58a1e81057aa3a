//! The page: its style sheet, header and summary, the sections in the order a reader wants them
//! (`sections`), and HTML escaping. Everything is inline: the file opens with no network.

use std::fmt::Write;
use std::path::PathBuf;
use std::time::Duration;

use super::record::format_minute;
use super::stats::Stats;
use super::{agents, sections};

/// What the page says about how it was made.
pub(crate) struct Context<'a> {
    pub(crate) files: &'a [PathBuf],
    /// The time the inventory's flags are judged at.
    pub(crate) as_of: i64,
    pub(crate) idle: Duration,
}

/// Text made safe for HTML content and attribute values.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = r#"
:root { --ink:#1d2330; --muted:#5d6675; --line:#e3e6eb; --bg:#f6f7f9; --allow:#3aa17e; --would:#e0a325; --deny:#c94f4f; }
* { box-sizing: border-box; }
body { margin:0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color:var(--ink); background:var(--bg); }
header { background:#18202f; color:#fff; padding:22px 32px 18px; }
header h1 { margin:0 0 4px; font-size:22px; font-weight:600; letter-spacing:.2px; }
header p { margin:0; color:#b9c1cf; font-size:13px; }
main { max-width:1240px; margin:0 auto; padding:20px 24px 48px; }
section { background:#fff; border:1px solid var(--line); border-radius:10px; padding:18px 22px; margin:18px 0; }
h2 { font-size:17px; margin:0 0 4px; }
h3 { font-size:14px; margin:16px 0 6px; }
p.lead { margin:0 0 12px; color:var(--muted); }
.cards { display:grid; grid-template-columns:repeat(auto-fit,minmax(140px,1fr)); gap:12px; margin:0; }
.cards div { background:#fff; border:1px solid var(--line); border-radius:10px; padding:12px 14px; }
.cards dt { color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.4px; }
.cards dd { margin:2px 0 0; font-size:24px; font-weight:600; }
.cards .allow dd { color:var(--allow); } .cards .would dd { color:var(--would); } .cards .deny dd { color:var(--deny); }
table { width:100%; border-collapse:collapse; font-size:13px; }
th { text-align:left; color:var(--muted); font-weight:600; border-bottom:2px solid var(--line); padding:6px 8px; white-space:nowrap; }
td { border-bottom:1px solid var(--line); padding:6px 8px; vertical-align:top; }
td.key { white-space:nowrap; }
td.n, th.n { text-align:right; font-variant-numeric:tabular-nums; }
td code { font-size:12px; background:#f1f3f6; padding:1px 4px; border-radius:4px; overflow-wrap:anywhere; }
td code.pill { display:inline-block; white-space:nowrap; margin:0 4px 3px 0; }
td.key, td.key code, .dests td code { white-space:nowrap; overflow-wrap:normal; }
.chart { width:100%; height:auto; display:block; }
.chart .grid { stroke:var(--line); } .chart .tick, .chart .value { fill:var(--muted); font-size:11px; } .chart .label { fill:var(--ink); font-size:12px; }
.legend { display:flex; flex-wrap:wrap; gap:6px 16px; margin:8px 0 0; padding:0; list-style:none; font-size:12px; }
.legend i { display:inline-block; width:11px; height:11px; border-radius:2px; margin-right:5px; vertical-align:-1px; }
.mini rect.allowed { fill:var(--allow); } .mini rect.would { fill:var(--would); } .mini rect.refused { fill:var(--deny); }
.flag { display:inline-block; font-size:11px; font-weight:600; border-radius:10px; padding:1px 8px; margin:0 4px 2px 0; white-space:nowrap; }
.flag.no-owner { background:#fde8e8; color:#a12b2b; } .flag.expired { background:#fdeede; color:#a4531a; } .flag.idle { background:#eceff3; color:#4f5866; }
tr.flagged td:first-child { box-shadow: inset 3px 0 0 var(--deny); }
.none { color:var(--muted); font-style:italic; }
pre { background:#f6f8fa; border:1px solid var(--line); border-radius:8px; padding:12px; overflow:auto; font-size:12px; max-height:520px; }
.note { color:var(--muted); font-size:12px; }
.grid2 { display:grid; grid-template-columns:repeat(auto-fit,minmax(460px,1fr)); gap:8px 24px; }
"#;

/// The whole page.
pub(crate) fn page(stats: &Stats, cx: &Context<'_>) -> String {
    let mut s = String::with_capacity(64 * 1024);
    s.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    s.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">");
    s.push_str("<title>intentgate report</title><style>");
    s.push_str(STYLE);
    s.push_str("</style></head><body>");
    header(&mut s, stats, cx);
    s.push_str("<main>");
    cards(&mut s, stats);
    sections::timeline(&mut s, stats);
    sections::refusals(&mut s, stats);
    sections::would_deny(&mut s, stats);
    sections::destinations(&mut s, stats);
    agents::inventory(&mut s, stats, cx);
    agents::learn(&mut s, stats);
    footer(&mut s, stats);
    s.push_str("</main></body></html>\n");
    s
}

fn header(s: &mut String, stats: &Stats, cx: &Context<'_>) {
    let range = match (stats.first, stats.last) {
        (Some(f), Some(l)) => format!("{} — {} UTC", format_minute(f), format_minute(l)),
        _ => "no calls".to_string(),
    };
    let files: Vec<String> = cx.files.iter().map(|f| f.display().to_string()).collect();
    let _ = write!(
        s,
        "<header><h1>intentgate report</h1><p id=\"range\">{}</p><p>from {} · flags as of {} UTC</p></header>",
        esc(&range),
        esc(&files.join(", ")),
        format_minute(cx.as_of)
    );
}

fn cards(s: &mut String, stats: &Stats) {
    s.push_str("<dl class=\"cards\">");
    let cards = [
        ("calls", "", "Calls", stats.calls()),
        ("allowed", "allow", "Allowed", stats.allowed),
        (
            "would-deny",
            "would",
            "Would deny (monitor)",
            stats.would_deny,
        ),
        ("denied", "deny", "Denied", stats.denied),
        ("errors", "deny", "Refused before policy", stats.errors),
        ("agents", "", "Agents", stats.agents.len() as u64),
    ];
    for (id, class, label, n) in cards {
        let _ = write!(
            s,
            "<div class=\"{class}\"><dt>{label}</dt><dd id=\"total-{id}\" data-count=\"{n}\">{}</dd></div>",
            group(n)
        );
    }
    s.push_str("</dl>");
}

fn footer(s: &mut String, stats: &Stats) {
    let mut notes = Vec::new();
    if let Some(at) = &stats.first_unreadable {
        notes.push(format!(
            "{} lines were not audit records and were skipped (the first at {}).",
            stats.unreadable,
            esc(at)
        ));
    }
    let d = &stats.dests.other;
    if stats.refusals.other + stats.would.other.calls + d.allowed + d.would_deny + d.refused > 0
        || stats.learn_skipped > 0
    {
        notes.push(
            "Some tables reached their size limit; the rest is counted under “other”.".to_string(),
        );
    }
    notes.push(format!(
        "{} audit records read. Made by <code>intentgate report</code>; this page needs no network.",
        stats.records
    ));
    s.push_str("<p class=\"note\">");
    s.push_str(&notes.join(" "));
    s.push_str("</p>");
}

/// A duration for people: `7 days`, `1 hour`, `15 minutes`.
pub(crate) fn human(d: Duration) -> String {
    let secs = d.as_secs();
    let (n, unit) = match secs {
        0 => (0, "second"),
        s if s % 86_400 == 0 => (s / 86_400, "day"),
        s if s % 3600 == 0 => (s / 3600, "hour"),
        s if s % 60 == 0 => (s / 60, "minute"),
        s => (s, "second"),
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// 1234567 → 1,234,567.
pub(crate) fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
