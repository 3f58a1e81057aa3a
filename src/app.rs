//! Wiring: builds the components from a loaded config, binds the listeners, and runs until a
//! shutdown signal, then drains in-flight requests up to the grace deadline.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::admin::{self, AdminState};
use crate::audit::Audit;
use crate::config::{self, Loaded};
use crate::egress::EgressPolicy;
use crate::intent::SessionStore;
use crate::listen::{self, Tracker};
use crate::metrics::Metrics;
use crate::proxy::{Proxy, ProxyParts};
use crate::reload::{LoadFn, Reloader, build_live};

/// The runtime the proxy serves on: one thread when `limits.workers` is 1 (no cross-thread
/// wake-ups or work stealing on the request path), else a multi-threaded one of that size.
pub fn runtime(limits: &config::Limits) -> std::io::Result<tokio::runtime::Runtime> {
    match limits.worker_threads() {
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
    }
}

/// A client listener whose accept queue holds `backlog` connections (`limits.max_connections`;
/// the kernel caps it at `net.core.somaxconn`). tokio's `bind` asks for 128: a burst of new
/// tunnels while the runtime thread was busy with handshakes overflowed it, and every connection
/// the kernel dropped cost its client a 1 s SYN retransmit (bench/tunnels.py).
fn bind(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// Grows the file-descriptor table, once, to a descriptor per allowed connection and one for
/// its upstream (at most RLIMIT_NOFILE). The kernel doubles the table as descriptors are opened
/// (256, 512, 1,024, …), and in a process with several threads each doubling waits for an RCU
/// grace period: the runtime thread, accepting, stalled ~10 ms at the 512th and the 1,024th open
/// descriptor (bench/tunnels.py). `serve` calls this on the main thread once the proxy is ready
/// (the main thread then only waits for a signal), so the one grace period (~10–15 ms) is waited
/// for there, and no thread is started for it (a new thread costs an allocator arena, ~0.4 MiB
/// of idle memory). The table is kernel memory (8 bytes a descriptor), not the process's RSS.
/// Best effort: a failure leaves the kernel's growth.
pub(crate) fn presize_fd_table(max_connections: usize) {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
    let want = max_connections.saturating_mul(2).saturating_add(64) as u64;
    let top = want.min(limit.unwrap_or(u64::MAX).saturating_sub(1));
    let (Ok(null), Ok(top)) = (std::fs::File::open("/dev/null"), i32::try_from(top)) else {
        return;
    };
    drop(rustix::io::fcntl_dupfd_cloexec(&null, top));
}

/// A started proxy: its bound addresses and the handle to stop it.
pub struct Running {
    pub proxy_addr: SocketAddr,
    pub admin_addr: Option<SocketAddr>,
    pub transparent_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    tracker: Arc<Tracker>,
    pub proxy: Arc<Proxy>,
    grace: Duration,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Binds the listeners and starts serving.
pub async fn start(loaded: Loaded, reload: LoadFn) -> anyhow::Result<Running> {
    start_with(loaded, reload, false).await
}

/// As `start`; `trust_ca` says the clients were given intentgate's CA (`run`, an injected pod),
/// so `tls.intercept: auto` intercepts even with an ephemeral CA.
pub async fn start_with(loaded: Loaded, reload: LoadFn, trust_ca: bool) -> anyhow::Result<Running> {
    // With `policy.bundle_url`, the first bundle before anything listens (fail closed).
    let wait = Duration::from_millis(loaded.config.policy.bundle_wait_ms);
    let first = crate::bundle::fetch::first(&loaded.config, wait)
        .await
        .map_err(anyhow::Error::msg)?;
    let bundle = first.as_ref().map(|f| f.bundle.clone());
    // The policy (and its compiled catalog) first; what stays is the config without its catalog.
    let live = build_live(&loaded.config, bundle.as_deref())?;
    let source = loaded.source;
    let cfg = Arc::new(loaded.config.drop_catalog());
    let parent = match &cfg.upstream.proxy {
        Some(p) => Some(config::parent_proxy(p).map_err(anyhow::Error::msg)?),
        None => None,
    };
    let backlog = u32::try_from(cfg.limits.max_connections).unwrap_or(u32::MAX);
    let proxy_listener = bind(cfg.listen.proxy, backlog)
        .with_context(|| format!("cannot listen on {} (listen.proxy)", cfg.listen.proxy))?;
    let proxy_addr = proxy_listener.local_addr()?;
    let admin_listener = match cfg.listen.admin {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (listen.admin)"))?,
        ),
        None => None,
    };
    let admin_addr = admin_listener
        .as_ref()
        .map(TcpListener::local_addr)
        .transpose()?;
    let transparent_listener = match cfg.listen.transparent {
        Some(addr) => Some(
            bind(addr, backlog)
                .with_context(|| format!("cannot listen on {addr} (listen.transparent)"))?,
        ),
        None => None,
    };
    let transparent_addr = transparent_listener
        .as_ref()
        .map(TcpListener::local_addr)
        .transpose()?;

    let (shutdown, rx) = watch::channel(false);
    let tracker = Arc::new(Tracker::default());
    let metrics = Arc::new(Metrics::new()?);
    let mut egress = EgressPolicy::new(&cfg.egress.allow_cidrs, &cfg.egress.deny_cidrs)
        .map_err(anyhow::Error::msg)?;
    egress.own = std::iter::once(proxy_addr)
        .chain(admin_addr)
        .chain(transparent_addr)
        .collect();
    metrics.set_policy_revision(live.policy.revision());
    let audit = Audit::start(&cfg.audit, cfg.telemetry.otlp.as_ref(), metrics.clone())
        .with_context(|| format!("cannot open the audit log {} (audit.path)", cfg.audit.path))?;
    let tls = Arc::new(
        crate::tls::Tls::from_config(&cfg.tls)
            .map_err(|e| anyhow::anyhow!("invalid TLS settings: {e}"))?,
    );
    let clients_trust_ca = trust_ca || tls.ca_configured;
    let proxy = Arc::new(
        Proxy::new(ProxyParts {
            cfg: cfg.clone(),
            parent,
            egress,
            live,
            session: Arc::new(SessionStore::default()),
            metrics: metrics.clone(),
            audit,
            tls,
            clients_trust_ca,
        })
        .map_err(|e| anyhow::anyhow!("{source}: {e}"))?,
    );
    let mut tasks = vec![tokio::spawn(listen::serve_proxy(
        proxy_listener,
        proxy.clone(),
        cfg.limits.clone(),
        tracker.clone(),
        rx.clone(),
    ))];
    if let Some(l) = transparent_listener {
        tasks.push(tokio::spawn(listen::redirect::serve_transparent(
            l,
            listen::redirect::SoOriginalDst,
            proxy.clone(),
            cfg.limits.clone(),
            tracker.clone(),
            rx.clone(),
        )));
    }
    let reloader = Arc::new(Reloader::new(
        reload,
        proxy.clone(),
        cfg.clone(),
        bundle,
        source.clone(),
    ));
    if cfg.policy.watch_interval_ms > 0 {
        let interval = Duration::from_millis(cfg.policy.watch_interval_ms);
        tasks.push(tokio::spawn(
            reloader.clone().watch_loop(interval, rx.clone()),
        ));
    }
    if let Some(crate::bundle::fetch::First { source, etag, .. }) = first {
        let interval = Duration::from_millis(cfg.policy.bundle_poll_ms);
        tasks.push(tokio::spawn(reloader.clone().poll_bundles(
            source,
            etag,
            interval,
            rx.clone(),
        )));
    }
    tasks.push(tokio::spawn(on_sighup(
        proxy.clone(),
        reloader.clone(),
        rx.clone(),
    )));
    let token = match &cfg.admin.token_file {
        Some(f) => {
            let t = std::fs::read_to_string(f)
                .with_context(|| format!("cannot read admin.token_file {}", f.display()))?;
            // An empty token would be matched by `Authorization: Bearer ` (fail closed).
            anyhow::ensure!(
                !t.trim().is_empty(),
                "admin.token_file {} is empty",
                f.display()
            );
            Some(t.trim().to_string())
        }
        None => None,
    };
    let admin_state = Arc::new(AdminState {
        ready: Default::default(),
        metrics,
        tracker: tracker.clone(),
        proxy: proxy.clone(),
        reloader,
        token,
        body_timeout: Duration::from_millis(cfg.limits.header_read_timeout_ms),
    });
    // The agent-facing admin endpoints also answer at the admin address through the proxy (an
    // HTTP client that ignores NO_PROXY for IP hosts sends INTENTGATE_ADMIN_URL calls there).
    if let Some(addr) = admin_addr {
        proxy.open_admin_door(addr, admin::AgentEndpoints::of(&admin_state));
    }
    if let Some(l) = admin_listener {
        tasks.push(tokio::spawn(admin::serve(
            l,
            admin_state.clone(),
            listen::http1_builder(&cfg.limits),
            cfg.admin.max_connections,
            rx,
        )));
    }
    admin_state.ready.store(true, Ordering::Release);
    info!(proxy = %proxy_addr, admin = admin_addr.map(tracing::field::display), transparent = transparent_addr.map(tracing::field::display), config = %source, "intentgate listening");
    Ok(Running {
        proxy_addr,
        admin_addr,
        transparent_addr,
        shutdown,
        tracker,
        proxy,
        grace: Duration::from_millis(cfg.limits.shutdown_grace_ms),
        tasks,
    })
}

impl Running {
    /// Stops accepting, asks every connection to finish its current request, and waits for them
    /// up to the grace deadline; then closes whatever is still open (streamed responses,
    /// tunnels, WebSockets), each writing its record with `ended: "shutdown"`, and waits until
    /// every record is written: the process leaves a record for every decision id it issued.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        let left = self.tracker.drain(self.grace).await;
        if left > 0 {
            warn!(
                connections = left,
                "grace period over; closing remaining connections"
            );
        }
        let audit = &self.proxy.audit;
        audit.close_streams();
        // Every record is on disk before the process exits (and before `serve --learn` reads
        // them); only a log that cannot be written (disk full) stops that, and is said so.
        let unwritten = audit.settle(FINAL_WRITE).await;
        if unwritten > 0 {
            error!(
                records = unwritten,
                "exiting with audit records that could not be written (the audit log cannot be written)"
            );
        }
        if left == 0 {
            info!("drained; bye");
        }
    }
}

