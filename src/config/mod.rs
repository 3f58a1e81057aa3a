//! Configuration: the typed document, the embedded default, loading and validation with errors
//! that name the file, the field and the line.

mod tls;
mod types;

use std::path::{Path, PathBuf};

pub use tls::*;
pub use types::*;

use crate::proxy::target::{self, Authority};

/// The default configuration compiled into the binary (`config/default.yaml`).
pub const DEFAULT_YAML: &str = include_str!("../../config/default.yaml");

/// The name used for the embedded default in messages.
pub const EMBEDDED: &str = "<embedded config/default.yaml>";

/// A configuration that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}{}: {msg}", line.map(|l| format!(":{l}")).unwrap_or_default())]
    Parse {
        file: String,
        line: Option<usize>,
        msg: String,
    },
    #[error("{file}{}: field `{field}`: {msg}", line.map(|l| format!(":{l}")).unwrap_or_default())]
    Invalid {
        file: String,
        field: String,
        line: Option<usize>,
        msg: String,
    },
}

/// A loaded, validated configuration and where it came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    /// The file name, or `EMBEDDED`.
    pub source: String,
    /// Directory relative paths in the file are resolved against.
    pub base_dir: PathBuf,
}

/// Loads `path`, or the embedded default when `None`.
pub fn load(path: Option<&Path>) -> Result<Loaded, ConfigError> {
    match path {
        None => parse(EMBEDDED, DEFAULT_YAML, Path::new(".")),
        Some(p) => {
            let file = p.display().to_string();
            let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                file: file.clone(),
                source,
            })?;
            let base = p
                .parent()
                .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
            let base = if base.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                base
            };
            parse(&file, &text, &base)
        }
    }
}

/// Parses and validates a configuration document; relative paths are resolved against `base`.
pub fn parse(file: &str, text: &str, base: &Path) -> Result<Loaded, ConfigError> {
    let mut config: Config = if text.trim().is_empty() {
        Config::default()
    } else {
        serde_yaml::from_str(text).map_err(|e| ConfigError::Parse {
            file: file.to_string(),
            line: e.location().map(|l| l.line()),
            msg: e.to_string(),
        })?
    };
    let tls = &mut config.tls;
    for p in config
        .policy
        .paths
        .iter_mut()
        .chain(config.admin.token_file.as_mut())
        .chain(
            [&mut tls.ca_cert, &mut tls.ca_key, &mut tls.upstream_ca]
                .into_iter()
                .flatten(),
        )
    {
        if p.is_relative() {
            *p = base.join(&*p);
        }
    }
    if let Some(ca) = config.policy.bundle_ca.as_mut() {
        if !ca.trim_start().starts_with("-----BEGIN") && Path::new(ca.as_str()).is_relative() {
            *ca = base.join(ca.as_str()).display().to_string();
        }
    }
    let loaded = Loaded {
        config,
        source: file.to_string(),
        base_dir: base.to_path_buf(),
    };
    validate(&loaded, text)?;
    Ok(loaded)
}

/// With `policy.bundle_url` the platform's bundle is the only policy: local paths and intents
/// (which a namespace's owners could edit) are refused rather than merged.
pub fn check_bundle(c: &Config) -> Result<(), (&'static str, String)> {
    let p = &c.policy;
    let Some(url) = &p.bundle_url else {
        return Ok(());
    };
    if !url.starts_with("https://") {
        return Err((
            "policy.bundle_url",
            format!("'{url}' must be an https:// URL (policy is not fetched in clear text)"),
        ));
    }
    if !p.paths.is_empty() {
        return Err((
            "policy.paths",
            "with policy.bundle_url the policy comes from the bundle only; remove policy.paths"
                .into(),
        ));
    }
    if !c.intents.is_empty() {
        return Err((
            "intents",
            "with policy.bundle_url the intent catalog comes from the bundle only; remove intents"
                .into(),
        ));
    }
    if p.bundle_poll_ms < 100 {
        return Err(("policy.bundle_poll_ms", "must be at least 100".into()));
    }
    Ok(())
}

