//! The policy input document (the contract in docs/policy.md), built directly as a regorus `Value`
//! (no JSON round trip). Secrets never enter it.

use std::net::IpAddr;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use http::HeaderMap;
use regorus::Value;
use regorus::value::Object;

use super::catalog::ScopeVerdict;
use crate::identity::Agent;
use crate::intent::Intent;

/// Header names that never appear in the input or the log.
pub const SECRET_HEADERS: [&str; 4] = [
    "authorization",
    "cookie",
    "proxy-authorization",
    "set-cookie",
];

/// How the request reached intentgate.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConnectionFacts<'a> {
    /// `forward`, `connect`, `intercepted` or `transparent`.
    pub mode: &'a str,
    pub sni: Option<&'a str>,
    pub intercepted: bool,
}

/// What the proxy knows about one request.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    pub id: &'a str,
    pub protocol: &'a str,
    pub method: &'a str,
    pub scheme: &'a str,
    pub host: &'a str,
    pub port: u16,
    /// The canonical path (none for a tunnel that is not intercepted).
    pub path: Option<&'a str>,
    pub query: Option<&'a str>,
    pub headers: Option<&'a HeaderMap>,
    pub connection: ConnectionFacts<'a>,
    pub destination: Option<(IpAddr, &'a str)>,
}

fn s(v: &str) -> Value {
    Value::from(v)
}

fn opt(v: Option<&str>) -> Value {
    v.map_or(Value::Null, Value::from)
}

fn obj(entries: impl IntoIterator<Item = (&'static str, Value)>) -> Value {
    Value::Object(regorus::Rc::new(
        entries
            .into_iter()
            .map(|(k, v)| (key(k), v))
            .collect::<Object>(),
    ))
}

/// Interned object keys: built once, cloned (a reference count) per use.
fn key(k: &'static str) -> Value {
    static KEYS: OnceLock<std::collections::HashMap<&'static str, Value>> = OnceLock::new();
    KEYS.get_or_init(|| {
        [
            "agent",
            "id",
            "namespace",
            "service_account",
            "owner",
            "spiffe_id",
            "labels",
            "expires",
            "intent",
            "name",
            "task",
            "source",
            "verified",
            "claims",
            "request",
            "protocol",
            "method",
            "scheme",
            "host",
            "port",
            "path",
            "path_segments",
            "query",
            "headers",
            "body",
            "body_truncated",
            "scope",
            "matched",
            "rule",
            "why",
            "code",
            "destination",
            "ip",
            "class",
            "connection",
            "mode",
            "sni",
            "intercepted",
            "mcp",
            "time",
            "unix",
        ]
        .into_iter()
        .map(|k| (k, Value::from(k)))
        .collect()
    })
    .get(k)
    .cloned()
    .unwrap_or_else(|| Value::from(k))
}

/// The `agent` object: constant for a process, built once per policy load.
pub fn agent_value(a: &Agent) -> Value {
    let labels = Value::Object(regorus::Rc::new(
        a.labels
            .iter()
            .map(|(k, v)| (s(k), s(v)))
            .collect::<Object>(),
    ));
    obj([
        ("id", s(&a.id)),
        ("namespace", opt(a.namespace.as_deref())),
        ("service_account", opt(a.service_account.as_deref())),
        ("owner", opt(a.owner.as_deref())),
        ("spiffe_id", opt(a.spiffe_id.as_deref())),
        ("labels", labels),
        ("expires", opt(a.expires_text.as_deref())),
    ])
}

fn intent_value(i: &Intent) -> Value {
    let claims: Object = i
        .claims
        .iter()
        .map(|(k, v)| (s(k), Value::from(v.clone())))
        .collect();
    obj([
        ("name", opt(i.name.as_deref())),
        ("task", opt(i.task.as_deref())),
        ("source", s(i.source.as_str())),
        ("verified", Value::from(i.verified)),
        ("claims", Value::Object(regorus::Rc::new(claims))),
    ])
}

fn query_value(q: Option<&str>) -> Value {
    let mut map: std::collections::BTreeMap<Value, Vec<Value>> = std::collections::BTreeMap::new();
    for pair in q.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        map.entry(s(k)).or_default().push(s(v));
    }
    Value::Object(regorus::Rc::new(
        map.into_iter()
            .map(|(k, v)| (k, Value::from(v)))
            .collect::<Object>(),
    ))
}

fn headers_value(h: Option<&HeaderMap>, strip: &[String]) -> Value {
    let mut out = Object::new();
    for (name, value) in h.into_iter().flatten() {
        let n = name.as_str();
        if SECRET_HEADERS.contains(&n) || strip.iter().any(|s| s == n) {
            continue;
        }
        out.insert(s(n), s(&String::from_utf8_lossy(value.as_bytes())));
    }
    Value::Object(regorus::Rc::new(out))
}

fn scope_value(v: &ScopeVerdict) -> Value {
    obj([
        ("matched", Value::from(v.matched)),
        ("intent", opt(v.intent.as_deref())),
        (
            "rule",
            v.rule.map_or(Value::Null, |r| Value::from(r as u64)),
        ),
        ("why", s(&v.why)),
        ("code", s(v.code)),
    ])
}

/// The whole input document.
pub fn build(
    agent: &Value,
    intent: &Intent,
    r: &RequestFacts<'_>,
    scope: &ScopeVerdict,
    strip: &[String],
) -> Value {
    let segments: Vec<Value> = r
        .path
        .map(|p| {
            p.trim_start_matches('/')
                .split('/')
                .filter(|x| !x.is_empty())
                .map(s)
                .collect()
        })
        .unwrap_or_default();
    let request = obj([
        ("id", s(r.id)),
        ("protocol", s(r.protocol)),
        ("method", s(r.method)),
        ("scheme", s(r.scheme)),
        ("host", s(r.host)),
        ("port", Value::from(u64::from(r.port))),
        ("path", opt(r.path)),
        ("path_segments", Value::from(segments)),
        ("query", query_value(r.query)),
        ("headers", headers_value(r.headers, strip)),
        ("body", Value::Null),
        ("body_truncated", Value::from(false)),
    ]);
    let destination = match r.destination {
        Some((ip, class)) => obj([("ip", s(&ip.to_string())), ("class", s(class))]),
        None => obj([("ip", Value::Null), ("class", s("unknown"))]),
    };
    let connection = obj([
        ("mode", s(r.connection.mode)),
        ("sni", opt(r.connection.sni)),
        ("intercepted", Value::from(r.connection.intercepted)),
    ]);
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    obj([
        ("agent", agent.clone()),
        ("intent", intent_value(intent)),
        ("request", request),
        ("scope", scope_value(scope)),
        ("destination", destination),
        ("connection", connection),
        ("mcp", Value::Null),
        ("time", obj([("unix", Value::from(unix))])),
    ])
}
