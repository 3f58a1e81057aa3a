//! The namespace side of `run --isolate` (`intentgate isolate-helper`, started by `run`, never by
//! hand). Single-threaded when it starts, it moves into a new network namespace (as root), or a
//! new user + network namespace (as anyone else), brings `lo` up, binds the proxy (and admin, and
//! as root the transparent) listeners there, hands them to `run` over the control socket, gives up
//! the capabilities that could undo or leave the namespace, and runs the command. Inside, the
//! only way out is those listeners: as root, TCP to anywhere else is redirected to the transparent
//! listener and everything else has no route; without root, nothing else has a route.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;

use rustix::io::Errno;
use rustix::thread::{CapabilitySet, UnshareFlags};

use super::netlink::{LOOPBACK, Netlink};
use super::wire::{self, Done, Hello, Listener};
use crate::run::summary::Isolation;

/// What `run` asks the helper to do.
pub struct HelperArgs {
    /// The control socket `run` listens on.
    pub control: PathBuf,
    /// Ports to bind on 127.0.0.1 inside the namespace: the same as `run`'s own listeners, so the
    /// child's `HTTP_PROXY` and `INTENTGATE_ADMIN_URL` look as without `--isolate`.
    pub proxy_port: u16,
    pub admin_port: Option<u16>,
    pub command: Vec<String>,
}

/// The environment variable `run` sets so that jemalloc starts no background thread in the helper
/// (a user namespace can only be entered by a single-threaded process); removed for the command.
pub(crate) const MALLOC_CONF: (&str, &str) = ("_RJEM_MALLOC_CONF", "background_thread:false");

/// The routing table (and rule priority) that sends TCP to `lo` in root mode.
const TCP_TABLE: u8 = 157;

/// Capabilities the command must not have even as root: reconfiguring or leaving the namespace
/// (NET_ADMIN, SYS_ADMIN), raw packets (NET_RAW), taking over processes outside (SYS_PTRACE),
/// loading kernel code or touching devices (SYS_MODULE, BPF, SYS_RAWIO).
const DROPPED: [CapabilitySet; 7] = [
    CapabilitySet::NET_ADMIN,
    CapabilitySet::SYS_ADMIN,
    CapabilitySet::NET_RAW,
    CapabilitySet::SYS_PTRACE,
    CapabilitySet::SYS_MODULE,
    CapabilitySet::BPF,
    CapabilitySet::SYS_RAWIO,
];

/// Runs the helper; the exit code is the command's, or 2 when the namespace cannot be made.
pub fn main(args: HelperArgs) -> ExitCode {
    let mut ctl = match UnixStream::connect(&args.control) {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "intentgate: --isolate: cannot reach {}: {e}",
                args.control.display()
            );
            return ExitCode::from(2);
        }
    };
    let net = match enter(&args) {
        Ok(n) => n,
        Err(error) => {
            let _ = wire::send_hello(&ctl, &Hello::Failed { error }, &[]);
            return ExitCode::from(2);
        }
    };
    let fds: Vec<_> = net.listeners.iter().map(|(_, l)| l.as_fd()).collect();
    let hello = Hello::Ready {
        privilege: net.privilege,
        listeners: net.listeners.iter().map(|(k, _)| *k).collect(),
    };
    if wire::send_hello(&ctl, &hello, &fds).is_err() {
        return ExitCode::from(2);
    }
    // `run` serves them now; our copies go, so nothing queues on them if `run` dies.
    drop(net.listeners);
    let mut go = [0u8; 1];
    if ctl.read_exact(&mut go).is_err() || go != *b"g" {
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("intentgate: --isolate: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let code = runtime.block_on(async {
        let child = match crate::run::child::spawn(&args.command, |cmd| {
            cmd.env_remove(MALLOC_CONF.0);
        }) {
            Ok(c) => c,
            Err(code) => return code,
        };
        // `run` going away (its end of the control socket closing) stops the command.
        let watch = ctl
            .try_clone()
            .and_then(|s| s.set_nonblocking(true).map(|()| s))
            .and_then(tokio::net::UnixStream::from_std);
        let parent_gone = async move {
            match watch {
                Ok(s) => {
                    let _ = tokio::io::AsyncReadExt::read(&mut { s }, &mut [0u8; 1]).await;
                }
                Err(_) => std::future::pending().await,
            }
        };
        crate::run::child::wait(child, parent_gone).await
    });
    let done = Done {
        refused: no_routes(),
    };
    if let Ok(line) = serde_json::to_string(&done) {
        let _ = writeln!(ctl, "{line}");
    }
    ExitCode::from(code.clamp(0, 255) as u8)
}

/// The namespace, set up, with its listeners.
struct Net {
    privilege: Isolation,
    listeners: Vec<(Listener, TcpListener)>,
}

