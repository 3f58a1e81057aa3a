//! What the shadow policy (`policy.shadow`) decided of a call where it disagreed with the live
//! policy: recorded beside the live decision, which alone was enforced.

use serde::{Deserialize, Serialize};

use crate::vocab::{ErrorCode, Verdict};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Shadow {
    /// `allow`, `deny` or `would_deny`, as the live decision is written.
    pub decision: Verdict,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<ErrorCode>,
    #[serde(default)]
    pub reasons: Vec<String>,
}
