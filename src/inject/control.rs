//! What the control deployment serves from, and how it follows its mounted files without a
//! restart: the serving certificate (`certs`), the inject config (the platform floor; parsed
//! whole and swapped in, or refused with the file and line while the one in force stays), the
//! policy directory served as bundles (`bundle::store`) and the issuer's key file. Each is
//! polled every `--watch-interval`; the kubelet's ConfigMap and Secret updates (a `..data`
//! symlink swapped to a new directory) are seen whole.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tracing::{error, info, warn};

use super::certs::Certs;
use super::floor::{self, InjectConfig};
use super::version::Cluster;
use crate::bundle::auth::Auth;
use crate::bundle::serve::Bundles;
use crate::bundle::store::{Snapshot, Store};

/// The state of `intentgate inject`.
pub struct Control {
    config_path: Option<PathBuf>,
    config: ArcSwap<InjectConfig>,
    /// The config file's bytes when last read (good or refused).
    config_seen: Mutex<Vec<u8>>,
    pub certs: Arc<Certs>,
    /// With `bundles.policy_dir`.
    pub bundles: Option<Arc<Bundles>>,
    pub cluster: Arc<Cluster>,
}

impl Control {
    /// Loads everything; an error names the file (and field) and means exit 2. A policy
    /// directory that does not build is not an error here: the webhook serves, bundles wait.
    pub fn load(cert: &Path, key: &Path, config: Option<&Path>) -> Result<Self, String> {
        let cfg = floor::load(config).map_err(|e| e.to_string())?;
        let seen = match config {
            Some(p) => std::fs::read(p).unwrap_or_default(),
            None => Vec::new(),
        };
        let certs = Arc::new(Certs::load(cert, key)?);
        let bundles = match (&cfg.bundles.policy_dir, &cfg.bundles.auth) {
            (Some(dir), Some(auth)) => {
                let auth = Arc::new(Auth::new(auth.clone()));
                auth.refresh_file()
                    .map_err(|e| format!("bundles.auth.keys.jwks_file: {e}"))?;
                let store = Store::new(dir, Box::new(builds));
                store.refresh();
                Some(Arc::new(Bundles { store, auth }))
            }
            _ => None,
        };
        Ok(Control {
            config_path: config.map(Path::to_path_buf),
            config: ArcSwap::from_pointee(cfg),
            config_seen: Mutex::new(seen),
            certs,
            bundles,
            cluster: Arc::new(Cluster::default()),
        })
    }

    /// The inject config in force.
    pub fn config(&self) -> Arc<InjectConfig> {
        self.config.load_full()
    }

    /// Starts what runs beside the server: the watch loop, fetching the issuer's keys and the
    /// Kubernetes version check.
    pub fn spawn(self: &Arc<Self>, interval: Duration) {
        tokio::spawn(self.clone().watch(interval));
        if let Some(b) = &self.bundles {
            tokio::spawn(b.auth.clone().fetch_loop());
        }
        if let Some(api) = self.config().kubernetes.clone() {
            tokio::spawn(self.cluster.clone().watch(api));
        }
    }

    async fn watch(self: Arc<Self>, interval: Duration) {
        loop {
            tokio::time::sleep(interval).await;
            let this = self.clone();
            // File reads and policy builds: off the async threads.
            let _ = tokio::task::spawn_blocking(move || this.refresh()).await;
        }
    }

    /// One round: every watched file read again, what changed swapped in if it is good.
    pub fn refresh(&self) {
        self.certs.refresh();
        self.refresh_config();
        if let Some(b) = &self.bundles {
            b.store.refresh();
            if let Err(e) = b.auth.refresh_file() {
                error!(error = %e, "issuer keys refused; the keys in force stay");
            }
        }
    }

    fn refresh_config(&self) {
        let Some(path) = &self.config_path else {
            return;
        };
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) => {
                return warn!(file = %path.display(), error = %e, "inject config unreadable; the one in force stays");
            }
        };
        let Ok(mut seen) = self.config_seen.lock() else {
            return;
        };
        if *seen == bytes {
            return;
        }
        *seen = bytes.clone();
        let file = path.display().to_string();
        let text = String::from_utf8_lossy(&bytes);
        let new = match floor::parse(&file, &text) {
            Ok(c) => c,
            Err(e) => {
                return error!(error = %e, "inject config refused; the one in force stays");
            }
        };
        let old = self.config();
        let later: Vec<&str> = [
            (
                "bundles.policy_dir",
                old.bundles.policy_dir != new.bundles.policy_dir,
            ),
            ("bundles.auth", old.bundles.auth != new.bundles.auth),
            ("kubernetes", old.kubernetes != new.kubernetes),
        ]
        .into_iter()
        .filter_map(|(k, changed)| changed.then_some(k))
        .collect();
        if !later.is_empty() {
            warn!(
                "inject config: changes to {} take effect after a restart",
                later.join(", ")
            );
        }
        self.config.store(Arc::new(new));
        info!(file = %file, namespaces = self.config().namespaces.len(), "inject config reloaded");
    }
}

/// Builds the policy of every namespace with a folder, and of one without (the global files
/// alone), as a sidecar of that namespace would; the first failure, naming the namespace.
fn builds(snapshot: &Snapshot) -> Result<(), String> {
    let folderless = snapshot.folderless();
    for ns in snapshot.namespaces().chain([folderless.as_str()]) {
        let bundle = snapshot.bundle(ns).map_err(|e| e.to_string())?;
        let mut cfg = crate::config::Config::default();
        cfg.limits.workers = 1;
        let agent = crate::identity::Agent {
            id: "bundle-check".into(),
            namespace: Some(ns.to_string()),
            service_account: None,
            owner: Some("intentgate".into()),
            owner_source: Some(crate::identity::OwnerSource::Config),
            spiffe_id: None,
            labels: std::collections::BTreeMap::new(),
            expires: None,
        };
        crate::policy::PolicySet::load_with(&cfg, Some(&bundle), &agent, false).map_err(|e| {
            if ns == folderless {
                format!("the global policy does not build: {e}")
            } else {
                format!("the policy of namespace '{ns}' does not build: {e}")
            }
        })?;
    }
    Ok(())
}
