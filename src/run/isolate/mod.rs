//! `run --isolate` (Linux): the command runs in a network namespace of its own whose only way out
//! is intentgate, so an agent that ignores the proxy variables (or is told to unset them) still
//! cannot get out. `helper` (a second `intentgate` process) makes the namespace and binds the
//! listeners inside it; they come back here over a Unix socket (`SCM_RIGHTS`) and are served by
//! this process's proxy, which dials upstream from the outer namespace. No bytes are relayed:
//! the kernel delivers the child's connections straight to the proxy.

pub mod helper;
mod netlink;
mod wire;

use std::ffi::OsString;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::process::Child;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use wire::{Done, Hello, Listener};

use crate::app::Running;
use crate::config::Limits;
use crate::listen::{self, Tracker};
use crate::run::summary::Isolation;

/// How long the helper may take to make the namespace and answer.
const HELLO_TIMEOUT: Duration = Duration::from_secs(30);

/// How the helper isolates the command: as root a network namespace, else a user namespace too.
pub(crate) fn privilege() -> Isolation {
    if rustix::process::geteuid().is_root() {
        Isolation::Root
    } else {
        Isolation::Rootless
    }
}

/// A running isolated command: the helper (whose exit code is the command's) and the listeners
/// inside its namespace, served until it exits.
pub(crate) struct Isolated {
    privilege: Isolation,
    helper: Child,
    ctl: UnixStream,
    shutdown: watch::Sender<bool>,
    tracker: Arc<Tracker>,
    tasks: Vec<JoinHandle<()>>,
    grace: Duration,
}

