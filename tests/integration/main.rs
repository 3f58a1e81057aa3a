//! intentgate's integration tests: ONE test binary, a shared harness (`common`) and suites that
//! drive the real binary with real clients against real upstreams.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

mod admin_door;
mod admin_limits;
mod ambiguity;
mod audit_durability;
mod budget;
mod budget_redis;
mod bundle_auth;
mod bundle_rogue;
pub mod bundles;
mod bypass;
mod claims;
mod cli;
mod config_empty;
mod connect;
mod deploy;
mod dns;
mod errors;
mod explain;
mod failed_calls;
mod forward;
mod fuzz_corpus;
mod intercept;
mod intercept_close;
mod intercept_reuse;
mod iptables;
mod isolate;
pub mod issuer;
mod k8s;
mod k8s_control;
mod k8s_pods;
mod k8s_sidecar;
mod k8s_trust;
mod learn;
mod lifecycle;
mod limits;
mod ops;
mod policy;
mod report;
mod run;
mod run_details;
mod runtimes;
mod sdks;
mod selfaddr;
mod token;
mod transparent;
mod tunnel_refusals;
mod upstreams;
mod websocket;
