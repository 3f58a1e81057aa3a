//! The shared harness: the real `intentgate` binary on 127.0.0.1:0, real upstream servers (plain and
//! TLS, with a CA made in the test), and helpers to drive them with curl and Rust clients.

#![allow(dead_code)]

pub mod client;
pub mod netns;
pub mod proxy;
pub mod tls;
pub mod upstream;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub use client::*;
pub use proxy::*;
pub use upstream::*;

/// One runtime shared by all tests for the servers they start.
pub fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("test runtime")
    })
}

/// Retries `f` until it returns `Some`, or panics with `what` after `timeout`. Never a fixed sleep.
pub fn eventually<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    let mut pause = Duration::from_millis(2);
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}
