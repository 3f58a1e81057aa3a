//! Which iptables userland `intentgate iptables` drives: `iptables-nft` (nf_tables) or
//! `iptables-legacy` (x_tables). Both can be present and both hook the same netfilter points, so
//! rules written with one are invisible to the other and the order between the two sets is not
//! defined. A pod's network namespace may already hold rules (a service mesh's init container, a
//! CNI plugin): ours must go into the same backend, after theirs, or the documented order of jumps
//! in nat `OUTPUT` means nothing.
//!
//! `--backend auto` (the default) therefore counts the rules each backend already holds (the
//! `-A` lines of `iptables-nft-save` and `iptables-legacy-save`, IPv4 decides for both families):
//! the backend with more rules wins (a tie with rules on both sides: nft). With no rules anywhere,
//! the system's own `iptables` (the distribution's alternatives choice) is used when it works here,
//! else whichever variant does. A re-run (an init container restarted) finds its own rules and
//! stays where it was. `--backend nft|legacy` skips the detection.

use std::fmt;
use std::process::{Command, Stdio};

use crate::iptables::Family;

/// The programs the rules are written with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `iptables` / `ip6tables`, whichever variant the system points them at.
    System,
    /// `iptables-nft` / `ip6tables-nft`.
    Nft,
    /// `iptables-legacy` / `ip6tables-legacy`.
    Legacy,
}

impl Backend {
    /// The program managing `family`'s tables with this backend.
    pub fn program(self, family: Family) -> &'static str {
        match (self, family) {
            (Backend::System, Family::V4) => "iptables",
            (Backend::System, Family::V6) => "ip6tables",
            (Backend::Nft, Family::V4) => "iptables-nft",
            (Backend::Nft, Family::V6) => "ip6tables-nft",
            (Backend::Legacy, Family::V4) => "iptables-legacy",
            (Backend::Legacy, Family::V6) => "ip6tables-legacy",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::System => "system iptables",
            Backend::Nft => "nft",
            Backend::Legacy => "legacy",
        })
    }
}

/// `--backend`: detect, or use the named one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendChoice {
    #[default]
    Auto,
    Nft,
    Legacy,
}

impl std::str::FromStr for BackendChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(BackendChoice::Auto),
            "nft" => Ok(BackendChoice::Nft),
            "legacy" => Ok(BackendChoice::Legacy),
            _ => Err(format!("'{s}': expected auto, nft or legacy")),
        }
    }
}

/// What the probes found: the rule count of each variant (`None`: it cannot run here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub nft: Option<usize>,
    pub legacy: Option<usize>,
}

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = |c: Option<usize>| c.map_or("unavailable".to_string(), |c| format!("{c} rules"));
        write!(f, "nft: {}, legacy: {}", n(self.nft), n(self.legacy))
    }
}

/// The decision, from the probes; `system_works` is asked only when no backend holds rules.
pub fn choose(probe: Probe, system_works: impl FnOnce() -> bool) -> Option<Backend> {
    let nft = probe.nft.unwrap_or(0);
    match probe.legacy {
        Some(legacy) if legacy > nft => return Some(Backend::Legacy),
        _ if nft > 0 => return Some(Backend::Nft),
        _ => {}
    }
    if system_works() {
        Some(Backend::System)
    } else if probe.nft.is_some() {
        Some(Backend::Nft)
    } else {
        probe.legacy.map(|_| Backend::Legacy)
    }
}

/// The `-A` lines of `PROGRAM` (an `…-save`), or `None` when it is missing or fails.
fn count_rules(program: &str) -> Option<usize> {
    let out = Command::new(program)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status.success().then(|| {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with("-A "))
            .count()
    })
}

/// Probes this network namespace (read-only: `iptables-nft-save`, `iptables-legacy-save`).
pub fn probe() -> Probe {
    Probe {
        nft: count_rules("iptables-nft-save"),
        legacy: count_rules("iptables-legacy-save"),
    }
}

/// The backend to use for `choice`, and why (for the log line).
pub fn resolve(choice: BackendChoice) -> Result<(Backend, String), String> {
    match choice {
        BackendChoice::Nft => Ok((Backend::Nft, "--backend nft".into())),
        BackendChoice::Legacy => Ok((Backend::Legacy, "--backend legacy".into())),
        BackendChoice::Auto => {
            let p = probe();
            match choose(p, || count_rules("iptables-save").is_some()) {
                Some(b) => Ok((b, format!("detected ({p})"))),
                None => Err(format!(
                    "no working iptables here ({p}, and iptables-save fails): install iptables, \
                     and check that the container has NET_ADMIN and NET_RAW"
                )),
            }
        }
    }
}

/// The backends `--cleanup` goes through: with `auto`, every variant that runs here (rules may
/// have been written by either), else the system's.
pub fn cleanup_backends(choice: BackendChoice) -> Vec<Backend> {
    match choice {
        BackendChoice::Nft => vec![Backend::Nft],
        BackendChoice::Legacy => vec![Backend::Legacy],
        BackendChoice::Auto => {
            let p = probe();
            let mut all = Vec::new();
            if p.nft.is_some() {
                all.push(Backend::Nft);
            }
            if p.legacy.is_some() {
                all.push(Backend::Legacy);
            }
            if all.is_empty() {
                all.push(Backend::System);
            }
            all
        }
    }
}
