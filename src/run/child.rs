//! The wrapped process: spawned with its environment, SIGINT/SIGTERM passed on while it runs, and
//! its exit status turned into the code `run` exits with (128+N when signal N killed it).

use std::future::Future;

use tokio::process::{Child, Command};
use tracing::warn;

/// Starts `command`; on failure says why and returns the exit code to use (127, as shells do).
pub(crate) fn spawn(command: &[String], prepare: impl FnOnce(&mut Command)) -> Result<Child, i32> {
    let Some((program, args)) = command.split_first() else {
        return Err(2);
    };
    let mut cmd = Command::new(program);
    cmd.args(args);
    prepare(&mut cmd);
    cmd.spawn().map_err(|e| {
        eprintln!("intentgate: cannot start `{program}`: {e}");
        127
    })
}

/// Waits for `child`, passing SIGINT and SIGTERM on; when `stop` resolves the child gets one
/// SIGTERM (and is still waited for). Returns its exit code.
pub(crate) async fn wait(mut child: Child, stop: impl Future<Output = ()>) -> i32 {
    let pid = child
        .id()
        .and_then(|p| rustix::process::Pid::from_raw(p as i32));
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return exit_code(child.wait().await);
    };
    tokio::pin!(stop);
    let mut stopped = false;
    loop {
        tokio::select! {
            status = child.wait() => return exit_code(status),
            _ = int.recv() => forward(pid, rustix::process::Signal::INT),
            _ = term.recv() => forward(pid, rustix::process::Signal::TERM),
            _ = &mut stop, if !stopped => {
                stopped = true;
                forward(pid, rustix::process::Signal::TERM);
            }
        }
    }
}

fn forward(pid: Option<rustix::process::Pid>, sig: rustix::process::Signal) {
    if let Some(pid) = pid {
        if let Err(e) = rustix::process::kill_process(pid, sig) {
            warn!(error = %e, "could not pass the signal on to the child");
        }
    }
}

fn exit_code(status: std::io::Result<std::process::ExitStatus>) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(s) => s
            .signal()
            .map_or_else(|| s.code().unwrap_or(1), |sig| 128 + sig),
        Err(_) => 1,
    }
}
