//! The command line: `serve`, `check` (and more as they land). Exit codes: 0 ok, 1 denied or a
//! failed check, 2 invalid configuration or policy.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::config::{self, Loaded, Mode};
use crate::telemetry::{self, LogFormat};

mod args;
mod token;
use args::GENERALISE;
pub use args::*;
pub use token::TokenCommand;

/// intentgate: a sidecar forward proxy that enforces declared intent for AI agents.
///
/// Every outbound call of the agent passes through intentgate, is tagged with the agent's
/// identity and declared intent, and is checked against Rego policy.
#[derive(Parser, Debug)]
#[command(name = "intentgate", version, about, long_about)]
pub struct Cli {
    /// Diagnostic log format (the filter comes from INTENTGATE_LOG, default `info`).
    #[arg(long, value_enum, default_value_t = LogFormat::Plain, global = true)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the proxy (with the embedded default config unless --config is given).
    Serve(ServeArgs),
    /// Validate a configuration and its policies (with --bundle-url: the bundle, fetched once), and
    /// run the Rego unit tests (`test_*` rules) found in them; exit 0 ok, 1 a test failed, 2 invalid.
    Check(CheckArgs),
    /// Would this request be allowed, and why? Prints the decision and the policy input;
    /// exit 0 allow, 1 deny, 2 invalid.
    Explain(ExplainArgs),
    /// Wrap one agent process: start the proxy on ephemeral ports, run CMD with proxy and CA-trust
    /// variables, print what was allowed and blocked when it exits, pass on its exit code.
    Run(RunArgs),
    /// Write the intent catalog that would have allowed exactly the forwarded calls in audit logs
    /// (per intent, each path with its own methods); refused calls are listed, never granted.
    Learn(LearnArgs),
    /// Write one self-contained HTML report from audit logs: calls over time, refusals, what
    /// enforcing would break, top destinations, suggested catalog and the agent inventory;
    /// exit 0 written, 2 an input unreadable or the output not writable.
    Report(ReportArgs),
    /// Re-decide recorded calls (audit logs) under a candidate config and policy, offline, and
    /// report what it would newly deny or allow, grouped by agent, intent and destination;
    /// exit 0 no change, 1 new denials, 3 new grants, 4 both, 2 unusable config, policy or log.
    Replay(ReplayArgs),
    /// List agent pods (from `kubectl get pods -A -o json`) running without the intentgate
    /// sidecar, and injected pods without an owner; exit 0 none, 1 some found, 2 unreadable input.
    Inventory(InventoryArgs),
    /// Manage intentgate's local certificate authority (for TLS interception).
    #[command(subcommand)]
    Ca(CaCommand),
    /// Install (or print, or remove) the nat rules that redirect this network namespace's outbound
    /// TCP to the transparent listener; the injected init container runs this.
    Iptables(IptablesArgs),
    /// The control deployment (HTTPS): the mutating admission webhook that injects the sidecar
    /// into labelled pods, enforcing the platform floor from --config, and the policy bundle
    /// server (`GET /bundles/NAMESPACE`, from `bundles.policy_dir`).
    Inject(InjectArgs),
    /// Signed intent tokens and attestations: keygen, jwks, mint, verify.
    #[command(subcommand)]
    Token(TokenCommand),
    /// (internal) The namespace side of `run --isolate`; `run` starts it.
    #[command(name = "isolate-helper", hide = true)]
    IsolateHelper(IsolateHelperArgs),
}

/// Where the configuration comes from, and the flags that override it.
#[derive(Args, Debug, Clone, Default)]
pub struct ConfigArgs {
    /// Configuration file (YAML). Without it the embedded default is used.
    #[arg(long, short = 'c', env = "INTENTGATE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Agent id (overrides agent.id).
    #[arg(long)]
    pub agent: Option<String>,
    /// Agent namespace (overrides agent.namespace).
    #[arg(long)]
    pub namespace: Option<String>,
    /// Agent owner (overrides agent.owner).
    #[arg(long)]
    pub owner: Option<String>,
    /// Default intent when the agent declares none (overrides `intent`).
    #[arg(long)]
    pub intent: Option<String>,
    /// Mode for every intent: enforce or monitor (overrides the intents' and the top-level mode;
    /// an intent the agent may not claim is refused in either).
    #[arg(long, value_enum)]
    pub mode: Option<CliMode>,
    /// Fetch the policy as a bundle from this https URL, e.g.
    /// https://intentgate.intentgate-system.svc/bundles/NAMESPACE (overrides policy.bundle_url).
    #[arg(long, env = "INTENTGATE_BUNDLE_URL")]
    pub bundle_url: Option<String>,
    /// CA for --bundle-url: PEM text or a PEM file (overrides policy.bundle_ca).
    #[arg(long, env = "INTENTGATE_BUNDLE_CA", hide_env_values = true)]
    pub bundle_ca: Option<String>,
    /// Token presented to the bundle server (overrides policy.bundle_token_file).
    #[arg(long, env = "INTENTGATE_BUNDLE_TOKEN_FILE")]
    pub bundle_token_file: Option<PathBuf>,
    /// Ed25519 key attestations are signed with (overrides attestation.key_file; the webhook
    /// passes the namespace's key Secret).
    #[arg(long)]
    pub attestation_key: Option<PathBuf>,
}

