//! The audit handle and its writer, end to end: numbering, stamping, reopening, and writes cut
//! short.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_are_numbered_written_and_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let metrics = Arc::new(Metrics::new().unwrap());
    let cfg = AuditConfig {
        path: path.to_str().unwrap().into(),
        queue: 2,
        ..AuditConfig::default()
    };
    let audit = Audit::start(&cfg, None, metrics).unwrap();
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

/// A disk with `room` bytes left: a write takes what fits, then fails with ENOSPC.
#[derive(Clone, Default)]
struct Disk {
    data: Arc<std::sync::Mutex<Vec<u8>>>,
    room: Arc<AtomicUsize>,
}

impl Write for Disk {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = self.room.load(Ordering::SeqCst);
        if room == 0 {
            return Err(io::Error::from_raw_os_error(28));
        }
        let n = buf.len().min(room);
        self.data.lock().unwrap().extend_from_slice(&buf[..n]);
        self.room.fetch_sub(n, Ordering::SeqCst);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Sends `n` records through `audit` (waiting for a place when the queue is full).
async fn send(audit: &Audit, n: usize) {
    for _ in 0..n {
        audit.reserve().await.unwrap().send(AuditRecord::default());
    }
}

fn lines(disk: &Disk) -> Vec<u64> {
    let data = disk.data.lock().unwrap().clone();
    String::from_utf8(data)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

/// A full queue makes `reserve` wait (back-pressure); requests waiting get the places given
/// back in the order they asked, and a free place is taken at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_makes_reserve_wait_and_waiters_go_first() {
    let metrics = Arc::new(Metrics::new().unwrap());
    let disk = Disk::default();
    // No room: the first record's write fails and the writer holds the queue (`block`).
    let shared = Shared::new(
        metrics,
        AuditOnFailure::Block,
        crate::config::AuditFormat::Intentgate,
    );
    let audit = Audit::spawn(shared, Sink::Stdout, Box::new(disk.clone()), 2, None).unwrap();
    send(&audit, 1).await;
    for _ in 0..500 {
        if audit.blocked() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(audit.blocked());
    // Two places, both taken (the writer holds the first record, not a place).
    let held: Vec<Slot> = vec![
        audit.reserve().await.unwrap(),
        audit.reserve().await.unwrap(),
    ];
    assert!(audit.try_reserve().is_none(), "the queue is full");
    // Two requests wait, in this order.
    let (tx, mut order) = tokio::sync::mpsc::unbounded_channel();
    let mut waiting = Vec::new();
    for i in 0..2u64 {
        let (audit, tx) = (audit.clone(), tx.clone());
        waiting.push(tokio::spawn(async move {
            let slot = audit.reserve().await.unwrap();
            tx.send(i).unwrap();
            slot.send(AuditRecord {
                status: 600 + i as u16,
                ..Default::default()
            });
        }));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(order.try_recv().is_err(), "nobody got a place while full");
    // Room: the writer takes the queue, the waiters get their places in order.
    disk.room.store(usize::MAX / 2, Ordering::SeqCst);
    for slot in held {
        slot.send(AuditRecord::default());
    }
    for w in waiting {
        w.await.unwrap();
    }
    assert_eq!(order.recv().await, Some(0));
    assert_eq!(order.recv().await, Some(1));
    assert_eq!(audit.settle(Duration::from_secs(10)).await, 0);
    assert_eq!(lines(&disk), (1..=5).collect::<Vec<_>>());
    // A free place now: taken without waiting.
    let now = tokio::time::timeout(Duration::from_millis(1), audit.reserve()).await;
    assert!(now.is_ok_and(|s| s.is_some()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_cut_short_is_resumed_never_repeated_in_both_modes() {
    for on_failure in [AuditOnFailure::Block, AuditOnFailure::Continue] {
        let metrics = Arc::new(Metrics::new().unwrap());
        let disk = Disk::default();
        // Room for one record and a half: the second is cut.
        let one = {
            let mut l = Vec::new();
            line::write(&AuditRecord::default(), &mut l);
            l.len()
        };
        disk.room.store(one * 3 / 2, Ordering::SeqCst);
        let shared = Shared::new(
            metrics.clone(),
            on_failure,
            crate::config::AuditFormat::Intentgate,
        );
        let audit = Audit::spawn(shared, Sink::Stdout, Box::new(disk.clone()), 64, None).unwrap();
        send(&audit, 10).await;
        let failed = || audit.blocked() || metrics.audit_records_lost.get() > 0;
        for _ in 0..500 {
            if failed() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(failed(), "{on_failure:?}");
        // Space returns; the next records follow.
        disk.room.store(usize::MAX / 2, Ordering::SeqCst);
        send(&audit, 2).await;
        assert_eq!(audit.settle(Duration::from_secs(10)).await, 0);
        let seqs = lines(&disk);
        let lost = metrics.audit_records_lost.get();
        match on_failure {
            AuditOnFailure::Block => {
                assert_eq!(seqs, (1..=12).collect::<Vec<_>>());
                assert_eq!(lost, 0);
                assert!(!audit.blocked());
            }
            AuditOnFailure::Continue => {
                // The cut record is completed; the ones dropped are the gap.
                assert_eq!(&seqs[..2], [1, 2], "{seqs:?}");
                assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
                assert_eq!(seqs.len() as u64 + lost, 12, "{seqs:?}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_carries_the_writer_s_time_and_boot_id_in_both_formats() {
    // The writer writes its stamp into the line itself (the record's own fields are filled
    // only for the OPA format and the exporter): each line says when its call was and who
    // wrote it, records reused from the spares included.
    let boot = format!("{:016x}", crate::ids::boot_id());
    for format in [AuditFormat::Intentgate, AuditFormat::Opa] {
        let metrics = Arc::new(Metrics::new().unwrap());
        let disk = Disk::default();
        disk.room.store(usize::MAX / 2, Ordering::SeqCst);
        let shared = Shared::new(metrics, AuditOnFailure::Block, format);
        let audit = Audit::spawn(shared, Sink::Stdout, Box::new(disk.clone()), 4, None).unwrap();
        let mut want = Vec::new();
        for round in 0..3u64 {
            for i in 0..4u64 {
                let at = std::time::UNIX_EPOCH
                    + Duration::new(1_765_000_000 + round * 86_399 + i, (i * 7919) as u32 * 1000);
                want.push(stamp::rfc3339_micros(at));
                let mut rec = audit.record();
                rec.at = Some(at);
                audit.reserve().await.unwrap().send(rec);
            }
            audit.flush().await;
        }
        let data = String::from_utf8(disk.data.lock().unwrap().clone()).unwrap();
        let got: Vec<(String, String, u64)> = data
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                let (time, id, seq) = match format {
                    AuditFormat::Intentgate => (&v["time"], &v["boot_id"], &v["seq"]),
                    AuditFormat::Opa => {
                        (&v["timestamp"], &v["labels"]["id"], &v["intentgate"]["seq"])
                    }
                };
                let text = |v: &serde_json::Value| v.as_str().unwrap().to_string();
                (text(time), text(id), seq.as_u64().unwrap())
            })
            .collect();
        assert_eq!(got.len(), want.len(), "{format:?}");
        for (n, ((time, id, seq), want)) in got.iter().zip(&want).enumerate() {
            assert_eq!(time, want, "{format:?}");
            assert_eq!(id, &boot, "{format:?}");
            assert_eq!(*seq, n as u64 + 1, "{format:?}");
        }
    }
}
