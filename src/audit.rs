//! The audit log: one JSON line per decision, written by a dedicated thread through a bounded
//! queue. A request reserves its queue slot before it is forwarded, so a full queue makes requests
//! wait (back-pressure) and a record, once reserved, can always be sent: records are never dropped.
//!
//! While records keep coming, the writer gathers them for `GATHER` between writes instead of
//! being woken for each one: a request then never pays for waking another thread, and the writer
//! makes one write per batch. An idle writer sleeps until the next record.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::metrics::Metrics;

mod line;

/// One decision, as written to the audit log. `line::write` writes it; its test fails until a
/// field added here is written there too.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AuditRecord {
    /// RFC 3339, filled in by the writer from `at`.
    pub time: String,
    /// Per-process sequence number (with `boot_id`, a gap in a collected log shows a loss).
    pub seq: u64,
    pub boot_id: String,
    pub decision_id: String,
    /// Shared with every record of the same configuration (no copy per request).
    pub agent: Arc<AuditAgent>,
    pub intent: AuditIntent,
    pub connection: &'static str,
    pub method: String,
    pub scheme: &'static str,
    pub host: String,
    pub port: u16,
    pub path: String,
    /// `allow`, `deny`, `would_deny` (monitor mode) or `error` (refused before policy).
    pub decision: &'static str,
    pub mode: &'static str,
    pub reasons: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'static str>,
    pub policy_revision: Arc<str>,
    pub status: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub durations: Durations,
    #[serde(skip)]
    pub at: Option<SystemTime>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct AuditAgent {
    pub id: String,
    pub namespace: Option<String>,
    pub spiffe_id: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct AuditIntent {
    pub name: Option<String>,
    pub task: Option<String>,
    pub source: &'static str,
    pub verified: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Durations {
    pub policy_us: u64,
    pub upstream_ms: f64,
    pub total_ms: f64,
}

/// Milliseconds to the microsecond, for `Durations`: the log then reads `0.318` rather than
/// `0.31803700000000004`.
pub fn millis(d: Duration) -> f64 {
    d.as_micros() as f64 / 1e3
}

enum Msg {
    Record(Box<AuditRecord>),
    Flush(oneshot::Sender<()>),
}

/// The sending side, shared by the request path.
#[derive(Clone)]
pub struct Audit {
    tx: Option<mpsc::Sender<Msg>>,
    metrics: Arc<Metrics>,
    reopen: Arc<AtomicBool>,
}

/// A reserved place in the queue: sending through it cannot block or fail while the writer runs.
pub struct Slot {
    permit: mpsc::OwnedPermit<Msg>,
    metrics: Arc<Metrics>,
}

impl Slot {
    pub fn send(self, record: AuditRecord) {
        self.metrics.audit_queue_depth.inc();
        self.permit.send(Msg::Record(Box::new(record)));
    }
}

/// Where records go.
enum Sink {
    Stdout,
    Stderr,
    File(std::path::PathBuf),
}

impl Sink {
    fn open(&self) -> io::Result<Box<dyn Write + Send>> {
        Ok(match self {
            Sink::Stdout => Box::new(io::stdout()),
            Sink::Stderr => Box::new(io::stderr()),
            Sink::File(p) => Box::new(open_append(p)?),
        })
    }
}

fn open_append(p: &std::path::Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(p)
}

impl Audit {
    /// Starts the writer thread for `path` (`stdout`, `stderr`, `off` or a file opened with
    /// O_APPEND). Fails if the file cannot be opened.
    pub fn start(path: &str, capacity: usize, metrics: Arc<Metrics>) -> io::Result<Self> {
        let reopen = Arc::new(AtomicBool::new(false));
        let sink = match path {
            "off" => {
                return Ok(Self {
                    tx: None,
                    metrics,
                    reopen,
                });
            }
            "stdout" => Sink::Stdout,
            "stderr" => Sink::Stderr,
            file => Sink::File(file.into()),
        };
        let out = sink.open()?;
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let m = metrics.clone();
        let r = reopen.clone();
        std::thread::Builder::new()
            .name("intentgate-audit".into())
            .spawn(move || writer(rx, sink, out, m, r))?;
        Ok(Self {
            tx: Some(tx),
            metrics,
            reopen,
        })
    }

    /// Reserves a place for one record, waiting while the queue is full. `None` when auditing is
    /// off (or the writer has stopped, which only happens at exit).
    pub async fn reserve(&self) -> Option<Slot> {
        let tx = self.tx.clone()?;
        tx.reserve_owned().await.ok().map(|permit| Slot {
            permit,
            metrics: self.metrics.clone(),
        })
    }

    /// Asks the writer to reopen a file sink before its next write (SIGHUP, for logrotate).
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Release);
    }

    /// Waits until everything queued so far is written and flushed.
    pub async fn flush(&self) {
        let Some(tx) = &self.tx else { return };
        let (done, wait) = oneshot::channel();
        if tx.send(Msg::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

/// How long the writer lets records gather after a batch before it looks again. A record reaches
/// the log at most this much later; `Audit::flush` (shutdown) waits for it.
const GATHER: Duration = Duration::from_millis(5);

/// The writer thread: numbers, timestamps, serialises and writes records in queue order,
/// flushing whenever the queue runs empty; then it lets the next records gather (`GATHER`)
/// and, if none came, sleeps until one does.
fn writer(
    mut rx: mpsc::Receiver<Msg>,
    sink: Sink,
    out: Box<dyn Write + Send>,
    metrics: Arc<Metrics>,
    reopen: Arc<AtomicBool>,
) {
    let boot_id = format!("{:016x}", crate::ids::boot_id());
    let mut out = BufWriter::with_capacity(64 * 1024, out);
    let mut seq = 0u64;
    let mut line = Vec::with_capacity(1024);
    while let Some(mut msg) = rx.blocking_recv() {
        loop {
            match msg {
                Msg::Record(mut rec) => {
                    metrics.audit_queue_depth.dec();
                    if reopen.swap(false, Ordering::AcqRel) {
                        let _ = out.flush();
                        match sink.open() {
                            Ok(w) => out = BufWriter::with_capacity(64 * 1024, w),
                            Err(e) => {
                                tracing::error!(error = %e, "audit: cannot reopen the log; keeping the old handle")
                            }
                        }
                    }
                    seq += 1;
                    rec.seq = seq;
                    rec.boot_id.clone_from(&boot_id);
                    rec.time =
                        humantime::format_rfc3339_micros(rec.at.unwrap_or_else(SystemTime::now))
                            .to_string();
                    line.clear();
                    self::line::write(&rec, &mut line);
                    line.push(b'\n');
                    if let Err(e) = out.write_all(&line) {
                        tracing::error!(error = %e, "audit: write failed");
                    }
                }
                Msg::Flush(done) => {
                    let _ = out.flush();
                    let _ = done.send(());
                }
            }
            match rx.try_recv() {
                Ok(next) => msg = next,
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) => {
                    let _ = out.flush();
                    std::thread::sleep(GATHER);
                    match rx.try_recv() {
                        Ok(next) => msg = next,
                        Err(_) => break,
                    }
                }
            }
        }
    }
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn records_are_numbered_written_and_reopened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let metrics = Arc::new(Metrics::new().unwrap());
        let audit = Audit::start(path.to_str().unwrap(), 2, metrics).unwrap();
        for i in 0..10 {
            let slot = audit.reserve().await.unwrap();
            slot.send(AuditRecord {
                decision_id: format!("d{i}"),
                ..Default::default()
            });
        }
        audit.flush().await;
        let rotated = dir.path().join("audit.log.1");
        std::fs::rename(&path, &rotated).unwrap();
        audit.reopen();
        audit.reserve().await.unwrap().send(AuditRecord::default());
        audit.flush().await;
        let old = std::fs::read_to_string(&rotated).unwrap();
        let lines: Vec<serde_json::Value> = old
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 10);
        assert_eq!(lines[9]["seq"], 10);
        assert_eq!(lines[3]["decision_id"], "d3");
        let new = std::fs::read_to_string(&path).unwrap();
        assert_eq!(new.lines().count(), 1);
        assert!(new.contains("\"seq\":11"));
    }
}