fn enter(args: &HelperArgs) -> Result<Net, String> {
    let privilege = super::privilege();
    let (uid, gid) = (rustix::process::getuid(), rustix::process::getgid());
    let flags = match privilege {
        Isolation::Root => UnshareFlags::NEWNET,
        Isolation::Rootless => UnshareFlags::NEWUSER | UnshareFlags::NEWNET,
    };
    // `unshare_unsafe` is unsafe only for `CLONE_FILES` (descriptors that other threads stop
    // seeing); the safe, deprecated `unshare` is the same call, and we pass no such flag.
    #[allow(deprecated)]
    rustix::thread::unshare(flags).map_err(|e| refused(privilege, e))?;
    if privilege == Isolation::Rootless {
        // Keep the user's own ids inside: the command runs as itself, without capabilities.
        let write = |file: &str, text: String| {
            std::fs::write(format!("/proc/self/{file}"), text).map_err(|e| {
                format!("cannot write /proc/self/{file} in the new user namespace: {e}")
            })
        };
        write("setgroups", "deny".into())?;
        write("uid_map", format!("{0} {0} 1\n", uid.as_raw()))?;
        write("gid_map", format!("{0} {0} 1\n", gid.as_raw()))?;
    }
    let mut nl = Netlink::open().map_err(|e| format!("cannot open a netlink socket: {e}"))?;
    nl.link_up(LOOPBACK)
        .map_err(|e| format!("cannot bring lo up in the new namespace: {e}"))?;
    let bind = |port: u16| {
        TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port)))
            .map_err(|e| format!("cannot listen on 127.0.0.1:{port} in the new namespace: {e}"))
    };
    let mut listeners = vec![(Listener::Proxy, bind(args.proxy_port)?)];
    if let Some(p) = args.admin_port {
        listeners.push((Listener::Admin, bind(p)?));
    }
    if privilege == Isolation::Root {
        let transparent = bind(0)?;
        let port = transparent.local_addr().map_err(|e| e.to_string())?.port();
        redirect_tcp(&mut nl, port)?;
        listeners.push((Listener::Transparent, transparent));
    }
    restrict_capabilities()?;
    Ok(Net {
        privilege,
        listeners,
    })
}

/// Why the kernel refused the namespace, in words a user can act on.
fn refused(privilege: Isolation, e: Errno) -> String {
    let why = match (privilege, e) {
        (Isolation::Rootless, Errno::PERM | Errno::ACCESS) => {
            "the kernel does not let unprivileged users create user namespaces here \
             (kernel.unprivileged_userns_clone=0, AppArmor's \
             kernel.apparmor_restrict_unprivileged_userns=1, or a container's seccomp profile)"
        }
        (_, Errno::NOSPC) => {
            "the limit on namespaces is reached or set to 0 (user.max_user_namespaces, \
             user.max_net_namespaces)"
        }
        (_, Errno::INVAL) => {
            "this kernel has no user or network namespaces (or the helper was not \
             single-threaded: jemalloc's background thread, see MALLOC_CONF)"
        }
        (Isolation::Root, Errno::PERM) => {
            "root without CAP_SYS_ADMIN (an unprivileged container?) cannot create a network \
             namespace"
        }
        _ => "the kernel refused",
    };
    let what = match privilege {
        Isolation::Root => "a network namespace",
        Isolation::Rootless => "a user and network namespace",
    };
    format!("cannot create {what}: {why} ({e})")
}

/// Root mode: TCP (and only TCP) gets a route, to `lo`, where every connection not meant for
/// loopback is redirected to the transparent listener and decided like any call.
fn redirect_tcp(nl: &mut Netlink, port: u16) -> Result<(), String> {
    nl.default_route_to_lo(TCP_TABLE)
        .and_then(|()| nl.tcp_rule(TCP_TABLE, u32::from(TCP_TABLE)))
        .map_err(|e| format!("cannot route TCP to lo in the new namespace (Linux 4.17+): {e}"))?;
    let rules = format!(
        "*nat\n:OUTPUT ACCEPT [0:0]\n-A OUTPUT -p tcp ! -d 127.0.0.0/8 -j REDIRECT --to-ports {port}\nCOMMIT\n"
    );
    let mut child = std::process::Command::new("iptables-restore")
        .args(["-w", "5"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run iptables-restore (install iptables): {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(rules.as_bytes())
            .map_err(|e| format!("iptables-restore: {e}"))?;
    }
    match child.wait() {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!(
            "iptables-restore failed ({s}) in the new namespace"
        )),
        Err(e) => Err(format!("iptables-restore: {e}")),
    }
}

/// What the command starts with: none of `DROPPED` (even as root, even after exec), and no
/// inheritable or ambient capabilities to carry anything across exec.
fn restrict_capabilities() -> Result<(), String> {
    let err = |e: Errno| format!("cannot drop capabilities for the command: {e}");
    for cap in DROPPED {
        match rustix::thread::remove_capability_from_bounding_set(cap) {
            // A capability this kernel does not know is not one the command can have.
            Ok(()) | Err(Errno::INVAL) => {}
            Err(e) => return Err(err(e)),
        }
    }
    rustix::thread::clear_ambient_capability_set().map_err(err)?;
    let mut sets = rustix::thread::capabilities(None).map_err(err)?;
    sets.inheritable = CapabilitySet::empty();
    rustix::thread::set_capabilities(None, sets).map_err(err)
}

/// `OutNoRoutes` of this namespace (IPv4 and IPv6): packets the kernel had no route for.
fn no_routes() -> u64 {
    let snmp = std::fs::read_to_string("/proc/self/net/snmp").unwrap_or_default();
    let lines: Vec<&str> = snmp.lines().filter(|l| l.starts_with("Ip: ")).collect();
    let v4 = match lines.as_slice() {
        [names, values] => names
            .split_whitespace()
            .zip(values.split_whitespace())
            .find(|(n, _)| *n == "OutNoRoutes")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0),
        _ => 0,
    };
    let snmp6 = std::fs::read_to_string("/proc/self/net/snmp6").unwrap_or_default();
    let v6: u64 = snmp6
        .lines()
        .find_map(|l| l.strip_prefix("Ip6OutNoRoutes"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    v4 + v6
}
