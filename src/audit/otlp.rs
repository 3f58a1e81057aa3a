//! OpenTelemetry export (`telemetry.otlp`): the audit writer hands each written record of a
//! traced call to this exporter's bounded queue (never waiting: a full queue drops and counts,
//! the audit log stays the lossless record); its own thread batches them and posts one OTLP/HTTP
//! request of spans (`/v1/traces`) and one of log records (`/v1/logs`, the audit line as the
//! body) per batch, protobuf by default (JSON with `encoding: json`), over one kept connection.
//! Nothing here runs on the request path.

mod client;
mod json;
mod proto;

use std::io;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use super::AuditRecord;
use crate::config::{OtlpConfig, OtlpEncoding};
use crate::metrics::Metrics;
use client::Target;

/// How long a batch gathers after its first call before it is sent.
const GATHER: Duration = Duration::from_secs(1);

/// The writer's handle on the export thread.
pub(super) struct Exporter {
    tx: SyncSender<Box<AuditRecord>>,
    metrics: Arc<Metrics>,
}

impl Exporter {
    pub(super) fn start(cfg: &OtlpConfig, metrics: Arc<Metrics>) -> io::Result<Self> {
        let (tx, rx) = mpsc::sync_channel(cfg.queue);
        let target = Target::of(cfg)?;
        let (batch, m, encoding) = (cfg.batch, metrics.clone(), cfg.encoding);
        std::thread::Builder::new()
            .name("intentgate-otlp".into())
            .spawn(move || run(&rx, target, batch, encoding, &m))?;
        Ok(Exporter { tx, metrics })
    }

    /// Queues a written record for export; drops and counts it when the queue is full.
    pub(super) fn offer(&self, rec: Box<AuditRecord>) {
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.tx.try_send(rec) {
            self.metrics.otlp.with_label_values(&["queue_full"]).inc();
        }
    }
}

fn run(
    rx: &Receiver<Box<AuditRecord>>,
    mut target: Target,
    max: usize,
    encoding: OtlpEncoding,
    metrics: &Metrics,
) {
    let mut batch = Vec::with_capacity(max);
    let mut bodies = Bodies::default();
    while let Ok(first) = rx.recv() {
        batch.push(first);
        let until = Instant::now() + GATHER;
        let mut open = true;
        while batch.len() < max {
            match rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
                Ok(rec) => batch.push(rec),
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        export(&batch, &mut target, encoding, &mut bodies, metrics);
        batch.clear();
        if !open {
            return;
        }
    }
}

/// The request bodies, kept from batch to batch.
#[derive(Default)]
struct Bodies {
    traces: Vec<u8>,
    logs: Vec<u8>,
    line: Vec<u8>,
}

/// Posts one batch as spans, then as log records; counts the calls once.
fn export(
    batch: &[Box<AuditRecord>],
    target: &mut Target,
    encoding: OtlpEncoding,
    b: &mut Bodies,
    metrics: &Metrics,
) {
    let service = &target.service;
    match encoding {
        OtlpEncoding::Protobuf => {
            proto::traces(&mut b.traces, batch, service);
            proto::logs(&mut b.logs, batch, service, &mut b.line);
        }
        OtlpEncoding::Json => {
            let prepared = json::prepare(batch);
            b.traces = json::traces(batch, &prepared, service);
            b.logs = json::logs(batch, &prepared, service);
        }
    }
    let sent = target
        .post("traces", encoding, &b.traces)
        .and_then(|()| target.post("logs", encoding, &b.logs));
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
