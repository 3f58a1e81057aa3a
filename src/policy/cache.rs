//! The decision cache, used only when it is provably safe: every input field the loaded modules
//! can read must be part of the key. Modules are scanned at load; any that read headers, the body,
//! the request id or the time, use non-deterministic built-ins, or use `input` as a whole disable
//! it. One cache per worker thread (no lock), dropped with the policy generation it served.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::Write;

use super::{Decision, RequestFacts};
use crate::intent::Intent;

const MAX_ENTRIES: usize = 4096;

/// Input references and built-ins that make a decision depend on more than the key.
const UNSAFE: [&str; 12] = [
    "input.request.headers",
    "input.request.body",
    "input.request.id",
    "input.time",
    "input.mcp",
    "time.now_ns",
    "rand.",
    "uuid.",
    "http.send",
    "opa.runtime",
    "net.lookup",
    "trace(",
];

/// Whether decisions of these modules may be cached, and if not, why.
pub fn plan<'a>(modules: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<(), String> {
    for (file, text) in modules {
        let code: String = text
            .lines()
            .map(|l| l.split('#').next().unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n");
        if let Some(u) = UNSAFE.iter().find(|u| code.contains(*u)) {
            return Err(format!("{file} uses {u}"));
        }
        // `input` must always be followed by `.field`: `input[x]`, `x := input` or `with input`
        // could read anything.
        let bytes = code.as_bytes();
        for (i, _) in code.match_indices("input") {
            let before = i.checked_sub(1).map(|j| bytes[j]);
            let after = bytes.get(i + 5).copied();
            let word_start =
                before.is_none_or(|b| !(b.is_ascii_alphanumeric() || b == b'_' || b == b'.'));
            let word_end = after.is_none_or(|b| !(b.is_ascii_alphanumeric() || b == b'_'));
            if word_start && word_end && after != Some(b'.') {
                return Err(format!("{file} uses `input` as a whole"));
            }
        }
    }
    Ok(())
}

/// Every input field a cacheable policy can read, except the constant agent.
pub fn key(intent: &Intent, r: &RequestFacts<'_>) -> String {
    let mut k = String::with_capacity(128);
    let _ = write!(
        k,
        "{}\0{}\0{}\0{}\0{}\0{}\0{}\0{}\0{}\0{}\0{}\0{}\0{:?}",
        intent.name.as_deref().unwrap_or(""),
        intent.task.as_deref().unwrap_or(""),
        intent.source.as_str(),
        r.method,
        r.scheme,
        r.host,
        r.port,
        r.path.unwrap_or("\u{1}"),
        r.query.unwrap_or(""),
        r.connection.mode,
        r.connection.sni.unwrap_or(""),
        r.protocol,
        r.destination,
    );
    if intent.verified || !intent.claims.is_empty() {
        let _ = write!(k, "\0{}\0{:?}", intent.verified, intent.claims);
    }
    k
}

thread_local! {
    static CACHE: RefCell<(u64, HashMap<String, Decision>)> = RefCell::new((0, HashMap::new()));
}

pub fn get(generation: u64, key: &str) -> Option<Decision> {
    CACHE.with(|c| {
        let c = c.borrow();
        if c.0 != generation {
            return None;
        }
        c.1.get(key).cloned()
    })
}

pub fn put(generation: u64, key: String, d: &Decision) {
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != generation || c.1.len() >= MAX_ENTRIES {
            c.0 = generation;
            c.1.clear();
        }
        c.1.insert(key, d.clone());
    });
}

#[cfg(test)]
mod tests {
    use super::plan;

    #[test]
    fn only_field_references_to_the_key_are_cacheable() {
        assert!(
            plan([(
                "a",
                "x if input.request.method == \"GET\" # input whole in a comment"
            )])
            .is_ok()
        );
        assert!(plan([("a", "x if input.request.headers[\"x\"]")]).is_err());
        assert!(plan([("a", "x if time.now_ns() > 0")]).is_err());
        assert!(plan([("a", "x := input")]).is_err());
        assert!(plan([("a", "x if input[k]")]).is_err());
        assert!(plan([("a", "my_input := 1\nx if my_input.y")]).is_ok());
    }
}
