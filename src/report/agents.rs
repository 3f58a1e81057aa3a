//! The report's agent sections: the inventory (who ran, under whose ownership, until when, with
//! flags for what a security lead must chase) and the intent catalog `learn` would suggest from
//! the calls seen.

use std::fmt::Write;

use super::html::{Context, esc, group, human};
use super::record::epoch_secs;
use super::sections::when;
use super::stats::{AgentInfo, Stats};
use crate::learn::{Catalog, Options};

/// Something to chase about an agent.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Flag {
    /// No owner in its records: nobody answers for it.
    NoOwner,
    /// Its `expires` lies before the report's as-of time.
    Expired,
    /// Not seen for longer than `--idle` before the as-of time.
    Idle,
}

impl Flag {
    fn class(self) -> &'static str {
        match self {
            Flag::NoOwner => "no-owner",
            Flag::Expired => "expired",
            Flag::Idle => "idle",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Flag::NoOwner => "no owner",
            Flag::Expired => "past expiry",
            Flag::Idle => "idle",
        }
    }
}

/// The flags of one agent as of `cx.as_of`.
pub(crate) fn flags(a: &AgentInfo, cx: &Context<'_>) -> Vec<Flag> {
    let mut f = Vec::new();
    if a.owner.as_deref().is_none_or(|o| o.trim().is_empty()) {
        f.push(Flag::NoOwner);
    }
    if a.expires
        .as_deref()
        .and_then(epoch_secs)
        .is_some_and(|e| e <= cx.as_of)
    {
        f.push(Flag::Expired);
    }
    let idle = i64::try_from(cx.idle.as_secs()).unwrap_or(i64::MAX);
    if cx.as_of.saturating_sub(a.last) > idle {
        f.push(Flag::Idle);
    }
    f
}

/// Every agent seen, flagged ones first.
pub(crate) fn inventory(s: &mut String, stats: &Stats, cx: &Context<'_>) {
    let mut rows: Vec<(&AgentInfo, Vec<Flag>)> =
        stats.agents.iter().map(|a| (a, flags(a, cx))).collect();
    rows.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.id.cmp(&b.0.id)));
    let flagged = rows.iter().filter(|r| !r.1.is_empty()).count();
    let _ = write!(
        s,
        "<section id=\"inventory\"><h2>Agent inventory</h2><p class=\"lead\">{} agents; {} flagged \
         (no owner, past expiry, or idle for more than {} as of {} UTC).</p>",
        rows.len(),
        flagged,
        human(cx.idle),
        when(cx.as_of)
    );
    if rows.is_empty() {
        s.push_str("<p class=\"none\">No agents in these logs.</p></section>");
        return;
    }
    s.push_str("<table id=\"agents\"><thead><tr><th>Agent</th><th>Owner</th><th>Namespace</th><th>Service account</th><th>Intents</th><th>First seen</th><th>Last seen</th><th>Expires</th><th class=\"n\">Calls</th><th class=\"n\">Refused</th><th class=\"n\">Would deny</th><th>Flags</th></tr></thead><tbody>");
    let dash = "<span class=\"none\">—</span>";
    let opt = |v: &Option<String>| v.as_deref().map_or(dash.to_string(), esc);
    for (a, f) in rows {
        let intents: Vec<String> = a
            .intents
            .iter()
            .map(|&i| {
                format!(
                    "<code class=\"pill\">{}</code>",
                    esc(stats.intent_names.name(i))
                )
            })
            .collect();
        let classes: Vec<&str> = f.iter().map(|f| f.class()).collect();
        let _ = write!(
            s,
            "<tr class=\"{}\" data-agent=\"{}\" data-flags=\"{}\" data-calls=\"{}\" data-refused=\"{}\" data-would-deny=\"{}\"><td class=\"key\"><b>{}</b></td><td class=\"key\">{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"key\">{}</td><td class=\"key\">{}</td><td class=\"key\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>",
            if f.is_empty() { "" } else { "flagged" },
            esc(&a.id),
            classes.join(" "),
            a.calls,
            a.refused,
            a.would_deny,
            esc(&a.id),
            opt(&a.owner),
            opt(&a.namespace),
            opt(&a.service_account),
            intents.join(" "),
            when(a.first),
            when(a.last),
            expires(a.expires.as_deref()),
            group(a.calls),
            group(a.refused),
            group(a.would_deny)
        );
        for flag in f {
            let _ = write!(
                s,
                "<span class=\"flag {}\">{}</span>",
                flag.class(),
                flag.label()
            );
        }
        s.push_str("</td></tr>");
    }
    s.push_str("</tbody></table></section>");
}

/// An expiry as `2027-06-30 00:00` (UTC), or as written when it is not RFC 3339.
fn expires(e: Option<&str>) -> String {
    match e {
        None => "<span class=\"none\">—</span>".to_string(),
        Some(t) => epoch_secs(t).map_or_else(|| esc(t), when),
    }
}

/// The catalog `intentgate learn` would write from these calls (ids generalised).
pub(crate) fn learn(s: &mut String, stats: &Stats) {
    s.push_str(
        "<section id=\"learn\"><h2>Suggested intent catalog</h2><p class=\"lead\">What \
        <code>intentgate learn --generalise</code> would write from the calls forwarded here: \
        a starting point to review, not to enforce as is. Refused calls are listed as comments, \
        never granted; counts are of distinct calls.</p>",
    );
    let catalog = Catalog::learn(
        &stats.learn_records,
        Options {
            generalise: Some(2),
        },
    );
    match catalog.to_yaml("intentgate report") {
        Ok(yaml) => {
            let _ = write!(s, "<pre id=\"learned\">{}</pre>", esc(&yaml));
        }
        Err(e) => {
            let _ = write!(s, "<p class=\"none\">Could not be written: {}</p>", esc(&e));
        }
    }
    if stats.learn_skipped > 0 {
        let _ = write!(
            s,
            "<p class=\"note\">{} calls beyond the first 20,000 distinct ones were not included.</p>",
            group(stats.learn_skipped)
        );
    }
    s.push_str("</section>");
}
