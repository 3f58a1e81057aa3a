//! Name resolution with a short-lived shared cache, so the address the vetting saw is the address
//! the connection uses, and a request does not pay for a lookup when its host was resolved recently.
//! `dns.servers` are asked by the stub resolver (src/proxy/stub/); without them, the system's
//! (getaddrinfo: /etc/hosts, nsswitch and resolv.conf search lists, as every other program there).

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::stub::{Answer, Stub};
use super::upstream::DialError;

/// Where the addresses of a name come from: the system resolver (`System`) or the `dns.servers`
/// (`Stub`), the production implementations, one chosen when the proxy is built (`source`).
/// In-process tests answer from a table instead, without any DNS. Asked on a cache miss only.
pub(super) trait Resolve: Send + Sync {
    fn lookup<'a>(&'a self, host: &'a str) -> Lookup<'a>;
}

/// A lookup in progress. Boxed: its state is large and only needed on a miss; inline it would
/// make every request's future that much bigger to move around.
pub(super) type Lookup<'a> = Pin<Box<dyn Future<Output = Result<Answer, String>> + Send + 'a>>;

/// getaddrinfo: /etc/hosts, nsswitch and resolv.conf search lists, as every other program here.
struct System;

impl Resolve for System {
    fn lookup<'a>(&'a self, host: &'a str) -> Lookup<'a> {
        Box::pin(async move {
            let ips = tokio::net::lookup_host((host, 0))
                .await
                .map_err(|e| e.to_string())?
                .map(|a| a.ip())
                .collect();
            // getaddrinfo says nothing about TTLs: an entry lives dns.cache_ttl_ms.
            Ok(Answer {
                ips,
                ttl: Duration::MAX,
            })
        })
    }
}

impl Resolve for Stub {
    fn lookup<'a>(&'a self, host: &'a str) -> Lookup<'a> {
        Box::pin(Stub::lookup(self, host))
    }
}

/// The `dns.servers` (each asked within `timeout`), or the system resolver when there are none.
pub(super) fn source(servers: &[SocketAddr], timeout: Duration) -> Box<dyn Resolve> {
    if servers.is_empty() {
        Box::new(System)
    } else {
        Box::new(Stub::new(servers, timeout))
    }
}

/// Until when a resolution may be used, and its addresses.
type Entry = (Instant, Arc<[IpAddr]>);

/// The least time an entry is kept, whatever the records' TTL: a TTL of 0 (what a rebinding
/// attacker serves) must not make the vetting and the dial of one request two lookups.
const MIN_TTL: Duration = Duration::from_secs(1);

/// Cached resolutions; bounded in size, each entry kept for its records' TTL, at most `ttl`.
pub struct Resolver {
    ttl: Duration,
    max_entries: usize,
    cache: Mutex<HashMap<String, Entry>>,
    /// Asked on a miss.
    source: Box<dyn Resolve>,
}

impl Resolver {
    pub(super) fn new(ttl: Duration, max_entries: usize, source: Box<dyn Resolve>) -> Self {
        Self {
            ttl: ttl.max(MIN_TTL),
            max_entries: max_entries.max(1),
            cache: Mutex::new(HashMap::new()),
            source,
        }
    }

