//! The policy input document (contract: docs/policy.md), built directly as a regorus `Value`
//! with the `Object` API. Secret headers never enter it.

use regorus::Value;
use regorus::value::Object;

use super::cache::LEAVES;
use super::catalog::ScopeVerdict;
use super::{BodyFacts, RequestFacts};
use crate::identity::Agent;
use crate::intent::Intent;

/// Header names that never appear in the input or the log, whatever the configuration says.
pub const SECRET_HEADERS: [&str; 3] = ["authorization", "cookie", "proxy-authorization"];

fn s(v: &str) -> Value {
    Value::from(v)
}

fn opt(v: Option<&str>) -> Value {
    v.map_or(Value::Null, Value::from)
}

fn obj<const N: usize>(fields: [(&str, Value); N]) -> Value {
    let mut o = Object::new();
    for (k, v) in fields {
        o.insert(Value::from(k), v);
    }
    o.into_value()
}

/// `input.agent`: the same for every request, so built once per policy set.
pub fn agent_value(a: &Agent) -> Value {
    let mut labels = Object::new();
    for (k, v) in &a.labels {
        labels.insert(s(k), s(v));
    }
    obj([
        ("id", s(&a.id)),
        ("namespace", opt(a.namespace.as_deref())),
        ("service_account", opt(a.service_account.as_deref())),
        ("owner", opt(a.owner.as_deref())),
        ("owner_source", opt(a.owner_source.map(|o| o.as_str()))),
        ("spiffe_id", opt(a.spiffe_id.as_deref())),
        ("labels", labels.into_value()),
        ("expires", opt(a.expires_rfc3339().as_deref())),
    ])
}

