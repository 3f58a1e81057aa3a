//! The control deployment's HTTPS server: `POST /mutate` (an AdmissionReview, answered in the
//! version asked: `admission.k8s.io/v1` or `v1beta1`), `GET`/`HEAD /bundles/NAMESPACE` (policy
//! bundles for sidecars, `bundle::serve`), `GET /jwks/NAMESPACE` (a namespace's attestation JWK
//! Set, `attestation`) and `GET /healthz`. TLS presents the certificate in
//! force at each handshake (`certs`); `:PORT` listens on IPv6 and IPv4.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use super::attestation::NoJwks;
use super::control::Control;
use super::floor::InjectConfig;
use super::patch::{Verdict, mutate};
use super::version::KubeVersion;
use crate::bundle::serve::Refusal;
use crate::error::{Blame, Body, ErrorReply, full, json_response};
use crate::vocab::ErrorCode;

/// The largest AdmissionReview accepted (pods with big specs stay well under this).
const MAX_BODY: usize = 4 * 1024 * 1024;
/// The AdmissionReview versions answered (each in its own version).
const VERSIONS: [&str; 2] = ["admission.k8s.io/v1", "admission.k8s.io/v1beta1"];

/// A request the control deployment does not answer as asked.
#[derive(Debug, thiserror::Error)]
enum ControlError {
    #[error("{0}")]
    BadReview(String),
    #[error(transparent)]
    Bundle(#[from] Refusal),
    #[error("{0}")]
    NotFound(&'static str),
    #[error("method {method} is not allowed here")]
    Method { method: Method, allow: &'static str },
    #[error("{0}")]
    NoJwks(String),
}

/// The one place the control deployment's errors become responses, in the one error shape
/// (src/error.rs), with a `decision_id` to find the log line by.
fn refuse(e: &ControlError) -> Response<Body> {
    let (status, code, hint) = match e {
        ControlError::BadReview(_) => (
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            "POST an AdmissionReview (admission.k8s.io/v1 or v1beta1) with a request object",
        ),
        ControlError::Bundle(r) => (r.status(), r.code(), r.hint()),
        ControlError::NotFound(_) => (
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            "this server answers POST /mutate, GET /bundles/NAMESPACE, GET /jwks/NAMESPACE and GET /healthz",
        ),
        ControlError::Method { .. } => (
            StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::MethodNotAllowed,
            "see the Allow header",
        ),
        ControlError::NoJwks(_) => (
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            "GET /jwks/NAMESPACE serves attestation.jwks_dir/NAMESPACE.json of the inject config",
        ),
    };
    let id = crate::ids::decision_id();
    if status.is_server_error() {
        warn!(decision_id = %id, error = %e, "request not answered");
    } else {
        debug!(decision_id = %id, error = %e, "request refused");
    }
    let blame = if status.is_server_error() {
        Blame::Proxy
    } else {
        Blame::Client
    };
    let reason = e.to_string();
    let mut resp = ErrorReply {
        status,
        blame,
        code,
        reason: &reason,
        hint,
        decision_id: &id,
        agent: None,
        intent: None,
    }
    .response();
    let h = resp.headers_mut();
    match e {
        ControlError::Method { allow, .. } => {
            h.insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        ControlError::Bundle(_) if status == StatusCode::UNAUTHORIZED => {
            h.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"intentgate-bundles\""),
            );
        }
        ControlError::Bundle(_) if status == StatusCode::SERVICE_UNAVAILABLE => {
            h.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        _ => {}
    }
    resp
}

/// Answers one AdmissionReview (the whole JSON document) in the version it was asked in.
/// `version` is the cluster's, when known: an injection it cannot run is refused.
pub fn review(
    body: &Value,
    cfg: &InjectConfig,
    version: Option<&KubeVersion>,
) -> Result<Value, String> {
    let api = body["apiVersion"].as_str().unwrap_or("");
    if !VERSIONS.contains(&api) || body["kind"] != "AdmissionReview" {
        return Err(format!(
            "expected kind AdmissionReview of apiVersion {}, got {} {}",
            VERSIONS.join(" or "),
            body["kind"],
            body["apiVersion"]
        ));
    }
    let req = &body["request"];
    if !req.is_object() {
        return Err("the AdmissionReview has no request".into());
    }
    let namespace = req["namespace"]
        .as_str()
        .or_else(|| req["object"]["metadata"]["namespace"].as_str())
        .unwrap_or("default");
    let mut response = json!({"uid": req["uid"], "allowed": true});
    if req["kind"]["kind"] == "Pod" && req["object"].is_object() {
        let mut verdict = mutate(&req["object"], namespace, cfg);
        if let (Verdict::Patch(_), Some(why)) = (&verdict, version.and_then(KubeVersion::refusal)) {
            // A sidecar this cluster cannot run would hold the pod in Init forever.
            verdict = Verdict::Refused(why);
        }
        match verdict {
            Verdict::Unchanged => {}
            Verdict::Patch(ops) | Verdict::Skipped(ops) => {
                let patch = serde_json::to_vec(&ops).unwrap_or_default();
                response["patchType"] = json!("JSONPatch");
                response["patch"] = json!(base64::engine::general_purpose::STANDARD.encode(patch));
            }
            Verdict::Refused(msg) => {
                info!(namespace, reason = %msg, "pod refused");
                response["allowed"] = json!(false);
                response["status"] = json!({"code": 403, "reason": "Forbidden", "message": msg});
            }
        }
    }
    Ok(json!({"apiVersion": api, "kind": "AdmissionReview", "response": response}))
}

async fn bundle(req: &Request<Incoming>, ns: &str, control: &Control) -> Response<Body> {
    let Some(bundles) = &control.bundles else {
        return refuse(&ControlError::NotFound(
            "this server serves no bundles (bundles.policy_dir is unset)",
        ));
    };
    let a = match bundles.answer(ns, req.headers()).await {
        Ok(a) => a,
        Err(r) => return refuse(&r.into()),
    };
    let head = req.method() == Method::HEAD;
    let len = a.gz.as_ref().map(Bytes::len);
    let body = match a.gz {
        Some(gz) if !head => gz,
        _ => Bytes::new(),
    };
    let mut resp = Response::new(full(body));
    *resp.status_mut() = a.status;
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&a.etag) {
        h.insert(header::ETAG, v);
    }
    if let Some(len) = len {
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/gzip"),
        );
        // A HEAD says what the GET would send.
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    resp
}

/// `GET /jwks/NS`: the namespace's attestation JWK Set (src/inject/attestation.rs).
fn jwks(ns: &str, control: &Control) -> Response<Body> {
    let cfg = control.config();
    let dir = cfg.attestation.as_ref().and_then(|a| a.jwks_dir.as_deref());
    match super::attestation::jwks(dir, ns) {
        Ok(text) => {
            let mut resp = Response::new(full(Bytes::from(text)));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/jwk-set+json"),
            );
            resp
        }
        Err(NoJwks::NotFound(why)) => refuse(&ControlError::NoJwks(why)),
        Err(NoJwks::Invalid(why)) => {
            warn!(namespace = ns, error = %why, "attestation JWK Set not served");
            refuse(&ControlError::NoJwks(format!(
                "namespace '{ns}' has no valid attestation JWK Set"
            )))
        }
    }
}

async fn handle(req: Request<Incoming>, control: Arc<Control>) -> Response<Body> {
    let path = req.uri().path().to_string();
    if let Some(ns) = path.strip_prefix("/jwks/") {
        return match *req.method() {
            Method::GET => jwks(ns, &control),
            _ => refuse(&ControlError::Method {
                method: req.method().clone(),
                allow: "GET",
            }),
        };
    }
    if let Some(ns) = path.strip_prefix("/bundles/") {
        return match *req.method() {
            Method::GET | Method::HEAD => bundle(&req, ns, &control).await,
            _ => refuse(&ControlError::Method {
                method: req.method().clone(),
                allow: "GET, HEAD",
            }),
        };
    }
    match (req.method(), path.as_str()) {
        (&Method::GET, "/healthz") => json_response(StatusCode::OK, &json!({"status": "ok"})),
        (&Method::POST, "/mutate") => {
            let bytes = match Limited::new(req.into_body(), MAX_BODY).collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => return refuse(&ControlError::BadReview(e.to_string())),
            };
            let body: Value = match serde_json::from_slice(&bytes) {
                Ok(v) => v,
                Err(e) => return refuse(&ControlError::BadReview(format!("not JSON: {e}"))),
            };
            let version = control.cluster.version();
            match review(&body, &control.config(), version.as_deref()) {
                Ok(v) => json_response(StatusCode::OK, &v),
                Err(e) => refuse(&ControlError::BadReview(e)),
            }
        }
        (m, "/mutate") => refuse(&ControlError::Method {
            method: m.clone(),
            allow: "POST",
        }),
        _ => refuse(&ControlError::NotFound("no such endpoint")),
    }
}

