//! The `tls` section: interception with a local CA, and how upstream servers are verified.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// TLS: interception with a local CA, and how upstream servers are verified.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// The local CA's certificate (PEM). With `ca_key`; without both, an ephemeral CA is made.
    pub ca_cert: Option<PathBuf>,
    /// The local CA's private key (PEM: PKCS#8, SEC1 or PKCS#1).
    pub ca_key: Option<PathBuf>,
    /// Which CONNECT tunnels are terminated and inspected; the rest are spliced.
    pub intercept: Intercept,
    /// Extra CA certificates (PEM bundle) trusted for upstream servers, beside `upstream_roots`.
    pub upstream_ca: Option<PathBuf>,
    /// Where the trusted roots for upstream servers come from.
    pub upstream_roots: UpstreamRoots,
    /// How many minted leaf certificates are kept (LRU).
    pub leaf_cache_entries: usize,
    /// Hosts always spliced whatever `intercept` says (clients that pin certificates);
    /// exact names or `*.` patterns.
    pub splice: Vec<String>,
}

impl TlsConfig {
    /// Whether a tunnel to `host` is intercepted: never when listed in `splice`, else as
    /// `intercept` says (`client_has_ca` decides `auto`).
    pub fn intercepts(&self, host: &str, client_has_ca: bool) -> bool {
        !self.splice.iter().any(|p| host_matches(p, host))
            && self.intercept.intercepts(host, client_has_ca)
    }
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            ca_cert: None,
            ca_key: None,
            intercept: Intercept::Auto,
            upstream_ca: None,
            upstream_roots: UpstreamRoots::Webpki,
            leaf_cache_entries: 1000,
            splice: Vec::new(),
        }
    }
}

/// `tls.intercept`: `auto`, `all`, `none`, or a list of host patterns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Intercept {
    /// Intercept only where the client was given the CA (a configured CA, `run`, an injected
    /// pod); otherwise splice.
    #[default]
    Auto,
    /// Intercept every tunnel.
    All,
    /// Never intercept: every tunnel is spliced and decided by host.
    None,
    /// Intercept tunnels to these hosts only: exact names or a leading `*.` (any subdomain, not
    /// the name itself).
    Hosts(Vec<String>),
}

impl Intercept {
    /// Whether a tunnel to `host` (lowercase, no trailing dot) is intercepted;
    /// `client_has_ca` says whether the client was given the CA (decides `auto`).
    pub fn intercepts(&self, host: &str, client_has_ca: bool) -> bool {
        match self {
            Intercept::Auto => client_has_ca,
            Intercept::All => true,
            Intercept::None => false,
            Intercept::Hosts(patterns) => patterns.iter().any(|p| host_matches(p, host)),
        }
    }
}

/// Matches a host against an exact name or a `*.suffix` pattern (ASCII case-insensitive).
pub fn host_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => {
            host.len() > suffix.len() + 1
                && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
                && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
        }
        None => pattern.eq_ignore_ascii_case(host),
    }
}

impl Serialize for Intercept {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Intercept::Auto => s.serialize_str("auto"),
            Intercept::All => s.serialize_str("all"),
            Intercept::None => s.serialize_str("none"),
            Intercept::Hosts(h) => h.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Intercept {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Intercept;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("auto, all, none, or a list of host patterns")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Intercept, E> {
                match v {
                    "auto" => Ok(Intercept::Auto),
                    "all" => Ok(Intercept::All),
                    "none" => Ok(Intercept::None),
                    other => Err(E::invalid_value(serde::de::Unexpected::Str(other), &self)),
                }
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<Intercept, A::Error> {
                let mut hosts = Vec::new();
                while let Some(h) = a.next_element::<String>()? {
                    hosts.push(h);
                }
                Ok(Intercept::Hosts(hosts))
            }
        }
        d.deserialize_any(V)
    }
}

/// `tls.upstream_roots`: the trust anchors for upstream servers.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamRoots {
    /// The Mozilla root program, compiled in (`webpki-roots`): the same everywhere.
    #[default]
    Webpki,
    /// The operating system's store (`rustls-native-certs`; honours `SSL_CERT_FILE`/`SSL_CERT_DIR`).
    System,
}
