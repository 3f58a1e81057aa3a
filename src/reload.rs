//! Hot reload: the config file and policy directories are watched (polled), and on a change, on
//! SIGHUP or on `POST /v1/reload` the policy is rebuilt off the request path and swapped in
//! atomically. A broken one is refused and the last good one stays in force. Requests in flight
//! finish on the policy they started with.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::bundle::{self, Bundle, fetch::Source};
use crate::config::{Config, Loaded};
use crate::identity::Agent;
use crate::policy::PolicySet;
use crate::proxy::Proxy;
use crate::proxy::gate::LivePolicy;
use crate::watch::Watched;

/// Loads the configuration again (file + the same command-line overrides).
pub type LoadFn = Box<dyn Fn() -> Result<Loaded, String> + Send + Sync>;

/// The outcome of the last reload attempt, shown at `GET /v1/policy`.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ReloadStatus {
    pub result: &'static str,
    pub trigger: String,
    pub at: String,
    pub message: String,
    pub revision: String,
}

/// The live state for `cfg`, with the policy `bundle` in force (`policy.bundle_url`).
pub fn build_live(cfg: &Config, bundle: Option<&Bundle>) -> anyhow::Result<LivePolicy> {
    let agent =
        Agent::from_config(&cfg.agent, &|k| std::env::var(k).ok()).map_err(anyhow::Error::msg)?;
    let policy = PolicySet::load_with(cfg, bundle, &agent, false)
        .map_err(|e| anyhow::anyhow!("invalid policy: {e}"))?;
    // The shadow policy: the same configuration with the candidate's paths (and never a
    // bundle), compiled for the same agent.
    let shadow = match &cfg.policy.shadow {
        None => None,
        Some(s) => {
            let mut c = cfg.clone();
            c.policy.paths.clone_from(&s.paths);
            c.policy.bundle_url = None;
            c.policy.shadow = None;
            let set = PolicySet::load_with(&c, None, &agent, false)
                .map_err(|e| anyhow::anyhow!("invalid shadow policy (policy.shadow): {e}"))?;
            Some(set)
        }
    };
    Ok(LivePolicy::new(
        policy,
        agent,
        cfg.intent.clone().map(|i| (i, cfg.task.clone())),
    )
    .with_shadow(shadow))
}

pub struct Reloader {
    load: LoadFn,
    proxy: Arc<Proxy>,
    /// The configuration in force, without its catalog (to tell which changes need a restart).
    current: Mutex<Arc<Config>>,
    /// The policy bundle in force (`policy.bundle_url`), set at start and by the poller.
    bundle: Mutex<Option<Arc<Bundle>>>,
    /// The config file (or `<embedded>`): watched with the policy paths.
    source: String,
    last: Mutex<ReloadStatus>,
    /// One reload at a time.
    busy: tokio::sync::Mutex<()>,
}

