//! The decision cache, used only when it is provably safe: at load, every reference to `input`
//! in the policy modules is found (conservatively), and the cache key is made of exactly those
//! input fields. A policy that reads headers, the body, the time, the request id, the whole
//! input, or calls a non-deterministic built-in disables the cache. Entries live per worker
//! thread beside its engine, so a reload (a new generation) invalidates them by construction.

use std::collections::BTreeSet;

use super::RequestFacts;
use super::catalog::ScopeVerdict;
use crate::intent::Intent;

/// Input fields that can be part of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Leaf {
    /// Fixed for a policy set (the agent, `mcp`, `body_truncated`).
    Const,
    /// Reading it disables the cache.
    Never,
    IntentName,
    IntentTask,
    IntentSource,
    IntentVerified,
    IntentClaims,
    Protocol,
    Method,
    Scheme,
    Host,
    Port,
    Path,
    Query,
    ScopeMatched,
    ScopeIntent,
    ScopeRule,
    ScopeWhy,
    ScopeCode,
    ScopeMode,
    DestIp,
    DestClass,
    ConnMode,
    ConnSni,
    ConnIntercepted,
    /// `input.llm`: a request that carries an LLM call is not cached.
    Llm,
}

/// Every field of the input document, with how it keys the cache. The position of a field here
/// is its bit in the masks of `reads` and `input::build`.
pub const LEAVES: &[(&str, Leaf)] = &[
    ("agent", Leaf::Const),
    ("intent.name", Leaf::IntentName),
    ("intent.task", Leaf::IntentTask),
    ("intent.source", Leaf::IntentSource),
    ("intent.verified", Leaf::IntentVerified),
    ("intent.claims", Leaf::IntentClaims),
    ("request.id", Leaf::Never),
    ("request.protocol", Leaf::Protocol),
    ("request.method", Leaf::Method),
    ("request.scheme", Leaf::Scheme),
    ("request.host", Leaf::Host),
    ("request.port", Leaf::Port),
    ("request.path", Leaf::Path),
    ("request.path_segments", Leaf::Path),
    ("request.query", Leaf::Query),
    ("request.headers", Leaf::Never),
    ("request.body", Leaf::Never),
    ("request.body_truncated", Leaf::Never),
    ("scope.matched", Leaf::ScopeMatched),
    ("scope.intent", Leaf::ScopeIntent),
    ("scope.rule", Leaf::ScopeRule),
    ("scope.why", Leaf::ScopeWhy),
    ("scope.code", Leaf::ScopeCode),
    ("scope.mode", Leaf::ScopeMode),
    ("destination.ip", Leaf::DestIp),
    ("destination.class", Leaf::DestClass),
    ("connection.mode", Leaf::ConnMode),
    ("connection.protocol", Leaf::Protocol),
    ("connection.sni", Leaf::ConnSni),
    ("connection.intercepted", Leaf::ConnIntercepted),
    // Per call (a tool's arguments): a policy reading it is not cached.
    ("mcp", Leaf::Never),
    ("time", Leaf::Never),
    ("intent.token", Leaf::IntentClaims),
    ("llm", Leaf::Llm),
];

/// Built-ins whose answer is not a function of their arguments.
const IMPURE: &[&str] = &[
    "time.now_ns",
    "rand.",
    "uuid.",
    "opa.runtime",
    "http.send",
    "net.lookup",
];

/// Whether policies reading the fields in `reads` (see `reads`) see the request body (or
/// `body_truncated`): only then does the proxy read a body before deciding.
pub fn reads_body(reads: u64) -> bool {
    const BODY: u64 =
        super::input::bit("request.body") | super::input::bit("request.body_truncated");
    reads & BODY != 0
}

/// Which input fields make the key, or why there is no cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    Key(Vec<Leaf>),
    Disabled(String),
}

/// Removes comments and string contents (keeping the quotes), so only code is scanned.
fn code_only(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '#' => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '"' => {
                out.push('"');
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            chars.next();
                        }
                        '"' => break,
                        _ => {}
                    }
                }
                out.push('"');
            }
            '`' => {
                out.push('`');
                for c in chars.by_ref() {
                    if c == '`' {
                        break;
                    }
                }
                out.push('`');
            }
            c => out.push(c),
        }
    }
    out
}

fn ident_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// Every `input...` reference in the code, as its static path (`[]` = the whole input).
/// A string-literal index (`input["x"]`) is lost with the string contents, so it ends the
/// path there: a shorter path covers more fields, which is the safe direction.
fn input_refs(code: &str) -> Vec<Vec<String>> {
    let b = code.as_bytes();
    let mut refs = Vec::new();
    let mut i = 0;
    while let Some(off) = code[i..].find("input") {
        let start = i + off;
        let end = start + "input".len();
        i = end;
        let before_ok = start == 0 || !(ident_char(b[start - 1]) || b[start - 1] == b'.');
        let after_ok = end >= b.len() || !ident_char(b[end]);
        if !(before_ok && after_ok) {
            continue;
        }
        let mut path = Vec::new();
        let mut j = end;
        while j < b.len() && b[j] == b'.' {
            let s = j + 1;
            let mut e = s;
            while e < b.len() && ident_char(b[e]) {
                e += 1;
            }
            if e == s {
                break;
            }
            path.push(code[s..e].to_string());
            j = e;
        }
        refs.push(path);
    }
    refs
}

