//! The arguments of the commands other than `serve`, `check` and the shared config and listen
//! flags (src/cli.rs), and of `token` (src/cli/token.rs).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::ConfigArgs;

/// `intentgate isolate-helper`: see `crate::run::isolate::helper`.
#[derive(Args, Debug)]
pub struct IsolateHelperArgs {
    #[arg(long)]
    pub control: PathBuf,
    #[arg(long)]
    pub proxy_port: u16,
    #[arg(long)]
    pub admin_port: Option<u16>,
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// `intentgate inject`: see `crate::inject`.
#[derive(Args, Debug)]
pub struct InjectArgs {
    /// The webhook's TLS certificate chain (PEM).
    #[arg(long)]
    pub tls_cert: PathBuf,
    /// The webhook's TLS private key (PEM).
    #[arg(long)]
    pub tls_key: PathBuf,
    /// Listen address, `:PORT` or `HOST:PORT`.
    #[arg(long, default_value = ":8443", value_parser = crate::inject::parse_listen)]
    pub listen: SocketAddr,
    /// Inject config: sidecar settings, the platform floor and `bundles:` (YAML). Without it every
    /// pod is refused and no bundles are served.
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// Write `{"listen": ADDR}` here once bound.
    #[arg(long)]
    pub ready_file: Option<PathBuf>,
    /// How often the certificate, the inject config, the policy directory and the issuer's key
    /// file are checked for changes (they are reloaded without a restart).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub watch_interval: std::time::Duration,
}

/// `intentgate iptables`: see `crate::iptables` for the rule layout.
#[derive(Args, Debug)]
pub struct IptablesArgs {
    /// UID intentgate runs as; its own connections are never redirected (not 1337, Istio's).
    #[arg(long, default_value_t = crate::iptables::DEFAULT_PROXY_UID)]
    pub proxy_uid: u32,
    /// The transparent listener's port.
    #[arg(long, default_value_t = crate::iptables::DEFAULT_PORT)]
    pub port: u16,
    /// Destination TCP ports never redirected (comma-separated or repeated).
    #[arg(long, value_delimiter = ',')]
    pub exclude_ports: Vec<u16>,
    /// Destination CIDRs never redirected (comma-separated or repeated).
    #[arg(long, value_delimiter = ',')]
    pub exclude_cidrs: Vec<crate::iptables::Cidr>,
    /// Redirect only these destination CIDRs (default: everything).
    #[arg(long, value_delimiter = ',')]
    pub include_cidrs: Vec<crate::iptables::Cidr>,
    /// Reject outbound UDP 443 so clients fall back from QUIC to TCP (which is redirected).
    #[arg(long)]
    pub block_quic: bool,
    /// Print the exact commands instead of running them.
    #[arg(long)]
    pub dry_run: bool,
    /// Remove the rules instead of installing them.
    #[arg(long)]
    pub cleanup: bool,
    /// iptables backend: `auto` (the one already holding rules here, else the system's
    /// `iptables`), `nft` or `legacy`.
    #[arg(long, default_value = "auto")]
    pub backend: crate::iptables::BackendChoice,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Also write the summary as JSON to this file.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Audit log file (default: a file in a temporary folder; the summary prints its path).
    #[arg(long)]
    pub audit: Option<PathBuf>,
    /// Learn mode: forward everything (monitor) and write the minimal catalog that allows exactly
    /// the calls the agent made to this file.
    #[arg(long)]
    pub learn: Option<PathBuf>,
    #[arg(long, value_name = "MIN", num_args = 0..=1, default_missing_value = "2", help = GENERALISE,
          value_parser = clap::value_parser!(u32).range(1..), requires = "learn")]
    pub generalise: Option<u32>,
    /// Print no summary.
    #[arg(long, short)]
    pub quiet: bool,
    /// Linux: run CMD in a network namespace of its own whose only way out is intentgate. As
    /// root, its TCP connections that ignore the proxy are redirected to intentgate and decided;
    /// otherwise (a user namespace) they fail, as do UDP, DNS and raw sockets. Exits 2 if the
    /// kernel does not allow it; never runs CMD without it.
    #[arg(long)]
    pub isolate: bool,
    /// A signed intent token (a file holding the compact JWS) presented for every call of the
    /// command that brings none of its own; re-read on reload.
    #[arg(long, value_name = "FILE")]
    pub intent_token: Option<PathBuf>,
    /// The agent command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// The help of `--generalise [MIN]` (`learn`, `run --learn`, `serve --learn`).
