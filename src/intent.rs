//! What the agent says it is doing, and how it said so. Sources, weakest to strongest: the default
//! (config / `--intent`), the session intent (admin API, with a time to live), the per-request
//! header, and (planned) a signed token — the room for it is `source: token`, `verified`, `claims`.

use std::sync::RwLock;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

/// How an intent was declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IntentSource {
    Header,
    Session,
    Token,
    Default,
    None,
}

impl IntentSource {
    pub fn as_str(self) -> &'static str {
        match self {
            IntentSource::Header => "header",
            IntentSource::Session => "session",
            IntentSource::Token => "token",
            IntentSource::Default => "default",
            IntentSource::None => "none",
        }
    }
}

/// A declared intent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Intent {
    pub name: Option<String>,
    pub task: Option<String>,
    pub source: IntentSource,
    /// True only for a verified signed token (planned).
    pub verified: bool,
    pub claims: serde_json::Map<String, serde_json::Value>,
}

impl Intent {
    fn new(name: &str, task: Option<&str>, source: IntentSource) -> Self {
        Self {
            name: Some(name.to_string()),
            task: task.map(str::to_string),
            source,
            verified: false,
            claims: serde_json::Map::new(),
        }
    }

    pub fn none() -> Self {
        Self {
            name: None,
            task: None,
            source: IntentSource::None,
            verified: false,
            claims: serde_json::Map::new(),
        }
    }
}

/// The session intent as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SessionIntent {
    pub name: String,
    pub task: Option<String>,
    /// RFC 3339 expiry, or none for no expiry.
    pub expires: Option<String>,
    #[serde(skip)]
    deadline: Option<Instant>,
}

/// The session intent set through the admin API; expires by itself.
#[derive(Default)]
pub struct SessionStore {
    current: RwLock<Option<SessionIntent>>,
}

impl SessionStore {
    /// Sets the session intent, for `ttl` (none = until changed).
    pub fn set(&self, name: &str, task: Option<&str>, ttl: Option<Duration>) -> SessionIntent {
        let s = SessionIntent {
            name: name.to_string(),
            task: task.map(str::to_string),
            expires: ttl
                .map(|t| humantime::format_rfc3339_seconds(SystemTime::now() + t).to_string()),
            deadline: ttl.map(|t| Instant::now() + t),
        };
        if let Ok(mut cur) = self.current.write() {
            *cur = Some(s.clone());
        }
        s
    }

    /// The session intent in force now, if any.
    pub fn get(&self, now: Instant) -> Option<SessionIntent> {
        let cur = self.current.read().ok()?;
        cur.as_ref()
            .filter(|s| s.deadline.is_none_or(|d| now < d))
            .cloned()
    }

    /// Removes the session intent; whether there was one in force.
    pub fn clear(&self) -> bool {
        let Ok(mut cur) = self.current.write() else {
            return false;
        };
        let had = cur
            .as_ref()
            .is_some_and(|s| s.deadline.is_none_or(|d| Instant::now() < d));
        *cur = None;
        had
    }
}

/// Picks the intent in force for one request: header > session > default.
pub fn resolve(
    header: Option<(&str, Option<&str>)>,
    session: &SessionStore,
    default: Option<(&str, Option<&str>)>,
) -> Intent {
    if let Some((name, task)) = header {
        return Intent::new(name, task, IntentSource::Header);
    }
    if let Some(s) = session.get(Instant::now()) {
        return Intent::new(&s.name, s.task.as_deref(), IntentSource::Session);
    }
    match default {
        Some((name, task)) => Intent::new(name, task, IntentSource::Default),
        None => Intent::none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_header_session_default() {
        let store = SessionStore::default();
        let d = Some(("default-intent", None));
        assert_eq!(resolve(None, &store, None).source, IntentSource::None);
        assert_eq!(resolve(None, &store, d).source, IntentSource::Default);
        store.set("session-intent", Some("INC-1"), None);
        let i = resolve(None, &store, d);
        assert_eq!(
            (i.name.as_deref(), i.task.as_deref(), i.source),
            (Some("session-intent"), Some("INC-1"), IntentSource::Session)
        );
        let i = resolve(Some(("hdr", Some("T-2"))), &store, d);
        assert_eq!(
            (i.name.as_deref(), i.source),
            (Some("hdr"), IntentSource::Header)
        );
        assert!(store.clear());
        assert_eq!(resolve(None, &store, d).source, IntentSource::Default);
    }

    #[test]
    fn session_expires() {
        let store = SessionStore::default();
        store.set("short", None, Some(Duration::from_millis(10)));
        assert!(store.get(Instant::now()).is_some());
        assert!(
            store
                .get(Instant::now() + Duration::from_millis(20))
                .is_none()
        );
    }
}
