//! LLM API awareness (issue 24): under a scope rule with `protocol: llm`, an OpenAI-compatible,
//! Anthropic or Gemini call is read from the start of its body (the model, `stream`, the output
//! token bound, the tools it declares) so the catalog can bound the model and the tokens and Rego
//! can read `input.llm`; its response's token usage is read as it streams by (`usage`) for the
//! audit record and `intentgate_llm_tokens_total`.

mod counts;
mod record;
mod rule;
mod usage;

use regorus::Value;
use serde::Deserialize;

pub use crate::config::LlmProvider;
pub use record::{AuditLlm, Usage};
pub use rule::LlmRule;
pub(crate) use usage::{Scanner, scan};

/// Which call of a provider's API a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    ChatCompletions,
    Responses,
    Embeddings,
    Messages,
    GenerateContent,
    StreamGenerateContent,
}

impl Api {
    pub fn as_str(self) -> &'static str {
        match self {
            Api::ChatCompletions => "chat.completions",
            Api::Responses => "responses",
            Api::Embeddings => "embeddings",
            Api::Messages => "messages",
            Api::GenerateContent => "generateContent",
            Api::StreamGenerateContent => "streamGenerateContent",
        }
    }

    /// Whether the call generates tokens (so an output-token bound applies to it).
    pub fn generates(self) -> bool {
        self != Api::Embeddings
    }
}

/// The provider and API of a request path, or `None` when it is no LLM API call. With
/// `provider`, only that provider's calls are recognised.
pub fn detect(path: &str, provider: Option<LlmProvider>) -> Option<(LlmProvider, Api)> {
    let last = path.rsplit('/').next().unwrap_or("");
    let found = if let Some((_, verb)) = last.split_once(':') {
        match verb {
            "generateContent" => (LlmProvider::Gemini, Api::GenerateContent),
            "streamGenerateContent" => (LlmProvider::Gemini, Api::StreamGenerateContent),
            _ => return None,
        }
    } else if path.ends_with("/chat/completions") {
        (LlmProvider::Openai, Api::ChatCompletions)
    } else if last == "responses" {
        (LlmProvider::Openai, Api::Responses)
    } else if last == "embeddings" {
        (LlmProvider::Openai, Api::Embeddings)
    } else if last == "messages" {
        (LlmProvider::Anthropic, Api::Messages)
    } else {
        return None;
    };
    provider.is_none_or(|p| p == found.0).then_some(found)
}

/// What an LLM API call asks for, read from the start of its body.
#[derive(Debug, Clone, PartialEq)]
pub struct LlmCall {
    pub provider: LlmProvider,
    pub api: Api,
    pub model: Option<String>,
    pub stream: bool,
    /// `max_tokens`, `max_completion_tokens`, `max_output_tokens` or Gemini's
    /// `generationConfig.maxOutputTokens`.
    pub max_tokens: Option<u64>,
    /// The names of the tools the request declares (a built-in tool by its `type`).
    pub tools: Vec<String>,
    /// Why the body could not be read (over the inspection limit, not JSON), if so.
    pub unreadable: Option<&'static str>,
}

/// The fields read from a request body; everything else is skipped unparsed.
#[derive(Deserialize)]
struct Body {
    model: Option<String>,
    stream: Option<bool>,
    max_tokens: Option<u64>,
    max_completion_tokens: Option<u64>,
    max_output_tokens: Option<u64>,
    #[serde(rename = "generationConfig")]
    generation_config: Option<GenerationConfig>,
    tools: Option<Vec<serde_json::Value>>,
}

#[derive(Deserialize)]
struct GenerationConfig {
    #[serde(rename = "maxOutputTokens")]
    max_output_tokens: Option<u64>,
}

impl LlmCall {
    /// Reads the call at `path` (already `detect`ed as `provider`'s `api`) from the start of its
    /// body; `truncated` when the body is longer than `body`.
    pub fn parse(
        provider: LlmProvider,
        api: Api,
        path: &str,
        body: &[u8],
        truncated: bool,
    ) -> Self {
        let mut call = LlmCall {
            provider,
            api,
            model: None,
            stream: api == Api::StreamGenerateContent,
            max_tokens: None,
            tools: Vec::new(),
            unreadable: None,
        };
        if provider == LlmProvider::Gemini {
            // `…/models/gemini-2.0-flash:generateContent`: the model is in the path.
            let last = path.rsplit('/').next().unwrap_or("");
            call.model = last.split_once(':').map(|(m, _)| m.to_string());
        }
        if truncated {
            call.unreadable = Some("the body is longer than limits.inspect_body_bytes");
            return call;
        }
        let b: Body = match serde_json::from_slice(body) {
            Ok(b) => b,
            Err(_) => {
                call.unreadable = Some("the body is not the JSON this API takes");
                return call;
            }
        };
        if call.model.is_none() {
            call.model = b.model;
        }
        call.stream |= b.stream.unwrap_or(false);
        call.max_tokens = b
            .max_tokens
            .or(b.max_completion_tokens)
            .or(b.max_output_tokens)
            .or(b.generation_config.and_then(|g| g.max_output_tokens));
        for t in b.tools.iter().flatten() {
            tool_names(t, &mut call.tools);
        }
        call
    }

    /// `input.llm`.
    pub fn value(&self) -> Value {
        let mut o = regorus::value::Object::new();
        let mut put = |k: &str, v: Value| {
            o.insert(Value::from(k), v);
        };
        put("provider", Value::from(self.provider.as_str()));
        put("api", Value::from(self.api.as_str()));
        put(
            "model",
            self.model.as_deref().map_or(Value::Null, Value::from),
        );
        put("stream", Value::from(self.stream));
        put(
            "max_tokens",
            self.max_tokens.map_or(Value::Null, Value::from),
        );
        put(
            "tools",
            Value::from(
                self.tools
                    .iter()
                    .map(|t| Value::from(t.as_str()))
                    .collect::<Vec<_>>(),
            ),
        );
        put("readable", Value::from(self.unreadable.is_none()));
        o.into_value()
    }
}

/// The names one entry of `tools` declares: OpenAI chat `{function: {name}}`, OpenAI responses
/// and Anthropic `{name}`, Gemini `{functionDeclarations: [{name}]}`, a built-in tool `{type}`.
fn tool_names(t: &serde_json::Value, out: &mut Vec<String>) {
    let name = |v: &serde_json::Value| v.get("name").and_then(|n| n.as_str()).map(str::to_string);
    if let Some(n) = t.get("function").and_then(name).or_else(|| name(t)) {
        out.push(n);
    } else if let Some(fs) = t.get("functionDeclarations").and_then(|f| f.as_array()) {
        out.extend(fs.iter().filter_map(name));
    } else if let Some(ty) = t.get("type").and_then(|n| n.as_str()) {
        out.push(ty.to_string());
    }
}

#[cfg(test)]
mod tests;
