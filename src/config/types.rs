//! The typed configuration document: every key a user can write, with its default.
//!
//! Unknown keys are refused (`deny_unknown_fields`) so a typo never silently does nothing.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::TlsConfig;

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub agent: AgentConfig,
    pub listen: ListenConfig,
    /// The default mode for intents that set none.
    pub mode: Mode,
    /// The default intent when the agent declares none (the weakest way to declare one).
    pub intent: Option<String>,
    /// The default task reference that goes with `intent`.
    pub task: Option<String>,
    pub intents: BTreeMap<String, IntentSpec>,
    pub policy: PolicyConfig,
    pub tls: TlsConfig,
    pub audit: AuditConfig,
    pub egress: EgressConfig,
    pub dns: DnsConfig,
    pub upstream: UpstreamConfig,
    pub limits: Limits,
    pub headers: HeaderNames,
    pub admin: AdminConfig,
    pub intent_tokens: super::IntentTokensConfig,
    pub telemetry: super::TelemetryConfig,
    pub attestation: super::AttestationConfig,
    /// MCP awareness beyond what catalog rules say (`detect`, `filter_tools_list`).
    pub mcp: super::McpConfig,
    /// Named secrets the proxy injects for the agent (src/cred/, docs/credentials.md).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub credentials: BTreeMap<String, super::CredentialSpec>,
    /// Where budget counters live (src/budget/).
    pub budgets: super::BudgetsConfig,
    /// The `--mode` flag: overrides every intent's mode and the top-level one.
    #[serde(skip)]
    pub mode_override: Option<Mode>,
}

impl Config {
    /// This configuration without its intent catalog, which the running proxy holds compiled in
    /// its policy set: the typed catalog is large (~17 MiB for 1,000 intents x 20 rules), and
    /// nothing after the policy is built reads it.
    pub fn drop_catalog(mut self) -> Self {
        self.intents = BTreeMap::new();
        self
    }
}

/// Who the agent is.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    pub id: Option<String>,
    pub namespace: Option<String>,
    pub service_account: Option<String>,
    /// Who answers for this agent. Defaults to `$USER` outside Kubernetes.
    pub owner: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// After this instant (RFC 3339) the agent is refused all egress.
    pub expires: Option<String>,
    /// The SPIFFE trust domain used to derive `spiffe://TD/ns/NS/sa/SA`.
    pub trust_domain: String,
    /// Refuse all egress for agents without an owner or past `expires`.
    pub enforce_lifecycle: bool,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            id: None,
            namespace: None,
            service_account: None,
            owner: None,
            labels: BTreeMap::new(),
            expires: None,
            trust_domain: "cluster.local".into(),
            enforce_lifecycle: true,
        }
    }
}

/// Listener addresses.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ListenConfig {
    pub proxy: SocketAddr,
    pub admin: Option<SocketAddr>,
    pub transparent: Option<SocketAddr>,
}

impl Default for ListenConfig {
    fn default() -> Self {
        Self {
            proxy: SocketAddr::from(([127, 0, 0, 1], 15700)),
            admin: Some(SocketAddr::from(([127, 0, 0, 1], 15701))),
            transparent: None,
        }
    }
}

/// `enforce` blocks what policy denies; `monitor` forwards it and records a would-deny.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Enforce,
    Monitor,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Monitor => "monitor",
        }
    }
}

/// One entry of the intent catalog.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct IntentSpec {
    pub description: String,
    #[serde(skip_serializing_if = "ClaimableBy::is_anyone")]
    pub claimable_by: ClaimableBy,
    /// Overrides the top-level `mode` for this intent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    pub allow: Vec<ScopeRule>,
    /// Only a verified intent token may declare this intent (a bare name is refused).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub requires_token: bool,
    /// Requests under this intent carry a signed attestation (`attestation:`), also when it
    /// is off globally.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub attest: bool,
    /// How much the intent may do, and for how long (src/budget/).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget: Option<super::BudgetSpec>,
}

