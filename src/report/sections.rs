//! The report's traffic sections: calls over time, refusals, monitor mode's would-denials and
//! the top destinations per intent. Each writes one `<section>` with an `id` and tables whose
//! rows carry their key and counts as `data-` attributes.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::html::{esc, group, human};
use super::record::format_minute;
use super::stats::{DestCount, Names, Stats, WIDTHS, WouldDeny};
use super::svg::{self, Column};

/// Series drawn in their own colour; the rest are drawn together as "other".
const SERIES: usize = 8;
/// About this many columns over the time range.
const COLUMNS: i64 = 60;
const TOP_REFUSALS: usize = 25;
const TOP_WOULD: usize = 50;
const TOP_INTENTS: usize = 12;
const TOP_DESTS: usize = 10;

/// Calls over time, per intent and per agent (stacked bars, one chart each).
pub(crate) fn timeline(s: &mut String, stats: &Stats) {
    s.push_str("<section id=\"timeline\"><h2>Calls over time</h2>");
    let (Some(first), Some(last)) = (stats.first, stats.last) else {
        s.push_str("<p class=\"none\">No calls in these logs.</p></section>");
        return;
    };
    let t = &stats.timeline;
    let width = WIDTHS
        .iter()
        .copied()
        .filter(|&w| w >= t.width)
        .find(|&w| (last - first) / w < COLUMNS)
        .unwrap_or_else(|| t.width.max((last - first) / COLUMNS + 1));
    let _ = write!(
        s,
        "<p class=\"lead\">Every call, in buckets of {} (UTC), by the intent declared and by the \
         agent that made it.</p>",
        human(std::time::Duration::from_secs(width as u64))
    );
    let span = Span {
        start: first.div_euclid(width) * width,
        width,
        count: ((last - first.div_euclid(width) * width) / width + 1) as usize,
    };
    s.push_str("<h3>By intent</h3>");
    chart(
        s,
        stats,
        &span,
        "chart-timeline-intent",
        |_, i| i,
        &stats.intent_names,
    );
    s.push_str("<h3>By agent</h3>");
    chart(
        s,
        stats,
        &span,
        "chart-timeline-agent",
        |a, _| a,
        &stats.agent_names,
    );
    s.push_str("</section>");
}

/// The columns of the timeline charts.
struct Span {
    start: i64,
    width: i64,
    count: usize,
}

/// One stacked chart over `span`, its series picked from (agent, intent) by `key`.
fn chart(
    s: &mut String,
    stats: &Stats,
    span: &Span,
    id: &str,
    key: impl Fn(u32, u32) -> u32,
    names: &Names,
) {
    let t = &stats.timeline;
    // Series by calls, most first; past SERIES - 1 they share "other".
    let mut totals: BTreeMap<u32, u64> = BTreeMap::new();
    for (&(a, i, _), &n) in &t.buckets {
        *totals.entry(key(a, i)).or_default() += n;
    }
    let mut order: Vec<(u32, u64)> = totals.into_iter().collect();
    order.sort_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(&y.0)));
    let other = order.len() > SERIES;
    let keep = if other { SERIES - 1 } else { order.len() };
    let mut labels: Vec<String> = order[..keep]
        .iter()
        .map(|(k, _)| names.name(*k).to_string())
        .collect();
    if other {
        labels.push(format!("{} more", order.len() - keep));
    }
    let index: BTreeMap<u32, usize> = order
        .iter()
        .enumerate()
        .map(|(n, (k, _))| (*k, n.min(keep)))
        .collect();
    let mut cells = vec![vec![0u64; labels.len()]; span.count];
    for (&(a, i, b), &n) in &t.buckets {
        let col = ((b.div_euclid(span.width) * span.width - span.start) / span.width) as usize;
        if let (Some(row), Some(&series)) = (cells.get_mut(col), index.get(&key(a, i))) {
            row[series] += n;
        }
    }
    let columns: Vec<Column> = cells
        .into_iter()
        .enumerate()
        .map(|(c, row)| {
            let m = format_minute(span.start + c as i64 * span.width);
            Column {
                label: if span.width >= 86_400 {
                    m[..10].to_string()
                } else {
                    m[5..].to_string()
                },
                parts: row.into_iter().enumerate().filter(|p| p.1 > 0).collect(),
            }
        })
        .collect();
    s.push_str(&svg::stacked(id, &columns, &labels, other));
    s.push_str("<ul class=\"legend\">");
    for (i, n) in labels.iter().enumerate() {
        let _ = write!(
            s,
            "<li><i style=\"background:{}\"></i>{}</li>",
            svg::colour(i, labels.len(), other),
            esc(n)
        );
    }
    s.push_str("</ul>");
}

