//! The admin listener: health, readiness and metrics (more endpoints land with issue 3).

use std::convert::Infallible;
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::debug;

use crate::error::{Body, full, json_response};
use crate::listen::Tracker;
use crate::metrics::Metrics;
use crate::proxy::Proxy;
use bytes::Bytes;

/// What the admin endpoints read.
pub struct AdminState {
    pub ready: std::sync::atomic::AtomicBool,
    pub metrics: Arc<Metrics>,
    pub tracker: Arc<Tracker>,
    pub proxy: Arc<Proxy>,
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
    let mut resp = Response::new(full(Bytes::from(state.metrics.render())));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    resp
}

async fn route(
    state: Arc<AdminState>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let ready = state.ready.load(std::sync::atomic::Ordering::Acquire);
    Ok(match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => metrics(&state),
        (&Method::GET, "/healthz") => json_response(StatusCode::OK, &json!({"status": "ok"})),
        (&Method::GET, "/readyz") if ready => {
            json_response(StatusCode::OK, &json!({"status": "ready"}))
        }
        (&Method::GET, "/readyz") => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"status": "starting"}),
        ),
        (_, path) => json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": "not_found", "reason": format!("no admin endpoint {path}"),
                    "hint": "see docs/operations.md for the admin API"}),
        ),
    })
}

/// Serves the admin API until `shutdown` flips.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AdminState>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r { Ok(c) => c, Err(_) => continue },
            _ = shutdown.changed() => break,
        };
        let state = state.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| route(state.clone(), req));
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                debug!(error = %e, "admin connection error");
            }
        });
    }
}
