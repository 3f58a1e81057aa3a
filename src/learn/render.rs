//! The learned catalog as YAML in the config's `intents:` format, with comments a reviewer reads:
//! who made the calls, what each generalised pattern stands for, and the calls that were refused
//! (listed, never granted).

use std::fmt::Write;

use super::{Catalog, UNNAMED};

/// A one-line comment: control characters (a reason could hold a newline) become spaces.
fn comment(out: &mut String, indent: &str, text: &str) {
    let text: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let _ = writeln!(out, "{indent}# {text}");
}

/// A string as a one-line YAML scalar: plain or quoted as YAML likes, else JSON's double quotes
/// (valid YAML) for what YAML would write on several lines.
fn scalar(s: &str) -> Result<String, String> {
    let y = serde_yaml::to_string(s).map_err(|e| e.to_string())?;
    let y = y.trim_end_matches('\n');
    if !y.contains('\n') && !y.starts_with(['|', '>']) {
        return Ok(y.to_string());
    }
    serde_json::to_string(s).map_err(|e| e.to_string())
}

/// `out` gets `text` (a YAML document) as an item of a block sequence at `indent`.
fn item(out: &mut String, indent: &str, text: &str) {
    for (i, line) in text.lines().enumerate() {
        let lead = if i == 0 { "- " } else { "  " };
        let _ = writeln!(out, "{indent}{lead}{line}");
    }
}

pub(super) fn yaml(c: &Catalog, source: &str) -> Result<String, String> {
    let mut out = String::new();
    comment(
        &mut out,
        "",
        &format!("Learned by intentgate from {source}."),
    );
    comment(
        &mut out,
        "",
        "A least-privilege starting point: review it, then enforce it.",
    );
    comment(
        &mut out,
        "",
        "Granted: only calls that were forwarded, each path with exactly the methods seen on it.",
    );
    comment(
        &mut out,
        "",
        &match c.opts.generalise {
            None => {
                "Paths are exactly as seen (--generalise [MIN] turns ids into '*').".to_string()
            }
            Some(min) => format!(
                "Id segments became '*' where {min}+ paths of a shape were seen (--generalise {min}); each is noted."
            ),
        },
    );
    if c.intents.contains_key(UNNAMED) {
        comment(
            &mut out,
            "",
            &format!(
                "Calls that declared no intent are under '{UNNAMED}': enforce them with \
                 `--intent {UNNAMED}` (or `intent: {UNNAMED}` in the config)."
            ),
        );
    }
    if c.intents.is_empty() {
        out.push_str("intents: {}\n");
    } else {
        out.push_str("intents:\n");
    }
    for (name, l) in &c.intents {
        let agents: Vec<&str> = l.agents.iter().map(String::as_str).collect();
        comment(
            &mut out,
            "  ",
            &format!(
                "{} calls forwarded (agents: {})",
                l.calls,
                agents.join(", ")
            ),
        );
        let spec = l.spec();
        let _ = writeln!(out, "  {}:", scalar(name)?);
        let _ = writeln!(out, "    description: {}", scalar(&spec.description)?);
        out.push_str("    allow:\n");
        for r in &l.rules {
            for n in &r.notes {
                comment(&mut out, "    ", n);
            }
            let text = serde_yaml::to_string(&r.rule).map_err(|e| e.to_string())?;
            item(&mut out, "    ", &text);
        }
    }
    if !c.refused.is_empty() {
        comment(
            &mut out,
            "",
            "Refused when the log was written, so NOT granted above (grant one only if its task needs it):",
        );
        for (intent, calls) in &c.refused {
            for ((method, dest, path), r) in calls {
                comment(
                    &mut out,
                    "",
                    &format!(
                        "  intent {intent}: {method} {dest}{path} ({} calls): {}",
                        r.calls, r.reason
                    ),
                );
            }
        }
    }
    Ok(out)
}
