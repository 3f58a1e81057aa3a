//! The LLM part of a scope rule (`protocol: llm`): which provider's wire format, which models,
//! and the bound on the output tokens a call may ask for (issue 24).

use serde::{Deserialize, Serialize};

/// An LLM API's wire format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LlmProvider {
    /// OpenAI and compatible APIs: `/v1/chat/completions`, `/v1/responses`, `/v1/embeddings`.
    Openai,
    /// Anthropic: `/v1/messages`.
    Anthropic,
    /// Google Gemini: `models/M:generateContent`, `models/M:streamGenerateContent`.
    Gemini,
}

impl LlmProvider {
    pub fn as_str(self) -> &'static str {
        match self {
            LlmProvider::Openai => "openai",
            LlmProvider::Anthropic => "anthropic",
            LlmProvider::Gemini => "gemini",
        }
    }
}

/// `llm:` of a scope rule.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LlmScope {
    /// Model name patterns (`*` matches any run of characters); absent = any model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,
    /// The largest `max_tokens` / `max_output_tokens` a call may ask for. A call that names no
    /// bound is refused under a rule that sets one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
}