fn intent_value(i: &Intent) -> Value {
    // A verified token's claims are `claims` and `token` (null without one).
    let token = i
        .token
        .as_ref()
        .and_then(|t| serde_json::to_value(&**t).ok());
    let claims = match &token {
        Some(t) => Value::from(t.clone()),
        None if i.claims.is_empty() => Value::new_object(),
        None => Value::from(serde_json::Value::Object(i.claims.clone())),
    };
    obj([
        ("name", opt(i.name.as_deref())),
        ("task", opt(i.task.as_deref())),
        ("source", s(i.source.as_str())),
        ("verified", Value::from(i.verified)),
        ("claims", claims),
        ("token", token.map_or(Value::Null, Value::from)),
    ])
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Form-decodes one query component (`+` is a space, `%XX` a byte; invalid escapes kept).
fn form_decode(raw: &str) -> String {
    let b = raw.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `input.request.query`: every name with all its values, in order.
fn query_value(q: Option<&str>) -> Value {
    let mut map: std::collections::BTreeMap<String, Vec<Value>> = Default::default();
    for pair in q.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        map.entry(form_decode(k))
            .or_default()
            .push(Value::from(form_decode(v)));
    }
    let mut o = Object::new();
    for (k, vs) in map {
        o.insert(Value::from(k), Value::from(vs));
    }
    o.into_value()
}

/// Whether a header is kept out of the input (secrets and configured identity headers).
pub fn is_secret(name: &str, strip: &[String]) -> bool {
    SECRET_HEADERS.contains(&name) || strip.iter().any(|s| s == name)
}

fn headers_value(h: &http::HeaderMap, strip: &[String]) -> Value {
    let mut o = Object::new();
    for name in h.keys() {
        let n = name.as_str();
        if is_secret(n, strip) {
            continue;
        }
        let mut joined = String::new();
        for (i, v) in h.get_all(name).iter().enumerate() {
            if i > 0 {
                joined.push_str(", ");
            }
            joined.push_str(&String::from_utf8_lossy(v.as_bytes()));
        }
        o.insert(s(n), Value::from(joined));
    }
    o.into_value()
}

/// The bit of an input field (a `cache::LEAVES` path) in a `reads` mask; a compile error when
/// the path is not a field.
pub(super) const fn bit(path: &str) -> u64 {
    let mut i = 0;
    while i < LEAVES.len() {
        let (p, _) = LEAVES[i];
        if p.len() == path.len() {
            let (a, b) = (p.as_bytes(), path.as_bytes());
            let mut j = 0;
            while j < a.len() && a[j] == b[j] {
                j += 1;
            }
            if j == a.len() {
                return 1 << i;
            }
        }
        i += 1;
    }
    panic!("not an input field")
}

/// The bits of every field of a section (`request`, `scope`, ...).
const fn section(name: &str) -> u64 {
    let mut mask = 0;
    let mut i = 0;
    while i < LEAVES.len() {
        let (p, _) = LEAVES[i];
        let (a, b) = (p.as_bytes(), name.as_bytes());
        if a.len() > b.len() && a[b.len()] == b'.' {
            let mut j = 0;
            while j < b.len() && a[j] == b[j] {
                j += 1;
            }
            if j == b.len() {
                mask |= 1 << i;
            }
        }
        i += 1;
    }
    mask
}

/// Whether a `reads` mask holds `path` (checked at compile time).
macro_rules! has {
    ($mask:expr, $path:literal) => {{
        const B: u64 = bit($path);
        $mask & B != 0
    }};
}

/// Builds an object of the fields whose flag is set; `None` when none is.
fn pick<const N: usize>(fields: [(bool, &str, &dyn Fn() -> Value); N]) -> Option<Value> {
    let mut o = Object::new();
    let mut any = false;
    for (want, k, v) in fields {
        if want {
            o.insert(Value::from(k), v());
            any = true;
        }
    }
    any.then(|| o.into_value())
}

/// The input document, with only the fields in `reads` (a `cache::reads` mask; `u64::MAX` for
/// all of them, as `explain` shows it). A section with no field read is left out.
#[allow(clippy::too_many_arguments)]
pub fn build(
    agent: &Value,
    intent: &Intent,
    req: &RequestFacts<'_>,
    segments: &[&str],
    scope: &ScopeVerdict,
    strip: &[String],
    now_unix: u64,
    reads: u64,
) -> Value {
    if reads == 0 {
        return Value::new_object();
    }
    let m = reads;
    let request = pick([
        (has!(m, "request.id"), "id", &|| s(req.id)),
        (has!(m, "request.protocol"), "protocol", &|| {
            s(req.protocol.as_str())
        }),
        (has!(m, "request.method"), "method", &|| s(req.method)),
        (has!(m, "request.scheme"), "scheme", &|| {
            s(req.scheme.as_str())
        }),
        (has!(m, "request.host"), "host", &|| s(req.host)),
        (has!(m, "request.port"), "port", &|| {
            Value::from(u64::from(req.port))
        }),
        (has!(m, "request.path"), "path", &|| opt(req.path)),
        (has!(m, "request.path_segments"), "path_segments", &|| {
            Value::from(segments.iter().map(|x| s(x)).collect::<Vec<_>>())
        }),
        (has!(m, "request.query"), "query", &|| {
            query_value(req.query)
        }),
        (has!(m, "request.headers"), "headers", &|| {
            req.headers
                .map_or_else(Value::new_object, |h| headers_value(h, strip))
        }),
        (has!(m, "request.body"), "body", &|| {
            req.body.map_or(Value::Null, body_value)
        }),
        (has!(m, "request.body_truncated"), "body_truncated", &|| {
            Value::from(req.body.is_some_and(|b| b.truncated))
        }),
    ]);
    let destination = || match req.destination {
        Some((ip, class)) => obj([("ip", Value::from(ip.to_string())), ("class", s(class))]),
        None => Value::Null,
    };
    let c = &req.connection;
    let connection = pick([
        (has!(m, "connection.mode"), "mode", &|| s(c.mode.as_str())),
        // A function of `request.protocol` (the decision cache keys on that).
        (has!(m, "connection.protocol"), "protocol", &|| {
            s(req.protocol.transport())
        }),
        (has!(m, "connection.sni"), "sni", &|| opt(c.sni)),
        (has!(m, "connection.intercepted"), "intercepted", &|| {
            Value::from(c.intercepted)
        }),
    ]);
    let scope = pick([
        (has!(m, "scope.matched"), "matched", &|| {
            Value::from(scope.matched)
        }),
        (has!(m, "scope.intent"), "intent", &|| {
            opt(scope.intent.as_deref())
        }),
        (has!(m, "scope.rule"), "rule", &|| {
            scope.rule.map_or(Value::Null, Value::from)
        }),
        (has!(m, "scope.why"), "why", &|| s(&scope.why)),
        (has!(m, "scope.code"), "code", &|| s(scope.code.as_str())),
        (has!(m, "scope.mode"), "mode", &|| s(scope.mode.as_str())),
    ]);
    let some = |v: Option<Value>| move || v.clone().unwrap_or(Value::Null);
    const DEST: u64 = section("destination");
    const INTENT: u64 = section("intent");
    pick([
        (has!(m, "agent"), "agent", &|| agent.clone()),
        (m & INTENT != 0, "intent", &|| intent_value(intent)),
        (request.is_some(), "request", &some(request.clone())),
        (scope.is_some(), "scope", &some(scope.clone())),
        (m & DEST != 0, "destination", &destination),
        (
            connection.is_some(),
            "connection",
            &some(connection.clone()),
        ),
        (has!(m, "mcp"), "mcp", &|| {
            req.mcp.map_or(Value::Null, |c| Value::from(c.to_json()))
        }),
        (has!(m, "time"), "time", &|| {
            obj([("unix", Value::from(now_unix))])
        }),
        (has!(m, "llm"), "llm", &|| {
            req.llm.map_or(Value::Null, crate::llm::LlmCall::value)
        }),
    ])
    .unwrap_or_else(Value::new_object)
}

/// The same input as JSON, for `explain`.
pub fn to_json(input: &Value) -> serde_json::Value {
    serde_json::to_value(input).unwrap_or(serde_json::Value::Null)
}

/// Splits a path into its non-empty segments.
pub fn segments(path: &str) -> Vec<&str> {
    super::pattern::Segments::of(path).collect()
}

/// `segments` into `buf`: how many, or `None` when there are more than it holds.
pub(crate) fn segments_into<'a>(path: &'a str, buf: &mut [&'a str]) -> Option<usize> {
    let mut n = 0;
    for s in super::pattern::Segments::of(path) {
        *buf.get_mut(n)? = s;
        n += 1;
    }
    Some(n)
}

/// The inspected body: the parsed document for whole JSON, else the text (lossy UTF-8).
fn body_value(b: BodyFacts<'_>) -> Value {
    if b.json && !b.truncated {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(b.bytes) {
            return Value::from(v);
        }
    }
    Value::from(String::from_utf8_lossy(b.bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_is_decoded_into_lists() {
        let v = to_json(&query_value(Some("page=2&tag=a+b&tag=%41%zz&flag")));
        assert_eq!(
            v,
            serde_json::json!({"page": ["2"], "tag": ["a b", "A%zz"], "flag": [""]})
        );
        assert_eq!(form_decode("%4"), "%4");
        assert_eq!(form_decode("100%"), "100%");
    }
}
