//! `intentgate iptables`: the nat rules that redirect a pod's outbound TCP to the transparent
//! listener, built as plain command lists (unit-tested) and then printed (`--dry-run`) or run.
//!
//! Layout, per address family (iptables for IPv4, ip6tables for IPv6):
//! - nat chain `INTENTGATE_OUTPUT`, jumped to once from `OUTPUT` for TCP. In order: RETURN for the
//!   proxy's own UID (loop prevention: intentgate's upstream connections are never redirected),
//!   RETURN for loopback destinations, RETURN for each excluded port and CIDR, then REDIRECT to the
//!   transparent port (of everything, or only of `--include-cidrs` when given).
//! - with `--block-quic`, filter chain `INTENTGATE_QUIC`, jumped to once from `OUTPUT` for UDP:
//!   outbound UDP 443 is rejected so clients fall back from QUIC (HTTP/3) to TCP, which is redirected.
//!
//! Idempotent: each chain is created if missing and flushed, each jump is added only if absent, so
//! running it twice (an init container restarted) leaves the same rules. `--cleanup` removes both.
//! The default proxy UID is [`DEFAULT_PROXY_UID`] (15700), deliberately not Istio's 1337.
//!
//! Each command names its backend's program (`iptables-nft`, `iptables-legacy`, or the system's
//! `iptables`; the same for ip6tables): [`backend`] picks the backend, detected by default.

use std::fmt;
use std::net::IpAddr;
use std::process::{Command, ExitCode, Stdio};

pub mod backend;
pub use backend::{Backend, BackendChoice};

/// The UID the injected intentgate sidecar runs as (its traffic is exempt from redirection).
pub const DEFAULT_PROXY_UID: u32 = 15700;
/// The default transparent listener port.
pub const DEFAULT_PORT: u16 = 15702;
/// The nat chain holding the redirect rules.
pub const NAT_CHAIN: &str = "INTENTGATE_OUTPUT";
/// The filter chain rejecting outbound QUIC.
pub const QUIC_CHAIN: &str = "INTENTGATE_QUIC";

/// IPv4 (iptables) or IPv6 (ip6tables).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    fn loopback(self) -> &'static str {
        match self {
            Family::V4 => "127.0.0.0/8",
            Family::V6 => "::1/128",
        }
    }
}

/// An address block, `ADDR/LEN` or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub len: u8,
}

impl Cidr {
    fn family(&self) -> Family {
        if self.addr.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("'{s}' is not an IP address or CIDR"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => max,
            Some(l) => match l.trim().parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(format!("'{s}': prefix length must be 0..={max}")),
            },
        };
        Ok(Cidr { addr, len })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// What to redirect and what to leave alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub proxy_uid: u32,
    pub port: u16,
    pub exclude_ports: Vec<u16>,
    pub exclude_cidrs: Vec<Cidr>,
    pub include_cidrs: Vec<Cidr>,
    pub block_quic: bool,
}

impl Default for Plan {
    fn default() -> Self {
        Plan {
            proxy_uid: DEFAULT_PROXY_UID,
            port: DEFAULT_PORT,
            exclude_ports: Vec::new(),
            exclude_cidrs: Vec::new(),
            include_cidrs: Vec::new(),
            block_quic: false,
        }
    }
}

/// One step of a script. The first word of each command is the binary (iptables or ip6tables).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Must succeed.
    Run(Vec<String>),
    /// May fail (e.g. deleting what is not there).
    Try(Vec<String>),
    /// Run `then` only when `check` fails (add a rule or chain once).
    Unless {
        check: Vec<String>,
        then: Vec<String>,
    },
}

impl fmt::Display for Step {
    /// The exact shell command, as `--dry-run` prints it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Run(c) => write!(f, "{}", c.join(" ")),
            Step::Try(c) => write!(f, "{} 2>/dev/null || true", c.join(" ")),
            Step::Unless { check, then } => {
                write!(f, "{} 2>/dev/null || {}", check.join(" "), then.join(" "))
            }
        }
    }
}

