//! MCP awareness (streamable HTTP transport): the JSON-RPC message(s) of a request to an MCP
//! server read for the decision (`parse`), a rule's `mcp:` scope matched against them (`scope`),
//! a refusal answered in-band as JSON-RPC so it reaches the model (`reply`), and `tools/list`
//! answers cut down to the permitted tools (`filter`). No I/O, no other module of ours.

pub mod filter;
pub mod reply;
pub mod scope;

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use reply::Reply;
pub use scope::{Miss, Scope};

/// The method whose refusal is a tool result (`isError`) rather than a JSON-RPC error.
pub const TOOLS_CALL: &str = "tools/call";
/// The method whose answers `mcp.filter_tools_list` cuts down.
pub const TOOLS_LIST: &str = "tools/list";
const RESOURCES_READ: &str = "resources/read";

/// The JSON-RPC message(s) of one request body.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub messages: Vec<Message>,
    /// The body was a JSON array (a batch), even of one message.
    pub batch: bool,
}

/// One JSON-RPC message as the decision sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// A request's id (a string or a number); `None` for a notification or a response.
    pub id: Option<Value>,
    /// `None` for a response (the client answering a server's request: sampling, elicitation).
    pub method: Option<String>,
    /// `tools/call`: `params.name`.
    pub tool: Option<String>,
    /// `tools/call`: `params.arguments`.
    pub arguments: Option<Value>,
    /// `resources/read`: `params.uri`.
    pub uri: Option<String>,
}

/// Why a body to an MCP server cannot be read as MCP (refused, `mcp_unreadable`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unreadable {
    /// Over `limits.inspect_body_bytes`: the decision needs the whole message.
    TooLarge(usize),
    /// `Content-Type` is not JSON.
    NotJson(String),
    /// Not JSON-RPC 2.0 as MCP writes it.
    Malformed(String),
}

impl std::fmt::Display for Unreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unreadable::TooLarge(limit) => write!(
                f,
                "the MCP request body is over the {limit} bytes intentgate reads to decide it \
                 (limits.inspect_body_bytes)"
            ),
            Unreadable::NotJson(ct) => write!(
                f,
                "a request to an MCP server must carry JSON-RPC (Content-Type: \
                 application/json); this one is {ct}"
            ),
            Unreadable::Malformed(why) => write!(f, "the MCP request is not JSON-RPC 2.0: {why}"),
        }
    }
}

impl Unreadable {
    /// What to do about it.
    pub fn hint(&self) -> &'static str {
        match self {
            Unreadable::TooLarge(_) => {
                "send smaller MCP messages (split a batch), or ask the platform team to raise \
                 limits.inspect_body_bytes"
            }
            Unreadable::NotJson(_) | Unreadable::Malformed(_) => {
                "send one JSON-RPC 2.0 message (or a batch of them) with Content-Type: \
                 application/json, as the MCP streamable HTTP transport does"
            }
        }
    }
}

