//! The control deployment's HTTPS server: `POST /mutate` (AdmissionReview v1 for pods),
//! `GET /bundles/NAMESPACE` (policy bundles for sidecars) and `GET /healthz`, on rustls with the
//! certificate the API server and the sidecars were told to trust.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use super::floor::InjectConfig;
use super::patch::{Verdict, mutate};

/// The largest AdmissionReview accepted (pods with big specs stay well under this).
const MAX_BODY: usize = 4 * 1024 * 1024;

/// Answers one AdmissionReview (the whole JSON document) with one.
pub fn review(body: &Value, cfg: &InjectConfig) -> Value {
    let req = &body["request"];
    let uid = req["uid"].clone();
    let namespace = req["namespace"]
        .as_str()
        .or_else(|| req["object"]["metadata"]["namespace"].as_str())
        .unwrap_or("default");
    let mut response = json!({"uid": uid, "allowed": true});
    if req["kind"]["kind"] == "Pod" && req["object"].is_object() {
        match mutate(&req["object"], namespace, cfg) {
            Verdict::Unchanged => {}
            Verdict::Patch(ops) => {
                let patch = serde_json::to_vec(&ops).unwrap_or_default();
                response["patchType"] = json!("JSONPatch");
                response["patch"] = json!(base64::engine::general_purpose::STANDARD.encode(patch));
            }
            Verdict::Refused(msg) => {
                info!(namespace, reason = %msg, "pod refused by the platform floor");
                response["allowed"] = json!(false);
                response["status"] = json!({"code": 403, "reason": "Forbidden", "message": msg});
            }
        }
    }
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})
}

fn reply(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

/// `GET /bundles/NS`: the namespace's policy bundle (global files + `namespaces/NS/`), with
/// its revision as ETag; 304 when `If-None-Match` names it.
async fn bundle(req: &Request<Incoming>, ns: &str, cfg: &InjectConfig) -> Response<Full<Bytes>> {
    let Some(dir) = cfg.bundles.policy_dir.clone() else {
        return reply(
            StatusCode::NOT_FOUND,
            &json!({"error": "not_found", "reason": "this server serves no bundles (bundles.policy_dir is unset)"}),
        );
    };
    if !crate::bundle::valid_namespace(ns) {
        return reply(
            StatusCode::BAD_REQUEST,
            &json!({"error": "bad_request", "reason": format!("'{ns}' is not a namespace name"),
                    "hint": "GET /bundles/NAMESPACE with a Kubernetes namespace name"}),
        );
    }
    let wanted = req
        .headers()
        .get(http::header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let ns = ns.to_string();
    let built = tokio::task::spawn_blocking(move || {
        let b = crate::bundle::Bundle::from_dir(&dir, &ns)?;
        let etag = b.etag();
        if wanted.as_deref() == Some(etag.as_str()) {
            return Ok((etag, None));
        }
        Ok::<_, crate::bundle::BundleError>((etag, Some(b.to_tar_gz()?)))
    })
    .await;
    let built = built
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()));
    let (etag, body) = match built {
        Ok(b) => b,
        Err(reason) => {
            warn!(error = %reason, "cannot build a policy bundle");
            return reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                &json!({"error": "bundle_unavailable", "reason": reason}),
            );
        }
    };
    let mut resp = match body {
        None => {
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = StatusCode::NOT_MODIFIED;
            r
        }
        Some(gz) => {
            let mut r = Response::new(Full::new(Bytes::from(gz)));
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/gzip"),
            );
            r
        }
    };
    if let Ok(v) = http::HeaderValue::from_str(&etag) {
        resp.headers_mut().insert(http::header::ETAG, v);
    }
    resp
}

async fn handle(req: Request<Incoming>, cfg: Arc<InjectConfig>) -> Response<Full<Bytes>> {
    if req.method() == Method::GET {
        if let Some(ns) = req.uri().path().strip_prefix("/bundles/") {
            let ns = ns.to_string();
            return bundle(&req, &ns, &cfg).await;
        }
    }
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => reply(StatusCode::OK, &json!({"status": "ok"})),
        (&Method::POST, "/mutate") => {
            let bytes = match Limited::new(req.into_body(), MAX_BODY).collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => {
                    let e = json!({"error": "bad_request", "reason": e.to_string()});
                    return reply(StatusCode::BAD_REQUEST, &e);
                }
            };
            match serde_json::from_slice::<Value>(&bytes) {
                Ok(v) if v["request"].is_object() => reply(StatusCode::OK, &review(&v, &cfg)),
                _ => reply(
                    StatusCode::BAD_REQUEST,
                    &json!({"error": "bad_request", "reason": "expected an AdmissionReview v1 JSON document"}),
                ),
            }
        }
        _ => reply(StatusCode::NOT_FOUND, &json!({"error": "not_found"})),
    }
}

/// Builds the rustls server config from PEM files.
pub fn tls_config(cert: &Path, key: &Path) -> anyhow::Result<rustls::ServerConfig> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("{}: {e}", cert.display()))?;
    let key =
        PrivateKeyDer::from_pem_file(key).map_err(|e| anyhow::anyhow!("{}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// Serves until the process is stopped; `on_bound` gets the bound address (tests bind port 0).
pub async fn serve(
    addr: SocketAddr,
    tls: rustls::ServerConfig,
    cfg: InjectConfig,
    on_bound: impl FnOnce(SocketAddr),
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    on_bound(local);
    info!(%local, bundles = ?cfg.bundles.policy_dir, "intentgate inject: serving /mutate, /bundles and /healthz");
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    let cfg = Arc::new(cfg);
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
        let cfg = cfg.clone();
        tokio::spawn(async move {
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(t)) => t,
                    _ => return debug!(%peer, "TLS handshake failed or timed out"),
                };
            let svc = service_fn(move |req| {
                let cfg = cfg.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(req, cfg).await) }
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
