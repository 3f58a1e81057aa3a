//! What the agent declared it is doing, and how: a per-request header, a session intent set on
//! the admin API, a signed intent token (src/proxy/intent_token.rs), or the configured default.
//! Precedence, strongest first: token > header > session > default.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::token::IntentClaims;

/// How an intent was declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IntentSource {
    Header,
    Session,
    /// A verified signed intent token.
    Token,
    Default,
    None,
}

impl IntentSource {
    pub const fn as_str(self) -> &'static str {
        match self {
            IntentSource::Header => "header",
            IntentSource::Session => "session",
            IntentSource::Token => "token",
            IntentSource::Default => "default",
            IntentSource::None => "none",
        }
    }
}

/// An intent found in one catalog (`Catalog::know`, src/policy/catalog/known.rs): a request
/// asks the catalog about its intent ~6 times (the token check, the verdict, the counters, the
/// budget, the credential, the attestation), and each question goes straight to the entry
/// instead of hashing the name again. Another catalog (a reload's, the shadow policy's) does
/// not take it: it looks the name up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Known {
    pub(crate) catalog: u64,
    pub(crate) index: u32,
}

/// The intent a request is made under.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Intent {
    /// Shared: a catalog intent's is the catalog's own (`Catalog::know`), and the verdict and
    /// the audit record take it without a copy.
    pub name: Option<Arc<str>>,
    pub task: Option<String>,
    pub source: IntentSource,
    /// True only for a verified signed token.
    pub verified: bool,
    /// Claims of a signed token (empty otherwise).
    pub claims: serde_json::Map<String, serde_json::Value>,
    /// The verified claims of the intent token it was declared with (`input.intent.token`).
    #[serde(skip)]
    pub token: Option<Arc<IntentClaims>>,
    /// Where the catalog the request is decided by has it, once found (`Catalog::know`): the
    /// catalog's later questions about it go straight there.
    #[serde(skip)]
    pub known: Option<Known>,
}

impl Intent {
    /// No intent declared.
    pub fn none() -> Self {
        Self::declared(None, None, IntentSource::None)
    }

    fn declared(name: Option<Arc<str>>, task: Option<String>, source: IntentSource) -> Self {
        Intent {
            name,
            task,
            source,
            verified: false,
            claims: serde_json::Map::new(),
            token: None,
            known: None,
        }
    }

    /// The intent a verified token declares.
    pub fn from_token(claims: Arc<IntentClaims>) -> Self {
        Intent {
            name: Some(Arc::from(claims.intent.as_str())),
            task: claims.task.clone(),
            source: IntentSource::Token,
            verified: true,
            claims: serde_json::Map::new(),
            token: Some(claims),
            known: None,
        }
    }
}

/// The session intent: set on the admin API, valid until its time to live runs out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionIntent {
    pub name: String,
    pub task: Option<String>,
    /// RFC 3339 expiry, or none for no expiry (until changed or cleared).
    pub expires: Option<String>,
    /// When it stops applying (monotonic, so clock changes do not extend or cut it).
    #[serde(skip)]
    deadline: Option<Instant>,
    /// The intent token it was set with (`PUT /v1/intent {"token": …}`), verified again on
    /// every request (a cache hit); never shown.
    #[serde(skip)]
    pub token: Option<Arc<str>>,
}

impl SessionIntent {
    fn new(name: &str, task: Option<&str>, ttl: Option<Duration>, now: Instant) -> Self {
        SessionIntent {
            name: name.trim().to_string(),
            task: task.and_then(present),
            expires: ttl
                .and_then(|t| SystemTime::now().checked_add(t))
                .map(|at| humantime::format_rfc3339_seconds(at).to_string()),
            deadline: ttl.and_then(|t| now.checked_add(t)),
            token: None,
        }
    }
}

/// Holds the session intent. Reads take a shared lock; writes are rare.
#[derive(Debug, Default)]
pub struct SessionStore {
    current: RwLock<Option<Arc<SessionIntent>>>,
}

impl SessionStore {
    /// Sets the session intent, replacing any previous one; `ttl: None` keeps it until cleared.
    pub fn set(&self, name: &str, task: Option<&str>, ttl: Option<Duration>) -> SessionIntent {
        self.set_at(name, task, ttl, Instant::now())
    }

    /// `set` with an explicit clock.
    pub fn set_at(
        &self,
        name: &str,
        task: Option<&str>,
        ttl: Option<Duration>,
        now: Instant,
    ) -> SessionIntent {
        self.store(SessionIntent::new(name, task, ttl, now))
    }

    /// Sets a session intent declared by a verified intent token, for `ttl` (at most the
    /// token's own remaining life, which the caller passes).
    pub fn set_token(
        &self,
        token: &str,
        name: &str,
        task: Option<&str>,
        ttl: Duration,
    ) -> SessionIntent {
        let mut s = SessionIntent::new(name, task, Some(ttl), Instant::now());
        s.token = Some(Arc::from(token));
        self.store(s)
    }

    fn store(&self, s: SessionIntent) -> SessionIntent {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(s.clone()));
        s
    }

    /// The session intent in force at `now`, if any (an expired one is treated as absent).
    pub fn get(&self, now: Instant) -> Option<SessionIntent> {
        self.get_shared(|| now).map(|s| (*s).clone())
    }

    /// The session intent in force at `now`, shared. The clock is read only for one that
    /// expires.
    pub(crate) fn get_shared(&self, now: impl FnOnce() -> Instant) -> Option<Arc<SessionIntent>> {
        let guard = self.current.read().unwrap_or_else(|p| p.into_inner());
        match guard.as_ref() {
            Some(s) if s.deadline.is_none_or(|d| now() < d) => Some(Arc::clone(s)),
            _ => None,
        }
    }

    /// Removes the session intent; returns whether one was in force.
    pub fn clear(&self) -> bool {
        let old = self
            .current
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        old.is_some_and(|s| s.deadline.is_none_or(|d| Instant::now() < d))
    }
}

