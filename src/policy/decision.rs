//! The decision: the policy's answer read from the decision document, turned into sentences
//! and a hint an agent can act on; and the fail-closed answers for errors and refused agents.

use regorus::Value;

use super::catalog::{ScopeCode, ScopeVerdict};
use crate::config::Mode;
use crate::vocab::{ErrorCode, Verdict};

/// The decision for one request.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Decision {
    /// The policy's verdict. In `monitor` mode a `false` is forwarded and recorded as would-deny.
    pub allow: bool,
    pub mode: Mode,
    /// Sentences a person and an agent can read.
    pub reasons: Vec<String>,
    /// Headers the decision asks to add upstream.
    pub headers: Vec<(String, String)>,
    /// Why it is not allowed (`intent_violation`, `policy_error`, `agent_refused`,
    /// `intent_not_claimable`, `port_not_in_scope`), or why it is allowed anyway (`policy_error`
    /// with `policy.on_error: allow`); `None` when the policy allowed it (`allowed` in `explain`).
    pub code: Option<ErrorCode>,
    /// What to do next (empty when allowed).
    pub hint: String,
    pub scope: ScopeVerdict,
    /// Time spent deciding (catalog, input, evaluation).
    pub policy_micros: u64,
    /// Answered from the decision cache.
    pub cached: bool,
    /// `decision.credential`: the policy picks or vetoes the injected credential (src/cred/).
    #[serde(skip)]
    pub credential: Option<CredentialChoice>,
}

/// What `decision.credential` says: a credential's name, or `false` (inject none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialChoice {
    Use(Box<str>),
    Veto,
}

impl Decision {
    /// The verdict the call is recorded as: allowed, denied (refused), or would-deny (monitor).
    pub fn verdict(&self) -> Verdict {
        if self.allow {
            Verdict::Allow
        } else if self.blocks() {
            Verdict::Deny
        } else {
            Verdict::WouldDeny
        }
    }

    /// Whether the request must be refused: a deny in `enforce` mode, or a refused agent or
    /// claim (lifecycle and `claimable_by` are enforced whatever the mode).
    pub fn blocks(&self) -> bool {
        !self.allow
            && (self.mode == Mode::Enforce
                || matches!(
                    self.code,
                    Some(ErrorCode::AgentRefused | ErrorCode::IntentNotClaimable)
                ))
    }

    /// The code `explain` shows: the refusal's, or `allowed`.
    pub fn code_text(&self) -> &'static str {
        self.code.map_or("allowed", ErrorCode::as_str)
    }

    /// One line for the `reason` field of a refusal.
    pub fn reason(&self) -> String {
        self.reasons.join("; ")
    }
}

/// How an agent declares an intent.
pub const DECLARE_HINT: &str = "declare an intent: send the header `intentgate-intent: NAME` \
     (optionally `intentgate-task: REF`) on the request, or set a session intent with \
     `PUT /v1/intent` on the intentgate admin API";

/// The hint for a request that was not allowed.
pub fn hint_for(scope: &ScopeVerdict) -> String {
    match (scope.code, scope.intent.as_deref()) {
        (ScopeCode::NoIntent, _) | (_, None) => DECLARE_HINT.to_string(),
        (ScopeCode::NotClaimable, Some(i)) => format!(
            "this agent may not claim intent '{i}'; declare an intent it may claim, or ask the \
             platform team"
        ),
        (ScopeCode::UnknownIntent, Some(_)) => {
            "declare an intent that exists in the catalog (see GET /v1/policy), or ask the \
             platform team to add it"
                .to_string()
        }
        (ScopeCode::LlmNotInScope, Some(i)) => format!(
            "call a model the intent allows ({}), or ask the platform team to extend intent '{i}'",
            scope.llm_allows.as_deref().unwrap_or("see the reason")
        ),
        (_, Some(i)) => format!(
            "declare an intent that permits this call, or ask the platform team to extend intent '{i}'"
        ),
    }
}

