//! A rule's `mcp:` scope compiled for matching: which methods, tools and resource URIs the
//! message(s) of a call may name. A batch is in scope only if every message is.

use super::{Call, Message, RESOURCES_READ, TOOLS_CALL};

/// The compiled `mcp:` of one rule. `None` lists permit anything.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    methods: Option<Box<[Box<str>]>>,
    tools: Option<Box<[Box<str>]>>,
    resources: Option<Box<[Box<str>]>>,
}

/// What of a call a scope does not permit: the first message out of scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Miss {
    /// `method`, `tool` or `resource`.
    pub what: &'static str,
    /// The method, tool name or URI the message named.
    pub name: String,
    /// The patterns the rule allows for it, as written.
    pub allowed: String,
    /// Its 1-based position in a batch.
    pub in_batch: Option<usize>,
}

impl std::fmt::Display for Miss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MCP {} '{}'", self.what, self.name)?;
        if let Some(n) = self.in_batch {
            write!(f, " (message {n} of the batch)")?;
        }
        write!(f, " is not in scope (allowed: {})", self.allowed)
    }
}

fn compile_list(list: Option<&Vec<String>>, what: &str) -> Result<Option<Box<[Box<str>]>>, String> {
    let Some(list) = list else { return Ok(None) };
    list.iter()
        .map(|p| {
            let p = p.trim();
            if p.is_empty() {
                Err(format!("mcp.{what}: an empty pattern"))
            } else {
                Ok(Box::from(p))
            }
        })
        .collect::<Result<_, _>>()
        .map(Some)
}

impl Scope {
    /// Compiles a rule's `mcp:` lists (`None`: any method, tool, resource).
    pub fn compile(
        methods: Option<&Vec<String>>,
        tools: Option<&Vec<String>>,
        resources: Option<&Vec<String>>,
    ) -> Result<Self, String> {
        Ok(Scope {
            methods: compile_list(methods, "methods")?,
            tools: compile_list(tools, "tools")?,
            resources: compile_list(resources, "resources")?,
        })
    }

    /// `Ok` when every message of `call` is in scope, else the first that is not.
    pub fn check(&self, call: &Call) -> Result<(), Miss> {
        for (i, m) in call.messages.iter().enumerate() {
            if let Some(mut miss) = self.miss(m) {
                miss.in_batch = call.batch.then_some(i + 1);
                return Err(miss);
            }
        }
        Ok(())
    }

    fn miss(&self, m: &Message) -> Option<Miss> {
        // A response answers the server's own request (sampling, elicitation): it asks nothing.
        let method = m.method.as_deref()?;
        let out = |what, name: &str, list: &[Box<str>]| Miss {
            what,
            name: name.to_string(),
            allowed: list.join(", "),
            in_batch: None,
        };
        if let Some(ms) = &self.methods {
            if !any_matches(ms, method) {
                return Some(out("method", method, ms));
            }
        }
        match (method, &m.tool, &m.uri) {
            (TOOLS_CALL, Some(t), _) => match &self.tools {
                Some(ts) if !any_matches(ts, t) => Some(out("tool", t, ts)),
                _ => None,
            },
            (RESOURCES_READ, _, Some(u)) => match &self.resources {
                Some(rs) if !any_matches(rs, u) => Some(out("resource", u, rs)),
                _ => None,
            },
            _ => None,
        }
    }

    /// Whether the scope limits tools at all (else there is nothing to filter).
    pub fn names_tools(&self) -> bool {
        self.tools.is_some() || self.methods.is_some()
    }

    /// Whether a tool of this name may be called (for `tools/list` filtering).
    pub fn permits_tool(&self, name: &str) -> bool {
        self.methods
            .as_ref()
            .is_none_or(|ms| any_matches(ms, TOOLS_CALL))
            && self.tools.as_ref().is_none_or(|ts| any_matches(ts, name))
    }
}

fn any_matches(patterns: &[Box<str>], s: &str) -> bool {
    patterns.iter().any(|p| glob(p, s))
}

/// `*` matches any run of characters (also `/`); everything else matches itself.
pub fn glob(pattern: &str, s: &str) -> bool {
    let Some((first, tail)) = pattern.split_once('*') else {
        return pattern == s;
    };
    let Some(rest) = s.strip_prefix(first) else {
        return false;
    };
    let (middle, last) = tail.rsplit_once('*').unwrap_or(("", tail));
    let Some(mut rest) = rest.strip_suffix(last) else {
        return false;
    };
    for p in middle.split('*').filter(|p| !p.is_empty()) {
        match rest.find(p) {
            Some(i) => rest = &rest[i + p.len()..],
            None => return false,
        }
    }
    true
}