fn present(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

/// Resolves the intent of one request: the header (`(intent, task)`), else the session, else the
/// default (`(intent, task)`), else none. A task goes with the intent it was declared with.
pub fn resolve(
    header: Option<(&str, Option<&str>)>,
    session: &SessionStore,
    default: Option<(&str, Option<&str>)>,
) -> Intent {
    resolve_at(header, session, default, Instant::now())
}

/// `resolve` with an explicit clock.
pub fn resolve_at(
    header: Option<(&str, Option<&str>)>,
    session: &SessionStore,
    default: Option<(&str, Option<&str>)>,
    now: Instant,
) -> Intent {
    resolve_with(header, session.get_shared(|| now).as_deref(), default)
}

/// `resolve` with the session intent in force already read.
pub fn resolve_with(
    header: Option<(&str, Option<&str>)>,
    session: Option<&SessionIntent>,
    default: Option<(&str, Option<&str>)>,
) -> Intent {
    resolve_by(header, session, default, |n| (Arc::from(n), None))
}

/// `resolve_with`, names made by `name`: a catalog's (`Catalog::share`), found there once and
/// shared (no copy a request).
pub fn resolve_in(
    header: Option<(&str, Option<&str>)>,
    session: Option<&SessionIntent>,
    default: Option<(&str, Option<&str>)>,
    name: impl Fn(&str) -> (Arc<str>, Option<Known>),
) -> Intent {
    resolve_by(header, session, default, name)
}

/// `resolve_with`, names made by `name`.
fn resolve_by(
    header: Option<(&str, Option<&str>)>,
    session: Option<&SessionIntent>,
    default: Option<(&str, Option<&str>)>,
    name: impl Fn(&str) -> (Arc<str>, Option<Known>),
) -> Intent {
    let declared = |n: &str, task, source| {
        let (n, known) = name(n);
        Intent {
            known,
            ..Intent::declared(Some(n), task, source)
        }
    };
    let pick = |(n, task): (&str, Option<&str>), source| {
        let n = trimmed(n);
        (!n.is_empty()).then(|| declared(n, task.and_then(present), source))
    };
    if let Some(i) = header.and_then(|h| pick(h, IntentSource::Header)) {
        return i;
    }
    if let Some(s) = session {
        return declared(&s.name, s.task.clone(), IntentSource::Session);
    }
    default
        .and_then(|d| pick(d, IntentSource::Default))
        .unwrap_or_else(Intent::none)
}

/// `n.trim()`, without its scan where `n` plainly has nothing to trim: begins and ends with a
/// visible ASCII character (a name like `bench`).
fn trimmed(n: &str) -> &str {
    let visible = |b: Option<&u8>| b.is_some_and(u8::is_ascii_graphic);
    if visible(n.as_bytes().first()) && visible(n.as_bytes().last()) {
        n
    } else {
        n.trim()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trimmed_is_trim() {
        let parts = [
            "",
            " ",
            "\t",
            "\u{a0}",
            "\u{3000}",
            "a",
            "b-c",
            "é",
            "\u{1f600}",
            "\n",
        ];
        for a in parts {
            for b in parts {
                for c in parts {
                    let n = format!("{a}{b}{c}");
                    assert_eq!(trimmed(&n), n.trim(), "{n:?}");
                }
            }
        }
    }

    #[test]
    fn header_beats_session_beats_default() {
        let s = SessionStore::default();
        let now = Instant::now();
        let d = Some(("dflt", Some("T-1")));
        let i = resolve_at(None, &s, d, now);
        assert_eq!(
            (i.name.as_deref(), i.source),
            (Some("dflt"), IntentSource::Default)
        );
        assert_eq!(i.task.as_deref(), Some("T-1"));
        s.set_at("sess", None, Some(Duration::from_secs(60)), now);
        let i = resolve_at(None, &s, d, now);
        assert_eq!(
            (i.name.as_deref(), i.source),
            (Some("sess"), IntentSource::Session)
        );
        assert_eq!(
            i.task, None,
            "the default's task does not leak into the session intent"
        );
        let i = resolve_at(Some(("hdr", Some(" INC-1 "))), &s, d, now);
        assert_eq!(
            (i.name.as_deref(), i.source),
            (Some("hdr"), IntentSource::Header)
        );
        assert_eq!(i.task.as_deref(), Some("INC-1"));
        // An empty header is no declaration.
        let i = resolve_at(Some((" ", None)), &s, d, now);
        assert_eq!(i.source, IntentSource::Session);
        assert!(s.clear());
        assert_eq!(resolve_at(None, &s, None, now), Intent::none());
    }

    #[test]
    fn session_expires() {
        let s = SessionStore::default();
        let now = Instant::now();
        let set = s.set_at("x", Some("t"), Some(Duration::from_secs(10)), now);
        assert!(set.expires.is_some());
        assert!(s.get(now + Duration::from_secs(9)).is_some());
        assert!(s.get(now + Duration::from_secs(10)).is_none());
        s.set_at("y", None, None, now);
        assert!(s.get(now + Duration::from_secs(1_000_000)).is_some());
        assert!(s.clear());
        assert!(s.get(now).is_none());
    }

    #[test]
    fn source_serialises_lowercase() {
        assert_eq!(
            serde_json::to_string(&IntentSource::Default).unwrap(),
            "\"default\""
        );
        assert_eq!(IntentSource::None.as_str(), "none");
    }
}