/// Where the rules go: one address family, written with one backend's programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tables {
    pub family: Family,
    pub backend: Backend,
}

#[cfg(test)]
impl Tables {
    /// The system's `iptables` (IPv4) or `ip6tables` (IPv6).
    pub fn system(family: Family) -> Self {
        Tables {
            family,
            backend: Backend::System,
        }
    }
}

fn cmd(t: Tables, table: &str, args: &[&str]) -> Vec<String> {
    let mut v = vec![
        t.backend.program(t.family).to_string(),
        "-t".into(),
        table.into(),
    ];
    v.extend(args.iter().map(|s| s.to_string()));
    v
}

const NAT_JUMP: &[&str] = &["OUTPUT", "-p", "tcp", "-j", NAT_CHAIN];
const QUIC_JUMP: &[&str] = &["OUTPUT", "-p", "udp", "-j", QUIC_CHAIN];

fn ensure_chain(steps: &mut Vec<Step>, t: Tables, table: &str, chain: &str) {
    steps.push(Step::Unless {
        check: cmd(t, table, &["-L", chain, "-n"]),
        then: cmd(t, table, &["-N", chain]),
    });
    steps.push(Step::Run(cmd(t, table, &["-F", chain])));
}

fn ensure_jump(steps: &mut Vec<Step>, t: Tables, table: &str, jump: &[&str]) {
    let mut check = vec!["-C"];
    check.extend_from_slice(jump);
    let mut add = vec!["-A"];
    add.extend_from_slice(jump);
    steps.push(Step::Unless {
        check: cmd(t, table, &check),
        then: cmd(t, table, &add),
    });
}

fn remove(steps: &mut Vec<Step>, t: Tables, table: &str, chain: &str, jump: &[&str]) {
    let mut del = vec!["-D"];
    del.extend_from_slice(jump);
    steps.push(Step::Try(cmd(t, table, &del)));
    steps.push(Step::Try(cmd(t, table, &["-F", chain])));
    steps.push(Step::Try(cmd(t, table, &["-X", chain])));
}

/// The steps that install the rules for one family.
pub fn apply_steps(plan: &Plan, t: Tables) -> Vec<Step> {
    let mut s = Vec::new();
    let uid = plan.proxy_uid.to_string();
    let port = plan.port.to_string();
    ensure_chain(&mut s, t, "nat", NAT_CHAIN);
    let rule = |args: &[&str]| {
        let mut a = vec!["-A", NAT_CHAIN];
        a.extend_from_slice(args);
        Step::Run(cmd(t, "nat", &a))
    };
    s.push(rule(&["-m", "owner", "--uid-owner", &uid, "-j", "RETURN"]));
    s.push(rule(&["-d", t.family.loopback(), "-j", "RETURN"]));
    for p in &plan.exclude_ports {
        s.push(rule(&[
            "-p",
            "tcp",
            "--dport",
            &p.to_string(),
            "-j",
            "RETURN",
        ]));
    }
    for c in plan.exclude_cidrs.iter().filter(|c| c.family() == t.family) {
        s.push(rule(&["-d", &c.to_string(), "-j", "RETURN"]));
    }
    let redirect = ["-p", "tcp", "-j", "REDIRECT", "--to-ports", &port];
    if plan.include_cidrs.is_empty() {
        s.push(rule(&redirect));
    } else {
        // Only the listed blocks are redirected; a family with none listed is left alone.
        for c in plan.include_cidrs.iter().filter(|c| c.family() == t.family) {
            let cidr = c.to_string();
            let mut a = vec!["-d", cidr.as_str()];
            a.extend_from_slice(&redirect);
            s.push(rule(&a));
        }
    }
    ensure_jump(&mut s, t, "nat", NAT_JUMP);
    if plan.block_quic {
        ensure_chain(&mut s, t, "filter", QUIC_CHAIN);
        let q = |args: &[&str]| {
            let mut a = vec!["-A", QUIC_CHAIN];
            a.extend_from_slice(args);
            Step::Run(cmd(t, "filter", &a))
        };
        s.push(q(&["-m", "owner", "--uid-owner", &uid, "-j", "RETURN"]));
        s.push(q(&["-p", "udp", "--dport", "443", "-j", "REJECT"]));
        ensure_jump(&mut s, t, "filter", QUIC_JUMP);
    } else {
        // A previous run with --block-quic is undone, so the rules always match the flags.
        remove(&mut s, t, "filter", QUIC_CHAIN, QUIC_JUMP);
    }
    s
}