/// The listen addresses: `serve` only (`run` listens on loopback ports of its own; `check` and
/// `explain` listen on nothing).
#[derive(Args, Debug, Clone, Copy, Default)]
pub struct ListenArgs {
    /// Proxy listen address (overrides listen.proxy).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Admin listen address (overrides listen.admin).
    #[arg(long)]
    pub admin: Option<SocketAddr>,
}

impl ListenArgs {
    fn apply(self, loaded: &mut Loaded) {
        let c = &mut loaded.config;
        if let Some(a) = self.listen {
            c.listen.proxy = a;
        }
        if let Some(a) = self.admin {
            c.listen.admin = Some(a);
        }
    }
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum CliMode {
    Enforce,
    Monitor,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    #[command(flatten)]
    pub listen: ListenArgs,
    /// Once listening, write the bound addresses as JSON to this file (for wrappers and tests).
    #[arg(long)]
    pub ready_file: Option<PathBuf>,
    /// Learn mode: forward everything (monitor) and, at shutdown, write the minimal intent catalog
    /// that allows exactly the calls seen to this file. Audit records go to audit.path when it is
    /// a file, else to FILE.audit.jsonl.
    #[arg(long)]
    pub learn: Option<PathBuf>,
    #[arg(long, value_name = "MIN", num_args = 0..=1, default_missing_value = "2", help = GENERALISE,
          value_parser = clap::value_parser!(u32).range(1..), requires = "learn")]
    pub generalise: Option<u32>,
}

/// The listen flags, and learn mode for `serve`: monitor everything, and keep the audit in a file
/// to learn from.
fn serve_overrides(loaded: &mut Loaded, listen: ListenArgs, learn: Option<&std::path::Path>) {
    listen.apply(loaded);
    let Some(out) = learn else { return };
    let c = &mut loaded.config;
    c.mode_override = Some(Mode::Monitor);
    if matches!(c.audit.path.as_str(), "stdout" | "stderr" | "off") {
        c.audit.path = format!("{}.audit.jsonl", out.display());
    }
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
}

impl ConfigArgs {
    /// Loads the file (or the embedded default) and applies the flags on top.
    pub fn load(&self) -> Result<Loaded, config::ConfigError> {
        let mut loaded = config::load(self.config.as_deref())?;
        let c = &mut loaded.config;
        if let Some(v) = &self.agent {
            c.agent.id = Some(v.clone());
        }
        if let Some(v) = &self.namespace {
            c.agent.namespace = Some(v.clone());
        }
        if let Some(v) = &self.owner {
            c.agent.owner = Some(v.clone());
        }
        if let Some(v) = &self.intent {
            c.intent = Some(v.clone());
        }
        if let Some(v) = &self.bundle_url {
            c.policy.bundle_url = Some(v.clone());
        }
        if let Some(v) = &self.bundle_ca {
            c.policy.bundle_ca = Some(v.clone());
        }
        if let Some(v) = &self.bundle_token_file {
            c.policy.bundle_token_file = Some(v.clone());
        }
        if let Some(v) = &self.attestation_key {
            c.attestation.key_file = Some(v.clone());
            config::validate_attestation(&c.attestation).map_err(|(field, msg)| {
                config::ConfigError::Invalid {
                    file: loaded.source.clone(),
                    field,
                    line: None,
                    msg,
                }
            })?;
        }
        config::check_bundle(c).map_err(|(field, msg)| config::ConfigError::Invalid {
            file: loaded.source.clone(),
            field: field.to_string(),
            line: None,
            msg,
        })?;
        if let Some(m) = self.mode {
            c.mode_override = Some(match m {
                CliMode::Enforce => Mode::Enforce,
                CliMode::Monitor => Mode::Monitor,
            });
        }
        Ok(loaded)
    }
}