/// Whether a reference to input path `p` (dotted) reads the field `leaf_path`: it names the
/// field, a section holding it, or something inside it.
fn touches(leaf_path: &str, p: &str) -> bool {
    let covers = leaf_path.starts_with(p)
        && (leaf_path.len() == p.len() || leaf_path.as_bytes()[p.len()] == b'.');
    let within = p.starts_with(leaf_path)
        && (p.len() == leaf_path.len() || p.as_bytes()[leaf_path.len()] == b'.');
    covers || within
}

/// The input fields the modules can read, as a mask over `LEAVES` (bit i = `LEAVES[i]`), or
/// `u64::MAX` when a module reads the whole input. The same conservative analysis as `plan`:
/// a field no module names cannot change a decision, so the input may leave it out.
pub fn reads<'a>(modules: impl IntoIterator<Item = &'a str>) -> u64 {
    let mut mask = 0u64;
    for text in modules {
        for path in input_refs(&code_only(text)) {
            let p = path.join(".");
            if p.is_empty() {
                return u64::MAX;
            }
            for (i, (leaf_path, _)) in LEAVES.iter().enumerate() {
                if touches(leaf_path, &p) {
                    mask |= 1 << i;
                }
            }
        }
    }
    mask
}

/// Plans the cache for the given module sources.
pub fn plan<'a>(modules: impl IntoIterator<Item = &'a str>) -> Plan {
    let mut leaves = BTreeSet::new();
    for text in modules {
        let code = code_only(text);
        if let Some(f) = IMPURE.iter().find(|f| code.contains(*f)) {
            return Plan::Disabled(format!("a policy calls {f}"));
        }
        for path in input_refs(&code) {
            let p = path.join(".");
            if p.is_empty() {
                return Plan::Disabled("a policy reads the whole input".into());
            }
            for (leaf_path, leaf) in LEAVES {
                if touches(leaf_path, &p) {
                    if *leaf == Leaf::Never {
                        return Plan::Disabled(format!("a policy reads input.{p}"));
                    }
                    if *leaf != Leaf::Const {
                        leaves.insert(*leaf);
                    }
                }
            }
        }
    }
    Plan::Key(leaves.into_iter().collect())
}

fn put(buf: &mut Vec<u8>, v: Option<&str>) {
    match v {
        Some(s) => buf.extend_from_slice(s.as_bytes()),
        None => buf.push(0xfe),
    }
    buf.push(0xff);
}

/// Writes the key of one request into `buf`; `false` when this request cannot be cached.
pub fn key(
    leaves: &[Leaf],
    intent: &Intent,
    req: &RequestFacts<'_>,
    scope: &ScopeVerdict,
    buf: &mut Vec<u8>,
) -> bool {
    buf.clear();
    leaves
        .iter()
        .all(|&leaf| put_leaf(leaf, intent, req, scope, buf))
}

/// One leaf's part of the key; `false` when it makes the request uncacheable. Not inlined into
/// the loop: inlined, every field any leaf could read was loaded (and spilled) before the
/// first, ~90 instructions a request for a key of one leaf.
#[inline(never)]
fn put_leaf(
    leaf: Leaf,
    intent: &Intent,
    req: &RequestFacts<'_>,
    scope: &ScopeVerdict,
    buf: &mut Vec<u8>,
) -> bool {
    match leaf {
        Leaf::Const => {}
        Leaf::Never => return false,
        Leaf::IntentName => put(buf, intent.name.as_deref()),
        Leaf::IntentTask => put(buf, intent.task.as_deref()),
        Leaf::IntentSource => put(buf, Some(intent.source.as_str())),
        Leaf::IntentVerified => put(buf, Some(if intent.verified { "1" } else { "0" })),
        Leaf::IntentClaims if !intent.claims.is_empty() || intent.token.is_some() => {
            return false;
        }
        Leaf::IntentClaims => put(buf, None),
        Leaf::Protocol => put(buf, Some(req.protocol.as_str())),
        Leaf::Method => put(buf, Some(req.method)),
        Leaf::Scheme => put(buf, Some(req.scheme.as_str())),
        Leaf::Host => put(buf, Some(req.host)),
        Leaf::Port => buf.extend_from_slice(&req.port.to_be_bytes()),
        Leaf::Path => put(buf, req.path),
        Leaf::Query => put(buf, req.query),
        Leaf::ScopeMatched => put(buf, Some(if scope.matched { "1" } else { "0" })),
        Leaf::ScopeIntent => put(buf, scope.intent.as_deref()),
        Leaf::ScopeRule => {
            buf.extend_from_slice(&scope.rule.map_or(u64::MAX, |r| r as u64).to_be_bytes());
        }
        Leaf::ScopeWhy => put(buf, Some(&scope.why)),
        Leaf::ScopeCode => put(buf, Some(scope.code.as_str())),
        Leaf::ScopeMode => put(buf, Some(scope.mode.as_str())),
        Leaf::DestIp => match req.destination {
            Some((ip, _)) => put(buf, Some(&ip.to_string())),
            None => put(buf, None),
        },
        Leaf::DestClass => put(buf, req.destination.map(|(_, c)| c)),
        Leaf::ConnMode => put(buf, Some(req.connection.mode.as_str())),
        Leaf::ConnSni => put(buf, req.connection.sni),
        Leaf::ConnIntercepted => put(
            buf,
            Some(if req.connection.intercepted { "1" } else { "0" }),
        ),
        Leaf::Llm if req.llm.is_some() => return false,
        Leaf::Llm => put(buf, None),
    }
    true
}

