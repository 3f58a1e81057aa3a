//! The writer thread: numbers, timestamps and serialises records in queue order and writes them
//! in batches. A write the sink takes only in part (disk full) leaves the rest of the batch
//! pending, to be written from exactly the first byte not taken: a line is never repeated, and
//! a line cut short is completed before anything follows it. Then, per `audit.on_failure`:
//! `block` stops taking records (the queue holds them; requests are refused while `blocked`)
//! and retries until the sink takes the bytes; `continue` keeps only the rest of a cut line,
//! drops the other pending records and counts them (their `seq` numbers are the gap).

use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, oneshot};

use super::{AuditRecord, Msg, Shared, Sink};
use crate::config::{AuditFormat, AuditOnFailure};

/// How long the writer lets records gather after a batch before it looks again. A record reaches
/// the log at most this much later; `Audit::flush` (shutdown) waits for it.
const GATHER: Duration = Duration::from_millis(5);
/// A batch is written once it holds this many bytes, or when the queue runs empty.
const BATCH: usize = 64 * 1024;
/// At most this many messages are taken from the queue at once: their places in it are given
/// back together (one release of the queue's semaphore for the lot, not one a record).
const TAKE: usize = 64;
/// The first and the longest wait between two tries of a blocked write.
const RETRY_FIRST: Duration = Duration::from_millis(20);
const RETRY_MAX: Duration = Duration::from_millis(500);

struct Writer {
    sink: Sink,
    out: Box<dyn Write + Send>,
    shared: Arc<Shared>,
    /// Serialised lines the sink has not taken yet.
    pending: Vec<u8>,
    /// Whether `pending` starts inside a line whose beginning is already written.
    torn: bool,
    /// Whether the last write failed.
    failing: bool,
    /// Flushes answered once everything pending is written (while blocked).
    waiting: Vec<oneshot::Sender<()>>,
    seq: u64,
    /// The process's boot id in hex, written into each line (`line::Stamp`), and copied into a
    /// record only when it goes on after its line (`stamped`), as is its time.
    boot_id: [u8; 16],
    stamper: super::stamp::Stamper,
    /// The pieces of a line the last record shared with the next (its agent, intent, revision).
    repeats: super::line::Repeats,
    /// `telemetry.otlp`: written records of traced calls go on to the exporter.
    exporter: Option<super::otlp::Exporter>,
    /// Records written since the last batch, given back for reuse after it (src/audit/spare.rs),
    /// as the boxes they came in.
    #[allow(clippy::vec_box)]
    written: Vec<Box<AuditRecord>>,
}

/// Runs the writer until every sender is gone: takes a record, then the rest of the batch
/// (everything queued, and what gathers for `GATHER`), writes it, and sleeps until the next.
pub(super) fn run(
    mut rx: mpsc::Receiver<Msg>,
    sink: Sink,
    out: Box<dyn Write + Send>,
    shared: Arc<Shared>,
    exporter: Option<super::otlp::Exporter>,
) {
    let mut boot_id = [0; 16];
    boot_id.copy_from_slice(format!("{:016x}", crate::ids::boot_id()).as_bytes());
    let mut w = Writer {
        sink,
        out,
        shared,
        pending: Vec::with_capacity(BATCH + 4096),
        torn: false,
        failing: false,
        waiting: Vec::new(),
        seq: 0,
        boot_id,
        stamper: super::stamp::Stamper::default(),
        repeats: super::line::Repeats::default(),
        exporter,
        written: Vec::new(),
    };
    let mut retry = RETRY_FIRST;
    let mut taken = Vec::with_capacity(TAKE);
    loop {
        // Blocked: the queue is held (requests get 503) until the sink takes what is pending.
        if w.holds() {
            std::thread::sleep(retry);
            retry = (retry * 2).min(RETRY_MAX);
            w.write_pending();
            continue;
        }
        retry = RETRY_FIRST;
        if rx.blocking_recv_many(&mut taken, TAKE) == 0 {
            break;
        }
        w.take_all(&mut taken);
        while !w.holds() {
            match queued(&mut rx, &mut taken) {
                Some(0) => break, // every sender gone
                Some(_) => w.take_all(&mut taken),
                None => {
                    // A failed write: `block` retries above; `continue` waits for the next record.
                    if !w.write_pending() {
                        break;
                    }
                    std::thread::sleep(GATHER);
                    match queued(&mut rx, &mut taken) {
                        Some(1..) => w.take_all(&mut taken),
                        _ => break,
                    }
                }
            }
        }
    }
    w.write_pending();
}

/// Moves what is queued (up to `TAKE` messages) into `taken` without waiting: `None` if nothing
/// is, `Some(0)` once every sender is gone and the queue is empty.
fn queued(rx: &mut mpsc::Receiver<Msg>, taken: &mut Vec<Msg>) -> Option<usize> {
    match rx.poll_recv_many(&mut Context::from_waker(Waker::noop()), taken, TAKE) {
        Poll::Ready(n) => Some(n),
        Poll::Pending => None,
    }
}

/// Fills `rec`'s `time` and `boot_id` (their allocations kept) with what its line says.
fn stamped(rec: &mut AuditRecord, time: &[u8; 27], boot_id: &[u8; 16]) {
    for (field, text) in [(&mut rec.time, &time[..]), (&mut rec.boot_id, &boot_id[..])] {
        field.clear();
        field.push_str(&String::from_utf8_lossy(text));
    }
}

