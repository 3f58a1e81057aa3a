//! Checks on a parsed configuration that types alone cannot express; every error names its field.

use super::{Config, ConfigError, Intercept, Loaded, TlsConfig, locate, parent_proxy};

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
pub(super) fn validate(loaded: &Loaded, text: &str) -> Result<(), ConfigError> {
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
    if c.policy.shadow.as_ref().is_some_and(|s| s.paths.is_empty()) {
        return Err(invalid(
            "policy.shadow.paths",
            "names no policy: list the candidate's directories or files".into(),
        ));
    }
    if let Some(o) = &c.telemetry.otlp {
        o.check().map_err(|(field, msg)| invalid(field, msg))?;
    }
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
        ("admin.max_connections", c.admin.max_connections),
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
    super::validate_intent_tokens(&c.intent_tokens).map_err(|(field, msg)| invalid(&field, msg))?;
    super::validate_attestation(&c.attestation).map_err(|(field, msg)| invalid(&field, msg))?;
    super::validate_credentials(&c.credentials, &c.intents)
        .map_err(|(field, msg)| invalid(&field, msg))?;
    super::validate_budgets(c).map_err(|(field, msg)| invalid(&field, msg))?;
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
        // The vetting and the connection must use one resolution: an entry may not expire
        // between the two.
        return Err(invalid("dns.cache_ttl_ms", "must be at least 1000".into()));
    }
    for s in &c.dns.servers {
        if dns_server(s).is_none() {
            return Err(invalid(
                "dns.servers",
                format!("'{s}' is not IP or IP:PORT (a port from 1 to 65535)"),
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

/// A `dns.servers` entry: `IP` or `IP:PORT` (port 53 by default, never 0); validated at config
/// load.
pub(crate) fn dns_server(s: &str) -> Option<std::net::SocketAddr> {
    let with_port = s.parse::<std::net::SocketAddr>().ok();
    with_port
        .or_else(|| {
            s.parse::<std::net::IpAddr>()
                .ok()
                .map(|ip| std::net::SocketAddr::new(ip, 53))
        })
        .filter(|a| a.port() != 0)
}
