//! The summary `run` prints when the agent exits: per intent and destination, calls allowed,
//! blocked and would-block (monitor), with the first reason for each blocked destination.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::learn::is_call;

/// Counts for one intent and destination.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Line {
    pub allowed: usize,
    pub blocked: usize,
    pub would_block: usize,
    /// The reason the first blocked (or would-block) call got.
    pub first_reason: Option<String>,
}

/// The whole run.
#[derive(Debug, Default, Serialize)]
pub struct Summary {
    pub command: Vec<String>,
    pub exit_code: i32,
    pub audit_log: String,
    pub calls: usize,
    pub allowed: usize,
    pub blocked: usize,
    pub would_block: usize,
    /// intent → "host:port" → counts.
    pub intents: BTreeMap<String, BTreeMap<String, Line>>,
}

impl Summary {
    /// Aggregates this run's audit records.
    pub fn from_records(records: &[serde_json::Value]) -> Self {
        let mut s = Summary::default();
        for r in records
            .iter()
            .filter(|r| is_call(r) || r["decision"] == "error")
        {
            let intent = r["intent"]["name"].as_str().unwrap_or("(none)").to_string();
            let dest = format!(
                "{}:{}",
                r["host"].as_str().unwrap_or("?"),
                r["port"].as_u64().unwrap_or(0)
            );
            let line = s
                .intents
                .entry(intent)
                .or_default()
                .entry(dest)
                .or_default();
            s.calls += 1;
            match r["decision"].as_str() {
                Some("allow") => {
                    line.allowed += 1;
                    s.allowed += 1;
                }
                Some("would_deny") => {
                    line.would_block += 1;
                    s.would_block += 1;
                }
                _ => {
                    line.blocked += 1;
                    s.blocked += 1;
                }
            }
            if r["decision"] != "allow" && line.first_reason.is_none() {
                let reason = r["reasons"][0]
                    .as_str()
                    .or(r["error"].as_str())
                    .unwrap_or("refused");
                line.first_reason = Some(reason.to_string());
            }
        }
        s
    }

    /// The text printed to stderr.
    pub fn render(&self) -> String {
        let mut out = format!(
            "intentgate: `{}` exited with {}; {} calls: {} allowed, {} blocked, {} would-block\n",
            self.command.join(" "),
            self.exit_code,
            self.calls,
            self.allowed,
            self.blocked,
            self.would_block
        );
        for (intent, dests) in &self.intents {
            out.push_str(&format!("  intent {intent}\n"));
            for (dest, l) in dests {
                out.push_str(&format!(
                    "    {dest:<32} allowed {:<4} blocked {:<4} would-block {:<4}",
                    l.allowed, l.blocked, l.would_block
                ));
                if let Some(r) = &l.first_reason {
                    out.push_str(&format!(" first: {r}"));
                }
                out.push('\n');
            }
        }
        out.push_str(&format!("  audit log: {}\n", self.audit_log));
        out
    }
}
