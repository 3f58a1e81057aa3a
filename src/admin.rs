//! The admin listener: health, readiness and metrics for the kubelet and Prometheus; the session
//! intent, explain, policy status and reload for the agent and operators. Mutating endpoints answer
//! loopback peers only, whatever the bind address, and optionally require a bearer token.

use std::convert::Infallible;
use std::net::SocketAddr;
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
use crate::listen::Tracker;
use crate::metrics::Metrics;
use crate::offline::{ExplainRequest, explain_json};
use crate::proxy::Proxy;
use crate::reload::Reloader;

/// What the admin endpoints read.
pub struct AdminState {
    pub ready: AtomicBool,
    pub metrics: Arc<Metrics>,
    pub tracker: Arc<Tracker>,
    pub proxy: Arc<Proxy>,
    pub reloader: Arc<Reloader>,
    /// When set, mutating endpoints also require `Authorization: Bearer TOKEN`.
    pub token: Option<String>,
}

fn error(status: StatusCode, code: &str, reason: impl Into<String>, hint: &str) -> Response<Body> {
    json_response(
        status,
        &json!({"error": code, "reason": reason.into(), "hint": hint}),
    )
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
    let certs = &state.metrics.leaf_certs;
    certs.with_label_values(&["mint"]).set(leaf.mints as i64);
    certs
        .with_label_values(&["cache_hit"])
        .set(leaf.hits as i64);
    let mut resp = Response::new(full(Bytes::from(state.metrics.render())));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    resp
}

async fn read_json<T: for<'de> Deserialize<'de>>(
    req: Request<Incoming>,
) -> Result<T, Response<Body>> {
    let bytes = Limited::new(req.into_body(), 64 * 1024)
        .collect()
        .await
        .map_err(|e| {
            error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("cannot read the body: {e}"),
                "send a JSON body under 64 KiB",
            )
        })?
        .to_bytes();
    serde_json::from_slice(&bytes).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("invalid JSON: {e}"),
            "see docs/operations.md for the request format",
        )
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IntentBody {
    name: String,
    task: Option<String>,
    ttl_seconds: Option<u64>,
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
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let mutating = matches!(
        (&method, path.as_str()),
        (&Method::PUT | &Method::DELETE, "/v1/intent") | (&Method::POST, "/v1/reload")
    );
    if mutating {
        if let Some(refusal) = authorize(&state, peer, &req) {
            return Ok(refusal);
        }
    }
    let ready = state.ready.load(Ordering::Acquire);
    Ok(match (&method, path.as_str()) {
        (&Method::GET, "/metrics") => metrics(&state),
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
        (&Method::GET, "/v1/intent") => json_response(StatusCode::OK, &intent_view(&state)),
        (&Method::PUT, "/v1/intent") => match read_json::<IntentBody>(req).await {
            Ok(b) if !b.name.trim().is_empty() => {
                let s = state.proxy.session.set(
                    b.name.trim(),
                    b.task.as_deref(),
                    b.ttl_seconds.map(Duration::from_secs),
                );
                json_response(StatusCode::OK, &json!({"session": s}))
            }
            Ok(_) => error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "the intent name is empty",
                "send {\"name\": \"INTENT\", \"task\": \"REF\", \"ttl_seconds\": 600}",
            ),
            Err(resp) => resp,
        },
        (&Method::DELETE, "/v1/intent") => {
            let had = state.proxy.session.clear();
            json_response(StatusCode::OK, &json!({"session": null, "cleared": had}))
        }
        (&Method::POST, "/v1/explain") => match read_json::<ExplainBody>(req).await {
            Ok(b) => explain(&state, b),
            Err(resp) => resp,
        },
        (&Method::GET, "/v1/policy") => policy(&state),
        (&Method::POST, "/v1/reload") => {
            let status = state.reloader.reload("admin api").await;
            let code = if status.result == "success" {
                StatusCode::OK
            } else {
                StatusCode::UNPROCESSABLE_ENTITY
            };
            json_response(code, &status)
        }
        (_, p) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no admin endpoint {method} {p}"),
            "see docs/operations.md for the admin API",
        ),
    })
}

/// Loopback peers only (also through IPv4-mapped IPv6), then the bearer token if one is set.
fn authorize(
    state: &AdminState,
    peer: SocketAddr,
    req: &Request<Incoming>,
) -> Option<Response<Body>> {
    let loopback = match peer.ip() {
        std::net::IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or(v6.is_loopback(), |v4| v4.is_loopback()),
        ip => ip.is_loopback(),
    };
    if !loopback {
        return Some(error(
            StatusCode::FORBIDDEN,
            "admin_loopback_only",
            format!(
                "mutating admin endpoints accept loopback peers only; {} is not",
                peer.ip()
            ),
            "call the admin API from inside the pod or host (127.0.0.1)",
        ));
    }
    let token = state.token.as_deref()?;
    let presented = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if presented.is_some_and(|p| constant_time_eq(p.as_bytes(), token.as_bytes())) {
        None
    } else {
        Some(error(
            StatusCode::UNAUTHORIZED,
            "admin_unauthorized",
            "a valid bearer token is required",
            "send Authorization: Bearer TOKEN (admin.token_file)",
        ))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn explain(state: &AdminState, b: ExplainBody) -> Response<Body> {
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
        Ok((_, out)) => json_response(StatusCode::OK, &out),
        Err(e) => error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            e,
            "send {\"method\": \"GET\", \"url\": \"https://host/path\", \"intent\": \"NAME\"}",
        ),
    }
}

fn policy(state: &AdminState) -> Response<Body> {
    let live = state.proxy.live.load();
    let p = &live.policy;
    let cfg = state.reloader.config();
    let bundle = cfg.policy.bundle.as_ref().map(|b| {
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

/// Serves the admin API until `shutdown` flips.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AdminState>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r { Ok(c) => c, Err(_) => continue },
            _ = shutdown.changed() => break,
        };
        let state = state.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| route(state.clone(), peer, req));
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                debug!(error = %e, "admin connection error");
            }
        });
    }
}
