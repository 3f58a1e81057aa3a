//! Who may call which admin endpoint: probes and scrapers from anywhere; what reveals the policy
//! from loopback, or from anywhere with the admin token; mutations from loopback only (with the
//! token when one is set).

use std::net::IpAddr;

use http::{HeaderMap, Method, StatusCode};

use super::reply::AdminError;
use crate::vocab::ErrorCode;

/// What an endpoint gives away or changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Access {
    /// `GET /healthz`, `/readyz`, `/metrics`: the kubelet and Prometheus reach them on the pod IP.
    Probe,
    /// Everything else that does not change state: the policy, explanations, the session
    /// intent (and unknown paths, so they give nothing away either).
    Read,
    /// `PUT`/`DELETE /v1/intent`, `POST /v1/reload`.
    Mutate,
}

impl Access {
    pub(super) fn of(method: &Method, path: &str) -> Self {
        match (method, path) {
            // The attestation keys are public: upstreams fetch them from anywhere.
            (&Method::GET, "/healthz" | "/readyz" | "/metrics" | "/.well-known/jwks.json") => {
                Access::Probe
            }
            (&Method::PUT | &Method::DELETE, "/v1/intent") | (&Method::POST, "/v1/reload") => {
                Access::Mutate
            }
            _ => Access::Read,
        }
    }
}

/// Why a call was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// A read from a non-loopback peer while no admin token is configured.
    ReadLoopbackOnly(IpAddr),
    /// A mutation from a non-loopback peer.
    MutateLoopbackOnly(IpAddr),
    /// The bearer token is missing or wrong.
    Unauthorized,
}

impl From<Refusal> for AdminError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::ReadLoopbackOnly(peer) => AdminError::client(
                StatusCode::FORBIDDEN,
                ErrorCode::AdminLoopbackOnly,
                format!(
                    "this admin endpoint reveals the policy and answers loopback peers only \
                     while no admin.token_file is set; {peer} is not loopback"
                ),
                "call it from inside the pod or host (127.0.0.1), or set admin.token_file and \
                 send Authorization: Bearer TOKEN",
            ),
            Refusal::MutateLoopbackOnly(peer) => AdminError::client(
                StatusCode::FORBIDDEN,
                ErrorCode::AdminLoopbackOnly,
                format!("mutating admin endpoints accept loopback peers only; {peer} is not"),
                "call the admin API from inside the pod or host (127.0.0.1)",
            ),
            Refusal::Unauthorized => AdminError::client(
                StatusCode::UNAUTHORIZED,
                ErrorCode::AdminUnauthorized,
                "a valid bearer token is required",
                "send Authorization: Bearer TOKEN (admin.token_file)",
            ),
        }
    }
}

/// Whether `peer` may call an endpoint of class `access`. `token` is `admin.token_file`'s
/// content.
pub(super) fn check(
    access: Access,
    token: Option<&str>,
    peer: IpAddr,
    headers: &HeaderMap,
) -> Result<(), Refusal> {
    // An IPv4 peer of a dual-stack listener arrives IPv4-mapped.
    let loopback = peer.to_canonical().is_loopback();
    match access {
        Access::Probe => Ok(()),
        Access::Read if loopback => Ok(()),
        // Fail closed: with no token to present, reads answer loopback peers only.
        Access::Read => token.map_or(Err(Refusal::ReadLoopbackOnly(peer)), |t| bearer(t, headers)),
        Access::Mutate if !loopback => Err(Refusal::MutateLoopbackOnly(peer)),
        Access::Mutate => token.map_or(Ok(()), |t| bearer(t, headers)),
    }
}

/// `Authorization: Bearer TOKEN`, compared in constant time.
fn bearer(token: &str, headers: &HeaderMap) -> Result<(), Refusal> {
    let presented = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if presented.is_some_and(|p| constant_time_eq(p.as_bytes(), token.as_bytes())) {
        Ok(())
    } else {
        Err(Refusal::Unauthorized)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_class_answers_whom_it_should() {
        let none = HeaderMap::new();
        let mut good = HeaderMap::new();
        good.insert(http::header::AUTHORIZATION, "Bearer t0k".parse().unwrap());
        let mut bad = HeaderMap::new();
        bad.insert(http::header::AUTHORIZATION, "Bearer t0".parse().unwrap());
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        let far: IpAddr = "198.18.0.1".parse().unwrap();
        let status = |r: Result<(), Refusal>| r.err().map(|r| AdminError::from(r).status.as_u16());
        let read = Access::of(&Method::GET, "/v1/policy");
        let write = Access::of(&Method::POST, "/v1/reload");
        assert_eq!(Access::of(&Method::GET, "/metrics"), Access::Probe);
        assert_eq!(Access::of(&Method::POST, "/v1/explain"), Access::Read);
        assert_eq!(Access::of(&Method::DELETE, "/v1/intent"), Access::Mutate);
        assert_eq!(status(check(Access::Probe, None, far, &none)), None);
        for tok in [None, Some("t0k")] {
            assert_eq!(status(check(read, tok, lo, &none)), None);
            assert_eq!(status(check(read, tok, mapped, &none)), None);
        }
        assert_eq!(status(check(read, None, far, &good)), Some(403));
        assert_eq!(status(check(read, Some("t0k"), far, &none)), Some(401));
        assert_eq!(status(check(read, Some("t0k"), far, &bad)), Some(401));
        assert_eq!(status(check(read, Some("t0k"), far, &good)), None);
        assert_eq!(status(check(write, Some("t0k"), far, &good)), Some(403));
        assert_eq!(status(check(write, None, lo, &none)), None);
        assert_eq!(status(check(write, Some("t0k"), lo, &none)), Some(401));
        assert_eq!(status(check(write, Some("t0k"), mapped, &good)), None);
    }
}
