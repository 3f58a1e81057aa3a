//! `intentgate run -- CMD`: wrap one agent process. The proxy starts in-process on ephemeral
//! loopback ports; the child gets what its runtime needs to use the proxy and trust our CA
//! (`env`), optionally inside a network namespace whose only way out is the proxy (`isolate`);
//! signals are passed on; at exit a summary says what was allowed and blocked (and what went
//! around the proxy, where that can be seen), and the child's exit code is passed through.

mod child;
mod env;
#[cfg(target_os = "linux")]
pub mod isolate;
mod node;
mod pkcs12;
pub mod summary;

use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::config::{Loaded, Mode};

/// What `run` was asked to do.
pub struct RunRequest {
    /// Loads the configuration (the CLI's flags applied), at start and on each reload.
    pub config: ConfigLoader,
    pub report: Option<PathBuf>,
    pub audit: Option<PathBuf>,
    pub learn: Option<PathBuf>,
    /// With `learn`: `--generalise MIN` (see `crate::learn::Options`).
    pub generalise: Option<u32>,
    pub quiet: bool,
    pub isolate: bool,
    pub command: Vec<String>,
}

/// How `run` loads its configuration.
pub type ConfigLoader = std::sync::Arc<dyn Fn() -> Result<Loaded, String> + Send + Sync>;

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

/// `--intent-token FILE`: the token presented for the command's calls that bring none.
pub fn present_token(loaded: &mut Loaded, file: Option<&Path>) -> Result<(), String> {
    let Some(file) = file else { return Ok(()) };
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("--intent-token {}: {e}", file.display()))?;
    if text.trim().is_empty() {
        return Err(format!(
            "--intent-token {}: the file is empty",
            file.display()
        ));
    }
    loaded.config.intent_tokens.presented =
        Some(crate::config::PresentedToken(text.trim().to_string()));
    Ok(())
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

/// The run's private folder (mode 0700: it holds the control socket of `--isolate`).
fn work_dir() -> Result<PathBuf, String> {
    let work = std::env::temp_dir().join(format!(
        "intentgate-run-{}-{:08x}",
        std::process::id(),
        crate::ids::boot_id() as u32
    ));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&work)
        .map_err(|e| format!("cannot create {}: {e}", work.display()))?;
    Ok(work)
}

/// Runs the wrapper to completion; the exit code is the child's (128+N when killed by signal N).
pub fn run(req: RunRequest) -> ExitCode {
    if req.isolate && !cfg!(target_os = "linux") {
        return fail("--isolate needs Linux (network namespaces)", 2);
    }
    let work = match work_dir() {
        Ok(w) => w,
        Err(e) => return fail(e, 1),
    };
    let learn = req.learn.is_some();
    let mut loaded = match (req.config)() {
        Ok(l) => l,
        Err(e) => return fail(format!("invalid configuration: {e}"), 2),
    };
    let audit = audit_path(req.audit.as_deref(), &loaded.config.audit.path, &work);
    overrides(&mut loaded, &audit, learn);
    let limits = loaded.config.limits.clone();
    let runtime = match crate::app::runtime(&limits) {
        Ok(r) => r,
        Err(e) => return fail(format!("cannot start the runtime: {e}"), 1),
    };
    runtime.block_on(async move {
        let (load, audit2) = (req.config.clone(), audit.clone());
        let reload: crate::reload::LoadFn = Box::new(move || {
            let mut l = load()?;
            overrides(&mut l, &audit2, learn);
            Ok(l)
        });
        // The child is given our CA, so interception is on (`tls.intercept: auto`). Asking a
        // Node.js command its version overlaps with start-up.
        let (started, old_node) = tokio::join!(
            crate::app::start_with(loaded, reload, true),
            node::old_node(&req.command)
        );
        let running = match started {
            Ok(r) => r,
            Err(e) => return fail(format!("{e:#}"), 2),
        };
        let trust = match running
            .proxy
            .ca()
            .and_then(|ca| env::write_trust(ca, &work))
        {
            Ok(t) => t,
            Err(e) => {
                running.shutdown().await;
                return fail(e, 1);
            }
        };
        let vars = env::child_env(running.proxy_addr, running.admin_addr, &trust);
        if let Some(old) = &old_node {
            warn_old_node(old, req.isolate);
        }
        let (code, mut ctx) = if req.isolate {
            match isolated(&req.command, &vars, &work, &running, &limits).await {
                Ok(done) => done,
                Err(e) => {
                    running.shutdown().await;
                    return fail(format!("--isolate: {e}; the command was not run"), 2);
                }
            }
        } else {
            let scrub = running.proxy.credential_env();
            let code = match child::spawn(&req.command, |cmd| {
                cmd.envs(vars.iter().map(|(k, v)| (k, v)));
                // The credentials intentgate injects stay intentgate's (docs/credentials.md).
                scrub.iter().for_each(|v| {
                    cmd.env_remove(v);
                });
            }) {
                Ok(c) => child::wait(c, std::future::pending()).await,
                Err(code) => code,
            };
            (code, summary::Context::default())
        };
        ctx.agent = Some(running.proxy.live.load().agent.clone());
        running.shutdown().await;
        finish(&req, &audit, code, ctx)
    })
}

