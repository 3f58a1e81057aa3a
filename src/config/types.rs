//! The typed configuration document: every key a user can write, with its default.
//!
//! Unknown keys are refused (`deny_unknown_fields`) so a typo never silently does nothing.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{AuditConfig, DnsConfig, EgressConfig, HeaderNames, Limits, TlsConfig, UpstreamConfig};

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
    pub const fn as_str(self) -> &'static str {
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
    #[serde(deserialize_with = "exact")]
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
    #[serde(deserialize_with = "exact")]
    pub hosts: Vec<String>,
    /// Absent means 80 and 443.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(deserialize_with = "exact_opt")]
    pub ports: Option<Vec<u16>>,
    /// Absent means any method.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(deserialize_with = "exact_opt")]
    pub methods: Option<Vec<String>>,
    /// `*` matches one segment, `**` any number. Absent means any path.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(deserialize_with = "exact_opt")]
    pub paths: Option<Vec<String>>,
    /// Which of GET, HEAD, OPTIONS and DELETE may carry a request body under this rule (a body
    /// on them is refused elsewhere: an upstream that ignores it reads it as the next request).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(deserialize_with = "exact_opt")]
    pub body_methods: Option<Vec<String>>,
    /// `mcp` or `llm`: requests under this rule are parsed as that protocol (issue 24).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<RuleProtocol>,
    /// With `protocol: mcp`: the JSON-RPC methods, tools and resources the rule permits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mcp: Option<Box<super::McpScope>>,
    /// With `protocol: llm`: whose wire format the calls speak; absent = detected by path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<super::LlmProvider>,
    /// With `protocol: llm`: the models and the output-token bound the rule allows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub llm: Option<Box<super::LlmScope>>,
    /// A credential added to the requests this rule allows (docs/credentials.md).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inject: Option<Box<super::InjectSpec>>,
}

/// A list read with no spare capacity: a large catalog holds tens of thousands of short ones,
/// and the reader's doubling would leave up to half of each unused while the catalog loads.
fn exact<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    let mut v = Vec::deserialize(d)?;
    v.shrink_to_fit();
    Ok(v)
}

/// [`exact`] for an optional list.
fn exact_opt<'de, D, T>(d: D) -> Result<Option<Vec<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    let mut v = Option::<Vec<T>>::deserialize(d)?;
    if let Some(v) = &mut v {
        v.shrink_to_fit();
    }
    Ok(v)
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
