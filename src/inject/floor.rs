//! The inject config file: the sidecar template settings and the **platform floor** — per
//! namespace, which agent ids each service account may use, the weakest mode allowed and which
//! outbound exclusions a pod may ask for. Annotations may tighten the floor, never loosen it.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use serde::Deserialize;

use crate::bundle::auth::{AuthConfig, Keys};
use crate::config::ConfigError;
use crate::iptables::Cidr;
use crate::tls::fetch::Endpoint;

/// `enforce` is stronger than `monitor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FloorMode {
    Monitor,
    #[default]
    Enforce,
}

impl FloorMode {
    pub fn as_str(self) -> &'static str {
        match self {
            FloorMode::Monitor => "monitor",
            FloorMode::Enforce => "enforce",
        }
    }
}

/// The rules for one namespace.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceFloor {
    /// Service account name → the agent ids a pod running as it may claim.
    #[serde(default)]
    pub service_accounts: BTreeMap<String, Vec<String>>,
    /// The weakest mode a pod may ask for (default enforce).
    #[serde(default)]
    pub min_mode: FloorMode,
    /// Destination ports a pod may exclude from redirection.
    #[serde(default)]
    pub allow_exclude_ports: Vec<u16>,
    /// Blocks a pod may exclude (an excluded CIDR must lie inside one of them).
    #[serde(default)]
    pub allow_exclude_cidrs: Vec<String>,
    /// Whether a pod may go without the sidecar: opt out with `intentgate.io/inject: "false"`,
    /// or be skipped for running on the host network or on Windows. When false, such pods are
    /// refused.
    #[serde(default = "default_true")]
    pub allow_opt_out: bool,
    /// Whether app containers may have `NET_ADMIN`, `NET_RAW` or `privileged` (each can undo or
    /// go around the redirect).
    #[serde(default)]
    pub allow_net_admin: bool,
}

/// The whole inject config (`intentgate inject --config FILE`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InjectConfig {
    /// The intentgate image for the sidecar (default: `$INTENTGATE_SIDECAR_IMAGE`, which the
    /// control Deployment sets, so that a kustomize `images:` override reaches it; else the
    /// release's own image).
    #[serde(default = "default_image")]
    pub image: String,
    /// The image of the iptables init container, which carries iptables (the sidecar image does
    /// not). Default: `$INTENTGATE_INIT_IMAGE`, else the release's own init image.
    #[serde(default = "default_init_image")]
    pub init_image: String,
    /// UID the sidecar runs as (exempt from redirection).
    #[serde(default = "default_uid")]
    pub proxy_uid: u32,
    /// ConfigMap (in the pod's namespace) holding the sidecar's `config.yaml`.
    #[serde(default = "default_config_map")]
    pub sidecar_config_map: String,
    /// Secret (in the pod's namespace) with the interception CA: `tls.crt`, `tls.key`.
    #[serde(default = "default_ca_secret")]
    pub ca_secret: String,
    /// Reject outbound UDP 443 so clients fall back from QUIC to TCP.
    #[serde(default = "default_true")]
    pub block_quic: bool,
    /// Per-namespace floors. A namespace not listed uses `default_floor`; without one, its pods
    /// are refused (fail closed).
    #[serde(default)]
    pub namespaces: BTreeMap<String, NamespaceFloor>,
    #[serde(default)]
    pub default_floor: Option<NamespaceFloor>,
    /// Policy bundles: what this server serves and what injected sidecars poll.
    #[serde(default)]
    pub bundles: BundlesConfig,
    /// The API server, asked for its version (native sidecars need Kubernetes 1.29). Unset: not
    /// asked (pods are injected whatever the version).
    #[serde(default)]
    pub kubernetes: Option<Endpoint>,
    /// Attestation keys per namespace (src/inject/attestation.rs). Unset: sidecars sign with
    /// the key of their own config, and `GET /jwks/NS` serves nothing.
    #[serde(default)]
    pub attestation: Option<super::attestation::AttestationKeys>,
}

/// `bundles:` of the inject config.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundlesConfig {
    /// A policy directory (global files at the top, `namespaces/NS/` per namespace, e.g. a
    /// projected volume of the platform's ConfigMaps) served at `GET /bundles/NS`.
    pub policy_dir: Option<std::path::PathBuf>,
    /// The URL injected sidecars poll, without the namespace (`…/bundles`); they add
    /// `/$(POD_NAMESPACE)`. Unset: sidecars are not given one.
    pub url: Option<String>,
    /// The CA certificate (PEM file) injected sidecars trust for `url`; read at load.
    pub ca_file: Option<std::path::PathBuf>,
    /// The PEM read from `ca_file`.
    #[serde(skip)]
    pub ca_pem: Option<String>,
    /// How sidecars authenticate (required with `policy_dir`): their projected service-account
    /// token, verified against the issuer's keys.
    #[serde(default)]
    pub auth: Option<AuthConfig>,
}

impl BundlesConfig {
    /// The audience of the token injected sidecars present.
    pub fn audience(&self) -> &str {
        self.auth
            .as_ref()
            .map_or(crate::bundle::auth::DEFAULT_AUDIENCE, |a| {
                a.audience.as_str()
            })
    }
}