/// One reason as the decision document gave it, read once per cached decision.
#[derive(Debug)]
pub enum Reason {
    /// The catalog's sentence for this request (`"scope"` or `{"code": "scope"}`).
    Scope,
    Text(Box<str>),
}

impl Reason {
    /// A string as written; `"scope"` and `{"code": "scope"}` as the catalog's sentence; another
    /// object as its `message`, else its code.
    fn read(r: &Value) -> Reason {
        match r {
            // The bare string "scope" also stands for the catalog's sentence.
            Value::String(s) if &**s == "scope" => Reason::Scope,
            Value::String(s) => Reason::Text(Box::from(&**s)),
            Value::Object(o) => {
                let get = |k: &str| match o.get(&Value::from(k)) {
                    Some(Value::String(s)) => Some(&**s),
                    _ => None,
                };
                match (get("code"), get("message")) {
                    (_, Some(m)) => Reason::Text(m.into()),
                    (Some("scope"), None) => Reason::Scope,
                    (Some(c), None) => Reason::Text(format!("denied by policy ({c})").into()),
                    (None, None) => {
                        Reason::Text(format!("denied by policy: {}", json_of(r)).into())
                    }
                }
            }
            other => Reason::Text(json_of(other).into()),
        }
    }

    /// The sentence for a request with this catalog verdict.
    pub fn render(&self, scope: &ScopeVerdict) -> String {
        match self {
            Reason::Scope => scope.why.clone(),
            Reason::Text(t) => t.to_string(),
        }
    }
}

fn json_of(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// What the decision document said, before mode precedence and codes are applied. It does not
/// depend on the request beyond what the document does, so it is what the decision cache keeps.
#[derive(Debug)]
pub struct Parsed {
    pub allow: bool,
    pub reasons: Vec<Reason>,
    pub mode: Option<Mode>,
    pub headers: Vec<(String, String)>,
    pub credential: Option<CredentialChoice>,
}

/// Reads the decision document; `Err` (a message) when it is undefined or malformed.
pub fn parse(doc: &Value) -> Result<Parsed, String> {
    let o = match doc {
        Value::Object(o) => o,
        Value::Undefined => return Err("the decision is undefined".into()),
        other => return Err(format!("the decision is not an object: {}", json_of(other))),
    };
    let field = |k: &str| o.get(&Value::from(k));
    let allow = match field("allow") {
        Some(Value::Bool(b)) => *b,
        _ => return Err("the decision has no boolean `allow`".into()),
    };
    let reasons = match field("reasons") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a.iter().map(Reason::read).collect(),
        Some(Value::Set(s)) => s.iter().map(Reason::read).collect(),
        Some(other) => vec![Reason::read(other)],
    };
    let mode = match field("mode") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if &**s == "enforce" => Some(Mode::Enforce),
        Some(Value::String(s)) if &**s == "monitor" => Some(Mode::Monitor),
        Some(other) => {
            return Err(format!(
                "the decision's mode {} is not enforce or monitor",
                json_of(other)
            ));
        }
    };
    let headers = match field("headers") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Object(h)) => h
            .iter()
            .map(|(k, v)| match (k, v) {
                (Value::String(k), Value::String(v)) => Ok((k.to_ascii_lowercase(), v.to_string())),
                _ => Err("the decision's headers must map strings to strings".to_string()),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err("the decision's headers must be an object".into()),
    };
    let credential = match field("credential") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(false)) => Some(CredentialChoice::Veto),
        Some(Value::String(s)) if !s.is_empty() => Some(CredentialChoice::Use(Box::from(&**s))),
        Some(other) => {
            return Err(format!(
                "the decision's credential {} is not a credential name or false",
                json_of(other)
            ));
        }
    };
    Ok(Parsed {
        allow,
        reasons,
        mode,
        headers,
        credential,
    })
}