impl Writer {
    /// Whether the writer holds the queue: `block` and the last write failed.
    fn holds(&self) -> bool {
        self.failing && self.shared.on_failure == AuditOnFailure::Block
    }

    /// Takes the messages taken from the queue, in order. All of them: while blocked the
    /// records are held in `pending` (and counted in `unwritten`) as the queue would hold them.
    fn take_all(&mut self, taken: &mut Vec<Msg>) {
        let records = taken.iter().filter(|m| matches!(m, Msg::Record(_))).count();
        self.shared.metrics.audit_queue_depth.sub(records as i64);
        for msg in taken.drain(..) {
            self.take(msg);
        }
        if self.holds() {
            self.shared
                .unwritten
                .store(self.pending_lines(), Ordering::Relaxed);
        }
    }

    /// How many lines (whole or cut) are waiting in `pending`.
    fn pending_lines(&self) -> usize {
        self.pending.iter().filter(|&&b| b == b'\n').count()
    }

    fn take(&mut self, msg: Msg) {
        match msg {
            Msg::Record(rec) => {
                self.push(rec);
                if self.pending.len() >= BATCH {
                    self.write_pending();
                }
            }
            Msg::Flush(done) => {
                if self.write_pending() || !self.holds() {
                    let _ = done.send(());
                } else {
                    self.waiting.push(done);
                }
            }
        }
    }

    /// Numbers, timestamps and serialises one record onto `pending`.
    fn push(&mut self, mut rec: Box<AuditRecord>) {
        if self.shared.reopen.swap(false, Ordering::AcqRel) {
            self.write_pending();
            match self.sink.open() {
                Ok(w) => self.out = w,
                Err(e) => {
                    tracing::error!(error = %e, "audit: cannot reopen the log; keeping the old handle")
                }
            }
        }
        self.seq += 1;
        rec.seq = self.seq;
        let time = *self.stamper.stamp(rec.at.unwrap_or_else(SystemTime::now));
        // With `audit.path: off` the writer runs for the export alone: nothing to serialise.
        // Where the line it wrote is, in the default format: the exporter's log body.
        let mut line = None;
        if !self.sink.is_off() {
            let at = self.pending.len();
            match self.shared.format {
                AuditFormat::Intentgate => {
                    let stamp = super::line::Stamp {
                        time: &time,
                        boot_id: &self.boot_id,
                    };
                    self.repeats.write(&rec, stamp, &mut self.pending);
                    line = Some(at..self.pending.len());
                }
                AuditFormat::Opa => {
                    stamped(&mut rec, &time, &self.boot_id);
                    super::opa::write(&rec, &mut self.pending);
                }
            }
            self.pending.push(b'\n');
        }
        match self.exporter.as_ref().filter(|_| rec.trace.is_some()) {
            Some(e) => {
                // The record goes on with its time and boot id.
                stamped(&mut rec, &time, &self.boot_id);
                e.offer(rec, line.map(|l| &self.pending[l]));
            }
            None => self.written.push(rec),
        }
    }

    /// Writes everything pending, from the first byte the sink has not taken. Returns whether
    /// all of it is written.
    fn write_pending(&mut self) -> bool {
        self.shared.spare.give(&mut self.written);
        let mut taken = 0;
        let result = loop {
            if taken == self.pending.len() {
                break self.out.flush();
            }
            match self.out.write(&self.pending[taken..]) {
                Ok(0) => break Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => taken += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        if taken > 0 {
            self.torn = self.pending[taken - 1] != b'\n';
            self.pending.drain(..taken);
        }
        match result {
            Ok(()) => {
                self.recovered();
                true
            }
            Err(e) => {
                self.failed(&e);
                false
            }
        }
    }

    fn failed(&mut self, e: &io::Error) {
        let block = self.shared.on_failure == AuditOnFailure::Block;
        if !self.failing {
            self.failing = true;
            if block {
                tracing::error!(error = %e, "audit: the log cannot be written; refusing requests (503 audit_unavailable) until it can (audit.on_failure: block)");
            } else {
                tracing::error!(error = %e, "audit: the log cannot be written; records are dropped and counted until it can (audit.on_failure: continue)");
            }
        }
        let lines = self.pending_lines();
        if block {
            self.shared.blocked.store(true, Ordering::Relaxed);
            self.shared.metrics.audit_blocked.set(1);
            self.shared.unwritten.store(lines, Ordering::Relaxed);
            return;
        }
        // Continue: the rest of a cut line stays (so the line is whole once space returns);
        // every record not begun is dropped and counted.
        let keep = match self.pending.iter().position(|&b| b == b'\n') {
            Some(end) if self.torn => end + 1,
            _ => 0,
        };
        let dropped = lines - usize::from(keep > 0);
        self.pending.truncate(keep);
        self.shared
            .metrics
            .audit_records_lost
            .inc_by(dropped as u64);
    }

    fn recovered(&mut self) {
        if self.failing {
            self.failing = false;
            self.shared.blocked.store(false, Ordering::Relaxed);
            self.shared.metrics.audit_blocked.set(0);
            self.shared.unwritten.store(0, Ordering::Relaxed);
            tracing::warn!("audit: the log can be written again");
        }
        for done in self.waiting.drain(..) {
            let _ = done.send(());
        }
    }
}
