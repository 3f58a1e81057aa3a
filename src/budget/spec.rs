//! The budget keys of the configuration: `intents.X.budget` (how much an intent may do, and for
//! how long) and the top-level `budgets:` section (where the counters live). They live here, not
//! in src/config/, so that counting (and the refusals src/error.rs renders) needs nothing of the
//! configuration module; src/config/ re-exports them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `intents.X.budget`: limits on what calls under the intent may do, counted per agent and
/// intent (per intent token with `window: per_token`). Absent limits do not count.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BudgetSpec {
    /// Calls (requests, WebSockets, spliced tunnels) the intent may make.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calls: Option<u64>,
    /// Request body bytes the agent may send out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_out: Option<u64>,
    /// Response body bytes the agent may take in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_in: Option<u64>,
    /// LLM tokens (input + output, as the provider's usage reports them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub llm_tokens: Option<u64>,
    /// When the counts start again.
    #[serde(skip_serializing_if = "BudgetWindow::is_none")]
    pub window: BudgetWindow,
    /// The intent ends this long after its first call (e.g. `30m`): every later call is refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_after: Option<Span>,
}

/// `budget.window`: a duration (`1h`: the counts start again at each multiple of it since the
/// Unix epoch), `per_session` (until the session intent is set again or cleared) or `per_token`
/// (one count per intent token); absent: the counts never start again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub enum BudgetWindow {
    #[default]
    None,
    Every(Duration),
    PerSession,
    PerToken,
}

impl BudgetWindow {
    pub fn is_none(&self) -> bool {
        *self == BudgetWindow::None
    }
}

impl TryFrom<String> for BudgetWindow {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        match s.trim() {
            "per_session" => Ok(BudgetWindow::PerSession),
            "per_token" => Ok(BudgetWindow::PerToken),
            "" | "none" => Ok(BudgetWindow::None),
            d => span("window", d)
                .map(BudgetWindow::Every)
                .map_err(|e| format!("{e}, per_session or per_token")),
        }
    }
}

impl From<BudgetWindow> for String {
    fn from(w: BudgetWindow) -> String {
        match w {
            BudgetWindow::None => "none".into(),
            BudgetWindow::Every(d) => Span(d).into(),
            BudgetWindow::PerSession => "per_session".into(),
            BudgetWindow::PerToken => "per_token".into(),
        }
    }
}

/// A duration written as text (`90s`, `30m`, `1h`, `1d`), at least one second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct Span(pub Duration);

impl TryFrom<String> for Span {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        span("expires_after", &s).map(Span)
    }
}

/// The duration of `field`, at least one second.
fn span(field: &str, s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s.trim()) {
        Ok(d) if d >= Duration::from_secs(1) => Ok(d),
        Ok(_) => Err(format!(
            "{field}: '{s}' is shorter than the smallest span, 1s"
        )),
        Err(e) => Err(format!(
            "{field}: '{s}' is not a duration like 30s, 15m or 1h ({e})"
        )),
    }
}

impl From<Span> for String {
    fn from(s: Span) -> String {
        humantime::format_duration(s.0).to_string()
    }
}

/// The top-level `budgets:` section: where budget counters live.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BudgetsConfig {
    /// `redis://HOST:PORT[/DB]`: counters shared by every replica using the same Redis; absent,
    /// each process counts for itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_url: Option<String>,
    /// What a call gets while the store cannot be reached.
    pub on_store_error: OnStoreError,
}

/// `budgets.on_store_error`: fail closed (503 `budget_store_unavailable`) or let calls go
/// uncounted.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OnStoreError {
    #[default]
    Deny,
    Allow,
}

impl BudgetSpec {
    /// Refuses a budget that limits nothing.
    pub fn check(&self) -> Result<(), String> {
        if self.calls.is_none()
            && self.bytes_out.is_none()
            && self.bytes_in.is_none()
            && self.llm_tokens.is_none()
            && self.expires_after.is_none()
        {
            return Err(
                "set at least one of calls, bytes_out, bytes_in, llm_tokens, expires_after".into(),
            );
        }
        Ok(())
    }
}

/// `redis://HOST:PORT[/DB]` as (host:port, database).
pub fn redis_address(url: &str) -> Result<(String, u32), String> {
    let rest = url.strip_prefix("redis://").ok_or_else(|| {
        format!("'{url}' is not redis://HOST:PORT[/DB] (TLS and passwords are not supported)")
    })?;
    let (addr, db) = rest.split_once('/').unwrap_or((rest, ""));
    if addr.is_empty() || addr.contains('@') {
        return Err(format!(
            "'{url}' is not redis://HOST:PORT[/DB] (TLS and passwords are not supported)"
        ));
    }
    let db = match db {
        "" => 0,
        d => d
            .parse()
            .map_err(|_| format!("'{url}': the database '{d}' is not a number"))?,
    };
    let addr = if addr
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        addr.to_string()
    } else {
        format!("{addr}:6379")
    };
    Ok((addr, db))
}
