//! What an audit record says about an LLM call: the provider, the model asked for, whether it
//! streamed, and the tokens its response reports, counted while the response passes (`Usage`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use prometheus::{IntCounter, IntCounterVec};
use serde::{Deserialize, Serialize};

/// The token counts of one call's response, filled in as its body streams by and final when it
/// ends (when the audit record is written). Shared with whoever wants to charge them (a budget):
/// hold the `Arc` from `AuditLlm::usage` and read it once the response has ended.
#[derive(Debug)]
pub struct Usage {
    /// `u64::MAX` until the response reports it.
    input: AtomicU64,
    output: AtomicU64,
}

const UNKNOWN: u64 = u64::MAX;

impl Default for Usage {
    fn default() -> Self {
        Usage::new(None, None)
    }
}

impl Usage {
    fn new(input: Option<u64>, output: Option<u64>) -> Self {
        Usage {
            input: AtomicU64::new(input.unwrap_or(UNKNOWN)),
            output: AtomicU64::new(output.unwrap_or(UNKNOWN)),
        }
    }

    /// Input (prompt) tokens, once reported.
    pub fn input(&self) -> Option<u64> {
        Some(self.input.load(Relaxed)).filter(|&n| n != UNKNOWN)
    }

    /// Output (completion) tokens, once reported.
    pub fn output(&self) -> Option<u64> {
        Some(self.output.load(Relaxed)).filter(|&n| n != UNKNOWN)
    }

    /// Records what one usage object reported (a later report replaces an earlier one: the
    /// providers' streamed counts are running totals).
    pub(super) fn report(&self, input: Option<u64>, output: Option<u64>) {
        if let Some(n) = input {
            self.input.store(n, Relaxed);
        }
        if let Some(n) = output {
            self.output.store(n, Relaxed);
        }
    }
}

/// `llm` in an audit record.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(into = "Line", from = "Line")]
pub struct AuditLlm {
    pub provider: super::LlmProvider,
    pub model: Option<String>,
    pub stream: bool,
    usage: Arc<Usage>,
    /// The `intent` label of `intentgate_llm_tokens_total` (bounded to catalog names).
    intent_label: Box<str>,
}

impl AuditLlm {
    pub fn new(call: &super::LlmCall, intent_label: &str) -> Self {
        AuditLlm {
            provider: call.provider,
            model: call.model.clone(),
            stream: call.stream,
            usage: Arc::default(),
            intent_label: intent_label.into(),
        }
    }

    /// This call's input and output series of `intentgate_llm_tokens_total` (the model label
    /// cut to 64 bytes).
    pub fn counters(&self, tokens: &IntCounterVec, agent: &str) -> [IntCounter; 2] {
        let mut model = self.model.as_deref().unwrap_or("unknown");
        if model.len() > 64 {
            let mut end = 64;
            while !model.is_char_boundary(end) {
                end -= 1;
            }
            model = &model[..end];
        }
        ["input", "output"]
            .map(|kind| tokens.with_label_values(&[agent, &self.intent_label, model, kind]))
    }

    /// The response's token counts, as they are counted.
    pub fn usage(&self) -> &Arc<Usage> {
        &self.usage
    }
}

/// `AuditLlm` as written: the counts as they stand.
#[derive(Serialize, Deserialize)]
struct Line {
    provider: super::LlmProvider,
    model: Option<String>,
    stream: bool,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
}

impl From<AuditLlm> for Line {
    fn from(a: AuditLlm) -> Self {
        Line {
            input_tokens: a.usage.input(),
            output_tokens: a.usage.output(),
            provider: a.provider,
            model: a.model,
            stream: a.stream,
        }
    }
}

impl From<Line> for AuditLlm {
    fn from(l: Line) -> Self {
        AuditLlm {
            provider: l.provider,
            model: l.model,
            stream: l.stream,
            usage: Arc::new(Usage::new(l.input_tokens, l.output_tokens)),
            intent_label: Box::default(),
        }
    }
}