/// `$NAME` when set and not empty, else `fallback`.
fn image_from_env(name: &str, fallback: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| fallback.to_string())
}
fn default_image() -> String {
    let release = concat!("ghcr.io/intentgate/intentgate:", env!("CARGO_PKG_VERSION"));
    image_from_env("INTENTGATE_SIDECAR_IMAGE", release)
}
fn default_init_image() -> String {
    let release = concat!(
        "ghcr.io/intentgate/intentgate-init:",
        env!("CARGO_PKG_VERSION")
    );
    image_from_env("INTENTGATE_INIT_IMAGE", release)
}
fn default_uid() -> u32 {
    crate::iptables::DEFAULT_PROXY_UID
}
fn default_config_map() -> String {
    "intentgate-sidecar".into()
}
fn default_ca_secret() -> String {
    "intentgate-ca".into()
}
fn default_true() -> bool {
    true
}

impl Default for InjectConfig {
    fn default() -> Self {
        InjectConfig {
            image: default_image(),
            init_image: default_init_image(),
            proxy_uid: default_uid(),
            sidecar_config_map: default_config_map(),
            ca_secret: default_ca_secret(),
            block_quic: true,
            namespaces: BTreeMap::new(),
            default_floor: None,
            bundles: BundlesConfig::default(),
            kubernetes: None,
            attestation: None,
        }
    }
}

impl InjectConfig {
    /// The floor for a namespace, if any.
    pub fn floor(&self, namespace: &str) -> Option<&NamespaceFloor> {
        self.namespaces
            .get(namespace)
            .or(self.default_floor.as_ref())
    }
}

/// Parses and validates an inject config; errors name the file and line.
pub fn parse(file: &str, text: &str) -> Result<InjectConfig, ConfigError> {
    let mut cfg: InjectConfig = serde_yaml::from_str(text).map_err(|e| ConfigError::Parse {
        file: file.to_string(),
        line: e.location().map(|l| l.line()),
        msg: e.to_string(),
    })?;
    let mut floors: Vec<(String, &NamespaceFloor)> = cfg
        .namespaces
        .iter()
        .map(|(k, v)| (format!("namespaces.{k}"), v))
        .collect();
    if let Some(d) = &cfg.default_floor {
        floors.push(("default_floor".into(), d));
    }
    for (at, floor) in floors {
        for c in &floor.allow_exclude_cidrs {
            if let Err(msg) = c.parse::<Cidr>() {
                return Err(ConfigError::Invalid {
                    file: file.to_string(),
                    field: format!("{at}.allow_exclude_cidrs"),
                    line: text
                        .lines()
                        .position(|l| l.contains(c.as_str()))
                        .map(|i| i + 1),
                    msg,
                });
            }
        }
    }
    let invalid = |field: &str, msg: String| ConfigError::Invalid {
        file: file.to_string(),
        field: field.to_string(),
        line: crate::config::locate(text, field),
        msg,
    };
    if let Some(a) = &cfg.attestation
        && !super::credentials::valid(&a.secret)
    {
        return Err(invalid(
            "attestation.secret",
            format!("'{}' is not a Secret name", a.secret),
        ));
    }
    let b = &mut cfg.bundles;
    if let Some(url) = &b.url {
        if !url.starts_with("https://") || url.ends_with('/') {
            return Err(invalid(
                "bundles.url",
                format!("'{url}' must be an https:// URL without a trailing slash"),
            ));
        }
    }
    if let Some(ca) = &b.ca_file {
        let pem = std::fs::read_to_string(ca)
            .map_err(|e| invalid("bundles.ca_file", format!("{}: {e}", ca.display())))?;
        if !pem.contains("-----BEGIN CERTIFICATE-----") {
            return Err(invalid(
                "bundles.ca_file",
                format!("{}: no PEM certificate", ca.display()),
            ));
        }
        b.ca_pem = Some(pem);
    }
    if let Some(dir) = &b.policy_dir {
        if !dir.is_dir() {
            return Err(invalid(
                "bundles.policy_dir",
                format!("{} is not a directory", dir.display()),
            ));
        }
        if b.auth.is_none() {
            return Err(invalid(
                "bundles.policy_dir",
                "serving bundles needs bundles.auth (sidecars authenticate with their service-account token)".into(),
            ));
        }
    }
    let urls = [
        ("kubernetes.url", cfg.kubernetes.as_ref().map(|k| &k.url)),
        (
            "bundles.auth.keys",
            match cfg.bundles.auth.as_ref().map(|a| &a.keys) {
                Some(Keys::Discovery(e) | Keys::JwksUrl(e)) => Some(&e.url),
                _ => None,
            },
        ),
    ];
    for (field, url) in urls {
        if let Some(url) = url.filter(|u| !u.starts_with("https://")) {
            return Err(invalid(field, format!("'{url}' must be an https:// URL")));
        }
    }
    Ok(cfg)
}

/// Loads `path`, or an empty config (every namespace refused) when `None`.
pub fn load(path: Option<&Path>) -> Result<InjectConfig, ConfigError> {
    match path {
        None => Ok(InjectConfig::default()),
        Some(p) => {
            let file = p.display().to_string();
            let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                file: file.clone(),
                source,
            })?;
            parse(&file, &text)
        }
    }
}

/// Is `inner` inside `outer` (same family, prefix at least as long, same leading bits)?
pub fn contains(outer: &Cidr, inner: &Cidr) -> bool {
    let (o, i, width) = match (outer.addr, inner.addr) {
        (IpAddr::V4(o), IpAddr::V4(i)) => (u128::from(u32::from(o)), u128::from(u32::from(i)), 32),
        (IpAddr::V6(o), IpAddr::V6(i)) => (u128::from(o), u128::from(i), 128),
        _ => return false,
    };
    if inner.len < outer.len {
        return false;
    }
    let shift = width - u32::from(outer.len);
    shift >= 128 || (o >> shift) == (i >> shift)
}