pub(super) const GENERALISE: &str = "Generalise id-like path segments (numeric, UUID, long hex) to `*` where \
    at least MIN distinct paths of that shape were seen (MIN defaults to 2), each noted in the \
    file. Without it, paths are learned exactly as seen";

#[derive(Args, Debug)]
pub struct LearnArgs {
    /// Audit log files (JSON lines), e.g. collected from a namespace in monitor (or enforce) mode.
    #[arg(long = "from-audit", required = true, num_args = 1..)]
    pub from_audit: Vec<PathBuf>,
    /// Where to write the learned catalog (YAML, the config's `intents:` format).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, value_name = "MIN", num_args = 0..=1, default_missing_value = "2", help = GENERALISE,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub generalise: Option<u32>,
}

/// `intentgate report`: see `crate::report`.
#[derive(Args, Debug)]
pub struct ReportArgs {
    /// Audit log files (JSON lines), `-` for stdin; large files are streamed.
    #[arg(long, required = true, num_args = 1.., value_name = "FILE")]
    pub audit: Vec<PathBuf>,
    /// Where to write the report (HTML).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Judge the inventory's flags (past expiry, idle) at this time (RFC 3339); default now.
    #[arg(long, value_name = "TIME", value_parser = crate::report::parse_time)]
    pub as_of: Option<i64>,
    /// Flag an agent as idle when its last call is older than this, e.g. `7d`, `12h`.
    #[arg(long, value_name = "DURATION", default_value = "7d", value_parser = humantime::parse_duration)]
    pub idle: std::time::Duration,
}

/// `intentgate replay`: see `crate::replay`.
#[derive(Args, Debug)]
pub struct ReplayArgs {
    /// Audit log files (JSON lines), `-` for stdin.
    #[arg(long, required = true, num_args = 1.., value_name = "FILE")]
    pub audit: Vec<PathBuf>,
    /// The candidate configuration (its intents and policy paths) to judge.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: PathBuf,
    /// Compare with this configuration decided the same way, instead of the recorded decisions.
    #[arg(long, value_name = "FILE")]
    pub base: Option<PathBuf>,
    /// Output: text, json, or markdown (for a pull-request comment).
    #[arg(long, value_enum, default_value = "text")]
    pub format: crate::replay::Format,
}

/// `intentgate inventory`: see `crate::inventory`.
#[derive(Args, Debug)]
pub struct InventoryArgs {
    /// `kubectl get pods -A -o json` output, or `-` for stdin.
    #[arg(long, value_name = "FILE")]
    pub pods: PathBuf,
    /// `kubectl get namespaces -o json` output: pods in namespaces labelled
    /// `intentgate.io/inject=true` count as agent pods too.
    #[arg(long, value_name = "FILE")]
    pub namespaces: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum CaCommand {
    /// Create a new CA (ECDSA P-256) in DIR: ca.pem (0644) and ca-key.pem (0600). Refuses to
    /// overwrite. Point tls.ca_cert / tls.ca_key at them and give ca.pem to your clients.
    Init {
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
    },
    /// Print a CA certificate's path, SHA-256 fingerprint, subject and expiry.
    Show {
        /// The certificate (default: tls.ca_cert from --config).
        #[arg(long)]
        cert: Option<PathBuf>,
        #[command(flatten)]
        config: Box<ConfigArgs>,
    },
}

#[derive(Args, Debug)]
pub struct ExplainArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Task reference that goes with --intent.
    #[arg(long)]
    pub task: Option<String>,
    /// A request header, `NAME: VALUE` (repeatable).
    #[arg(long = "header", short = 'H')]
    pub headers: Vec<String>,
    /// Take HOST to resolve to IP (repeat for several addresses) instead of asking the system
    /// resolver; the egress rules then classify the address as the proxy would.
    #[arg(long, value_name = "HOST=IP")]
    pub resolve: Vec<crate::offline::Pinned>,
    /// HTTP method, e.g. GET.
    pub method: String,
    /// Full URL, e.g. https://api.zendesk.com/api/v2/tickets.
    pub url: String,
}
