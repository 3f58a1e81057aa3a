//! The sidecar side of bundles: `GET policy.bundle_url` over verified HTTPS with
//! `If-None-Match`, unpacked and checked against this sidecar's namespace; the first bundle is
//! awaited at start, later ones are polled by the reloader (`Reloader::poll_bundles`), which
//! swaps the policy only once it builds. When the server is away, the last good bundle stays in
//! force.

use std::sync::Arc;
use std::time::Duration;

use std::path::PathBuf;

use bytes::Bytes;
use http::{HeaderValue, StatusCode, Uri, header};
use tracing::{info, warn};

use crate::tls::fetch::{Origin, bearer_header};
use super::{Bundle, MAX_BYTES};
use crate::config::Config;
use crate::identity::Agent;

/// How long one fetch may take, connect to last byte.
const FETCH_TIMEOUT: Duration = Duration::from_secs(15);

/// Where bundles come from, for which namespace, and the token that proves it.
pub struct Source {
    uri: Uri,
    origin: Origin,
    namespace: String,
    /// The projected service-account token presented to the server (read at each fetch: the
    /// kubelet rotates it).
    token_file: Option<PathBuf>,
}

/// What one poll brought.
pub enum Fetched {
    NotModified,
    /// A new archive and its ETag (unpacked by `unpack`).
    Archive(Option<String>, Bytes),
}

impl Source {
    /// `url` must be `https://HOST[:PORT]/PATH`; `ca` is PEM text or a PEM file trusted instead of
    /// the system roots.
    pub fn new(
        url: &str,
        ca: Option<&str>,
        namespace: &str,
        token_file: Option<PathBuf>,
    ) -> Result<Self, String> {
        let uri: Uri = url
            .parse()
            .map_err(|e| format!("policy.bundle_url '{url}': {e}"))?;
        if uri.scheme_str() != Some("https") {
            return Err(format!(
                "policy.bundle_url '{url}': must be an https:// URL (policy is not fetched in clear text)"
            ));
        }
        let tls = crate::tls::fetch::trust(ca).map_err(|e| format!("policy.bundle_ca: {e}"))?;
        let origin = Origin::of(&uri, tls).map_err(|e| format!("policy.bundle_url {e}"))?;
        Ok(Source {
            uri,
            origin,
            namespace: namespace.to_string(),
            token_file,
        })
    }

    /// One conditional GET.
    pub async fn fetch(&self, etag: Option<&str>) -> Result<Fetched, String> {
        let at = |e: String| format!("{}: {e}", self.uri);
        let mut headers = vec![(header::ACCEPT, HeaderValue::from_static("application/gzip"))];
        if let Some(file) = &self.token_file {
            headers.extend(bearer_header(file).map_err(at)?);
        }
        if let Some(tag) = etag.and_then(|t| HeaderValue::from_str(t).ok()) {
            headers.push((header::IF_NONE_MATCH, tag));
        }
        let path = self.uri.path_and_query().map_or("/", |p| p.as_str());
        let a = self
            .origin
            .get(path, &headers, MAX_BYTES as usize, FETCH_TIMEOUT)
            .await?;
        let tag = a
            .headers
            .get(header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        match a.status {
            StatusCode::NOT_MODIFIED => Ok(Fetched::NotModified),
            StatusCode::OK => Ok(Fetched::Archive(tag, a.body)),
            s => Err(at(format!(
                "answered {s}: {}",
                String::from_utf8_lossy(&a.body[..a.body.len().min(300)]).trim()
            ))),
        }
    }

    /// Unpacks and verifies an archive (off the async threads: it may be large).
    pub async fn unpack(&self, bytes: Bytes) -> Result<Bundle, String> {
        let ns = self.namespace.clone();
        tokio::task::spawn_blocking(move || Bundle::from_tar_gz(&bytes, &ns))
            .await
            .map_err(|e| format!("unpacking task failed: {e}"))?
            .map_err(|e| e.to_string())
    }

    /// The first bundle, retried (with backoff up to 2 s) until `wait` has passed.
    pub async fn first(&self, wait: Duration) -> Result<Bundle, String> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut backoff = Duration::from_millis(100);
        loop {
            let err = match self.fetch(None).await {
                Ok(Fetched::Archive(_, bytes)) => match self.unpack(bytes).await {
                    Ok(b) => return Ok(b),
                    // A wrong or broken bundle does not get better by asking again soon.
                    Err(e) => return Err(format!("{}: {e}", self.uri)),
                },
                Ok(Fetched::NotModified) => format!("{}: 304 to an unconditional GET", self.uri),
                Err(e) => e,
            };
            if tokio::time::Instant::now() + backoff > deadline {
                return Err(format!(
                    "no policy bundle within {wait:?} (policy.bundle_wait_ms); last error: {err}"
                ));
            }
            warn!(error = %err, "waiting for the first policy bundle");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }
}

/// What `first` fetched: the bundle, the source to poll and the ETag in force.
pub(crate) struct First {
    pub(crate) bundle: Arc<Bundle>,
    pub(crate) source: Source,
    pub(crate) etag: String,
}

/// With `policy.bundle_url` set, fetches the first bundle (retrying for `wait`).
pub(crate) async fn first(cfg: &Config, wait: Duration) -> Result<Option<First>, String> {
    let Some(url) = cfg.policy.bundle_url.clone() else {
        return Ok(None);
    };
    let agent =
        Agent::from_config(&cfg.agent, &|k| std::env::var(k).ok()).map_err(|e| e.to_string())?;
    let ns = agent.namespace.ok_or(
        "policy.bundle_url needs the agent's namespace (agent.namespace, --namespace or POD_NAMESPACE)",
    )?;
    let source = Source::new(
        &url,
        cfg.policy.bundle_ca.as_deref(),
        &ns,
        cfg.policy.bundle_token_file.clone(),
    )?;
    let bundle = source.first(wait).await?;
    info!(namespace = %ns, bundle = %bundle.revision, files = bundle.files.len(), "policy bundle loaded");
    let etag = bundle.etag();
    Ok(Some(First {
        bundle: Arc::new(bundle),
        source,
        etag,
    }))
}

/// For commands that do not serve (`check`, `explain`): one attempt, on a runtime of its own.
pub fn first_blocking(cfg: &Config) -> Result<Option<Arc<Bundle>>, String> {
    if cfg.policy.bundle_url.is_none() {
        return Ok(None);
    }
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?
        .block_on(first(cfg, Duration::ZERO))
        .map(|f| f.map(|f| f.bundle))
}
