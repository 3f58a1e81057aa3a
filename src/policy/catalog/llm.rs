//! Which requests are LLM API calls to read before the decision: those to a host that some
//! `protocol: llm` rule names (of any intent: the intent is resolved later), at a path that is
//! one of the providers' calls. A catalog without such rules answers at the cost of one check.

use std::collections::HashMap;

use super::Catalog;
use crate::llm::{Api, LlmProvider, detect};

/// The hosts of `protocol: llm` rules, with the provider they name (`None`: detected by path,
/// also when two rules of the same host name different ones).
#[derive(Debug, Default)]
pub(super) struct LlmHosts {
    exact: HashMap<String, Option<LlmProvider>>,
    /// `*.example.com` is stored under `example.com`.
    wildcard: HashMap<String, Option<LlmProvider>>,
}

impl LlmHosts {
    pub(super) fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wildcard.is_empty()
    }

    /// Adds a host pattern of a rule naming `provider`.
    pub(super) fn add(&mut self, wild: bool, host: &str, provider: Option<LlmProvider>) {
        let index = if wild {
            &mut self.wildcard
        } else {
            &mut self.exact
        };
        Self::join(index, host.to_string(), provider);
    }

    /// Adds the hosts of another run of intents (src/policy/catalog/compile.rs): the same
    /// outcome as adding its rules one by one (a host named with two providers has none).
    pub(super) fn merge(&mut self, other: LlmHosts) {
        for (host, provider) in other.exact {
            Self::join(&mut self.exact, host, provider);
        }
        for (host, provider) in other.wildcard {
            Self::join(&mut self.wildcard, host, provider);
        }
    }

    fn join(
        index: &mut HashMap<String, Option<LlmProvider>>,
        host: String,
        provider: Option<LlmProvider>,
    ) {
        index
            .entry(host)
            .and_modify(|p| {
                if *p != provider {
                    *p = None;
                }
            })
            .or_insert(provider);
    }

    fn provider_of(&self, host: &str) -> Option<Option<LlmProvider>> {
        if let Some(p) = self.exact.get(host) {
            return Some(*p);
        }
        let mut rest = host;
        while let Some((_, parent)) = rest.split_once('.') {
            if let Some(p) = self.wildcard.get(parent) {
                return Some(*p);
            }
            rest = parent;
        }
        None
    }
}

impl Catalog {
    /// The provider and API of a request to `host` at `path` when it is an LLM API call that a
    /// `protocol: llm` rule may cover (so its body is read before the decision).
    #[inline(never)]
    pub fn llm_api(&self, host: &str, path: &str) -> Option<(LlmProvider, Api)> {
        if self.llm_hosts.is_empty() {
            return None;
        }
        let provider = self.llm_hosts.provider_of(host)?;
        detect(path, provider)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use crate::config::{IntentSpec, Mode};
    use crate::identity::Agent;
    use crate::llm::{Api, LlmCall, LlmProvider};
    use crate::policy::{Catalog, ScopeCode, ScopeQuery};

    fn catalog(yaml: &str) -> Result<Catalog, String> {
        let intents: BTreeMap<String, IntentSpec> = serde_yaml::from_str(yaml).unwrap();
        Catalog::compile(&[("test.yaml".into(), intents)], Mode::Enforce).map_err(|e| e.to_string())
    }

    const CHAT: &str = r#"
chat:
  allow:
    - hosts: [api.openai.com]
      protocol: llm
      llm: {models: [gpt-4o-mini, "o4-*"], max_tokens: 500}
    - hosts: ["*.anthropic.com"]
      protocol: llm
      provider: anthropic
    - hosts: [api.openai.com]
      protocol: llm
      paths: [/v1/embeddings]
"#;

    fn verdict(c: &Catalog, host: &str, path: &str, call: Option<&LlmCall>) -> (ScopeCode, String) {
        let q = ScopeQuery {
            method: "POST",
            host,
            port: 443,
            path,
            destination_only: false,
            mcp: None,
            llm: call,
        };
        let agent = Agent {
            id: "bot".into(),
            namespace: None,
            service_account: None,
            owner: Some("o".into()),
            owner_source: None,
            spiffe_id: None,
            labels: Default::default(),
            expires: None,
        };
        let v = c.verdict(&agent, Some("chat"), &q);
        (v.code, v.why)
    }

    #[test]
    fn only_llm_hosts_and_paths_are_read() {
        let c = catalog(CHAT).unwrap();
        assert!(
            c.speaks_protocols(),
            "a protocol: llm rule makes hosts worth a look"
        );
        let chat = Some((LlmProvider::Openai, Api::ChatCompletions));
        assert_eq!(c.llm_api("api.openai.com", "/v1/chat/completions"), chat);
        assert_eq!(c.llm_api("api.openai.com", "/v1/files"), None);
        assert_eq!(c.llm_api("example.com", "/v1/chat/completions"), None);
        assert_eq!(
            c.llm_api("eu.api.anthropic.com", "/v1/messages"),
            Some((LlmProvider::Anthropic, Api::Messages))
        );
        // The rule names its provider: an OpenAI path there is no call to read.
        assert_eq!(
            c.llm_api("eu.api.anthropic.com", "/v1/chat/completions"),
            None
        );
        let plain = catalog("{}").unwrap();
        assert!(!plain.speaks_protocols());
        assert_eq!(plain.llm_api("api.openai.com", "/v1/messages"), None);
    }

    #[test]
    fn a_model_or_bound_outside_the_rule_is_not_in_scope() {
        let c = catalog(CHAT).unwrap();
        let call = |body: &str| {
            let path = "/v1/chat/completions";
            LlmCall::parse(
                LlmProvider::Openai,
                Api::ChatCompletions,
                path,
                body.as_bytes(),
                false,
            )
        };
        let ok = call(r#"{"model":"o4-mini","max_tokens":500}"#);
        assert_eq!(
            verdict(&c, "api.openai.com", "/v1/chat/completions", Some(&ok)).0,
            ScopeCode::Matched
        );
        let (code, why) = verdict(
            &c,
            "api.openai.com",
            "/v1/chat/completions",
            Some(&call(r#"{"model":"gpt-4o","max_tokens":5}"#)),
        );
        assert_eq!(code, ScopeCode::LlmNotInScope);
        assert!(
            why.ends_with(
                "the LLM call is not in scope: model 'gpt-4o' is not in scope (rule 1 allows \
                 models: gpt-4o-mini, o4-*; max_tokens at most 500)"
            ),
            "{why}"
        );
        // Embeddings: the third rule (no bounds) matches where the first refuses the model.
        let emb = LlmCall::parse(
            LlmProvider::Openai,
            Api::Embeddings,
            "/v1/embeddings",
            br#"{"model":"x"}"#,
            false,
        );
        assert_eq!(
            verdict(&c, "api.openai.com", "/v1/embeddings", Some(&emb)).0,
            ScopeCode::Matched
        );
    }

    #[test]
    fn llm_keys_need_protocol_llm() {
        let err = catalog("x: {allow: [{hosts: [a.example], llm: {max_tokens: 5}}]}").unwrap_err();
        assert!(
            err.contains("rule 1: `provider` and `llm` need `protocol: llm`"),
            "{err}"
        );
        let err = catalog("x: {allow: [{hosts: [a.example], protocol: llm, llm: {models: []}}]}")
            .unwrap_err();
        assert!(err.contains("llm.models"), "{err}");
    }
}
