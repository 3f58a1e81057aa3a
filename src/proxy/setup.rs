//! Building a `Proxy` from its parts: the resolver, dialer, upstream sender and header names,
//! and the read-only views the admin API uses.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::header::HeaderName;

use super::gate::LivePolicy;
use super::sender::Upstreams;
use super::upstream::Dialer;
use super::{Proxy, dns, rate};
use crate::audit::Audit;
use crate::config::Config;
use crate::egress::EgressPolicy;
use crate::intent::SessionStore;
use crate::metrics::Metrics;
use crate::target::Authority;
use crate::tls::Tls;

/// The shared parts a `Proxy` is built from.
pub struct ProxyParts {
    pub cfg: Arc<Config>,
    pub parent: Option<Authority>,
    pub egress: EgressPolicy,
    pub live: LivePolicy,
    pub session: Arc<SessionStore>,
    pub metrics: Arc<Metrics>,
    pub audit: Audit,
    pub tls: Arc<Tls>,
    pub clients_trust_ca: bool,
}

/// The default names of the tags (`config::HeaderNames`), as consts: a tag's name is cloned
/// into every request sent upstream, and a const's clone and drop count no references.
const DEFAULT_NAMES: [HeaderName; 4] = [
    HeaderName::from_static("intentgate-agent"),
    HeaderName::from_static("intentgate-intent"),
    super::headers::DECISION_ID,
    HeaderName::from_static("intentgate-task"),
];

fn header_name(name: &str) -> HeaderName {
    if let Some(known) = DEFAULT_NAMES.iter().find(|k| k.as_str() == name) {
        return known.clone();
    }
    // Names are validated at config load; fall back to the default spelling if one slipped by.
    HeaderName::from_bytes(name.as_bytes()).unwrap_or(HeaderName::from_static("intentgate-unnamed"))
}

/// The names step 1's summary must note (`head::summary`'s `named`): those the agent's claims
/// are stripped by (step 7) and an intent is declared in (step 6) that `Seen::OWN` does not
/// cover, once each.
fn summary_names<const N: usize>(
    strip: &[HeaderName],
    declared: [&HeaderName; N],
) -> Vec<HeaderName> {
    let mut named: Vec<HeaderName> = Vec::new();
    for n in strip.iter().chain(declared) {
        if !n.as_str().starts_with(crate::head::OWN_PREFIX) && !named.contains(n) {
            named.push(n.clone());
        }
    }
    named
}

impl Proxy {
    /// Fails when a credential source cannot be read (the message names its field).
    pub fn new(p: ProxyParts) -> Result<Self, String> {
        let cfg = p.cfg;
        let servers: Vec<_> = cfg
            .dns
            .servers
            .iter()
            .filter_map(|s| crate::config::dns_server(s))
            .collect();
        let resolver = Arc::new(dns::Resolver::new(
            Duration::from_millis(cfg.dns.cache_ttl_ms),
            4096,
            dns::source(
                &servers,
                Duration::from_millis(cfg.limits.connect_timeout_ms),
            ),
        ));
        let dialer = Dialer::new(
            Duration::from_millis(cfg.limits.connect_timeout_ms),
            p.parent,
            resolver,
            Arc::new(p.egress),
        );
        let upstreams = Upstreams::new(dialer.clone(), p.tls.clone(), &cfg.limits);
        let mut strip: Vec<HeaderName> = cfg.headers.strip.iter().map(|h| header_name(h)).collect();
        // The intent token never goes upstream, whatever its header is called.
        let intent_tokens =
            super::intent_token::IntentTokens::new(&cfg.intent_tokens, &p.live.agent, &p.metrics)?;
        strip.push(intent_tokens.header().clone());
        // Nor does an attestation the agent made up.
        let attestation = super::attest::Attestation::new(&cfg.attestation, &p.live.agent)?;
        strip.push(attestation.header().clone());
        let creds = crate::cred::Store::new(&cfg.credentials, &p.tls, &p.metrics)?;
        let (tag_intent, task_header) = (
            header_name(&cfg.headers.intent),
            header_name(&cfg.headers.task),
        );
        let named = summary_names(&strip, [&tag_intent, &task_header, intent_tokens.header()]);
        Ok(Self {
            upstreams,
            dialer,
            tls: p.tls,
            clients_trust_ca: p.clients_trust_ca,
            strip,
            named,
            tag_agent: header_name(&cfg.headers.agent),
            tag_intent,
            tag_decision: header_name(&cfg.headers.decision_id),
            task_header,
            tunnels: AtomicUsize::new(0),
            rate: rate::RateLimiter::default(),
            live: ArcSwap::from_pointee(p.live),
            session: p.session,
            metrics: p.metrics,
            audit: p.audit,
            door: std::sync::OnceLock::new(),
            intent_tokens,
            attestation,
            creds,
            budgets: crate::budget::Budgets::new(&cfg.budgets),
            cfg,
        })
    }

    /// The CA that signs interception certificates (an ephemeral one is made now if it was
    /// not yet).
    pub fn ca(&self) -> Result<&crate::tls::ca::CertificateAuthority, String> {
        self.tls.ca.get()
    }

    /// Leaf certificate minting and cache counts.
    pub fn leaf_stats(&self) -> crate::tls::leaf::LeafStats {
        self.tls.interceptor.minter().stats()
    }

    /// The environment variables credential sources read: `run` never passes them to its child.
    pub fn credential_env(&self) -> Vec<String> {
        crate::cred::env_vars(&self.cfg.credentials)
    }

    /// Number of open CONNECT tunnels.
    pub fn tunnels_active(&self) -> usize {
        self.tunnels.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The defaults' consts are the names as parsed (equal, found in a map either way), and
    /// every other name is parsed.
    #[test]
    fn default_tag_names_are_the_parsed_names() {
        let d = crate::config::HeaderNames::default();
        // The consts are the configuration's defaults (else every request would parse its tags).
        let names = DEFAULT_NAMES;
        let consts: Vec<&str> = names.iter().map(HeaderName::as_str).collect();
        let defaults = [&d.agent, &d.intent, &d.decision_id, &d.task].map(String::as_str);
        assert_eq!(consts, defaults);
        for name in [
            &d.agent,
            &d.intent,
            &d.decision_id,
            &d.task,
            "x-agent",
            "intentgate-x",
        ] {
            let parsed = HeaderName::from_bytes(name.as_bytes()).unwrap();
            let made = header_name(name);
            assert_eq!(made, parsed);
            let mut h = http::HeaderMap::new();
            h.insert(parsed.clone(), http::HeaderValue::from_static("1"));
            assert!(h.contains_key(&made));
            h.insert(made, http::HeaderValue::from_static("2"));
            assert_eq!((h.len(), h[&parsed].as_bytes()), (1, &b"2"[..]));
        }
    }
}
