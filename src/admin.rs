//! The admin listener: health and readiness for the kubelet (more endpoints land with issue 3).

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

use crate::error::{Body, json_response};

/// What the admin endpoints read.
pub struct AdminState {
    pub ready: std::sync::atomic::AtomicBool,
}

async fn route(
    state: Arc<AdminState>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let ready = state.ready.load(std::sync::atomic::Ordering::Acquire);
    Ok(match (req.method(), req.uri().path()) {
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
