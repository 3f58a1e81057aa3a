//! Name resolution with a short-lived shared cache, so the address the vetting saw is the address
//! the connection uses, and a request does not pay for a lookup when its host was resolved recently.
//! `dns.servers` are asked by the stub resolver (src/proxy/stub/); without them, the system's
//! (getaddrinfo: /etc/hosts, nsswitch and resolv.conf search lists, as every other program there).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::stub::Stub;
use super::upstream::DialError;

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
    /// `dns.servers`; `None` means the system resolver.
    stub: Option<Stub>,
}

impl Resolver {
    pub fn new(ttl: Duration, max_entries: usize) -> Self {
        Self {
            ttl: ttl.max(MIN_TTL),
            max_entries: max_entries.max(1),
            cache: Mutex::new(HashMap::new()),
            stub: None,
        }
    }

    /// Asks these DNS servers instead of the system resolver (none: the system resolver), each
    /// within `timeout`.
    pub fn with_servers(mut self, servers: &[SocketAddr], timeout: Duration) -> Self {
        if !servers.is_empty() {
            self.stub = Some(Stub::new(servers, timeout));
        }
        self
    }

    /// A fresh resolution of `host`, and how long it may be reused.
    async fn lookup(&self, host: &str) -> Result<(Vec<IpAddr>, Duration), DialError> {
        let err = |detail: String| DialError::Resolve {
            host: host.to_string(),
            detail,
        };
        if let Some(stub) = &self.stub {
            let answer = stub.lookup(host).await.map_err(err)?;
            return Ok((answer.ips, answer.ttl.clamp(MIN_TTL, self.ttl)));
        }
        // getaddrinfo says nothing about TTLs: an entry lives dns.cache_ttl_ms.
        let ips = tokio::net::lookup_host((host, 0))
            .await
            .map_err(|e| err(e.to_string()))?
            .map(|a| a.ip())
            .collect();
        Ok((ips, self.ttl))
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
        // Boxed: the lookup's state is large and only needed on a miss; inline it would make
        // every request's future that much bigger to move around.
        let (found, ttl) = Box::pin(self.lookup(host)).await?;
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

    fn cached(&self, host: &str, now: Instant) -> Option<Arc<[IpAddr]>> {
        let cache = self.cache.lock().ok()?;
        let (until, ips) = cache.get(host)?;
        (now < *until).then(|| ips.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn literals_and_localhost() {
        let r = Resolver::new(Duration::from_secs(5), 2);
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
}