impl Reloader {
    pub fn new(
        load: LoadFn,
        proxy: Arc<Proxy>,
        current: Arc<Config>,
        bundle: Option<Arc<Bundle>>,
        source: String,
    ) -> Self {
        let revision = proxy.live.load().policy.revision().to_string();
        Self {
            load,
            proxy,
            current: Mutex::new(current),
            bundle: Mutex::new(bundle),
            source,
            last: Mutex::new(ReloadStatus {
                result: "initial",
                trigger: "start".into(),
                at: now(),
                message: "loaded at start".into(),
                revision,
            }),
            busy: tokio::sync::Mutex::new(()),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<Config> {
        self.current.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// The policy bundle in force, if any.
    pub(crate) fn bundle(&self) -> Option<Arc<Bundle>> {
        self.bundle.lock().ok().and_then(|b| b.clone())
    }

    pub fn status(&self) -> ReloadStatus {
        self.last.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// What to watch for changes: the config file and every policy path of the config in force
    /// (taken from it, not by loading the file again: with a large catalog that costs
    /// tens of MiB).
    pub fn watched(&self) -> Watched {
        let mut w = Watched {
            paths: {
                let c = self.config();
                let shadow = c.policy.shadow.iter().flat_map(|s| s.paths.iter().cloned());
                c.policy.paths.iter().cloned().chain(shadow).collect()
            },
        };
        if !self.source.starts_with('<') {
            w.paths.push(self.source.clone().into());
        }
        w
    }

    /// The revision of the bundle in force (`policy.bundle_url`).
    pub fn bundle_revision(&self) -> Option<String> {
        self.bundle().map(|b| b.revision.clone())
    }

    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.proxy.metrics
    }

    /// Rebuilds and swaps the policy; on any error keeps the one in force.
    pub async fn reload(self: &Arc<Self>, trigger: &str) -> ReloadStatus {
        self.rebuild(trigger, None).await
    }

    /// Rebuilds the policy with a new bundle (`policy.bundle_url`); it stays in force only if
    /// the policy builds, else the last good bundle does.
    pub async fn reload_bundle(self: &Arc<Self>, bundle: Arc<Bundle>) -> ReloadStatus {
        self.rebuild("bundle", Some(bundle)).await
    }

    /// Records a reload that failed before a policy could be built (e.g. a refused bundle).
    pub fn record_failure(&self, trigger: &str, message: String) {
        self.finish(ReloadStatus {
            result: "failure",
            trigger: trigger.into(),
            at: now(),
            message,
            revision: self.proxy.live.load().policy.revision().to_string(),
        });
    }

    /// Records that a source came back to the policy in force after a failure (the bundle
    /// server serves the bundle in force again): `last_reload` says success again. Nothing is
    /// rebuilt, so the reload counter does not move.
    pub fn record_in_force(&self, trigger: &str, message: String) {
        let Ok(mut last) = self.last.lock() else {
            return;
        };
        if last.result == "failure" {
            *last = ReloadStatus {
                result: "success",
                trigger: trigger.into(),
                at: now(),
                message,
                revision: self.proxy.live.load().policy.revision().to_string(),
            };
        }
    }

    /// Loads the config again, with `bundle` or else the bundle in force, builds, swaps.
    async fn rebuild(self: &Arc<Self>, trigger: &str, bundle: Option<Arc<Bundle>>) -> ReloadStatus {
        let _one = self.busy.lock().await;
        let this = self.clone();
        let bundle = bundle.or_else(|| self.bundle());
        let built = tokio::task::spawn_blocking(move || {
            let loaded = (this.load)()?;
            let live =
                build_live(&loaded.config, bundle.as_deref()).map_err(|e| format!("{e:#}"))?;
            Ok::<_, String>((loaded, live, bundle))
        })
        .await
        .map_err(|e| format!("reload task failed: {e}"))
        .and_then(|r| r);
        let status = match built {
            Ok((loaded, live, bundle)) => {
                let revision = live.policy.revision().to_string();
                self.proxy.live.store(Arc::new(live));
                if let Ok(mut b) = self.bundle.lock() {
                    *b = bundle;
                }
                self.proxy.metrics.set_policy_revision(&revision);
                let restart = match self.current.lock() {
                    Ok(mut cur) => {
                        let r = needs_restart(&cur, &loaded.config);
                        *cur = Arc::new(loaded.config.drop_catalog());
                        r
                    }
                    Err(_) => Vec::new(),
                };
                let message = if restart.is_empty() {
                    "policy, catalog and identity reloaded".to_string()
                } else {
                    let m = format!(
                        "policy reloaded; changes to {} take effect after a restart",
                        restart.join(", ")
                    );
                    warn!("{m}");
                    m
                };
                info!(%revision, %trigger, "policy reloaded");
                ReloadStatus {
                    result: "success",
                    trigger: trigger.into(),
                    at: now(),
                    message,
                    revision,
                }
            }
            Err(message) => {
                error!(%trigger, error = %message, "reload refused; the last good policy stays in force");
                let revision = self.proxy.live.load().policy.revision().to_string();
                ReloadStatus {
                    result: "failure",
                    trigger: trigger.into(),
                    at: now(),
                    message,
                    revision,
                }
            }
        };
        self.finish(status.clone());
        status
    }

    /// Polls `source` every `interval` until shutdown; new bundles are reloaded. `etag` starts as
    /// the revision in force; every ETag the server sends is remembered, so a refused bundle is
    /// fetched and reported once, not at every poll.
    pub async fn poll_bundles(
        self: Arc<Self>,
        source: Source,
        mut etag: String,
        interval: Duration,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let metric = |result: &str| {
            self.metrics()
                .bundle_fetches
                .with_label_values(&[result])
                .inc();
        };
        loop {
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                _ = shutdown.changed() => return,
            }
            let (tag, bytes) = match source.fetch(Some(&etag)).await {
                Ok(bundle::fetch::Fetched::NotModified) => {
                    metric("unchanged");
                    continue;
                }
                Ok(bundle::fetch::Fetched::Archive(tag, bytes)) => (tag, bytes),
                Err(e) => {
                    metric("error");
                    warn!(error = %e, "policy bundle server unreachable; the last good bundle stays in force");
                    continue;
                }
            };
            // Remember what the server calls it, so the next poll is answered 304.
            if let Some(t) = tag {
                etag = t;
            }
            match source.unpack(bytes).await {
                Ok(b) if Some(&b.revision) == self.bundle_revision().as_ref() => {
                    metric("unchanged");
                    self.record_in_force(
                        "bundle",
                        format!(
                            "the server serves the bundle in force again ({})",
                            b.revision
                        ),
                    );
                }
                Ok(b) => {
                    let revision = b.revision.clone();
                    let status = self.reload_bundle(Arc::new(b)).await;
                    if status.result == "success" {
                        metric("updated");
                        info!(bundle = %revision, "policy bundle applied");
                    } else {
                        metric("refused");
                    }
                }
                Err(e) => {
                    metric("refused");
                    self.record_failure("bundle", e.clone());
                    warn!(error = %e, "policy bundle refused; the last good bundle stays in force");
                }
            }
        }
    }

    fn finish(&self, status: ReloadStatus) {
        self.proxy
            .metrics
            .policy_reloads
            .with_label_values(&[status.result])
            .inc();
        if let Ok(mut last) = self.last.lock() {
            *last = status;
        }
    }

    /// Polls the watched files every `interval`; reloads when their fingerprint changes.
    pub async fn watch_loop(self: Arc<Self>, interval: Duration, shutdown: watch::Receiver<bool>) {
        let this = &self;
        let print = move || fingerprint(this.watched());
        let reload = move || async move {
            this.reload("file change").await;
        };
        follow(interval, shutdown, print, reload).await;
    }
}

/// Takes `print` every `interval` until shutdown, and `reload`s when it moved. The print is
/// taken before the reload reads the files: a file still being written then (created empty, its
/// bytes not yet in) moves it again, and is reloaded whole at the next tick; taken after the
/// reload, that last change went unseen and the half-written file stayed in force. (When a
/// reload changes which files are watched, the next print differs too: one more reload.)
async fn follow<P, PF, R, RF>(
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
    mut print: P,
    mut reload: R,
) where
    P: FnMut() -> PF,
    PF: std::future::Future<Output = u64>,
    R: FnMut() -> RF,
    RF: std::future::Future<Output = ()>,
{
    let mut seen = print().await;
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            _ = shutdown.changed() => return,
        }
        let now = print().await;
        if now != seen {
            reload().await;
            seen = now;
        }
    }
}

