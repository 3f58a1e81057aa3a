//! `intentgate inject`: the mutating admission webhook that adds intentgate to pods.
//!
//! Selection is by LABEL, done by the API server before we are called: the
//! MutatingWebhookConfiguration's `namespaceSelector` / `objectSelector` match
//! `intentgate.io/inject=true` on the namespace or the pod. Settings come from annotations
//! (`intentgate.io/agent-id`, `owner`, `intent`, `mode`, `exclude-outbound-ports`,
//! `exclude-outbound-cidrs`) and are checked against the platform floor in the inject config
//! (`floor`). The patch is built by pure functions (`patch`, `template`); `server` is the HTTPS
//! front.

pub mod floor;
pub mod patch;
pub mod server;
pub mod template;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// Parses `:8443`, `8443` or `HOST:PORT`.
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    let full = if let Some(port) = s.strip_prefix(':') {
        format!("0.0.0.0:{port}")
    } else if s.chars().all(|c| c.is_ascii_digit()) {
        format!("0.0.0.0:{s}")
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
) -> ExitCode {
    let cfg = match floor::load(config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("intentgate inject: {e}");
            return ExitCode::from(2);
        }
    };
    let tls = match server::tls_config(&cert, &key) {
        Ok(t) => t,
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
        tokio::select! {
            r = server::serve(listen, tls, cfg, on_bound) => r,
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
