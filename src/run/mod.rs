//! `intentgate run -- CMD`: wrap one agent process. The proxy starts in-process on ephemeral
//! loopback ports; the child gets proxy and CA-trust variables; signals are passed on; at exit a
//! summary says what was allowed and blocked, and the child's exit code is passed through.

pub mod summary;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use tokio::process::Command;
use tracing::warn;

use crate::cli::ConfigArgs;
use crate::config::{Loaded, Mode};

/// What `run` was asked to do.
pub struct RunRequest {
    pub config: ConfigArgs,
    pub report: Option<PathBuf>,
    pub audit: Option<PathBuf>,
    pub learn: Option<PathBuf>,
    pub quiet: bool,
    pub command: Vec<String>,
}

/// Where the system's trusted roots usually are (the bundle given to the child adds our CA).
const SYSTEM_BUNDLES: [&str; 4] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
    "/usr/local/etc/openssl/cert.pem",
];

fn overrides(loaded: &mut Loaded, audit: &Path, learn: bool) {
    let c = &mut loaded.config;
    c.listen.proxy = SocketAddr::from(([127, 0, 0, 1], 0));
    c.listen.admin = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    c.listen.transparent = None;
    c.audit.path = audit.display().to_string();
    if learn {
        c.mode_override = Some(Mode::Monitor);
    }
}

/// Where this run's audit records go: `--audit`, else the config's `audit.path` when it names a
/// file, else a file in the run's folder (stdout belongs to the agent, and the summary is read
/// back from the file).
fn audit_path(flag: Option<&Path>, configured: &str, work: &Path) -> PathBuf {
    match (flag, configured) {
        (Some(f), _) => f.to_path_buf(),
        (None, "stdout" | "stderr" | "off") => work.join("audit.log"),
        (None, file) => PathBuf::from(file),
    }
}

fn fail(msg: impl std::fmt::Display, code: u8) -> ExitCode {
    eprintln!("intentgate: {msg}");
    ExitCode::from(code)
}

/// Runs the wrapper to completion; the exit code is the child's (128+N when killed by signal N).
pub fn run(req: RunRequest) -> ExitCode {
    let work = std::env::temp_dir().join(format!(
        "intentgate-run-{}-{:08x}",
        std::process::id(),
        crate::ids::boot_id() as u32
    ));
    if let Err(e) = std::fs::create_dir_all(&work) {
        return fail(format!("cannot create {}: {e}", work.display()), 1);
    }
    let learn = req.learn.is_some();
    let mut loaded = match req.config.load() {
        Ok(l) => l,
        Err(e) => return fail(format!("invalid configuration: {e}"), 2),
    };
    let audit = audit_path(req.audit.as_deref(), &loaded.config.audit.path, &work);
    overrides(&mut loaded, &audit, learn);
    let runtime = match crate::app::runtime(&loaded.config.limits) {
        Ok(r) => r,
        Err(e) => return fail(format!("cannot start the runtime: {e}"), 1),
    };
    runtime.block_on(async move {
        let (cfg_args, audit2) = (req.config.clone(), audit.clone());
        let reload: crate::reload::LoadFn = Box::new(move || {
            let mut l = cfg_args.load().map_err(|e| e.to_string())?;
            overrides(&mut l, &audit2, learn);
            Ok(l)
        });
        // The child is given our CA, so interception is on (`tls.intercept: auto`).
        let running = match crate::app::start_with(loaded, reload, true).await {
            Ok(r) => r,
            Err(e) => return fail(format!("{e:#}"), 2),
        };
        let ca_file = work.join("intentgate-ca.pem");
        let bundle = work.join("ca-bundle.pem");
        if let Err(e) = write_trust(running.proxy.ca(), &ca_file, &bundle) {
            running.shutdown().await;
            return fail(e, 1);
        }
        let code = run_child(
            &req.command,
            running.proxy_addr,
            running.admin_addr,
            &ca_file,
            &bundle,
        )
        .await;
        running.shutdown().await;
        finish(&req, &audit, code)
    })
}

