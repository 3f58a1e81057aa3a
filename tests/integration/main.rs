//! intentgate's integration tests: ONE test binary, a shared harness (`common`) and suites that
//! drive the real binary with real clients against real upstreams.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

mod admin_limits;
pub mod bundles;
mod bypass;
mod claims;
mod cli;
mod config_empty;
mod connect;
mod deploy;
mod errors;
mod forward;
mod fuzz_corpus;
mod intercept;
mod intercept_reuse;
mod iptables;
mod isolate;
mod k8s;
mod lifecycle;
mod limits;
mod ops;
mod policy;
mod run;
mod run_details;
mod runtimes;
mod transparent;
mod websocket;