#[cfg(target_os = "linux")]
async fn isolated(
    command: &[String],
    vars: &[(&'static str, std::ffi::OsString)],
    work: &Path,
    running: &crate::app::Running,
    limits: &crate::config::Limits,
) -> Result<(i32, summary::Context), String> {
    Ok(isolate::start(work, command, vars, running, limits)
        .await?
        .wait()
        .await)
}

#[cfg(not(target_os = "linux"))]
async fn isolated(
    _: &[String],
    _: &[(&'static str, std::ffi::OsString)],
    _: &Path,
    _: &crate::app::Running,
    _: &crate::config::Limits,
) -> Result<(i32, summary::Context), String> {
    Err("needs Linux".into())
}

/// Says, before the agent starts, that its Node.js sends calls around the proxy.
fn warn_old_node(old: &node::OldNode, isolate: bool) {
    #[cfg(target_os = "linux")]
    let root = isolate && isolate::privilege() == summary::Isolation::Root;
    #[cfg(not(target_os = "linux"))]
    let root = false;
    let consequence = match (isolate, root) {
        // Its direct connections are redirected to the proxy and decided: nothing to warn about.
        (true, true) => return,
        (true, false) => {
            "under --isolate without root they fail (as root they are redirected to intentgate)"
        }
        (false, _) => {
            "its calls go around intentgate, unseen: run it with --isolate so they cannot"
        }
    };
    eprintln!(
        "intentgate: warning: {} is Node.js {}, which ignores HTTP_PROXY/HTTPS_PROXY \
         (Node 24+, or 22.21+, honours them with NODE_USE_ENV_PROXY=1, which run sets); {consequence}",
        old.path.display(),
        old.version
    );
}

/// Summary, report and learned catalog from this run's audit records; the exit code to return.
fn finish(req: &RunRequest, audit: &Path, code: i32, ctx: summary::Context) -> ExitCode {
    let log = match crate::audit::AuditLog::read(&[audit]) {
        Ok(log) => log.of_this_process(),
        Err(e) => {
            eprintln!("intentgate: cannot read the audit log: {e}");
            crate::audit::AuditLog::default()
        }
    };
    let mut s = summary::Summary::from_records(&log.records);
    s.command.clone_from(&req.command);
    s.exit_code = code;
    s.audit_log = audit.display().to_string();
    s.add_context(ctx);
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
        let opts = crate::learn::Options {
            generalise: req.generalise,
        };
        let catalog = crate::learn::Catalog::learn(&log, opts);
        match catalog.write(out, &format!("`{}`", req.command.join(" "))) {
            Ok(()) if !req.quiet => eprintln!("intentgate: {}", catalog.outcome(out)),
            Ok(()) => {}
            Err(e) => eprintln!("intentgate: {e}"),
        }
    }
    ExitCode::from(code.clamp(0, 255) as u8)
}

/// `intentgate isolate-helper` (started by `run --isolate`).
pub fn helper_main(
    control: PathBuf,
    proxy_port: u16,
    admin_port: Option<u16>,
    command: Vec<String>,
) -> ExitCode {
    #[cfg(target_os = "linux")]
    {
        isolate::helper::main(isolate::helper::HelperArgs {
            control,
            proxy_port,
            admin_port,
            command,
        })
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (control, proxy_port, admin_port, command);
        fail("--isolate needs Linux (network namespaces)", 2)
    }
}