/// Refusals by code (bars) and by code and reason (table).
pub(crate) fn refusals(s: &mut String, stats: &Stats) {
    let refused = stats.denied + stats.errors;
    let _ = write!(
        s,
        "<section id=\"refusals\"><h2>Refusals</h2><p class=\"lead\">{} calls were refused: \
         by the policy (<code>deny</code>) or before it (an <code>error</code> such as a \
         blocked destination).</p>",
        group(refused)
    );
    if refused == 0 {
        s.push_str("<p class=\"none\">Nothing was refused.</p></section>");
        return;
    }
    let mut by_code: BTreeMap<&str, u64> = BTreeMap::new();
    let mut rows: Vec<(Vec<&str>, u64)> = Vec::new();
    for (k, &n) in stats.refusals.iter() {
        *by_code.entry(k[0]).or_default() += n;
        rows.push((k, n));
    }
    let mut codes: Vec<(String, u64)> = by_code
        .into_iter()
        .map(|(c, n)| (c.to_string(), n))
        .collect();
    if stats.refusals.other > 0 {
        codes.push(("other".to_string(), stats.refusals.other));
    }
    codes.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    s.push_str("<h3>By code</h3>");
    s.push_str(&svg::hbars("chart-refusals", &codes, "#c94f4f"));
    rows.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    s.push_str("<h3>By code and reason</h3><table id=\"refusal-reasons\"><thead><tr><th>Code</th><th>Reason</th><th class=\"n\">Calls</th></tr></thead><tbody>");
    for (k, n) in rows.iter().take(TOP_REFUSALS) {
        let _ = write!(
            s,
            "<tr data-code=\"{}\" data-count=\"{n}\"><td><code>{}</code></td><td>{}</td><td class=\"n\">{}</td></tr>",
            esc(k[0]),
            esc(k[0]),
            esc(k.get(1).copied().unwrap_or("")),
            group(*n)
        );
    }
    s.push_str("</tbody></table>");
    more(s, rows.len(), TOP_REFUSALS);
    s.push_str("</section>");
}

/// What monitor mode let through that enforcing would refuse.
pub(crate) fn would_deny(s: &mut String, stats: &Stats) {
    let _ = write!(
        s,
        "<section id=\"would-deny\"><h2>What enforcing would break</h2><p class=\"lead\">\
         Calls forwarded in monitor mode that the policy would refuse if enforced: {}.</p>",
        group(stats.would_deny)
    );
    if stats.would_deny == 0 {
        s.push_str("<p class=\"none\">None: enforcing would refuse nothing that was let through.</p></section>");
        return;
    }
    let mut rows: Vec<(Vec<&str>, &WouldDeny)> = stats.would.iter().collect();
    rows.sort_by(|a, b| b.1.calls.cmp(&a.1.calls).then(a.0.cmp(&b.0)));
    s.push_str("<table id=\"would-deny-calls\"><thead><tr><th>Agent</th><th>Intent</th><th>Calls to</th><th>For example, and why it would be refused</th><th class=\"n\">Calls</th></tr></thead><tbody>");
    for (k, w) in rows.iter().take(TOP_WOULD) {
        let [intent, agent, method, dest] = [0, 1, 2, 3].map(|i| k.get(i).copied().unwrap_or(""));
        let _ = write!(
            s,
            "<tr data-agent=\"{}\" data-intent=\"{}\" data-dest=\"{}\" data-count=\"{}\"><td class=\"key\">{}</td><td class=\"key\">{}</td><td class=\"key\"><code>{} {}</code></td><td><code>{}</code><br>{}</td><td class=\"n\">{}</td></tr>",
            esc(agent),
            esc(intent),
            esc(dest),
            w.calls,
            esc(agent),
            esc(intent),
            esc(method),
            esc(dest),
            esc(&w.path),
            esc(&w.reason),
            group(w.calls)
        );
    }
    s.push_str("</tbody></table>");
    more(s, rows.len(), TOP_WOULD);
    s.push_str("</section>");
}