/// Checks what types alone cannot.
fn validate(loaded: &Loaded, text: &str) -> Result<(), ConfigError> {
    let c = &loaded.config;
    let invalid = |field: &str, msg: String| ConfigError::Invalid {
        file: loaded.source.clone(),
        field: field.to_string(),
        line: locate(text, field),
        msg,
    };
    if let Some(p) = &c.upstream.proxy {
        parent_proxy(p).map_err(|m| invalid("upstream.proxy", m))?;
    }
    check_bundle(c).map_err(|(field, msg)| invalid(field, msg))?;
    let l = &c.limits;
    for (field, v) in [
        ("limits.connect_timeout_ms", l.connect_timeout_ms),
        ("limits.header_read_timeout_ms", l.header_read_timeout_ms),
        ("limits.tunnel_idle_timeout_ms", l.tunnel_idle_timeout_ms),
        (
            "limits.upstream_response_timeout_ms",
            l.upstream_response_timeout_ms,
        ),
        ("limits.pool_idle_timeout_ms", l.pool_idle_timeout_ms),
        ("limits.sniff_timeout_ms", l.sniff_timeout_ms),
    ] {
        if v == 0 {
            return Err(invalid(field, "must be greater than 0".into()));
        }
    }
    for (field, v) in [
        ("limits.max_header_bytes", l.max_header_bytes),
        ("limits.max_headers", l.max_headers),
        ("limits.max_connections", l.max_connections),
        ("limits.max_tunnels", l.max_tunnels),
    ] {
        if v == 0 {
            return Err(invalid(field, "must be greater than 0".into()));
        }
    }
    if !(l.requests_per_second >= 0.0 && l.requests_per_second.is_finite()) {
        return Err(invalid(
            "limits.requests_per_second",
            "must be a number ≥ 0 (0 = no limit)".into(),
        ));
    }
    let h = &c.headers;
    for (field, name) in [
        ("headers.intent", &h.intent),
        ("headers.task", &h.task),
        ("headers.agent", &h.agent),
        ("headers.decision_id", &h.decision_id),
    ]
    .into_iter()
    .chain(h.strip.iter().map(|s| ("headers.strip", s)))
    {
        if http::HeaderName::from_bytes(name.as_bytes()).is_err()
            || name.chars().any(|c| c.is_ascii_uppercase())
        {
            return Err(invalid(
                field,
                format!("'{name}' is not a valid lowercase header name"),
            ));
        }
    }
    validate_tls(&c.tls).map_err(|(field, msg)| invalid(field, msg))?;
    if c.audit.path.is_empty() {
        return Err(invalid(
            "audit.path",
            "must be stdout, stderr, off or a file path".into(),
        ));
    }
    crate::egress::EgressPolicy::new(&c.egress.allow_cidrs, &[])
        .map_err(|m| invalid("egress.allow_cidrs", m))?;
    crate::egress::EgressPolicy::new(&[], &c.egress.deny_cidrs)
        .map_err(|m| invalid("egress.deny_cidrs", m))?;
    if c.dns.cache_ttl_ms < 1000 {
        // The decision and the connection must use one resolution: an entry may not expire
        // between the two.
        return Err(invalid("dns.cache_ttl_ms", "must be at least 1000".into()));
    }
    for s in &c.dns.servers {
        if crate::proxy::dns_server(s).is_none() {
            return Err(invalid(
                "dns.servers",
                format!("'{s}' is not IP or IP:PORT"),
            ));
        }
    }
    if let Some(exp) = &c.agent.expires {
        humantime::parse_rfc3339_weak(exp).map_err(|e| {
            invalid(
                "agent.expires",
                format!("'{exp}' is not an RFC 3339 time: {e}"),
            )
        })?;
    }
    Ok(())
}