/// Binds `addr`; the unspecified IPv6 address (`:PORT`) accepts IPv4 too, and falls back to
/// IPv4 alone where the node has IPv6 disabled.
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let open = |addr: SocketAddr| -> std::io::Result<TcpListener> {
        let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        if addr.is_ipv6() && addr.ip().is_unspecified() {
            s.set_only_v6(false)?;
        }
        s.set_reuse_address(true)?;
        s.set_nonblocking(true)?;
        s.bind(&addr.into())?;
        s.listen(1024)?;
        TcpListener::from_std(s.into())
    };
    match open(addr) {
        Err(e) if addr.is_ipv6() && addr.ip().is_unspecified() => {
            warn!(error = %e, "no IPv6 here; listening on IPv4 only");
            open(SocketAddr::from((Ipv4Addr::UNSPECIFIED, addr.port())))
        }
        r => r,
    }
}

/// Serves until the process is stopped; `on_bound` gets the bound address (tests bind port 0).
pub async fn serve(
    addr: SocketAddr,
    control: Arc<Control>,
    on_bound: impl FnOnce(SocketAddr),
) -> anyhow::Result<()> {
    let listener = bind(addr)?;
    let local = listener.local_addr()?;
    on_bound(local);
    let cfg = control.config();
    info!(%local, bundles = ?cfg.bundles.policy_dir, "intentgate inject: serving /mutate, /bundles, /jwks and /healthz");
    let acceptor = TlsAcceptor::from(Arc::new(control.certs.server_config()?));
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let control = control.clone();
        tokio::spawn(async move {
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(t)) => t,
                    _ => return debug!(%peer, "TLS handshake failed or timed out"),
                };
            let svc = service_fn(move |req| {
                let control = control.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(req, control).await) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(tls), svc);
            if let Err(e) = conn.await {
                debug!(%peer, error = %e, "webhook connection ended with an error");
            }
        });
    }
}