async fn fingerprint(w: Watched) -> u64 {
    tokio::task::spawn_blocking(move || w.fingerprint())
        .await
        .unwrap_or(0)
}

/// Config sections a running proxy cannot change (listeners, limits, transport settings).
fn needs_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut out = Vec::new();
    if old.listen != new.listen {
        out.push("listen");
    }
    if old.limits != new.limits {
        out.push("limits");
    }
    if old.egress != new.egress {
        out.push("egress");
    }
    if old.upstream != new.upstream {
        out.push("upstream");
    }
    if old.tls != new.tls {
        out.push("tls");
    }
    if old.audit != new.audit {
        out.push("audit");
    }
    if old.admin != new.admin {
        out.push("admin");
    }
    if old.headers != new.headers || old.dns != new.dns {
        out.push("headers/dns");
    }
    if old.intent_tokens != new.intent_tokens {
        out.push("intent_tokens");
    }
    let (o, n) = (&old.policy, &new.policy);
    if (&o.bundle_url, &o.bundle_ca, o.bundle_poll_ms)
        != (&n.bundle_url, &n.bundle_ca, n.bundle_poll_ms)
    {
        out.push("policy.bundle_*");
    }
    out
}

fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

#[cfg(test)]
#[path = "reload_tests.rs"]
mod tests;
