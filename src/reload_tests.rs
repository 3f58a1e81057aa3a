//! Tests of the file watcher's loop: a change is reloaded, and one made while a reload reads
//! the files is reloaded again.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::follow;

/// Waits (a bounded retry, not a fixed sleep) until `count` reaches `n`.
async fn reaches(count: &AtomicUsize, n: usize) {
    let start = Instant::now();
    while count.load(Ordering::SeqCst) < n {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{} so far, waiting for {n}",
            count.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test]
async fn a_change_made_while_a_reload_reads_the_files_is_reloaded_again() {
    // The files' fingerprint; the first reload sees a change land while it reads them (a file
    // written after it was created empty), as a loaded machine makes it.
    let print = Arc::new(AtomicU64::new(1));
    let reloads = Arc::new(AtomicUsize::new(0));
    let prints = Arc::new(AtomicUsize::new(0));
    let (stop, shutdown) = watch::channel(false);
    let watcher = {
        let (p, p2, r2, n) = (
            print.clone(),
            print.clone(),
            reloads.clone(),
            prints.clone(),
        );
        tokio::spawn(follow(
            Duration::from_millis(5),
            shutdown,
            move || {
                n.fetch_add(1, Ordering::SeqCst);
                let p = p.clone();
                async move { p.load(Ordering::SeqCst) }
            },
            move || {
                let (p, r) = (p2.clone(), r2.clone());
                async move {
                    if r.fetch_add(1, Ordering::SeqCst) == 0 {
                        p.store(3, Ordering::SeqCst);
                    }
                }
            },
        ))
    };
    // The watcher has seen the files as they were; then they change.
    reaches(&prints, 1).await;
    print.store(2, Ordering::SeqCst);
    reaches(&reloads, 2).await;
    // Then nothing moves: no more reloads.
    let settled = reloads.load(Ordering::SeqCst);
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(reloads.load(Ordering::SeqCst), settled);
    assert_eq!(settled, 2);
    stop.send(true).unwrap();
    watcher.await.unwrap();
}
