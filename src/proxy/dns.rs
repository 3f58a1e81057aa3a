//! Name resolution with a short-lived shared cache, so the address the decision saw is the address
//! the connection uses, and a request does not pay for a lookup when its host was resolved recently.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::upstream::DialError;

/// When a host was resolved, and to what.
type Entry = (Instant, Arc<[IpAddr]>);

/// Cached resolutions; bounded in size, each entry trusted for `ttl`.
pub struct Resolver {
    ttl: Duration,
    max_entries: usize,
    cache: Mutex<HashMap<String, Entry>>,
    /// `dns.servers`; empty means the system resolver.
    servers: Vec<SocketAddr>,
    timeout: Duration,
}

impl Resolver {
    pub fn new(ttl: Duration, max_entries: usize) -> Self {
        Self {
            ttl,
            max_entries: max_entries.max(1),
            cache: Mutex::new(HashMap::new()),
            servers: Vec::new(),
            timeout: Duration::from_secs(5),
        }
    }

    /// Uses these DNS servers (UDP) instead of the system resolver.
    pub fn with_servers(mut self, servers: Vec<SocketAddr>, timeout: Duration) -> Self {
        self.servers = servers;
        self.timeout = timeout;
        self
    }

    async fn lookup(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, DialError> {
        let err = |detail: String| DialError::Resolve {
            host: host.to_string(),
            detail,
        };
        if !self.servers.is_empty() {
            let ips = super::stub::lookup(&self.servers, host, self.timeout)
                .await
                .map_err(err)?;
            return Ok(ips
                .into_iter()
                .map(|ip| SocketAddr::new(ip, port))
                .collect());
        }
        Ok(tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| err(e.to_string()))?
            .collect())
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
        // Boxed: the lookup's state (socket buffers) is large and only needed on a miss; inline
        // it would make every request's future that much bigger to move around.
        let found = Box::pin(self.lookup(host, port)).await?;
        if found.is_empty() {
            return Err(DialError::Resolve {
                host: host.to_string(),
                detail: "no addresses".into(),
            });
        }
        let ips: Arc<[IpAddr]> = found.iter().map(SocketAddr::ip).collect();
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= self.max_entries {
                cache.retain(|_, (at, _)| now.duration_since(*at) < self.ttl);
                if cache.len() >= self.max_entries {
                    cache.clear();
                }
            }
            cache.insert(host.to_string(), (now, ips));
        }
        Ok(found)
    }

    fn cached(&self, host: &str, now: Instant) -> Option<Arc<[IpAddr]>> {
        let cache = self.cache.lock().ok()?;
        let (at, ips) = cache.get(host)?;
        (now.duration_since(*at) < self.ttl).then(|| ips.clone())
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
