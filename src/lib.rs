//! intentgate: a sidecar forward proxy that enforces declared intent for AI agents.
//!
//! Request flow: a client connection is accepted by `listen` (limits, timeouts, JSON answers for
//! unparseable input), each request goes through `proxy::Proxy::handle` — the pipeline, in order,
//! in one place — and is forwarded by the upstream sender in `proxy::sender` or tunnelled by
//! `proxy::tunnel`. Every error becomes a JSON response in `error`. `config` holds the typed
//! configuration, `app` wires the parts together and `cli` is the command line.
//!
//! The modules are private: the binary, the benches and the integration tests reach in through
//! `exposed` (re-exports of exactly what they use), the fuzz targets through `fuzzing`.
#![forbid(unsafe_code)]

mod admin;
mod app;
mod audit;
mod budget;
mod bundle;
mod cli;
mod config;
mod conn;
mod cred;
mod egress;
mod error;
#[doc(hidden)]
pub mod exposed;
#[doc(hidden)]
pub mod fuzzing;
mod head;
mod hostport;
mod identity;
mod ids;
mod inject;
mod intent;
mod inventory;
mod iptables;
mod jws;
mod learn;
mod listen;
mod llm;
mod mcp;
mod metrics;
mod offline;
mod policy;
mod proxy;
mod reload;
mod replay;
mod report;
mod run;
mod runs;
mod target;
mod telemetry;
mod tls;
mod token;
mod vocab;
mod watch;

#[cfg(test)]
#[path = "layers_tests.rs"]
mod layers_tests;