    /// The addresses of `host` (an IP literal resolves to itself), with `port`.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, DialError> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let now = Instant::now();
        if let Some(ips) = self.cached(host, now) {
            return Ok(ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect());
        }
        let Answer { ips: found, ttl } =
            self.source
                .lookup(host)
                .await
                .map_err(|detail| DialError::Resolve {
                    host: host.to_string(),
                    detail,
                })?;
        let ttl = ttl.clamp(MIN_TTL, self.ttl);
        if found.is_empty() {
            return Err(DialError::Resolve {
                host: host.to_string(),
                detail: "no addresses".into(),
            });
        }
        let addrs = found.iter().map(|ip| SocketAddr::new(*ip, port)).collect();
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= self.max_entries {
                cache.retain(|_, (until, _)| now < *until);
                if cache.len() >= self.max_entries {
                    cache.clear();
                }
            }
            cache.insert(host.to_string(), (now + ttl, found.into()));
        }
        Ok(addrs)
    }

    /// The addresses of `host` (a name) if the cache holds a fresh resolution of it.
    pub(super) fn cached_now(&self, host: &str) -> Option<Arc<[IpAddr]>> {
        self.cached(host, Instant::now())
    }

    fn cached(&self, host: &str, now: Instant) -> Option<Arc<[IpAddr]>> {
        let cache = self.cache.lock().ok()?;
        let (until, ips) = cache.get(host)?;
        (now < *until).then(|| ips.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::Authority;

    #[tokio::test]
    async fn literals_and_localhost() {
        let r = Resolver::new(Duration::from_secs(5), 2, Box::new(System));
        assert_eq!(
            r.resolve("127.0.0.1", 80).await.unwrap(),
            vec!["127.0.0.1:80".parse().unwrap()]
        );
        let a = r.resolve("localhost", 81).await.unwrap();
        assert!(a.iter().all(|s| s.ip().is_loopback() && s.port() == 81));
        // Served from the cache the second time, with the new port.
        let b = r.resolve("localhost", 82).await.unwrap();
        assert_eq!(a.len(), b.len());
    }

    /// Answers from a table, as a DNS server would, without one.
    struct Table(&'static [(&'static str, &'static str)]);

    impl Resolve for Table {
        fn lookup<'a>(&'a self, host: &'a str) -> Lookup<'a> {
            let ips = self.0.iter().filter(|(h, _)| *h == host);
            let ips = ips.map(|(_, ip)| ip.parse().unwrap()).collect();
            let ttl = Duration::from_secs(60);
            Box::pin(async move { Ok(Answer { ips, ttl }) })
        }
    }

    /// A dialer that resolves names from `table`, with the default egress rules.
    fn dialer(table: Table) -> super::super::upstream::Dialer {
        let resolver = Resolver::new(Duration::from_secs(5), 16, Box::new(table));
        let egress = crate::egress::EgressPolicy::new(&[], &[]).unwrap();
        super::super::upstream::Dialer::new(
            Duration::from_secs(1),
            None,
            Arc::new(resolver),
            Arc::new(egress),
        )
    }

    #[tokio::test]
    async fn a_name_answered_with_a_private_or_metadata_address_is_refused_by_the_vetting() {
        use super::super::upstream::Early;
        let table = Table(&[
            ("metadata.test", "169.254.169.254"),
            ("metadata6.test", "fd00:ec2::254"),
            ("internal.test", "10.1.2.3"),
            ("public.test", "192.0.43.10"),
        ]);
        let dialer = dialer(table);
        for (host, want) in [
            ("metadata.test", "link_local"),
            ("metadata6.test", "unique_local"),
            ("internal.test", "private"),
        ] {
            match dialer.vet_early(host, 80, true).await {
                Err(DialError::Forbidden { class, .. }) => assert_eq!(class, want, "{host}"),
                Err(e) => panic!("{host}: {e}"),
                Ok(_) => panic!("{host}: allowed"),
            }
        }
        // The same table's public answer passes: the refusals are the addresses' classes.
        let public = dialer.vet_early("public.test", 80, true).await;
        assert!(matches!(public, Ok(Early::Vetted(Some(_)))));
    }

    /// The IP literal an authority carries (what the vetting reads) is std's parse of its host:
    /// every string of up to five characters of digits, dots, colons, hex and other letters, and
    /// some longer ones.
    #[test]
    fn an_ip_literal_is_what_std_parses() {
        let ip_literal = |s: &str| Authority::new(s.to_string(), 80).ip();
        let all = crate::target::tests::strings_over(b"019.:afgx-", 5);
        let more = [
            "127.0.0.1",
            "10.1.2.3",
            "::1",
            "fe80::1",
            "::ffff:1.2.3.4",
            "1.2.3.4.5",
        ];
        let more = more
            .into_iter()
            .chain(["api.openai.com", "a1.b", "0127.0.0.1", "1::"]);
        for s in all.iter().map(String::as_str).chain(more) {
            assert_eq!(ip_literal(s), s.parse().ok(), "{s:?}");
        }
        assert!(ip_literal("fe80::1").is_some() && ip_literal("127.0.0.1").is_some());
    }

    /// The vetting without an await answers as the awaited one wherever it needs no lookup
    /// (a literal, a name the policy does not read, a cached name), and defers to it otherwise.
    #[tokio::test]
    async fn the_vetting_without_an_await_answers_as_the_awaited_one_or_defers() {
        use super::super::upstream::Early;
        let table = Table(&[
            ("metadata.test", "169.254.169.254"),
            ("public.test", "192.0.43.10"),
        ]);
        let dialer = dialer(table);
        let at = |host: &str, port| Authority::new(host.to_string(), port);
        let mut rec = crate::audit::AuditRecord::default();
        let literal = dialer.vet_early_now(&at("192.0.43.10", 80), true);
        assert!(matches!(literal, Some(Ok(Early::Vetted(Some((a, _))))) if a.port() == 80));
        let meta = dialer.vet_early_now(&at("169.254.169.254", 80), false);
        assert!(matches!(meta, Some(Err(DialError::Forbidden { .. }))));
        // A name the policy does not read stays pending; read, it needs a lookup first.
        for host in ["public.test", "metadata.test"] {
            assert!(matches!(
                dialer.vet_early_now(&at(host, 80), false),
                Some(Ok(Early::Pending))
            ));
            assert!(
                dialer.vet_early_now(&at(host, 80), true).is_none(),
                "{host}"
            );
            assert!(
                dialer
                    .vet_pending_now(&Early::Pending, host, 80, &mut rec)
                    .is_none()
            );
        }
        // Once looked up (cached), answered at once, as the awaited vetting answers.
        let public = dialer.vet_early("public.test", 80, true).await;
        assert!(matches!(public, Ok(Early::Vetted(Some(_)))));
        let now = dialer.vet_early_now(&at("public.test", 443), true);
        assert!(matches!(now, Some(Ok(Early::Vetted(Some((a, _))))) if a.port() == 443));
        let now = dialer.vet_pending_now(&Early::Pending, "public.test", 80, &mut rec);
        assert!(matches!(now, Some(Ok(()))));
        assert!(rec.error.is_none());
        let pending = dialer
            .vet_pending(&Early::Pending, "metadata.test", 80, &mut rec)
            .await;
        let code = pending.map(drop).map_err(|e| e.code());
        let now = dialer.vet_early_now(&at("metadata.test", 80), true);
        assert!(matches!(now, Some(Err(DialError::Forbidden { .. }))));
        let mut late = crate::audit::AuditRecord::default();
        let now = dialer.vet_pending_now(&Early::Pending, "metadata.test", 80, &mut late);
        assert_eq!(now.map(|r| r.map_err(|e| e.code())), Some(code));
        assert_eq!((late.decision, late.error), (rec.decision, rec.error));
        assert!(late.error.is_some());
    }
}
