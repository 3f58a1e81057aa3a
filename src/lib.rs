//! intentgate: a sidecar forward proxy that enforces declared intent for AI agents.
#![forbid(unsafe_code)]

pub mod config;