#[derive(Deserialize)]
struct Wire {
    jsonrpc: Option<String>,
    id: Option<Value>,
    method: Option<String>,
    params: Option<Params>,
    result: Option<IgnoredAny>,
    error: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct Params {
    name: Option<Value>,
    arguments: Option<Value>,
    uri: Option<Value>,
}

/// Reads a whole request body (`body`, with `json` its `Content-Type` is JSON) as MCP.
pub fn parse(body: &[u8], json: bool, content_type: Option<&str>) -> Result<Call, Unreadable> {
    if !json {
        return Err(Unreadable::NotJson(
            content_type.map_or("without a Content-Type".into(), |c| format!("'{c}'")),
        ));
    }
    let start = body.iter().find(|b| !b.is_ascii_whitespace());
    let bad = |e: serde_json::Error| Unreadable::Malformed(e.to_string());
    let (wires, batch) = if start == Some(&b'[') {
        let v: Vec<Wire> = serde_json::from_slice(body).map_err(bad)?;
        if v.is_empty() {
            return Err(Unreadable::Malformed("an empty batch".into()));
        }
        (v, true)
    } else {
        (
            vec![serde_json::from_slice::<Wire>(body).map_err(bad)?],
            false,
        )
    };
    let messages = wires
        .into_iter()
        .enumerate()
        .map(|(i, w)| message(w).map_err(|m| at(batch, i, m)))
        .collect::<Result<_, _>>()?;
    Ok(Call { messages, batch })
}

fn at(batch: bool, i: usize, msg: String) -> Unreadable {
    Unreadable::Malformed(if batch {
        format!("message {} of the batch: {msg}", i + 1)
    } else {
        msg
    })
}

fn message(w: Wire) -> Result<Message, String> {
    if w.jsonrpc.as_deref() != Some("2.0") {
        return Err("\"jsonrpc\" must be \"2.0\"".into());
    }
    if let Some(id) = &w.id {
        if !(id.is_string() || id.is_number()) {
            return Err("\"id\" must be a string or a number".into());
        }
    }
    let Some(method) = w.method else {
        return match (w.result.is_some() || w.error.is_some(), &w.id) {
            (true, Some(_)) => Ok(Message {
                id: None,
                method: None,
                tool: None,
                arguments: None,
                uri: None,
            }),
            _ => Err(
                "a message needs a \"method\" (or, answering, an \"id\" and a \
                      \"result\" or \"error\")"
                    .into(),
            ),
        };
    };
    if w.result.is_some() || w.error.is_some() {
        return Err("a request carries no \"result\" or \"error\"".into());
    }
    let text = |v: Option<Value>, what: &str| match v {
        Some(Value::String(s)) => Ok(s),
        _ => Err(format!("{method} needs a string \"params.{what}\"")),
    };
    let (mut tool, mut arguments, mut uri) = (None, None, None);
    if let Some(p) = w.params {
        match method.as_str() {
            TOOLS_CALL => {
                tool = Some(text(p.name, "name")?);
                arguments = p.arguments;
                if arguments.as_ref().is_some_and(|a| !a.is_object()) {
                    return Err("tools/call \"params.arguments\" must be an object".into());
                }
            }
            RESOURCES_READ => uri = Some(text(p.uri, "uri")?),
            _ => {}
        }
    } else if method == TOOLS_CALL || method == RESOURCES_READ {
        return Err(format!("{method} needs \"params\""));
    }
    Ok(Message {
        id: w.id,
        method: Some(method),
        tool,
        arguments,
        uri,
    })
}

/// What an audit record notes of an MCP call: the method and tool of its first message that
/// asks something.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Noted {
    pub method: String,
    pub tool: Option<String>,
}

impl Call {
    /// The audit record's note of this call.
    pub fn noted(&self) -> Noted {
        self.first().map_or_else(Noted::default, |m| Noted {
            method: m.method.clone().unwrap_or_default(),
            tool: m.tool.clone(),
        })
    }

    /// The first message that asks something (has a method), for the audit record.
    pub fn first(&self) -> Option<&Message> {
        self.messages.iter().find(|m| m.method.is_some())
    }

    /// `input.mcp`: the first message's `method`, `tool`, `arguments` and `uri`, whether it was
    /// a `batch`, and every message in `messages`.
    pub fn to_json(&self) -> Value {
        let one = |m: &Message| {
            serde_json::json!({
                "id": m.id,
                "method": m.method,
                "tool": m.tool,
                "arguments": m.arguments,
                "uri": m.uri,
            })
        };
        let mut v = self
            .first()
            .or(self.messages.first())
            .map_or(Value::Null, one);
        if let Value::Object(o) = &mut v {
            o.insert("batch".into(), Value::Bool(self.batch));
            o.insert(
                "messages".into(),
                Value::Array(self.messages.iter().map(one).collect()),
            );
        }
        v
    }
}

/// Whether a request says it is MCP (`mcp.detect: auto`): a POST with a JSON body and an
/// `Mcp-Session-Id` or `MCP-Protocol-Version` header.
pub fn announced(method: &http::Method, headers: &http::HeaderMap, json: bool) -> bool {
    method == http::Method::POST
        && json
        && (headers.contains_key("mcp-session-id") || headers.contains_key("mcp-protocol-version"))
}

#[cfg(test)]
mod tests;
