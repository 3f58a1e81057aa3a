//! The catalog's sentences for a request (`why`): the request as text, and the sentence of a
//! match, written by hand (they run on every request).

use super::{Catalog, ScopeQuery, ScopeVerdict};

impl Catalog {
    /// Writes the `why` of a match `verdict_with` left empty (one through a tunnel that is not
    /// intercepted always has its own): `GET host/path matches rule N of intent 'name'`.
    pub(crate) fn matched_why(&self, v: &mut ScopeVerdict, q: &ScopeQuery<'_>) {
        let (Some(rule), Some(name), true) = (v.rule, v.intent.as_deref(), v.matched) else {
            return;
        };
        if !v.why.is_empty() || q.destination_only {
            return;
        }
        // By hand, not `format!`, and in one allocation of the right size.
        let mut w = req_text("", q, " matches rule  of intent ''".len() + 20 + name.len());
        w.push_str(" matches rule ");
        push_num(&mut w, rule);
        w.push_str(" of intent '");
        w.push_str(name);
        w.push('\'');
        v.why = w;
    }
}

/// `prefix` followed by the request: `GET api.zendesk.com/api/v2/tickets`, with the port when it
/// is not 80/443 (`GET [::1]:8080/x`), or `CONNECT host:port` on a tunnel that is not intercepted.
/// Built without the formatting machinery (it runs on every request).
/// `extra`: room for what the caller appends.
pub(super) fn req_text(prefix: &str, q: &ScopeQuery<'_>, extra: usize) -> String {
    let mut s = String::with_capacity(
        prefix.len() + q.method.len() + q.host.len() + q.path.len() + 9 + extra,
    );
    s.push_str(prefix);
    s.push_str(q.method);
    s.push(' ');
    // An IPv6 literal in brackets, so its port cannot be read as part of it.
    if q.host.contains(':') {
        s.push('[');
        s.push_str(q.host);
        s.push(']');
    } else {
        s.push_str(q.host);
    }
    if q.destination_only || (q.port != 80 && q.port != 443) {
        s.push(':');
        push_num(&mut s, q.port.into());
    }
    if !q.destination_only {
        s.push_str(q.path);
    }
    s
}

pub(super) fn push_num(s: &mut String, n: usize) {
    if n >= 10 {
        push_num(s, n / 10);
    }
    s.push(char::from(b'0' + (n % 10) as u8));
}
