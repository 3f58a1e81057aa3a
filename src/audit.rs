//! The audit log: one JSON line per decision, written by a dedicated thread through a bounded
//! queue. A request reserves its queue slot before it is forwarded, so a full queue makes requests
//! wait (back-pressure) and a record, once reserved, can always be sent: records are never dropped.
//!
//! While records keep coming, the writer gathers them for `GATHER` between writes instead of
//! being woken for each one: a request then never pays for waking another thread, and the writer
//! makes one write per batch. An idle writer sleeps until the next record.
//!
//! When the log cannot be written (disk full, I/O error), `audit.on_failure` decides: `block`
//! holds every record and refuses new requests (503) until the writer can write again; `continue`
//! forwards and counts the records it drops (src/audit/writer.rs). At shutdown, streams still open
//! after the grace period are closed (`close_streams`) and write their record with
//! `ended: "shutdown"`; `settle` waits until every reserved record is written.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};

use crate::config::{AuditConfig, AuditFormat, AuditOnFailure, OtlpConfig};
use crate::metrics::Metrics;

mod line;
mod opa;
mod otlp;
mod read;
mod record;
mod shadow;
mod spare;
mod stamp;
mod trace;
mod writer;

pub use read::AuditLog;
pub use record::*;
pub use shadow::Shadow;
pub use trace::Trace;

enum Msg {
    Record(Box<AuditRecord>),
    Flush(oneshot::Sender<()>),
}

/// What the request path, the writer and the shutdown sequence share.
struct Shared {
    metrics: Arc<Metrics>,
    on_failure: AuditOnFailure,
    format: AuditFormat,
    /// Set by SIGHUP: the writer reopens a file sink before its next record.
    reopen: AtomicBool,
    /// `audit.on_failure: block` and the last write failed: requests are refused.
    blocked: AtomicBool,
    /// Records the writer holds but has not written (while blocked).
    unwritten: AtomicUsize,
    /// Flipped once at shutdown: every stream still open ends now and writes its record.
    closing: watch::Sender<bool>,
    /// The same, for a cheap look (a dropped response body asks).
    closed: AtomicBool,
    /// Written records given back for new requests (src/audit/spare.rs).
    spare: spare::Spare,
}

impl Shared {
    fn new(metrics: Arc<Metrics>, on_failure: AuditOnFailure, format: AuditFormat) -> Arc<Self> {
        Arc::new(Self {
            metrics,
            on_failure,
            format,
            reopen: AtomicBool::new(false),
            blocked: AtomicBool::new(false),
            unwritten: AtomicUsize::new(0),
            closing: watch::Sender::new(false),
            closed: AtomicBool::new(false),
            spare: spare::Spare::default(),
        })
    }
}

/// The sending side, shared by the request path.
#[derive(Clone)]
pub struct Audit {
    tx: Option<mpsc::Sender<Msg>>,
    shared: Arc<Shared>,
}

/// A reserved place in the queue: sending through it cannot block or fail while the writer runs.
pub struct Slot {
    permit: mpsc::OwnedPermit<Msg>,
    shared: Arc<Shared>,
}

impl Slot {
    /// Queues the record (a boxed one as it is: no copy).
    pub fn send(self, record: impl Into<Box<AuditRecord>>) {
        self.shared.metrics.audit_queue_depth.inc();
        self.permit.send(Msg::Record(record.into()));
    }

    /// Whether streams are being closed for shutdown (a record written now says so).
    pub fn closing(&self) -> bool {
        self.shared.closed.load(Ordering::Relaxed)
    }
}

/// Where records go.
enum Sink {
    /// Nothing kept (`audit.path: off` while records are exported).
    Off,
    Stdout,
    Stderr,
    File(std::path::PathBuf),
}

impl Sink {
    fn is_off(&self) -> bool {
        matches!(self, Sink::Off)
    }