/// Starts the helper with `command` and `env`, and serves the listeners it binds. An error is a
/// sentence for the user: isolation was asked for, so the command is not run without it.
pub(crate) async fn start(
    work: &Path,
    command: &[String],
    env: &[(&'static str, OsString)],
    running: &Running,
    limits: &Limits,
) -> Result<Isolated, String> {
    let path = work.join("isolate.sock");
    let control = UnixListener::bind(&path)
        .map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find intentgate itself: {e}"))?;
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg("isolate-helper")
        .arg("--control")
        .arg(&path)
        .arg("--proxy-port")
        .arg(running.proxy_addr.port().to_string());
    if let Some(a) = running.admin_addr {
        cmd.arg("--admin-port").arg(a.port().to_string());
    }
    cmd.arg("--")
        .args(command)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env(helper::MALLOC_CONF.0, helper::MALLOC_CONF.1);
    // The credentials intentgate injects stay intentgate's: not the helper's, not the child's.
    for v in running.proxy.credential_env() {
        cmd.env_remove(v);
    }
    let mut helper = cmd
        .spawn()
        .map_err(|e| format!("cannot start the isolation helper: {e}"))?;
    let hello = tokio::time::timeout(HELLO_TIMEOUT, handshake(&control, &mut helper)).await;
    // One connection was expected; nobody else gets to make one.
    drop(control);
    let _ = std::fs::remove_file(&path);
    let failed = |msg: String, mut helper: Child| async move {
        let _ = helper.start_kill();
        let _ = helper.wait().await;
        Err(msg)
    };
    let (mut ctl, privilege, listeners) = match hello {
        Ok(Ok(ready)) => ready,
        Ok(Err(msg)) => return failed(msg, helper).await,
        Err(_) => {
            return failed("the isolation helper did not answer in time".into(), helper).await;
        }
    };
    let (shutdown, rx) = watch::channel(false);
    let tracker = Arc::new(Tracker::default());
    let mut tasks = Vec::new();
    for (kind, fd) in listeners {
        let listener = match adopt(fd) {
            Ok(l) => l,
            Err(e) => {
                return failed(
                    format!("cannot use a listener from the helper: {e}"),
                    helper,
                )
                .await;
            }
        };
        let (proxy, limits, tracker, rx) = (
            running.proxy.clone(),
            limits.clone(),
            tracker.clone(),
            rx.clone(),
        );
        tasks.push(match kind {
            Listener::Proxy => {
                tokio::spawn(listen::serve_proxy(listener, proxy, limits, tracker, rx))
            }
            Listener::Transparent => tokio::spawn(listen::redirect::serve_transparent(
                listener,
                listen::redirect::SoOriginalDst,
                proxy,
                limits,
                tracker,
                rx,
            )),
            Listener::Admin => match running.admin_addr {
                Some(admin) => tokio::spawn(bridge(listener, admin, limits, tracker, rx)),
                None => continue,
            },
        });
    }
    if let Err(e) = ctl.write_all(b"g").await {
        return failed(format!("the isolation helper went away: {e}"), helper).await;
    }
    tracing::debug!(?privilege, "isolated");
    Ok(Isolated {
        privilege,
        helper,
        ctl,
        shutdown,
        tracker,
        tasks,
        grace: Duration::from_millis(limits.shutdown_grace_ms),
    })
}

/// Accepts the helper's connection (checking it is the helper) and reads its hello.
async fn handshake(
    control: &UnixListener,
    helper: &mut Child,
) -> Result<(UnixStream, Isolation, Vec<(Listener, OwnedFd)>), String> {
    // Accept first: a helper that failed has connected, said why and exited, and its word
    // waits in the socket whichever the runtime notices first.
    let stream = tokio::select! {
        biased;
        r = control.accept() => r.map_err(|e| format!("control socket: {e}"))?.0,
        status = helper.wait() => {
            return Err(format!(
                "the isolation helper exited before it was ready ({})",
                status.map_or_else(|e| e.to_string(), |s| s.to_string())
            ));
        }
    };
    let peer = stream.peer_cred().ok().and_then(|c| c.pid());
    if peer.is_none() || peer.map(|p| p as u32) != helper.id() {
        return Err("the control socket was answered by another process".into());
    }
    let (hello, fds) = loop {
        stream
            .readable()
            .await
            .map_err(|e| format!("control socket: {e}"))?;
        match stream.try_io(Interest::READABLE, || wire::recv_hello(&stream)) {
            Ok(got) => break got,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(format!("the isolation helper failed: {e}")),
        }
    };
    match hello {
        Hello::Failed { error } => Err(error),
        Hello::Ready {
            privilege,
            listeners,
        } if listeners.len() == fds.len() => {
            Ok((stream, privilege, listeners.into_iter().zip(fds).collect()))
        }
        Hello::Ready { .. } => Err("the isolation helper sent the wrong number of sockets".into()),
    }
}

fn adopt(fd: OwnedFd) -> std::io::Result<TcpListener> {
    let l = std::net::TcpListener::from(fd);
    l.set_nonblocking(true)?;
    TcpListener::from_std(l)
}

/// The admin API inside the namespace: each connection is relayed to the real admin listener
/// (the agent sets its session intent there; admin calls are few).
async fn bridge(
    listener: TcpListener,
    admin: SocketAddr,
    limits: Limits,
    tracker: Arc<Tracker>,
    mut shutdown: watch::Receiver<bool>,
) {
    while let Some((mut inbound, _)) = listen::accept(&listener, &mut shutdown, "admin").await {
        let Ok(live) = tracker.admit(limits.max_connections) else {
            continue;
        };
        tokio::spawn(async move {
            let _live = live;
            if let Ok(mut out) = TcpStream::connect(admin).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
            }
        });
    }
}

impl Isolated {
    /// Waits for the command (signals passed on through the helper), then stops the listeners
    /// inside the namespace and drains their connections. The exit code, and what isolation saw.
    pub(crate) async fn wait(mut self) -> (i32, crate::run::summary::Context) {
        let code = super::child::wait(self.helper, std::future::pending()).await;
        let mut text = String::new();
        let _ =
            tokio::time::timeout(Duration::from_secs(5), self.ctl.read_to_string(&mut text)).await;
        let done: Done = text
            .lines()
            .find_map(|l| serde_json::from_str(l).ok())
            .unwrap_or_default();
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        self.tracker.drain(self.grace).await;
        let seen = crate::run::summary::Context {
            isolation: Some(self.privilege),
            refused: Some(done.refused),
            agent: None,
        };
        (code, seen)
    }
}