/// The steps that remove everything `apply_steps` installs, for one family.
pub fn cleanup_steps(t: Tables) -> Vec<Step> {
    let mut s = Vec::new();
    remove(&mut s, t, "nat", NAT_CHAIN, NAT_JUMP);
    remove(&mut s, t, "filter", QUIC_CHAIN, QUIC_JUMP);
    s
}

fn run(argv: &[String], quiet: bool) -> Result<bool, String> {
    let (bin, args) = argv.split_first().ok_or("empty command")?;
    let mut c = Command::new(bin);
    c.args(args).stdin(Stdio::null()).stdout(Stdio::null());
    if quiet {
        c.stderr(Stdio::null());
    }
    c.status()
        .map(|st| st.success())
        .map_err(|e| format!("{bin}: {e}"))
}

/// Runs steps in order; stops at the first `Run` that fails.
pub fn execute(steps: &[Step]) -> Result<(), String> {
    for step in steps {
        match step {
            Step::Run(c) => {
                if !run(c, false)? {
                    return Err(format!("failed: {}", c.join(" ")));
                }
            }
            Step::Try(c) => {
                let _ = run(c, true);
            }
            Step::Unless { check, then } => {
                if !run(check, true)? && !run(then, false)? {
                    return Err(format!("failed: {}", then.join(" ")));
                }
            }
        }
    }
    Ok(())
}

/// Does this kernel/userland have IPv6 nat (ip6tables present and the nat table usable)?
fn ipv6_nat_available(backend: Backend) -> bool {
    let program = backend.program(Family::V6).to_string();
    run(&[program, "-t".into(), "nat".into(), "-S".into()], true).unwrap_or(false)
}

/// The `iptables` subcommand.
pub fn main(plan: &Plan, choice: BackendChoice, dry_run: bool, cleanup: bool) -> ExitCode {
    let backends = if cleanup {
        backend::cleanup_backends(choice)
    } else {
        match backend::resolve(choice) {
            Ok((b, why)) => {
                eprintln!("intentgate iptables: backend {b}: {why}");
                vec![b]
            }
            Err(e) => {
                eprintln!("intentgate iptables: {e}");
                return ExitCode::FAILURE;
            }
        }
    };
    let steps = |t| {
        if cleanup {
            cleanup_steps(t)
        } else {
            apply_steps(plan, t)
        }
    };
    for backend in backends {
        let tables = |family| Tables { family, backend };
        if dry_run {
            for f in [Family::V4, Family::V6] {
                for s in steps(tables(f)) {
                    println!("{s}");
                }
            }
            continue;
        }
        let mut families = vec![Family::V4];
        if ipv6_nat_available(backend) {
            families.push(Family::V6);
        } else if !cleanup {
            eprintln!(
                "intentgate iptables: warning: ip6tables with a nat table is not available; IPv6 \
                 outbound traffic is NOT redirected (disable IPv6 in the pod, or block it with a NetworkPolicy)"
            );
        }
        for f in families {
            if let Err(e) = execute(&steps(tables(f))) {
                eprintln!("intentgate iptables: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
#[path = "iptables_tests.rs"]
mod tests;
