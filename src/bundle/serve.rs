//! `GET` and `HEAD /bundles/NAMESPACE` on the control deployment: the name checked, the
//! caller's token verified for that namespace (`auth`), the bundle taken from the snapshot in
//! force (`store`), and conditional requests answered per RFC 9110 §13.1.2: `If-None-Match`
//! with a list of entity tags, weak comparison, or `*`, answered `304 Not Modified`.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, StatusCode, header};

use super::auth::{Auth, AuthError};
use super::store::{Packed, Store};
use super::valid_namespace;
use crate::vocab::ErrorCode;

/// Why a bundle request is not answered with the bundle.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    #[error("'{0}' is not a namespace name")]
    BadName(String),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("{0}")]
    Unavailable(String),
}

impl Refusal {
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::BadName(_) => StatusCode::BAD_REQUEST,
            Refusal::Auth(AuthError::OtherNamespace { .. }) => StatusCode::FORBIDDEN,
            Refusal::Auth(AuthError::NoKeys) | Refusal::Unavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Refusal::Auth(_) => StatusCode::UNAUTHORIZED,
        }
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            Refusal::BadName(_) => ErrorCode::BadRequest,
            Refusal::Auth(AuthError::OtherNamespace { .. }) => ErrorCode::Forbidden,
            Refusal::Auth(AuthError::NoKeys) | Refusal::Unavailable(_) => {
                ErrorCode::BundleUnavailable
            }
            Refusal::Auth(_) => ErrorCode::Unauthenticated,
        }
    }

    pub fn hint(&self) -> &'static str {
        match self {
            Refusal::BadName(_) => "GET /bundles/NAMESPACE with a Kubernetes namespace name",
            Refusal::Auth(AuthError::OtherNamespace { .. }) => {
                "a pod fetches its own namespace's bundle: /bundles/$(POD_NAMESPACE)"
            }
            Refusal::Auth(AuthError::NoKeys) | Refusal::Unavailable(_) => {
                "try again shortly; the control deployment's log says why"
            }
            Refusal::Auth(_) => {
                "send the pod's projected service-account token (audience intentgate-bundles) as Authorization: Bearer"
            }
        }
    }
}

/// A bundle answer: the status (200 or 304), the ETag, and the archive (`None` for 304).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub etag: String,
    pub gz: Option<Bytes>,
}

/// The bundle server.
pub struct Bundles {
    pub store: Store,
    pub auth: Arc<Auth>,
}

impl Bundles {
    /// Answers a GET or HEAD for `namespace` (the caller drops the body of a HEAD).
    pub async fn answer(&self, namespace: &str, headers: &HeaderMap) -> Result<Answer, Refusal> {
        if !valid_namespace(namespace) {
            return Err(Refusal::BadName(namespace.to_string()));
        }
        self.auth
            .authorize(headers.get(header::AUTHORIZATION), namespace)?;
        let snapshot = self.store.current().ok_or_else(|| {
            Refusal::Unavailable("the policy directory has not loaded (or not built) yet".into())
        })?;
        let ns = namespace.to_string();
        let packed: Arc<Packed> = tokio::task::spawn_blocking(move || snapshot.packed(&ns))
            .await
            .map_err(|e| Refusal::Unavailable(format!("packing task failed: {e}")))?
            .map_err(|e| Refusal::Unavailable(e.to_string()))?;
        let not_modified = headers
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| none_match_fails(v, &packed.etag));
        Ok(Answer {
            status: if not_modified {
                StatusCode::NOT_MODIFIED
            } else {
                StatusCode::OK
            },
            etag: packed.etag.clone(),
            gz: (!not_modified).then(|| packed.gz.clone()),
        })
    }
}

/// Whether an `If-None-Match` field value (`*` or a list of entity tags) names the current
/// representation `etag`, comparing weakly (`W/"x"` matches `"x"`). A malformed value names
/// nothing, so the full answer goes out.
pub fn none_match_fails(value: &str, etag: &str) -> bool {
    if value.trim() == "*" {
        return true;
    }
    let opaque = etag.strip_prefix("W/").unwrap_or(etag);
    opaque_tags(value).is_some_and(|tags| tags.contains(&opaque))
}

/// The opaque tags (quotes included) of a list of entity tags; `None` when malformed.
fn opaque_tags(value: &str) -> Option<Vec<&str>> {
    let mut tags = Vec::new();
    let mut rest = value;
    loop {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        if rest.is_empty() {
            return (!tags.is_empty()).then_some(tags);
        }
        let tag = rest.strip_prefix("W/").unwrap_or(rest);
        let end = tag.strip_prefix('"')?.find('"')? + 2;
        tags.push(&tag[..end]);
        rest = tag[end..].trim_start_matches([' ', '\t']);
        // After a tag: a comma or the end.
        if !(rest.is_empty() || rest.starts_with(',')) {
            return None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::none_match_fails;

    #[test]
    fn if_none_match_lists_weak_tags_and_star() {
        let e = "\"abc\"";
        for yes in [
            "\"abc\"",
            "W/\"abc\"",
            "\"x\", \"abc\"",
            "\"x\",W/\"abc\" , \"y\"",
            "*",
            " * ",
            "\"a,b\", \"abc\"",
        ] {
            assert!(none_match_fails(yes, e), "{yes}");
        }
        for no in [
            "",
            "\"abd\"",
            "abc",
            "\"ab",
            "W/abc",
            "\"x\" \"abc\"",
            "\"abc\"x",
            "\"a,b\"",
            "w/\"abc\"",
        ] {
            assert!(!none_match_fails(no, e), "{no}");
        }
        // Our own tag being weak changes nothing for the weak comparison.
        assert!(none_match_fails("\"abc\"", "W/\"abc\""));
    }
}
