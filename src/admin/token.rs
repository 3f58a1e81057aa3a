//! The admin endpoints of signed intent tokens: a session intent declared by a token
//! (`PUT /v1/intent {"token": …}`), verified like a token on a request and kept until its
//! `exp` at the latest.

use std::time::{Duration, SystemTime};

use http::{Response, StatusCode};
use serde_json::json;

use super::AdminState;
use super::reply::AdminError;
use crate::error::{Body, json_response};
use crate::token::claims::unix;

/// Sets the session intent from `token`; a `name` beside it must be the token's intent.
pub(super) fn set_session(
    state: &AdminState,
    token: &str,
    name: &str,
    ttl_seconds: Option<u64>,
) -> Result<Response<Body>, AdminError> {
    let live = state.proxy.live.load();
    let tokens = &state.proxy.intent_tokens;
    let claims = tokens
        .verify(token.trim(), &live)
        .map_err(|r| AdminError::token(r, &live.agent.id))?;
    let name = name.trim();
    if !name.is_empty() && name != claims.intent {
        return Err(AdminError::token(
            tokens.mismatch(name, &claims.intent),
            &live.agent.id,
        ));
    }
    if let Err(r) = live.policy.claim(&live.agent, &claims.intent) {
        return Err(AdminError::claim(r, &live.agent.id, &claims.intent));
    }
    let left = claims.exp.saturating_sub(unix(SystemTime::now())).max(1);
    let ttl = ttl_seconds.map_or(left, |t| t.min(left));
    let s = state.proxy.session.set_token(
        token.trim(),
        &claims.intent,
        claims.task.as_deref(),
        Duration::from_secs(ttl),
    );
    Ok(json_response(
        StatusCode::OK,
        &json!({"session": s, "source": "token", "verified": true}),
    ))
}
