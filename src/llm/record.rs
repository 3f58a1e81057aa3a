//! What an audit record says about an LLM call: the provider, the model asked for, whether it
//! streamed, and the tokens its response reports, counted while the response passes (`Usage`).

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock, Weak};

use prometheus::IntCounter;
use serde::{Deserialize, Serialize};

use crate::metrics::Metrics;

/// The token counts of one call's response, filled in as its body streams by and final when it
/// ends (before the audit record is written). Whoever wants to charge them (a budget) takes the
/// `Arc` from `AuditLlm::usage` after the decision and either reads it later or registers
/// `on_settled`, called once with the final counts when a JSON or event-stream response ends or
/// is dropped (never for a call that got no such response: nothing to charge then).
pub struct Usage {
    /// `u64::MAX` until the response reports it.
    input: AtomicU64,
    output: AtomicU64,
    settled: OnSettled,
}

type OnSettled = OnceLock<Box<dyn Fn(Option<u64>, Option<u64>) + Send + Sync>>;

impl std::fmt::Debug for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Usage")
            .field("input", &self.input())
            .field("output", &self.output())
            .finish_non_exhaustive()
    }
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
            settled: OnceLock::new(),
        }
    }

    /// Calls `f` with the final (input, output) counts when the response ends; one callback per
    /// call (a second one is refused and returned).
    #[allow(clippy::type_complexity)]
    pub fn on_settled(
        &self,
        f: Box<dyn Fn(Option<u64>, Option<u64>) + Send + Sync>,
    ) -> Result<(), Box<dyn Fn(Option<u64>, Option<u64>) + Send + Sync>> {
        self.settled.set(f)
    }

    /// The response ended: the callback, if any, gets the counts.
    pub(super) fn settle(&self) {
        if let Some(f) = self.settled.get() {
            f(self.input(), self.output());
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
    /// Only for an LLM call: kept out of the pipeline's plain path.
    #[cold]
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
    /// cut to 64 bytes), from the worker thread's kept ones when it has them: prometheus hashes
    /// the four labels and takes a lock per series looked up, which cost more than the rest of
    /// counting a response; a worker's LLM calls mostly repeat a few (agent, intent, model).
    pub fn counters(&self, metrics: &Arc<Metrics>, agent: &str) -> [IntCounter; 2] {
        let mut model = self.model.as_deref().unwrap_or("unknown");
        if model.len() > 64 {
            let mut end = 64;
            while !model.is_char_boundary(end) {
                end -= 1;
            }
            model = &model[..end];
        }
        let key = [agent, &*self.intent_label, model];
        SERIES.with_borrow_mut(|kept| {
            let same = |s: &&Series| {
                Weak::as_ptr(&s.metrics) == Arc::as_ptr(metrics)
                    && s.key.iter().map(|k| &**k).eq(key)
            };
            if let Some(s) = kept.iter().rev().find(same) {
                return s.counters.clone();
            }
            let counters = ["input", "output"].map(|kind| {
                (metrics.llm_tokens).with_label_values(&[agent, &self.intent_label, model, kind])
            });
            if kept.len() == SERIES_KEPT {
                kept.remove(0);
            }
            kept.push(Series {
                metrics: Arc::downgrade(metrics),
                key: key.map(Box::from),
                counters: counters.clone(),
            });
            counters
        })
    }

    /// The response's token counts, as they are counted.
    pub fn usage(&self) -> &Arc<Usage> {
        &self.usage
    }
}

/// How many (agent, intent, model) series of `intentgate_llm_tokens_total` a worker thread
/// keeps resolved (the oldest is let go for a new one).
const SERIES_KEPT: usize = 16;

/// One (agent, intent, model)'s input and output series.
struct Series {
    /// Whose metrics they are (a thread can serve several proxies in turn, in tests); the `Weak`
    /// keeps the address from being reused while the entry lives.
    metrics: Weak<Metrics>,
    key: [Box<str>; 3],
    counters: [IntCounter; 2],
}

thread_local! {
    /// This worker's series, the latest used last.
    static SERIES: RefCell<Vec<Series>> = const { RefCell::new(Vec::new()) };
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
