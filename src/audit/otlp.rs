//! OpenTelemetry export (`telemetry.otlp`): the audit writer hands each written record of a
//! traced call to this exporter's bounded queue (never waiting: a full queue drops and counts,
//! the audit log stays the lossless record); its own thread batches them and posts one OTLP/HTTP
//! JSON request of spans (`/v1/traces`) and one of log records (`/v1/logs`, the audit line as
//! the body) per batch. Nothing here runs on the request path.

mod encode;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use super::AuditRecord;
use crate::config::OtlpConfig;
use crate::metrics::Metrics;

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
        let (batch, m) = (cfg.batch, metrics.clone());
        std::thread::Builder::new()
            .name("intentgate-otlp".into())
            .spawn(move || run(&rx, &target, batch, &m))?;
        Ok(Exporter { tx, metrics })
    }

    /// Queues a written record for export; drops and counts it when the queue is full.
    pub(super) fn offer(&self, rec: Box<AuditRecord>) {
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.tx.try_send(rec) {
            self.metrics.otlp.with_label_values(&["queue_full"]).inc();
        }
    }
}

/// The collector: where to connect, what to name in `Host`, the base path, the resource.
struct Target {
    authority: String,
    base: String,
    timeout: Duration,
    service: String,
}

impl Target {
    fn of(cfg: &OtlpConfig) -> io::Result<Self> {
        let rest = cfg.endpoint.strip_prefix("http://").ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "telemetry.otlp.endpoint must be http://",
            )
        })?;
        let (authority, base) = rest.split_once('/').map_or((rest, ""), |(a, b)| (a, b));
        let authority = if authority.contains(':') && !authority.ends_with(']') {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        Ok(Target {
            authority,
            base: format!("/{}", base.trim_end_matches('/')).replace("//", "/"),
            timeout: Duration::from_millis(cfg.timeout_ms),
            service: cfg.service_name.clone(),
        })
    }

    fn path(&self, signal: &str) -> String {
        format!("{}/v1/{signal}", self.base.trim_end_matches('/'))
    }
}

fn run(rx: &Receiver<Box<AuditRecord>>, target: &Target, max: usize, metrics: &Metrics) {
    let mut batch = Vec::with_capacity(max);
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
        export(&batch, target, metrics);
        batch.clear();
        if !open {
            return;
        }
    }
}

/// Posts one batch as spans, then as log records; counts the calls once.
fn export(batch: &[Box<AuditRecord>], target: &Target, metrics: &Metrics) {
    let prepared = encode::prepare(batch);
    let spans = encode::traces(batch, &prepared, &target.service);
    let logs = encode::logs(batch, &prepared, &target.service);
    let sent = post(target, &target.path("traces"), &spans)
        .and_then(|()| post(target, &target.path("logs"), &logs));
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

/// One OTLP/HTTP JSON request; Ok for a 2xx answer.
fn post(target: &Target, path: &str, body: &[u8]) -> Result<(), String> {
    let addr = target
        .authority
        .to_socket_addrs()
        .map_err(|e| format!("{}: {e}", target.authority))?
        .next()
        .ok_or_else(|| format!("{}: no address", target.authority))?;
    let mut conn = TcpStream::connect_timeout(&addr, target.timeout)
        .map_err(|e| format!("{}: {e}", target.authority))?;
    let io = |e: io::Error| format!("{}: {e}", target.authority);
    conn.set_read_timeout(Some(target.timeout)).map_err(io)?;
    conn.set_write_timeout(Some(target.timeout)).map_err(io)?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\nUser-Agent: intentgate/{}\r\n\r\n",
        target.authority,
        body.len(),
        env!("CARGO_PKG_VERSION")
    );
    conn.write_all(head.as_bytes()).map_err(io)?;
    conn.write_all(body).map_err(io)?;
    // The status line (at most 1 KiB of it) is all that is read of the answer.
    let mut status = String::new();
    BufReader::new(&conn)
        .take(1024)
        .read_line(&mut status)
        .map_err(io)?;
    let code = status.split_whitespace().nth(1).unwrap_or("");
    if code.starts_with('2') {
        Ok(())
    } else {
        Err(format!(
            "{path}: the collector answered '{}'",
            status.trim()
        ))
    }
}
