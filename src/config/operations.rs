//! The operational sections of the configuration: `audit`, `egress`, `dns`, `upstream`,
//! `limits` and `headers` (src/config/types.rs has the document and its policy sections).

use serde::{Deserialize, Serialize};

/// Where audit records go.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// `stdout`, `stderr`, `off`, or a file path.
    pub path: String,
    /// Records waiting to be written; when full, requests wait (nothing is dropped).
    pub queue: usize,
    /// What happens while the log cannot be written (disk full, I/O error).
    pub on_failure: AuditOnFailure,
    /// `intentgate` (the default) or `opa`: each record as an OPA decision-log event.
    pub format: AuditFormat,
}

/// `audit.format`: how each record is written.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AuditFormat {
    /// intentgate's own record (docs/operations.md); what `report`, `learn` and `replay` read.
    #[default]
    Intentgate,
    /// An OPA decision-log event per line.
    Opa,
}

/// `audit.on_failure`: what the proxy does while audit records cannot be written.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AuditOnFailure {
    /// Refuse new requests (503 `audit_unavailable`) until the log can be written again; the
    /// records already queued are kept and written then.
    #[default]
    Block,
    /// Keep forwarding; records that cannot be written are dropped and counted.
    Continue,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            path: "stdout".into(),
            queue: 4096,
            on_failure: AuditOnFailure::Block,
            format: AuditFormat::Intentgate,
        }
    }
}

/// Destination address exceptions.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EgressConfig {
    pub allow_cidrs: Vec<String>,
    pub deny_cidrs: Vec<String>,
    /// Ports an intercepted CONNECT may name besides those the catalog's rules allow.
    pub connect_ports: Vec<u16>,
}

impl Default for EgressConfig {
    fn default() -> Self {
        Self {
            allow_cidrs: Vec::new(),
            deny_cidrs: Vec::new(),
            connect_ports: vec![443],
        }
    }
}

/// Resolver selection; empty means the system resolver.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DnsConfig {
    pub servers: Vec<String>,
    /// How long a resolution is reused (the decision and the connection see the same answer).
    pub cache_ttl_ms: u64,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            servers: Vec::new(),
            cache_ttl_ms: 5_000,
        }
    }
}

/// A parent proxy that all egress goes through.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    /// e.g. `http://proxy.corp:3128`.
    pub proxy: Option<String>,
}

/// Sizes, counts and timeouts. Durations are in milliseconds.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub connect_timeout_ms: u64,
    /// Time a client has to send a complete request head, counted from when the connection is
    /// ready for one: so it also closes keep-alive connections that sit idle that long.
    pub header_read_timeout_ms: u64,
    pub tunnel_idle_timeout_ms: u64,
    /// Time allowed for the upstream to send its response head.
    pub upstream_response_timeout_ms: u64,
    /// How long in-flight requests may take to finish on SIGTERM/SIGINT.
    pub shutdown_grace_ms: u64,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_connections: usize,
    pub max_tunnels: usize,
    /// Idle keep-alive connections to upstreams are closed after this long.
    pub pool_idle_timeout_ms: u64,
    pub pool_max_idle_per_host: usize,
    /// Transparent listener: how long a redirected connection may stay silent before it is taken
    /// for a protocol where the server speaks first and decided on IP and port.
    pub sniff_timeout_ms: u64,
    /// Worker threads of the proxy's runtime. 1 (the default, like a sidecar's one-core budget)
    /// runs everything on one thread: no cross-thread wake-ups, the least CPU and memory per
    /// request. 0 = one per core (at most 8). Restart to change.
    pub workers: usize,
    /// Requests per second per agent (a token bucket); 0 = no limit (the default).
    pub requests_per_second: f64,
    /// Requests an agent may send at once before the rate applies; 0 = `requests_per_second`
    /// rounded up (at least 1).
    pub burst: u32,
    /// Request body bytes a policy reading `input.request.body` sees (more: `body_truncated`).
    pub inspect_body_bytes: usize,
}

impl Limits {
    /// The number of worker threads `workers` asks for (0 resolved to the core count, max 8).
    pub fn worker_threads(&self) -> usize {
        match self.workers {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get().min(8)),
            n => n,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            connect_timeout_ms: 10_000,
            header_read_timeout_ms: 30_000,
            tunnel_idle_timeout_ms: 300_000,
            upstream_response_timeout_ms: 60_000,
            shutdown_grace_ms: 15_000,
            max_header_bytes: 32 * 1024,
            max_headers: 100,
            max_connections: 4096,
            max_tunnels: 1024,
            pool_idle_timeout_ms: 90_000,
            pool_max_idle_per_host: 32,
            workers: 1,
            sniff_timeout_ms: 500,
            requests_per_second: 0.0,
            burst: 0,
            inspect_body_bytes: 64 * 1024,
        }
    }
}

/// Names of the headers intentgate reads from the agent and writes upstream.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HeaderNames {
    pub intent: String,
    pub task: String,
    pub agent: String,
    pub decision_id: String,
    /// Extra identity header names the agent must never send upstream (stripped, never trusted).
    pub strip: Vec<String>,
}

impl Default for HeaderNames {
    fn default() -> Self {
        Self {
            intent: "intentgate-intent".into(),
            task: "intentgate-task".into(),
            agent: "intentgate-agent".into(),
            decision_id: "intentgate-decision-id".into(),
            strip: Vec::new(),
        }
    }
}
