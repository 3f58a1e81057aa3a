//! The admin listener: health, readiness and metrics for the kubelet and Prometheus; the session
//! intent, explain, policy status and reload for the agent and operators. Who may call what is
//! in `access`; the listener has the proxy listener's limits and a connection cap of its own.

mod access;
mod door;
mod reply;
mod token;

pub(crate) use door::AgentEndpoints;

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::debug;

use crate::error::{Body, full, json_response};
use crate::listen::{self, Tracker};
use crate::metrics::Metrics;
use crate::offline::{ExplainRequest, explain_json};
use crate::proxy::Proxy;
use crate::reload::Reloader;
use crate::vocab::ErrorCode;
use reply::AdminError;

/// What the admin endpoints read.
pub struct AdminState {
    pub ready: AtomicBool,
    pub metrics: Arc<Metrics>,
    pub tracker: Arc<Tracker>,
    pub proxy: Arc<Proxy>,
    pub reloader: Arc<Reloader>,
    /// When set, mutating endpoints also require `Authorization: Bearer TOKEN`, and it lets
    /// non-loopback peers read the policy (`access`).
    pub token: Option<String>,
    /// How long a request body may take to arrive (`limits.header_read_timeout_ms`).
    pub body_timeout: Duration,
}

fn metrics(state: &AdminState) -> Response<Body> {
    // Gauges that are cheapest to read at scrape time rather than to keep up to date per request.
    state
        .metrics
        .active_connections
        .set(state.tracker.live() as i64);
    state
        .metrics
        .tunnels_active
        .set(state.proxy.tunnels_active() as i64);
    let leaf = state.proxy.leaf_stats();
    state.metrics.sync_leaf_certs(leaf.mints, leaf.hits);
    let mut resp = Response::new(full(Bytes::from(state.metrics.render())));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    resp
}

async fn read_json<T: for<'de> Deserialize<'de>>(
    req: Request<Incoming>,
    wait: Duration,
) -> Result<T, AdminError> {
    let body = Limited::new(req.into_body(), 64 * 1024).collect();
    let bytes = match tokio::time::timeout(wait, body).await {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(e)) => {
            return Err(AdminError::client(
                StatusCode::BAD_REQUEST,
                ErrorCode::BadRequest,
                format!("cannot read the body: {e}"),
                "send a JSON body under 64 KiB",
            ));
        }
        Err(_) => {
            return Err(AdminError::client(
                StatusCode::REQUEST_TIMEOUT,
                ErrorCode::BodyTimeout,
                format!("the body did not arrive within {} ms", wait.as_millis()),
                "send the whole body with the request",
            ));
        }
    };
    serde_json::from_slice(&bytes).map_err(|e| {
        AdminError::client(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            format!("invalid JSON: {e}"),
            "see docs/operations.md for the request format",
        )
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IntentBody {
    #[serde(default)]
    name: String,
    task: Option<String>,
    ttl_seconds: Option<u64>,
    /// A signed intent token that declares the session intent (src/admin/token.rs).
    token: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExplainBody {
    method: String,
    url: String,
    #[serde(default)]
    headers: std::collections::BTreeMap<String, String>,
    intent: Option<String>,
    task: Option<String>,
}

fn intent_view(state: &AdminState) -> serde_json::Value {
    match state.proxy.session.get(Instant::now()) {
        Some(s) => json!({"session": s}),
        None => json!({"session": null}),
    }
}

async fn route(
    state: Arc<AdminState>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    Ok(answer(&state, peer.ip(), req, None).await)
}

/// Answers one call from `peer`: who may call what (`access`), then the endpoint. Errors become
/// responses here, with `decision_id` when the call has one (through the proxy).
async fn answer(
    state: &AdminState,
    peer: IpAddr,
    req: Request<Incoming>,
    decision_id: Option<&str>,
) -> Response<Body> {
    let access = access::Access::of(req.method(), req.uri().path());
    let result = match access::check(access, state.token.as_deref(), peer, req.headers()) {
        Ok(()) => endpoint(state, req).await,
        Err(refusal) => Err(refusal.into()),
    };
    result.unwrap_or_else(|e| e.response(decision_id))
}

async fn endpoint(
    state: &AdminState,
    req: Request<Incoming>,
) -> Result<Response<Body>, AdminError> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let wait = state.body_timeout;
    let ready = state.ready.load(Ordering::Acquire);
    Ok(match (&method, path.as_str()) {
        (&Method::GET, "/metrics") => metrics(state),
        (&Method::GET, "/healthz") => json_response(StatusCode::OK, &json!({"status": "ok"})),
        (&Method::GET, "/readyz") if state.proxy.audit.blocked() => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"status": "audit_unavailable", "reason": "the audit log cannot be written; requests are refused (audit.on_failure: block)"}),
        ),
        (&Method::GET, "/readyz") if ready => {
            json_response(StatusCode::OK, &json!({"status": "ready"}))
        }
        (&Method::GET, "/readyz") => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"status": "starting"}),
        ),
        (&Method::GET, "/v1/intent") => json_response(StatusCode::OK, &intent_view(state)),
        (&Method::GET, "/.well-known/jwks.json") => {
            json_response(StatusCode::OK, &state.proxy.attestation.jwks())
        }
        (&Method::PUT, "/v1/intent") => {
            let b = read_json::<IntentBody>(req, wait).await?;
            if let Some(t) = &b.token {
                return token::set_session(state, t, &b.name, b.ttl_seconds);
            }
            if b.name.trim().is_empty() {
                return Err(AdminError::client(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::BadRequest,
                    "the intent name is empty",
                    "send {\"name\": \"INTENT\", \"task\": \"REF\", \"ttl_seconds\": 600}",
                ));
            }
            set_session(state, &b)?
        }
        (&Method::DELETE, "/v1/intent") => {
            let had = state.proxy.session.clear();
            state.proxy.budgets.end_session();
            json_response(StatusCode::OK, &json!({"session": null, "cleared": had}))
        }
        (&Method::POST, "/v1/explain") => explain(state, read_json(req, wait).await?)?,
        (&Method::GET, "/v1/policy") => policy(state),
        (&Method::GET, "/v1/budgets") => json_response(
            StatusCode::OK,
            &json!({"budgets": state.proxy.budgets.states(std::time::SystemTime::now())}),
        ),
        (&Method::POST, "/v1/reload") => {
            let status = state.reloader.reload("admin api").await;
            let code = if status.result == "success" {
                StatusCode::OK
            } else {
                StatusCode::UNPROCESSABLE_ENTITY
            };
            json_response(code, &status)
        }
        (_, p) => {
            return Err(AdminError::client(
                StatusCode::NOT_FOUND,
                ErrorCode::NotFound,
                format!("no admin endpoint {method} {p}"),
                "see docs/operations.md for the admin API",
            ));
        }
    })
}

