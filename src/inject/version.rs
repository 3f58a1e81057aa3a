//! The API server's version (`kubernetes:` in the inject config), asked at start and every ten
//! minutes. The sidecar is a native sidecar — an init container with `restartPolicy: Always` —
//! which Kubernetes enables by default from 1.29. An older API server drops the field, and the
//! sidecar, now an init container that never exits, would hold the pod in `Init` forever; so
//! the webhook refuses to inject into such a cluster, saying why. While the version is not known
//! (the API server not reached yet), pods are injected: on an old cluster they would not start,
//! never start ungoverned.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use http::header;
use serde_json::Value;
use tracing::{info, warn};

use crate::tls::fetch::Endpoint;

/// The oldest Kubernetes with native sidecars on by default.
pub const MINIMUM: (u32, u32) = (1, 29);
const EVERY: Duration = Duration::from_secs(600);
const TIMEOUT: Duration = Duration::from_secs(10);

/// A Kubernetes version as `/version` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeVersion {
    pub major: u32,
    pub minor: u32,
    /// `gitVersion`, e.g. `v1.28.3-eks-1234`, for messages.
    pub git: String,
}

impl KubeVersion {
    /// Reads `{"major": "1", "minor": "29+", "gitVersion": …}` (providers append `+`).
    pub fn parse(doc: &Value) -> Option<Self> {
        let num = |k: &str| -> Option<u32> {
            let s = doc[k].as_str()?;
            let digits: String = s.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        };
        Some(KubeVersion {
            major: num("major")?,
            minor: num("minor")?,
            git: doc["gitVersion"].as_str().unwrap_or("").to_string(),
        })
    }

    /// Why pods cannot be injected into this cluster, if they cannot.
    pub fn refusal(&self) -> Option<String> {
        ((self.major, self.minor) < MINIMUM).then(|| {
            format!(
                "intentgate needs Kubernetes {}.{} or newer: its sidecar is a native sidecar (an init container with restartPolicy: Always), and this API server is {} ({}.{}); upgrade the cluster, or remove the intentgate.io/inject label from this namespace or pod",
                MINIMUM.0, MINIMUM.1, self.git, self.major, self.minor
            )
        })
    }
}

/// The version last read from the API server.
#[derive(Default)]
pub struct Cluster {
    version: ArcSwapOption<KubeVersion>,
}

impl Cluster {
    pub fn version(&self) -> Option<Arc<KubeVersion>> {
        self.version.load_full()
    }

    /// Asks `GET /version` now and every ten minutes (sooner again after a failure).
    pub async fn watch(self: Arc<Self>, api: Endpoint) {
        loop {
            let wait = match ask(&api).await {
                Ok(v) => {
                    let v = Arc::new(v);
                    self.version.store(Some(v.clone()));
                    match v.refusal() {
                        Some(why) => warn!(version = %v.git, "{why}"),
                        None => {
                            info!(version = %v.git, "Kubernetes version supports native sidecars")
                        }
                    }
                    EVERY
                }
                Err(e) => {
                    warn!(error = %e, "cannot read the Kubernetes version; pods are injected meanwhile");
                    Duration::from_secs(30)
                }
            };
            tokio::time::sleep(wait).await;
        }
    }
}

async fn ask(api: &Endpoint) -> Result<KubeVersion, String> {
    let (origin, uri) = api.origin()?;
    let mut headers = api.bearer()?;
    headers.push((
        header::ACCEPT,
        http::HeaderValue::from_static("application/json"),
    ));
    let path = format!("{}/version", uri.path().trim_end_matches('/'));
    let a = origin.get(&path, &headers, 64 * 1024, TIMEOUT).await?;
    if !a.status.is_success() {
        return Err(format!("{}{path}: answered {}", api.url, a.status));
    }
    let doc: Value =
        serde_json::from_slice(&a.body).map_err(|e| format!("{}{path}: {e}", api.url))?;
    KubeVersion::parse(&doc).ok_or_else(|| format!("{}{path}: no major/minor in {doc}", api.url))
}
