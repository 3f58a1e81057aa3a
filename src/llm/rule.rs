//! A scope rule's `llm:` bounds, compiled: which models a call may name and how many output
//! tokens it may ask for.

use std::fmt::Write as _;

use super::{LlmCall, LlmProvider};
use crate::config::LlmScope;

/// The LLM part of a compiled `protocol: llm` rule.
#[derive(Debug, Clone, PartialEq)]
pub struct LlmRule {
    /// Whose wire format; `None` = detected by path.
    pub provider: Option<LlmProvider>,
    /// Model patterns (`*` = any run of characters); `None` = any model.
    models: Option<Box<[Box<str>]>>,
    max_tokens: Option<u64>,
}

impl LlmRule {
    pub fn new(provider: Option<LlmProvider>, scope: Option<&LlmScope>) -> Result<Self, String> {
        let models = match scope.and_then(|s| s.models.as_ref()) {
            Some(ms) if ms.is_empty() => {
                return Err("llm.models: list at least one model pattern, or leave it out".into());
            }
            Some(ms) => Some(ms.iter().map(|m| m.trim().into()).collect()),
            None => None,
        };
        Ok(LlmRule {
            provider,
            models,
            max_tokens: scope.and_then(|s| s.max_tokens),
        })
    }

    /// Whether `call` (`None`: the request is no LLM API call) is within the rule; else why not.
    pub fn check(&self, call: Option<&LlmCall>) -> Result<(), String> {
        let Some(call) = call else {
            return Ok(());
        };
        let bounded = self.models.is_some() || self.max_tokens.is_some();
        if let (Some(why), true) = (call.unreadable, bounded) {
            return Err(format!(
                "the call's model and max_tokens cannot be read: {why}"
            ));
        }
        if let Some(ms) = &self.models {
            match call.model.as_deref() {
                None => return Err("the call names no model".into()),
                Some(m) if !ms.iter().any(|p| glob(p, m)) => {
                    return Err(format!("model '{m}' is not in scope"));
                }
                Some(_) => {}
            }
        }
        if let (Some(bound), true) = (self.max_tokens, call.api.generates()) {
            match call.max_tokens {
                None => return Err(format!("the call sets no max_tokens (at most {bound})")),
                Some(n) if n > bound => {
                    return Err(format!("max_tokens {n} is over the bound of {bound}"));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// What the rule allows, for messages: `models: a, b; max_tokens at most N`.
    pub fn allows(&self) -> String {
        let mut s = String::new();
        match &self.models {
            Some(ms) => {
                let _ = write!(s, "models: {}", ms.join(", "));
            }
            None => s.push_str("any model"),
        }
        if let Some(n) = self.max_tokens {
            let _ = write!(s, "; max_tokens at most {n}");
        }
        s
    }
}

/// `*` matches any run of characters (none included); everything else itself. Allocates
/// nothing (it runs on every LLM call a `models:` rule checks).
fn glob(pattern: &str, text: &str) -> bool {
    let Some((first, after)) = pattern.split_once('*') else {
        return pattern == text;
    };
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let (middle, last) = after.rsplit_once('*').unwrap_or(("", after));
    for p in middle.split('*') {
        match rest.find(p) {
            Some(i) => rest = &rest[i + p.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn glob_matches_runs() {
        assert!(glob("gpt-4o-mini", "gpt-4o-mini"));
        assert!(!glob("gpt-4o-mini", "gpt-4o"));
        assert!(glob("claude-3-5-haiku-*", "claude-3-5-haiku-20241022"));
        assert!(glob("*", ""));
        assert!(glob("a*b*c", "axxbyyc"));
        assert!(!glob("a*b*c", "axxbyy"));
        assert!(!glob("ab*ba", "aba"));
    }
}
