//! The `dns.servers` client: hickory-resolver asks the configured servers, in turn, for A and AAAA
//! records (UDP, again over TCP when an answer is truncated; replies matched to the question by
//! id, source and question section; CNAME chains followed at most 8 queries deep). DNS answers are
//! attacker-influenced input: of the records that come back, only those on the chain from the
//! name asked are used, and their smallest TTL says how long the answer may be reused.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig,
    ServerOrderingStrategy,
};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::rdata::CNAME;
use hickory_resolver::proto::rr::{DNSClass, Name, RData, Record};

/// The addresses of one name, and for how long the records that gave them may be reused.
#[derive(Debug, PartialEq)]
pub(super) struct Answer {
    pub ips: Vec<IpAddr>,
    pub ttl: Duration,
}

/// A resolver for `dns.servers` (never the system configuration, hosts file or search list).
pub(super) struct Stub {
    resolver: TokioResolver,
    /// Each server gets `timeout` in turn.
    deadline: Duration,
}

impl Stub {
    pub fn new(servers: &[SocketAddr], timeout: Duration) -> Result<Self, String> {
        let on_port = |mut c: ConnectionConfig, port| {
            c.port = port;
            c
        };
        let name_servers = servers
            .iter()
            .map(|s| {
                let transports = vec![
                    on_port(ConnectionConfig::udp(), s.port()),
                    on_port(ConnectionConfig::tcp(), s.port()),
                ];
                NameServerConfig::new(s.ip(), true, transports)
            })
            .collect();
        let config = ResolverConfig::from_name_servers(name_servers);
        let mut builder = TokioResolver::builder_with_config(config, TokioRuntimeProvider::new());
        let o = builder.options_mut();
        o.timeout = timeout;
        o.attempts = 1;
        // A first (as dialling prefers), AAAA alongside.
        o.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        // The cache is intentgate's own (src/proxy/dns.rs), shared with the system path.
        o.cache_size = 0;
        o.use_hosts_file = ResolveHosts::Never;
        // In turn, in the order configured: a name is not sent to more servers than needed.
        o.num_concurrent_reqs = 1;
        o.server_ordering_strategy = ServerOrderingStrategy::UserProvidedOrder;
        // CNAME records stay in the answer, so the chain can be checked here.
        o.preserve_intermediates = true;
        let resolver = builder.build().map_err(|e| e.to_string())?;
        let count = u32::try_from(servers.len()).unwrap_or(u32::MAX).max(1);
        Ok(Self {
            resolver,
            deadline: timeout.saturating_mul(count),
        })
    }

    /// The addresses of `host` (a canonical name: lowercase, no trailing dot), asked as an
    /// absolute name.
    pub async fn lookup(&self, host: &str) -> Result<Answer, String> {
        let mut name = Name::from_ascii(host).map_err(|e| format!("not a DNS name: {e}"))?;
        name.set_fqdn(true);
        let found = tokio::time::timeout(self.deadline, self.resolver.lookup_ip(name.clone()))
            .await
            .map_err(|_| format!("no answer within {} ms", self.deadline.as_millis()))?
            .map_err(|e| describe(&e))?;
        let answer = on_chain(&name, found.as_lookup().answers());
        if answer.ips.is_empty() {
            return Err("no addresses".into());
        }
        Ok(answer)
    }
}

/// A resolver error in a few words (hickory's own texts print whole queries).
fn describe(e: &NetError) -> String {
    match e {
        NetError::Dns(d) => match d {
            hickory_resolver::net::DnsError::NoRecordsFound(n) => {
                format!("no addresses ({})", n.response_code)
            }
            other => other.to_string(),
        },
        other => other.to_string(),
    }
}

/// The addresses owned by `query` or by a name its CNAME chain reaches in `records`, and the
/// smallest TTL of the records used. Records about other names (a server may add any) are
/// ignored. The chain grows by at most one name per record, so this ends.
fn on_chain(query: &Name, records: &[Record]) -> Answer {
    let records: Vec<&Record> = records
        .iter()
        .filter(|r| r.dns_class == DNSClass::IN)
        .collect();
    let mut chain = vec![query];
    let mut ttl = u32::MAX;
    loop {
        let next = records.iter().find_map(|r| match &r.data {
            RData::CNAME(CNAME(target)) if chain.contains(&&r.name) && !chain.contains(&target) => {
                Some((target, r.ttl))
            }
            _ => None,
        });
        match next {
            Some((target, t)) => {
                chain.push(target);
                ttl = ttl.min(t);
            }
            None => break,
        }
    }
    let mut ips = Vec::new();
    for r in &records {
        if let Some(ip) = r.data.ip_addr().filter(|_| chain.contains(&&r.name)) {
            ips.push(ip);
            ttl = ttl.min(r.ttl);
        }
    }
    Answer {
        ips,
        ttl: Duration::from_secs(u64::from(ttl)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_resolver::proto::rr::rdata::{A, AAAA};

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn rec(owner: &str, ttl: u32, data: RData) -> Record {
        Record::from_rdata(name(owner), ttl, data)
    }

    #[test]
    fn only_records_on_the_chain_from_the_question_count() {
        let q = name("a.test.");
        let records = [
            rec("a.test.", 300, RData::CNAME(CNAME(name("b.test.")))),
            rec("b.test.", 60, RData::CNAME(CNAME(name("c.test.")))),
            rec("c.test.", 120, RData::A(A::new(192, 0, 2, 1))),
            rec(
                "c.test.",
                30,
                RData::AAAA(AAAA::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
            ),
            // Not asked about, not on the chain: ignored, and its TTL too.
            rec("stray.test.", 1, RData::A(A::new(127, 0, 0, 2))),
            rec("z.test.", 1, RData::CNAME(CNAME(name("a.test.")))),
        ];
        let got = on_chain(&q, &records);
        assert_eq!(
            got.ips,
            vec![
                IpAddr::from([192, 0, 2, 1]),
                "2001:db8::1".parse::<IpAddr>().unwrap()
            ]
        );
        assert_eq!(got.ttl, Duration::from_secs(30));
        // Names compare without case; a loop ends.
        let looped = [
            rec("A.TEST.", 5, RData::CNAME(CNAME(name("b.test.")))),
            rec("b.test.", 5, RData::CNAME(CNAME(name("a.test.")))),
        ];
        assert!(on_chain(&q, &looped).ips.is_empty());
        let stray_only = [rec("stray.test.", 5, RData::A(A::new(10, 0, 0, 1)))];
        assert!(on_chain(&q, &stray_only).ips.is_empty());
    }
}