fn write_trust(
    ca: &crate::tls::ca::CertificateAuthority,
    ca_file: &Path,
    bundle: &Path,
) -> Result<(), String> {
    ca.write_cert(ca_file).map_err(|e| e.to_string())?;
    let system = std::env::var_os("SSL_CERT_FILE")
        .map(PathBuf::from)
        .into_iter()
        .chain(SYSTEM_BUNDLES.iter().map(PathBuf::from))
        .find_map(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default();
    let mut text = system;
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(ca.cert_pem());
    std::fs::write(bundle, text).map_err(|e| format!("cannot write {}: {e}", bundle.display()))
}

/// Spawns the child with the proxy environment, passes SIGINT/SIGTERM on, returns its exit code.
async fn run_child(
    command: &[String],
    proxy: SocketAddr,
    admin: Option<SocketAddr>,
    ca: &Path,
    bundle: &Path,
) -> i32 {
    let Some((program, args)) = command.split_first() else {
        return 2;
    };
    let proxy_url = format!("http://{proxy}");
    let mut no_proxy: Vec<String> = std::env::var("NO_PROXY")
        .or_else(|_| std::env::var("no_proxy"))
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let mut cmd = Command::new(program);
    cmd.args(args);
    for k in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "http_proxy",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        cmd.env(k, &proxy_url);
    }
    if let Some(a) = admin {
        no_proxy.push(a.to_string());
        cmd.env("INTENTGATE_ADMIN_URL", format!("http://{a}"));
    }
    let no_proxy = no_proxy.join(",");
    cmd.env("NO_PROXY", &no_proxy).env("no_proxy", &no_proxy);
    for k in [
        "SSL_CERT_FILE",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "GIT_SSL_CAINFO",
    ] {
        cmd.env(k, bundle);
    }
    cmd.env("NODE_EXTRA_CA_CERTS", ca);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("intentgate: cannot start `{program}`: {e}");
            return 127;
        }
    };
    let pid = child
        .id()
        .and_then(|p| rustix::process::Pid::from_raw(p as i32));
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return exit_code(child.wait().await);
        };
        loop {
            tokio::select! {
                status = child.wait() => return exit_code(status),
                _ = int.recv() => forward(pid, rustix::process::Signal::INT),
                _ = term.recv() => forward(pid, rustix::process::Signal::TERM),
            }
        }
    }
    #[cfg(not(unix))]
    exit_code(child.wait().await)
}

fn forward(pid: Option<rustix::process::Pid>, sig: rustix::process::Signal) {
    if let Some(pid) = pid {
        if let Err(e) = rustix::process::kill_process(pid, sig) {
            warn!(error = %e, "could not pass the signal on to the child");
        }
    }
}

fn exit_code(status: std::io::Result<std::process::ExitStatus>) -> i32 {
    match status {
        Ok(s) => {
            #[cfg(unix)]
            {
                use std::os::unix::process::ExitStatusExt;
                if let Some(sig) = s.signal() {
                    return 128 + sig;
                }
            }
            s.code().unwrap_or(1)
        }
        Err(_) => 1,
    }
}

/// Summary, report and learned catalog from this run's audit records; the exit code to return.
fn finish(req: &RunRequest, audit: &Path, code: i32) -> ExitCode {
    let boot = format!("{:016x}", crate::ids::boot_id());
    let records: Vec<serde_json::Value> = match crate::learn::read_audit(&[audit]) {
        Ok(r) => r
            .into_iter()
            .filter(|r| r["boot_id"] == boot.as_str())
            .collect(),
        Err(e) => {
            eprintln!("intentgate: cannot read the audit log: {e}");
            Vec::new()
        }
    };
    let mut s = summary::Summary::from_records(&records);
    s.command.clone_from(&req.command);
    s.exit_code = code;
    s.audit_log = audit.display().to_string();
    if !req.quiet {
        eprint!("{}", s.render());
    }
    if let Some(report) = &req.report {
        let json = serde_json::to_string_pretty(&s).unwrap_or_default();
        if let Err(e) = std::fs::write(report, json) {
            eprintln!("intentgate: cannot write {}: {e}", report.display());
        }
    }
    if let Some(out) = &req.learn {
        let catalog = crate::learn::catalog(&records);
        let text = crate::learn::to_yaml(&catalog, &format!("`{}`", req.command.join(" ")));
        match std::fs::write(out, text) {
            Ok(()) if !req.quiet => eprintln!(
                "intentgate: learned {} intents into {}",
                catalog.len(),
                out.display()
            ),
            Ok(()) => {}
            Err(e) => eprintln!("intentgate: cannot write {}: {e}", out.display()),
        }
    }
    ExitCode::from(code.clamp(0, 255) as u8)
}
