//! The MCP keys of the configuration: a catalog rule's `mcp:` scope and the top-level `mcp:`
//! section (docs/configuration.md).

use serde::{Deserialize, Serialize};

/// A rule's `mcp:` scope: what JSON-RPC messages to the MCP server it names may do. Each list
/// holds patterns where `*` matches any run of characters; an absent list permits any.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct McpScope {
    /// JSON-RPC methods (`initialize`, `tools/list`, `tools/call`, `notifications/*`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub methods: Option<Vec<String>>,
    /// Tool names a `tools/call` may name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<String>>,
    /// Resource URIs a `resources/read` may name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resources: Option<Vec<String>>,
}

/// The top-level `mcp:` section.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct McpConfig {
    /// `auto`: a POST with a JSON body and an `Mcp-Session-Id` or `MCP-Protocol-Version` header
    /// is read as MCP on any host, not only on hosts a `protocol: mcp` rule names.
    pub detect: McpDetect,
    /// Answers to `tools/list` are cut down to the tools the intent's rule permits.
    pub filter_tools_list: bool,
}

/// `mcp.detect`.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum McpDetect {
    /// Only hosts a `protocol: mcp` rule names are read as MCP.
    #[default]
    Rules,
    /// Also requests that say they are MCP (see `McpConfig::detect`).
    Auto,
}