/// The fields a plan keys on, as the tests read it.
#[cfg(test)]
pub fn describe(plan: &Plan) -> String {
    match plan {
        Plan::Disabled(why) => format!("disabled: {why}"),
        Plan::Key(leaves) => {
            let names: Vec<&str> = LEAVES
                .iter()
                .filter(|(_, l)| leaves.contains(l))
                .map(|(p, _)| *p)
                .collect();
            format!("keyed on input.{{{}}}", names.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_input_references_outside_comments_and_strings() {
        let code = code_only(
            "# input.request.headers\nx := \"input.time\"\nallow if input.request.host == `input`\ny := my_input.z\nz := input\nw := input[\"a\"]\n",
        );
        let refs = input_refs(&code);
        assert_eq!(
            refs,
            vec![
                vec!["request".to_string(), "host".to_string()],
                vec![],
                vec![]
            ]
        );
    }

    #[test]
    fn plans_the_builtin_policy_on_scope_only() {
        let p = plan([include_str!("../../config/policy/intentgate.rego")]);
        assert_eq!(p, Plan::Key(vec![Leaf::ScopeMatched]));
        assert_eq!(describe(&p), "keyed on input.{scope.matched}");
    }

    #[test]
    fn only_policies_that_may_read_the_body_get_one() {
        for (text, reads) in [
            ("a if input.request.body.amount > 1", true),
            ("a if input.request.body_truncated", true),
            ("a if input.request[\"body\"]", true),
            ("a if count(input) > 0", true),
            ("a if input.request.path == \"/body\"", false),
            (
                "# input.request.body\na if input.request.method == \"GET\"",
                false,
            ),
        ] {
            assert_eq!(reads_body(super::reads([text])), reads, "{text}");
        }
        assert!(!reads_body(super::reads([include_str!(
            "../../config/policy/intentgate.rego"
        )])));
    }

    #[test]
    fn reads_names_every_field_a_policy_can_see() {
        let bit = |path: &str| {
            let i = LEAVES.iter().position(|(p, _)| *p == path);
            1u64 << i.unwrap_or(63)
        };
        let builtin = include_str!("../../config/policy/intentgate.rego");
        assert_eq!(reads([builtin]), bit("scope.matched"));
        assert_eq!(
            reads(["a if input.request.path == \"/\"\nb if input.agent.labels.tier"]),
            bit("request.path") | bit("agent")
        );
        let scope = LEAVES
            .iter()
            .enumerate()
            .filter(|(_, (p, _))| p.starts_with("scope."))
            .fold(0, |m, (i, _)| m | 1 << i);
        assert_eq!(reads(["s := input.scope\na if s.why"]), scope);
        assert_eq!(reads(["a if count(input) > 0"]), u64::MAX);
        assert_eq!(reads(["import input as i\na if i.x"]), u64::MAX);
        assert_eq!(reads(["a := 1"]), 0);
        assert!(LEAVES.len() < 64);
    }

    #[test]
    fn unsafe_reads_disable_the_cache() {
        for (text, why) in [
            ("a if input.request.headers[\"x\"]", "input.request.headers"),
            (
                "a if input.request.x == 1\nb if input.request",
                "input.request",
            ),
            ("a if count(input) > 0", "the whole input"),
            ("a if input.time.unix > 0", "input.time"),
            ("a if time.now_ns() > 0", "time.now_ns"),
            ("import input.request\na if request.host", "input.request"),
        ] {
            match plan([text]) {
                Plan::Disabled(w) => assert!(w.contains(why), "{text}: {w}"),
                other => panic!("{text}: {other:?}"),
            }
        }
        assert_eq!(
            plan(["a if input.request.query.page[0] == \"1\"\nb if input.agent.labels.tier"]),
            Plan::Key(vec![Leaf::Query])
        );
    }
}
