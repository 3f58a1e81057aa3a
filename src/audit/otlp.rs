//! OpenTelemetry export (`telemetry.otlp`): the audit writer hands each written record of a
//! traced call to this exporter's bounded queue (never waiting: a full queue drops and counts,
//! the audit log stays the lossless record); its own thread batches them and posts one OTLP/HTTP
//! request of spans (`/v1/traces`) and one of log records (`/v1/logs`, the audit line as the
//! body: in protobuf the one the writer rendered when it wrote the default format, else rendered
//! here) per batch, protobuf by default (JSON with `encoding: json`), over one kept connection.
//! Nothing here runs on the request path.
//!
//! The queue is a `Vec` behind a mutex that the thread swaps for an empty one: a call is one
//! uncontended lock and a push, and the thread is woken only by a batch's first call (which
//! starts its gathering time) and by the call that fills it.

mod client;
mod json;
mod proto;

use std::io;
use std::ops::Range;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::AuditRecord;
use crate::config::{OtlpConfig, OtlpEncoding};
use crate::metrics::Metrics;
use client::Target;

/// How long a batch gathers after its first call before it is sent.
const GATHER: Duration = Duration::from_secs(1);

/// The writer's handle on the export thread.
pub(super) struct Exporter {
    queue: Arc<Queue>,
    metrics: Arc<Metrics>,
}

struct Queue {
    state: Mutex<State>,
    wake: Condvar,
    /// Calls per export request; calls waiting at most.
    batch: usize,
    cap: usize,
}

struct State {
    /// Boxed as the writer hands them over: a push moves a pointer, not the record.
    #[allow(clippy::vec_box)]
    calls: Vec<Box<AuditRecord>>,
    /// The audit lines the writer already rendered for them (the log records' bodies).
    lines: Lines,
    /// The writer is gone: export what is left, then stop.
    closed: bool,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Exporter {
    pub(super) fn start(cfg: &OtlpConfig, metrics: Arc<Metrics>) -> io::Result<Self> {
        let target = Target::of(cfg)?;
        let queue = Arc::new(Queue {
            state: Mutex::new(State {
                calls: Vec::with_capacity(cfg.batch.min(cfg.queue)),
                lines: Lines::default(),
                closed: false,
            }),
            wake: Condvar::new(),
            batch: cfg.batch,
            cap: cfg.queue,
        });
        let (q, m, encoding) = (queue.clone(), metrics.clone(), cfg.encoding);
        std::thread::Builder::new()
            .name("intentgate-otlp".into())
            .spawn(move || run(&q, target, encoding, &m))?;
        Ok(Exporter { queue, metrics })
    }

    /// Queues a written record for export, with its audit line if the writer rendered one
    /// (copied: the log record's body, not rendered again); drops and counts it when the queue is
    /// full.
    pub(super) fn offer(&self, rec: Box<AuditRecord>, line: Option<&[u8]>) {
        let mut s = self.queue.lock();
        if s.calls.len() >= self.queue.cap {
            drop(s);
            self.metrics.otlp.with_label_values(&["queue_full"]).inc();
            return;
        }
        s.calls.push(rec);
        s.lines.push(line.unwrap_or_default());
        let n = s.calls.len();
        drop(s);
        if n == 1 || n == self.queue.batch {
            self.queue.wake.notify_one();
        }
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.queue.lock().closed = true;
        self.queue.wake.notify_one();
    }
}

/// Waits for a first call, gathers until the batch is full or `GATHER` has passed, takes the
/// queue whole and exports it, a batch per request.
fn run(queue: &Queue, mut target: Target, encoding: OtlpEncoding, metrics: &Metrics) {
    let mut taken = Vec::with_capacity(queue.batch.min(queue.cap));
    let mut lines = Lines::default();
    let mut bodies = Bodies::default();
    loop {
        let mut s = queue.lock();
        while s.calls.is_empty() {
            if s.closed {
                return;
            }
            s = queue.wake.wait(s).unwrap_or_else(PoisonError::into_inner);
        }
        let until = Instant::now() + GATHER;
        while s.calls.len() < queue.batch && !s.closed {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            s = queue
                .wake
                .wait_timeout(s, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        std::mem::swap(&mut s.calls, &mut taken);
        std::mem::swap(&mut s.lines, &mut lines);
        drop(s);
        for (batch, at) in taken.chunks(queue.batch).zip(lines.at.chunks(queue.batch)) {
            let lines = (&lines.text[..], at);
            export(batch, lines, &mut target, encoding, &mut bodies, metrics);
        }
        taken.clear();
        lines.clear();
    }
}

/// Audit lines, one range of `text` per queued call (empty: none, the exporter renders it).
#[derive(Default)]
struct Lines {
    text: Vec<u8>,
    at: Vec<Range<usize>>,
}

impl Lines {
    fn push(&mut self, line: &[u8]) {
        let start = self.text.len();
        self.text.extend_from_slice(line);
        self.at.push(start..self.text.len());
    }

    fn clear(&mut self) {
        self.text.clear();
        self.at.clear();
    }
}

/// The request bodies, kept from batch to batch.
#[derive(Default)]
struct Bodies {
    traces: Vec<u8>,
    logs: Vec<u8>,
    /// Where each span's attributes are in `traces` (the log records copy them).
    attrs: Vec<Range<usize>>,
}

/// Posts one batch as spans, then as log records; counts the calls once.
fn export(
    batch: &[Box<AuditRecord>],
    lines: (&[u8], &[Range<usize>]),
    target: &mut Target,
    encoding: OtlpEncoding,
    b: &mut Bodies,
    metrics: &Metrics,
) {
    let service = &target.service;
    // Where each request starts in its buffer.
    let (traces, logs) = match encoding {
        OtlpEncoding::Protobuf => {
            let t = proto::traces(&mut b.traces, batch, service, &mut b.attrs);
            let spans = (&b.traces[..], &b.attrs[..]);
            (t, proto::logs(&mut b.logs, batch, service, spans, lines))
        }
        OtlpEncoding::Json => {
            let prepared = json::prepare(batch);
            b.traces = json::traces(batch, &prepared, service);
            b.logs = json::logs(batch, &prepared, service);
            (0, 0)
        }
    };
    let sent = target
        .post("traces", encoding, &b.traces[traces..])
        .and_then(|()| target.post("logs", encoding, &b.logs[logs..]));
    let result = match sent {
        Ok(()) => "exported",
        Err(e) => {
            tracing::warn!(error = %e, calls = batch.len(), "otlp: export failed; the calls are dropped (the audit log keeps them)");
            "export_failed"
        }
    };
    metrics
        .otlp
        .with_label_values(&[result])
        .inc_by(batch.len() as u64);
}