/// Sets the session intent: only one in the catalog that the agent may claim.
fn set_session(state: &AdminState, b: &IntentBody) -> Result<Response<Body>, AdminError> {
    let name = b.name.trim();
    let live = state.proxy.live.load();
    if let Err(r) = live.policy.claim(&live.agent, name) {
        return Err(AdminError::claim(r, &live.agent.id, name));
    }
    if let Some(r) = state.proxy.intent_tokens.bare_session(&live, name) {
        return Err(AdminError::token(r, &live.agent.id));
    }
    let s = state.proxy.session.set(
        name,
        b.task.as_deref(),
        b.ttl_seconds.map(Duration::from_secs),
    );
    state.proxy.budgets.end_session();
    Ok(json_response(StatusCode::OK, &json!({"session": s})))
}

fn explain(state: &AdminState, b: ExplainBody) -> Result<Response<Body>, AdminError> {
    let live = state.proxy.live.load();
    let headers: Vec<String> = b.headers.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    let cfg = state.reloader.config();
    let req = ExplainRequest {
        method: &b.method,
        url: &b.url,
        intent: b.intent.as_deref(),
        task: b.task.as_deref(),
        headers: &headers,
    };
    match explain_json(&cfg, &live.agent, &live.policy, &req) {
        Ok((_, out)) => Ok(json_response(StatusCode::OK, &out)),
        Err(e) => Err(AdminError::client(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            e,
            "send {\"method\": \"GET\", \"url\": \"https://host/path\", \"intent\": \"NAME\"}",
        )),
    }
}

fn policy(state: &AdminState) -> Response<Body> {
    let live = state.proxy.live.load();
    let p = &live.policy;
    let cfg = state.reloader.config();
    let bundle = state.reloader.bundle().map(|b| {
        json!({"url": cfg.policy.bundle_url, "namespace": b.namespace, "revision": b.revision,
               "files": b.files.len()})
    });
    json_response(
        StatusCode::OK,
        &json!({
            "revision": p.revision(),
            "modules": p.modules(),
            "data_sources": p.data_sources(),
            "intents": p.catalog().names(),
            "agent": live.agent,
            "last_reload": state.reloader.status(),
            "bundle": bundle,
        }),
    )
}

/// Serves the admin API until `shutdown` flips, with the proxy listener's limits (`builder`:
/// header-read timeout, head sizes; back-off on accept errors) and a connection cap of its own,
/// apart from the proxy's, so no number of admin connections can take the proxy's places (or
/// more file descriptors than `cap`).
pub async fn serve(
    listener: TcpListener,
    state: Arc<AdminState>,
    builder: http1::Builder,
    cap: usize,
    mut shutdown: watch::Receiver<bool>,
) {
    let builder = Arc::new(builder);
    let tracker = Arc::new(Tracker::default());
    while let Some((stream, peer)) = listen::accept(&listener, &mut shutdown, "admin").await {
        let live = match tracker.admit(cap) {
            Ok(live) => live,
            Err(live) => {
                state.metrics.refused(ErrorCode::TooManyAdminConnections);
                listen::refuse_overloaded(stream, live);
                continue;
            }
        };
        let (state, builder) = (state.clone(), builder.clone());
        tokio::spawn(async move {
            let _live = live;
            let svc = service_fn(move |req| route(state.clone(), peer, req));
            if let Err(e) = builder.serve_connection(TokioIo::new(stream), svc).await {
                debug!(error = %e, "admin connection error");
            }
        });
    }
}