/// Who may claim an intent: each list present must contain the agent's id / namespace.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ClaimableBy {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agents: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<Vec<String>>,
}

impl ClaimableBy {
    pub fn is_anyone(&self) -> bool {
        self.agents.is_none() && self.namespaces.is_none()
    }
}

/// One scope rule: destination hosts, ports, methods and paths an intent permits.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ScopeRule {
    /// Exact host names or a leading `*.` wildcard.
    pub hosts: Vec<String>,
    /// Absent means 80 and 443.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<u16>>,
    /// Absent means any method.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub methods: Option<Vec<String>>,
    /// `*` matches one segment, `**` any number. Absent means any path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paths: Option<Vec<String>>,
    /// Which of GET, HEAD, OPTIONS and DELETE may carry a request body under this rule (a body
    /// on them is refused elsewhere: an upstream that ignores it reads it as the next request).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_methods: Option<Vec<String>>,
    /// `mcp` or `llm`: requests under this rule are parsed as that protocol (issue 24).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<RuleProtocol>,
    /// With `protocol: mcp`: the JSON-RPC methods, tools and resources the rule permits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mcp: Option<super::McpScope>,
    /// With `protocol: llm`: whose wire format the calls speak; absent = detected by path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<super::LlmProvider>,
    /// With `protocol: llm`: the models and the output-token bound the rule allows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub llm: Option<super::LlmScope>,
    /// A credential added to the requests this rule allows (docs/credentials.md).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inject: Option<super::InjectSpec>,
}

/// `protocol` of a scope rule: how the bodies of the requests it matches are read.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RuleProtocol {
    Mcp,
    Llm,
}

/// What to do when policy evaluation fails.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    #[default]
    Deny,
    Allow,
}

/// Where Rego modules come from and how they are queried.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Extra policy directories or files (global modules; `namespaces/NS/` subfolders apply per namespace).
    pub paths: Vec<PathBuf>,
    pub query: String,
    pub on_error: OnError,
    /// Use the embedded default policy (`config/policy/`) in addition to `paths`.
    pub builtin: bool,
    /// `https://…/bundles/NAMESPACE`: the policy comes from this bundle server (the control
    /// deployment), polled with ETag; local `paths` and `intents` are then refused.
    pub bundle_url: Option<String>,
    /// The CA trusted for `bundle_url` (PEM text or a PEM file); default the system roots.
    pub bundle_ca: Option<String>,
    /// A token file presented to the bundle server as `Authorization: Bearer` (in a pod: the
    /// projected service-account token the webhook mounts), read at each poll.
    pub bundle_token_file: Option<PathBuf>,
    /// How often the bundle server is polled.
    pub bundle_poll_ms: u64,
    /// How long `serve` waits for the first bundle before giving up.
    pub bundle_wait_ms: u64,
    /// How often the config file and policy paths are checked for changes; 0 disables watching.
    pub watch_interval_ms: u64,
    /// Cache decisions when the loaded modules make that provably safe (see docs/policy.md).
    pub decision_cache: bool,
    /// A candidate policy decided beside the live one on live traffic; only the live decision
    /// is enforced, every disagreement is recorded and counted (docs/policy.md, "Shadow policy").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shadow: Option<super::ShadowConfig>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            paths: Vec::new(),
            query: "data.intentgate.decision".into(),
            on_error: OnError::Deny,
            builtin: true,
            bundle_url: None,
            bundle_ca: None,
            bundle_token_file: None,
            bundle_poll_ms: 10_000,
            bundle_wait_ms: 30_000,
            watch_interval_ms: 1000,
            decision_cache: true,
            shadow: None,
        }
    }
}

/// Admin API settings.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// A file holding a bearer token that mutating admin endpoints require (besides loopback).
    pub token_file: Option<PathBuf>,
    /// Concurrent admin connections (its own cap, apart from `limits.max_connections`).
    pub max_connections: usize,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            token_file: None,
            max_connections: 32,
        }
    }
}

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