/// How long the exit waits for the audit records of what shutdown closed, and for a log that
/// cannot be written to take them.
const FINAL_WRITE: Duration = Duration::from_secs(5);

/// Writes the bound addresses as JSON, atomically (write then rename), for tests and wrappers.
pub fn write_ready_file(path: &Path, running: &Running) -> anyhow::Result<()> {
    let body = serde_json::json!({
        "proxy": running.proxy_addr.to_string(),
        "admin": running.admin_addr.map(|a| a.to_string()),
        "transparent": running.transparent_addr.map(|a| a.to_string()),
        "pid": std::process::id(),
    });
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, body.to_string())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// SIGHUP: reopen the audit file (logrotate) and reload the policy.
async fn on_sighup(
    proxy: Arc<Proxy>,
    reloader: Arc<Reloader>,
    mut shutdown: watch::Receiver<bool>,
) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            return;
        };
        loop {
            tokio::select! {
                _ = hup.recv() => {
                    info!("SIGHUP: reopening the audit log and reloading");
                    proxy.audit.reopen();
                    reloader.reload("SIGHUP").await;
                }
                _ = shutdown.changed() => return,
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (proxy, reloader);
        let _ = shutdown.changed().await;
    }
}

/// Resolves when SIGTERM or SIGINT arrives.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => info!("SIGTERM: shutting down"),
                    _ = tokio::signal::ctrl_c() => info!("SIGINT: shutting down"),
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
