//! intentgate: a sidecar forward proxy that enforces declared intent for AI agents.
//!
//! Request flow: a client connection is accepted by `listen` (limits, timeouts, JSON answers for
//! unparseable input), each request goes through `proxy::Proxy::handle` — the pipeline, in order,
//! in one place — and is forwarded by the upstream sender in `proxy::sender` or tunnelled by
//! `proxy::tunnel`. Every error becomes a JSON response in `error`. `config` holds the typed
//! configuration, `app` wires the parts together and `cli` is the command line.
#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod audit;
pub mod budget;
pub mod bundle;
pub mod cli;
pub mod config;
pub(crate) mod conn;
pub mod cred;
pub mod egress;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
mod hostport;
pub mod identity;
pub mod ids;
pub mod inject;
pub mod intent;
pub mod inventory;
pub mod iptables;
pub mod jws;
pub mod learn;
pub mod listen;
pub mod llm;
pub mod mcp;
pub mod metrics;
pub mod offline;
pub mod policy;
pub mod proxy;
pub mod reload;
pub mod replay;
pub mod report;
pub mod run;
pub mod target;
pub mod telemetry;
pub mod tls;
pub mod token;
pub mod vocab;
pub mod watch;

#[cfg(test)]
#[path = "layers_tests.rs"]
mod layers_tests;