    fn open(&self) -> io::Result<Box<dyn Write + Send>> {
        Ok(match self {
            Sink::Off => Box::new(io::sink()),
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
    /// Starts the writer thread for `cfg.path` (`stdout`, `stderr`, `off` or a file opened with
    /// O_APPEND). Fails if the file cannot be opened.
    /// With `otlp`, each written record of a traced call is also handed to the OpenTelemetry
    /// exporter (`off` then still runs the writer, into nothing, for the export).
    pub fn start(
        cfg: &AuditConfig,
        otlp: Option<&OtlpConfig>,
        metrics: Arc<Metrics>,
    ) -> io::Result<Self> {
        let exporter = otlp
            .map(|o| otlp::Exporter::start(o, metrics.clone()))
            .transpose()?;
        let shared = Shared::new(metrics, cfg.on_failure, cfg.format);
        let sink = match cfg.path.as_str() {
            "off" if exporter.is_some() => Sink::Off,
            "off" => return Ok(Self { tx: None, shared }),
            "stdout" => Sink::Stdout,
            "stderr" => Sink::Stderr,
            file => Sink::File(file.into()),
        };
        let out = sink.open()?;
        Self::spawn(shared, sink, out, cfg.queue, exporter)
    }

    fn spawn(
        shared: Arc<Shared>,
        sink: Sink,
        out: Box<dyn Write + Send>,
        queue: usize,
        exporter: Option<otlp::Exporter>,
    ) -> io::Result<Self> {
        let (tx, rx) = mpsc::channel(queue.max(1));
        let s = shared.clone();
        std::thread::Builder::new()
            .name("intentgate-audit".into())
            .spawn(move || writer::run(rx, sink, out, s, exporter))?;
        Ok(Self {
            tx: Some(tx),
            shared,
        })
    }

    /// A blank record for a request: one the writer has written and given back (its
    /// allocations reused), else a new one.
    pub fn record(&self) -> Box<AuditRecord> {
        if self.tx.is_none() {
            return Box::default();
        }
        self.shared.spare.take()
    }

    /// Reserves a place for one record, waiting while the queue is full. `None` when auditing is
    /// off (or the writer has stopped, which only happens at exit).
    ///
    /// A free place is taken without a future (`try_reserve_owned`: one compare-and-swap on the
    /// queue's semaphore); only a full queue waits in `reserve_owned`, in line behind the
    /// requests already waiting (a place given back goes to them first, so none is free while
    /// any waits: the order is the same as before).
    pub async fn reserve(&self) -> Option<Slot> {
        let tx = self.tx.clone()?;
        let permit = match tx.try_reserve_owned() {
            Ok(permit) => permit,
            Err(mpsc::error::TrySendError::Full(tx)) => tx.reserve_owned().await.ok()?,
            Err(mpsc::error::TrySendError::Closed(_)) => return None,
        };
        Some(Slot {
            permit,
            shared: self.shared.clone(),
        })
    }

    /// Whether new requests are refused because the log cannot be written
    /// (`audit.on_failure: block`). One atomic load: it runs on every request.
    pub fn blocked(&self) -> bool {
        self.shared.blocked.load(Ordering::Relaxed)
    }

    /// A place for the record of a request refused while blocked, if the queue has one; else
    /// the record cannot be kept and is counted lost (nothing was forwarded for it).
    pub fn try_reserve(&self) -> Option<Slot> {
        let tx = self.tx.clone()?;
        match tx.try_reserve_owned() {
            Ok(permit) => Some(Slot {
                permit,
                shared: self.shared.clone(),
            }),
            Err(_) => {
                self.shared.metrics.audit_records_lost.inc();
                None
            }
        }
    }

    /// Asks the writer to reopen a file sink before its next write (SIGHUP, for logrotate).
    pub fn reopen(&self) {
        self.shared.reopen.store(true, Ordering::Release);
    }

    /// Waits until everything queued so far is written and flushed (while blocked: until the
    /// log can be written again).
    pub async fn flush(&self) {
        let Some(tx) = &self.tx else { return };
        let (done, wait) = oneshot::channel();
        if tx.send(Msg::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }

    /// Tells every stream still open (streamed responses, WebSockets, tunnels) to end now and
    /// write its record with `ended: "shutdown"`.
    pub fn close_streams(&self) {
        self.shared.closed.store(true, Ordering::Relaxed);
        self.shared.closing.send_replace(true);
    }

    /// Resolves once `close_streams` is called. A task holding a stream selects on it.
    pub fn closing(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.shared.closing.subscribe();
        async move {
            let _ = rx.wait_for(|closing| *closing).await;
        }
    }

    /// At exit: waits up to `limit` until every reserved record has been sent and written.
    /// Returns how many are still unwritten (0 when all are on disk).
    pub async fn settle(&self, limit: Duration) -> usize {
        let Some(tx) = &self.tx else { return 0 };
        let deadline = Instant::now() + limit;
        loop {
            // Nothing reserved or queued: a flush then writes what the writer holds.
            if tx.capacity() == tx.max_capacity() {
                let left = deadline.saturating_duration_since(Instant::now());
                if tokio::time::timeout(left, self.flush()).await.is_ok()
                    && tx.capacity() == tx.max_capacity()
                {
                    return 0;
                }
            }
            if Instant::now() >= deadline {
                let held = tx.max_capacity() - tx.capacity();
                return held + self.shared.unwritten.load(Ordering::Relaxed);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[cfg(test)]
mod tests;