/// A destination and its calls.
type Dest<'a> = (&'a str, DestCount);

/// The destinations most called under each intent, allowed and refused.
pub(crate) fn destinations(s: &mut String, stats: &Stats) {
    s.push_str("<section id=\"destinations\"><h2>Top destinations per intent</h2><p class=\"lead\">\
        <span style=\"color:var(--allow)\">■</span> allowed · <span style=\"color:var(--would)\">■</span> \
        would deny (monitor) · <span style=\"color:var(--deny)\">■</span> refused</p>");
    let mut by_intent: BTreeMap<&str, Vec<Dest<'_>>> = BTreeMap::new();
    for (k, d) in stats.dests.iter() {
        by_intent
            .entry(k[0])
            .or_default()
            .push((k.get(1).copied().unwrap_or(""), *d));
    }
    if by_intent.is_empty() {
        s.push_str("<p class=\"none\">No calls in these logs.</p></section>");
        return;
    }
    let total = |d: &DestCount| d.allowed + d.would_deny + d.refused;
    let mut intents: Vec<(&str, Vec<Dest<'_>>, u64)> = by_intent
        .into_iter()
        .map(|(i, mut ds)| {
            ds.sort_by(|a, b| total(&b.1).cmp(&total(&a.1)).then(a.0.cmp(b.0)));
            let sum = ds.iter().map(|d| total(&d.1)).sum();
            (i, ds, sum)
        })
        .collect();
    intents.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(b.0)));
    s.push_str("<div class=\"grid2\">");
    for (intent, ds, sum) in intents.iter().take(TOP_INTENTS) {
        let max = ds.first().map_or(1, |d| total(&d.1));
        let _ = write!(
            s,
            "<div><h3>{} <span class=\"note\">{} calls, {} destinations</span></h3><table class=\"dests\" data-intent=\"{}\"><thead><tr><th>Destination</th><th></th><th class=\"n\">Allowed</th><th class=\"n\">Refused</th></tr></thead><tbody>",
            esc(intent),
            group(*sum),
            ds.len(),
            esc(intent)
        );
        for (dest, d) in ds.iter().take(TOP_DESTS) {
            let bar = svg::split_bar(
                [
                    (d.allowed, "allowed"),
                    (d.would_deny, "would"),
                    (d.refused, "refused"),
                ],
                max,
            );
            let _ = write!(
                s,
                "<tr data-dest=\"{}\" data-allowed=\"{}\" data-would-deny=\"{}\" data-refused=\"{}\"><td><code>{}</code></td><td>{bar}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                esc(dest),
                d.allowed + d.would_deny,
                d.would_deny,
                d.refused,
                esc(dest),
                group(d.allowed + d.would_deny),
                group(d.refused)
            );
        }
        s.push_str("</tbody></table>");
        more(s, ds.len(), TOP_DESTS);
        s.push_str("</div>");
    }
    s.push_str("</div>");
    more(s, intents.len(), TOP_INTENTS);
    s.push_str("</section>");
}

/// "and N more" under a table cut at `shown`.
pub(crate) fn more(s: &mut String, len: usize, shown: usize) {
    if len > shown {
        let _ = write!(s, "<p class=\"note\">… and {} more.</p>", len - shown);
    }
}

/// `2026-11-28 13:41` for a time in the tables.
pub(crate) fn when(secs: i64) -> String {
    format_minute(secs)
}
