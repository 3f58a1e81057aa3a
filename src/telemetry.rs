//! Logging: tracing with an env filter (`INTENTGATE_LOG`, default `info`), plain or JSON, on stderr
//! (stdout belongs to the audit log); colours only when stderr is a terminal.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Output format of the diagnostic log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Plain,
    Json,
}

/// Installs the global subscriber (filter from `INTENTGATE_LOG`, else `default`); a second call
/// (tests) is a no-op. Colour codes are written only to a terminal, never into a log file or pipe.
pub fn init(format: LogFormat, default: &str) {
    let filter =
        EnvFilter::try_from_env("INTENTGATE_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Plain => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
