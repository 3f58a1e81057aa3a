//! Where `explain` would send a request, vetted as the proxy vets it before it decides: the host
//! resolved (an IP literal as is, `--resolve HOST=IP`, else the system resolver) and every address
//! classified by the egress rules (`crate::egress`); the first allowed one is the destination the
//! policy sees, and when none is allowed the request is refused (`destination_forbidden`).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde_json::json;

use crate::config::Config;
use crate::egress::{Class, EgressPolicy, Forbidden};
use crate::error::ProxyError;
use crate::proxy::upstream::DialError;
use crate::target;

/// `--resolve HOST=IP`: the address the host is taken to resolve to (repeat for several).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pinned {
    host: String,
    ip: IpAddr,
}

impl std::str::FromStr for Pinned {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (host, ip) = s
            .split_once('=')
            .ok_or_else(|| format!("'{s}' must be HOST=IP"))?;
        let ip = ip
            .trim()
            .trim_matches(['[', ']'])
            .parse()
            .map_err(|_| format!("'{ip}' in '{s}' is not an IP address"))?;
        // The host as requests name it: lowercase, no trailing dot, punycode.
        let host = target::parse_authority(host.trim(), Some(1))
            .map_err(|e| format!("'{host}' in '{s}': {e}"))?
            .host;
        Ok(Pinned { host, ip })
    }
}

/// How the addresses were found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Literal,
    Pinned,
    System,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Source::Literal => "ip literal",
            Source::Pinned => "--resolve",
            Source::System => "system resolver",
        }
    }
}

/// The destination of one explained request.
pub(crate) struct Destination {
    host: String,
    port: u16,
    /// `None` when the addresses are not known here (unresolvable, or a parent proxy resolves).
    source: Option<Source>,
    /// Each address in order with the egress verdict.
    addresses: Vec<(IpAddr, Result<Class, Forbidden>)>,
    /// Why the addresses are unknown, or what to keep in mind about them.
    note: Option<String>,
}

impl Destination {
    /// Resolves and vets `host:port` under `cfg`'s egress rules.
    pub(crate) fn find(
        cfg: &Config,
        host: &str,
        port: u16,
        pinned: &[Pinned],
    ) -> Result<Self, String> {
        let mut d = Destination {
            host: host.to_string(),
            port,
            source: None,
            addresses: Vec::new(),
            note: None,
        };
        let ips: Vec<IpAddr> = if let Ok(ip) = host.parse::<IpAddr>() {
            d.source = Some(Source::Literal);
            vec![ip]
        } else if cfg.upstream.proxy.is_some() {
            d.note = Some("upstream.proxy is set: the parent proxy resolves names, so the proxy does not vet this destination".into());
            return Ok(d);
        } else if pinned.iter().any(|p| p.host == host) {
            d.source = Some(Source::Pinned);
            pinned
                .iter()
                .filter(|p| p.host == host)
                .map(|p| p.ip)
                .collect()
        } else {
            match system_lookup(host, port, cfg.limits.connect_timeout_ms) {
                Ok(ips) => {
                    d.source = Some(Source::System);
                    if !cfg.dns.servers.is_empty() {
                        d.note = Some("the proxy resolves with dns.servers; explain used the system resolver (pass --resolve HOST=IP to check an address)".into());
                    }
                    ips
                }
                Err(e) => {
                    d.note = Some(format!(
                        "cannot resolve {host} here ({e}): its address class is not checked (pass --resolve HOST=IP)"
                    ));
                    return Ok(d);
                }
            }
        };
        let egress = egress_of(cfg)?;
        d.addresses = ips
            .into_iter()
            .map(|ip| (ip, egress.check(SocketAddr::new(ip, port))))
            .collect();
        Ok(d)
    }

    /// The address the proxy would dial and its class (what the policy sees), if vetted.
    pub(crate) fn vetted(&self) -> Option<(IpAddr, Class)> {
        self.addresses
            .iter()
            .find_map(|(ip, v)| v.as_ref().ok().map(|c| (*ip, *c)))
    }