/// Parses the command line and runs the command; the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // `run` shares the terminal with the agent: only warnings unless asked for more.
    let level = if matches!(cli.command, Command::Run(_) | Command::IsolateHelper(_)) {
        "warn"
    } else {
        "info"
    };
    telemetry::init(cli.log_format, level);
    crate::tls::install_default_provider();
    match cli.command {
        Command::Ca(CaCommand::Init { out }) => crate::offline::ca_init(&out),
        Command::Ca(CaCommand::Show { cert, config }) => {
            let path = match cert {
                Some(p) => p,
                None => match load_or_exit(&config).map(|l| l.config.tls.ca_cert) {
                    Ok(Some(p)) => p,
                    Ok(None) => {
                        eprintln!("intentgate: no CA configured (tls.ca_cert); pass --cert FILE");
                        return ExitCode::from(2);
                    }
                    Err(code) => return code,
                },
            };
            crate::offline::ca_show(&path)
        }
        Command::Token(cmd) => token::run(cmd),
        Command::Run(a) => crate::run::run(crate::run::RunRequest {
            config: {
                let (c, token) = (a.config, a.intent_token);
                std::sync::Arc::new(move || {
                    let mut l = c.load().map_err(|e| e.to_string())?;
                    crate::run::present_token(&mut l, token.as_deref())?;
                    Ok(l)
                })
            },
            report: a.report,
            audit: a.audit,
            learn: a.learn,
            generalise: a.generalise,
            quiet: a.quiet,
            isolate: a.isolate,
            command: a.command,
        }),
        Command::IsolateHelper(a) => {
            crate::run::helper_main(a.control, a.proxy_port, a.admin_port, a.command)
        }
        Command::Learn(a) => crate::offline::learn(&a.from_audit, &a.out, a.generalise),
        Command::Report(a) => crate::report::main(&crate::report::Options {
            audit: a.audit,
            out: a.out,
            as_of: a.as_of,
            idle: a.idle,
        }),
        Command::Replay(a) => crate::replay::main(&crate::replay::Options {
            audit: a.audit,
            candidate: a.config,
            base: a.base,
            format: a.format,
        }),
        Command::Inventory(a) => crate::inventory::main(&a.pods, a.namespaces.as_deref(), a.json),
        Command::Inject(a) => crate::inject::main(
            a.tls_cert,
            a.tls_key,
            a.listen,
            a.config,
            a.ready_file,
            a.watch_interval,
        ),
        Command::Iptables(a) => crate::iptables::main(
            &crate::iptables::Plan {
                proxy_uid: a.proxy_uid,
                port: a.port,
                exclude_ports: a.exclude_ports,
                exclude_cidrs: a.exclude_cidrs,
                include_cidrs: a.include_cidrs,
                block_quic: a.block_quic,
            },
            a.backend,
            a.dry_run,
            a.cleanup,
        ),
        Command::Serve(args) => serve(args),
        Command::Check(args) => match load_or_exit(&args.config) {
            Ok(loaded) => crate::offline::check(&loaded),
            Err(code) => code,
        },
        Command::Explain(args) => match load_or_exit(&args.config) {
            Ok(loaded) => crate::offline::explain(
                &loaded,
                &crate::offline::ExplainRequest {
                    method: &args.method,
                    url: &args.url,
                    intent: args.config.intent.as_deref(),
                    task: args.task.as_deref(),
                    headers: &args.headers,
                },
                &args.resolve,
            ),
            Err(code) => code,
        },
    }
}

pub(crate) fn load_or_exit(args: &ConfigArgs) -> Result<Loaded, ExitCode> {
    args.load().map_err(|e| {
        eprintln!("intentgate: invalid configuration: {e}");
        ExitCode::from(2)
    })
}

fn serve(args: ServeArgs) -> ExitCode {
    let mut loaded = match load_or_exit(&args.config) {
        Ok(l) => l,
        Err(code) => return code,
    };
    serve_overrides(&mut loaded, args.listen, args.learn.as_deref());
    let runtime = match crate::app::runtime(&loaded.config.limits) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("intentgate: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let config_args = args.config.clone();
        let (listen, learn) = (args.listen, args.learn.clone());
        let reload: crate::reload::LoadFn = Box::new(move || {
            let mut l = config_args.load().map_err(|e| e.to_string())?;
            serve_overrides(&mut l, listen, learn.as_deref());
            Ok(l)
        });
        let audit_path = loaded.config.audit.path.clone();
        let max_connections = loaded.config.limits.max_connections;
        let running = match crate::app::start(loaded, reload).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("intentgate: {e:#}");
                return ExitCode::from(2);
            }
        };
        if let Some(path) = &args.ready_file {
            if let Err(e) = crate::app::write_ready_file(path, &running) {
                eprintln!("intentgate: {e:#}");
                return ExitCode::FAILURE;
            }
        }
        crate::app::presize_fd_table(max_connections);
        crate::app::shutdown_signal().await;
        running.shutdown().await;
        if let Some(out) = &args.learn {
            let audit = std::path::Path::new(&audit_path);
            let opts = crate::learn::Options {
                generalise: args.generalise,
            };
            match crate::learn::write_learned(audit, out, "intentgate serve --learn", opts) {
                Ok(c) => eprintln!("intentgate: {}", c.outcome(out)),
                Err(e) => {
                    eprintln!("intentgate: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        ExitCode::SUCCESS
    })
}
