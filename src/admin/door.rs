//! The agent-facing admin endpoints as the proxy's door to them (src/proxy/door.rs): an agent
//! whose HTTP client sends its `INTENTGATE_ADMIN_URL` calls through the proxy gets the same
//! answers as from the admin listener, judged by the same `access` rules for its own address.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Weak};

use http::{Method, Request, Response};
use hyper::body::Incoming;

use super::AdminState;
use super::reply::AdminError;
use crate::error::Body;
use crate::proxy::AdminDoor;

/// The endpoints an agent uses: its session intent and explanations. (Weak: the admin state
/// holds the proxy, which holds this.)
pub(crate) struct AgentEndpoints(Weak<AdminState>);

impl AdminDoor for AgentEndpoints {
    fn serves(&self, method: &Method, path: &str) -> bool {
        matches!(
            (method, path),
            (&Method::GET | &Method::PUT | &Method::DELETE, "/v1/intent")
                | (&Method::POST, "/v1/explain")
        )
    }

    fn answer(
        &self,
        req: Request<Incoming>,
        peer: IpAddr,
        decision_id: &str,
    ) -> Pin<Box<dyn Future<Output = Response<Body>> + Send>> {
        let state = self.0.upgrade();
        let id = decision_id.to_string();
        Box::pin(async move {
            match state {
                Some(state) => super::answer(&state, peer, req, Some(&id)).await,
                None => AdminError::stopping().response(Some(&id)),
            }
        })
    }
}

impl AgentEndpoints {
    /// The door's endpoints for `state`.
    pub(crate) fn of(state: &Arc<AdminState>) -> Arc<Self> {
        Arc::new(AgentEndpoints(Arc::downgrade(state)))
    }
}