    /// The proxy's refusal when addresses are known and none of them may be dialled.
    pub(crate) fn refusal(&self) -> Option<ProxyError> {
        if self.vetted().is_some() {
            return None;
        }
        let f = self.addresses.iter().find_map(|(_, v)| v.as_ref().err())?;
        Some(ProxyError::from(DialError::Forbidden {
            host: self.host.clone(),
            ip: f.ip,
            class: f.class.as_str(),
            why: f.why,
        }))
    }

    /// Why the addresses are unknown, or what to keep in mind.
    pub(crate) fn note(&self) -> Option<&str> {
        self.note.as_deref()
    }

    pub(crate) fn to_json(&self) -> serde_json::Value {
        let addresses: Vec<serde_json::Value> = self
            .addresses
            .iter()
            .map(|(ip, v)| match v {
                Ok(class) => {
                    json!({"ip": ip.to_string(), "class": class.as_str(), "allowed": true})
                }
                Err(f) => json!({"ip": ip.to_string(), "class": f.class.as_str(), "allowed": false,
                                 "why": f.why}),
            })
            .collect();
        // The address the proxy would dial, else the first it refuses.
        let shown = self.vetted().or_else(|| {
            self.addresses
                .iter()
                .find_map(|(_, v)| v.as_ref().err().map(|f| (f.ip, f.class)))
        });
        json!({
            "host": self.host,
            "port": self.port,
            "resolved_by": self.source.map(Source::as_str),
            "addresses": addresses,
            "ip": shown.map(|(ip, _)| ip.to_string()),
            "class": shown.map(|(_, c)| c.as_str()),
            "allowed": (!self.addresses.is_empty()).then(|| self.vetted().is_some()),
            "note": self.note,
        })
    }
}

/// The egress rules `serve` would apply, with the configured listeners as its own addresses.
fn egress_of(cfg: &Config) -> Result<EgressPolicy, String> {
    let mut e = EgressPolicy::new(&cfg.egress.allow_cidrs, &cfg.egress.deny_cidrs)?;
    e.own = std::iter::once(cfg.listen.proxy)
        .chain(cfg.listen.admin)
        .chain(cfg.listen.transparent)
        .collect();
    Ok(e)
}

/// The system resolver's addresses for `host`, within `timeout_ms`.
fn system_lookup(host: &str, port: u16, timeout_ms: u64) -> Result<Vec<IpAddr>, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a resolver: {e}"))?;
    rt.block_on(async {
        let found = tokio::time::timeout(
            Duration::from_millis(timeout_ms),
            tokio::net::lookup_host((host, port)),
        )
        .await
        .map_err(|_| format!("no answer within {timeout_ms} ms"))?
        .map_err(|e| e.to_string())?;
        let ips: Vec<IpAddr> = found.map(|a| a.ip()).collect();
        if ips.is_empty() {
            return Err("no addresses".to_string());
        }
        Ok(ips)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::ErrorCode;

    #[test]
    fn pinned_hosts_are_canonical_and_addresses_checked() {
        let p: Pinned = "API.Example.com.=[2001:db8::1]".parse().unwrap();
        assert_eq!(
            (p.host.as_str(), p.ip.to_string()),
            ("api.example.com", "2001:db8::1".to_string())
        );
        assert!("api.example.com".parse::<Pinned>().is_err());
        assert!("api.example.com=nope".parse::<Pinned>().is_err());
        assert!("=1.2.3.4".parse::<Pinned>().is_err());
    }

    #[test]
    fn the_first_allowed_address_is_the_destination_else_the_first_refusal() {
        let mut cfg = Config::default();
        cfg.egress.allow_cidrs = vec!["10.0.0.0/8".into()];
        let pin = |ip: &str| format!("h.example={ip}").parse::<Pinned>().unwrap();
        let d = Destination::find(&cfg, "h.example", 443, &[pin("127.0.0.1"), pin("10.1.1.1")])
            .unwrap();
        assert_eq!(
            d.vetted(),
            Some(("10.1.1.1".parse().unwrap(), Class::Private))
        );
        assert!(d.refusal().is_none());
        let d = Destination::find(&cfg, "h.example", 443, &[pin("169.254.169.254")]).unwrap();
        let e = d.refusal().unwrap();
        assert_eq!(e.code(), ErrorCode::DestinationForbidden);
        assert!(e.to_string().contains("link_local"), "{e}");
        assert_eq!(d.to_json()["class"], "link_local");
    }
}
