//! `intentgate inject`: the control deployment — the mutating admission webhook that adds
//! intentgate to pods, and the policy bundle server.
//!
//! Selection is by LABEL, done by the API server before we are called: the
//! MutatingWebhookConfiguration's `namespaceSelector` / `objectSelector` match
//! `intentgate.io/inject=true` on the namespace or the pod; a pod opts out with
//! `intentgate.io/inject: "false"`. Settings come from annotations (`intentgate.io/agent-id`,
//! `owner`, `intent`, `mode`, `exclude-outbound-ports`, `exclude-outbound-cidrs`, `ca-trust`)
//! and are checked against the platform floor in the inject config (`floor`, `checks`). The
//! patch is built by pure functions (`patch`, `template`, `trust`); `server` is the HTTPS front,
//! `control` the state it serves from and how it follows its files, `certs` the serving
//! certificate, `version` the cluster's Kubernetes version.

pub mod attestation;
pub mod certs;
pub mod checks;
pub mod control;
pub mod credentials;
pub mod floor;
pub mod patch;
pub mod server;
pub mod template;
pub mod trust;
pub mod version;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// Parses `:8443`, `8443` (every address, IPv6 and IPv4) or `HOST:PORT`.
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    let full = if let Some(port) = s.strip_prefix(':') {
        format!("[::]:{port}")
    } else if s.chars().all(|c| c.is_ascii_digit()) {
        format!("[::]:{s}")
    } else {
        s.to_string()
    };
    full.parse()
        .map_err(|_| format!("'{s}' is not :PORT or HOST:PORT"))
}

/// The `inject` subcommand.
pub fn main(
    cert: PathBuf,
    key: PathBuf,
    listen: SocketAddr,
    config: Option<PathBuf>,
    ready_file: Option<PathBuf>,
    watch_interval: Duration,
) -> ExitCode {
    let control = match control::Control::load(&cert, &key, config.as_deref()) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            eprintln!("intentgate inject: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("intentgate inject: {e}");
            return ExitCode::FAILURE;
        }
    };
    let on_bound = move |addr: SocketAddr| {
        if let Some(p) = ready_file {
            let _ = std::fs::write(
                p,
                serde_json::json!({"listen": addr.to_string()}).to_string(),
            );
        }
    };
    let result = rt.block_on(async {
        control.spawn(watch_interval);
        tokio::select! {
            r = server::serve(listen, control, on_bound) => r,
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("intentgate inject: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