/// The `tls` section: a CA is given whole or not at all; host patterns are names or `*.name`.
fn validate_tls(t: &TlsConfig) -> Result<(), (&'static str, String)> {
    match (&t.ca_cert, &t.ca_key) {
        (Some(_), None) => {
            return Err(("tls.ca_key", "must be set together with tls.ca_cert".into()));
        }
        (None, Some(_)) => {
            return Err(("tls.ca_cert", "must be set together with tls.ca_key".into()));
        }
        _ => {}
    }
    if t.leaf_cache_entries == 0 {
        return Err(("tls.leaf_cache_entries", "must be greater than 0".into()));
    }
    let intercept_hosts = match &t.intercept {
        Intercept::Hosts(hosts) => hosts.as_slice(),
        _ => &[],
    };
    for (field, hosts) in [
        ("tls.intercept", intercept_hosts),
        ("tls.splice", &t.splice),
    ] {
        for h in hosts {
            let name = h.strip_prefix("*.").unwrap_or(h);
            let ok = !name.is_empty()
                && name.len() <= 253
                && name.split('.').all(|l| {
                    !l.is_empty()
                        && l.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                });
            if !ok {
                return Err((
                    field,
                    format!(
                        "'{h}' is not a host name or a `*.` pattern (e.g. api.example.com, *.example.com)"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Parses `upstream.proxy` (`http://host:port`).
pub fn parent_proxy(raw: &str) -> Result<Authority, String> {
    let rest = raw.strip_prefix("http://").ok_or_else(|| {
        format!("'{raw}' must start with http:// (the parent proxy is spoken to in plain HTTP)")
    })?;
    let rest = rest.trim_end_matches('/');
    if rest.contains('/') {
        return Err(format!("'{raw}' must be http://host:port with no path"));
    }
    target::parse_authority(rest, Some(3128)).map_err(|e| format!("'{raw}': {e}"))
}

/// The 1-based line where a dotted field path (`a.b.c`) is written, following the nesting of
/// the YAML keys; `None` when the field is not in the text (a default value).
pub fn locate(text: &str, field: &str) -> Option<usize> {
    let mut from = 0;
    let mut found = None;
    let lines: Vec<&str> = text.lines().collect();
    for key in field.split('.') {
        let hit = lines
            .iter()
            .enumerate()
            .skip(from)
            .find(|(_, l)| {
                let t = l.trim_start().trim_start_matches("- ");
                t.starts_with(key) && t[key.len()..].trim_start().starts_with(':')
                    || t.contains(&format!("{{{key}:"))
                    || t.contains(&format!(" {key}:"))
            })
            .map(|(i, _)| i);
        match hit {
            Some(i) => {
                found = Some(i + 1);
                from = i;
            }
            None => return found,
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_loads() {
        let l = load(None).unwrap();
        assert_eq!(l.config.listen.proxy.port(), 15700);
    }

    #[test]
    fn unknown_field_names_file_field_and_line() {
        let err = parse(
            "c.yaml",
            "listen:\n  proxy: 127.0.0.1:1\n  prxy: 1\n",
            Path::new("."),
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("c.yaml:3"), "{msg}");
        assert!(msg.contains("prxy"), "{msg}");
    }

    #[test]
    fn invalid_values_name_the_field() {
        let text = "mode: enforce\nupstream:\n  proxy: socks5://x:1\n";
        let msg = parse("c.yaml", text, Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(msg.starts_with("c.yaml:3: field `upstream.proxy`"), "{msg}");
        let msg = parse(
            "c.yaml",
            "limits: {connect_timeout_ms: 0}\n",
            Path::new("."),
        )
        .unwrap_err()
        .to_string();
        assert!(msg.contains("limits.connect_timeout_ms"), "{msg}");
    }

    #[test]
    fn tls_section_types_and_checks() {
        let l = parse(
            "c.yaml",
            "tls:\n  ca_cert: ca.pem\n  ca_key: ca-key.pem\n  intercept: [api.example.com, '*.corp.example']\n  upstream_roots: system\n",
            Path::new("/etc/ig"),
        )
        .unwrap();
        let t = &l.config.tls;
        assert_eq!(t.ca_cert.as_deref(), Some(Path::new("/etc/ig/ca.pem")));
        assert_eq!(t.upstream_roots, UpstreamRoots::System);
        assert!(t.intercept.intercepts("api.example.com", false));
        assert!(t.intercept.intercepts("a.b.corp.example", false));
        assert!(!t.intercept.intercepts("corp.example", true));
        assert!(!t.intercept.intercepts("xcorp.example", true));
        for (text, want) in [
            ("auto", Intercept::Auto),
            ("all", Intercept::All),
            ("none", Intercept::None),
        ] {
            let l = parse(
                "c.yaml",
                &format!("tls: {{intercept: {text}}}\n"),
                Path::new("."),
            )
            .unwrap();
            assert_eq!(l.config.tls.intercept, want);
        }
        assert_eq!(Config::default().tls.intercept, Intercept::Auto);
        let msg = parse("c.yaml", "tls:\n  intercept: sometimes\n", Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("auto, all, none, or a list of host patterns"),
            "{msg}"
        );
        let msg = parse("c.yaml", "tls:\n  ca_cert: x.pem\n", Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("tls.ca_key"), "{msg}");
        let msg = parse("c.yaml", "tls:\n  intercept: ['a.*.com']\n", Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(msg.starts_with("c.yaml:2: field `tls.intercept`"), "{msg}");
        let msg = parse("c.yaml", "tls:\n  upstream_roots: os\n", Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("webpki"), "{msg}");
        let l = parse(
            "c.yaml",
            "tls:\n  intercept: all\n  splice: ['*.pinned.example']\n",
            Path::new("."),
        )
        .unwrap();
        assert!(l.config.tls.intercepts("api.example.com", false));
        assert!(!l.config.tls.intercepts("app.pinned.example", true));
        let msg = parse("c.yaml", "tls:\n  splice: ['a b']\n", Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("field `tls.splice`"), "{msg}");
    }

    #[test]
    fn parent_proxy_forms() {
        assert_eq!(parent_proxy("http://proxy.corp:3128").unwrap().port, 3128);
        assert_eq!(parent_proxy("http://proxy.corp").unwrap().port, 3128);
        assert!(parent_proxy("proxy.corp:3128").is_err());
        assert!(parent_proxy("http://p:1/x").is_err());
    }
}
