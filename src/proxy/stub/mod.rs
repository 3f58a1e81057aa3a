//! The `dns.servers` client: asks the configured servers, in turn, for the A and AAAA records of a
//! name (both at once, over UDP; again over TCP when an answer is truncated; replies matched to
//! the question by id, source and question section; CNAME chains followed at most 8 records
//! long). DNS answers are attacker-influenced input: they are decoded by hickory-proto, and of
//! the records that come back only those on the chain from the name asked are used, their
//! smallest TTL saying how long the answer may be reused.

mod chase;
mod exchange;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_proto::rr::Name;

use chase::Outcome;

/// The addresses of one name, and for how long the records that gave them may be reused.
#[derive(Debug, PartialEq)]
pub(super) struct Answer {
    pub ips: Vec<IpAddr>,
    pub ttl: Duration,
}

/// A resolver for `dns.servers` (never the system configuration, hosts file or search list).
pub(super) struct Stub {
    servers: Vec<SocketAddr>,
    /// What each server gets, in turn.
    timeout: Duration,
}

impl Stub {
    pub fn new(servers: &[SocketAddr], timeout: Duration) -> Self {
        Self {
            servers: servers.to_vec(),
            timeout,
        }
    }

    /// The addresses of `host` (a canonical name: lowercase, no trailing dot), asked as an
    /// absolute name. The next server is asked only when one gave no usable answer (no reply,
    /// SERVFAIL, REFUSED); a name it says has no addresses is not sent further.
    pub async fn lookup(&self, host: &str) -> Result<Answer, String> {
        let mut name = Name::from_ascii(host).map_err(|e| format!("not a DNS name: {e}"))?;
        name.set_fqdn(true);
        let mut last = "no DNS server configured".to_string();
        for &server in &self.servers {
            match exchange::ask(server, &name, self.timeout).await.map(answer) {
                Ok(Ok(found)) => return Ok(found),
                Ok(Err(Next::Stop(why))) => return Err(why),
                Ok(Err(Next::Ask(why))) | Err(why) => last = format!("{server}: {why}"),
            }
        }
        Err(last)
    }
}

/// Why a server's outcomes gave no addresses, and whether the next server is asked.
#[derive(Debug, PartialEq)]
enum Next {
    Stop(String),
    Ask(String),
}

/// The addresses of both questions (A first, as dialling prefers) and the smallest TTL of the
/// records used; a question that found none adds nothing, so one failed type does not cost the
/// other's addresses.
fn answer(outcomes: [Outcome; 2]) -> Result<Answer, Next> {
    let mut ips = Vec::new();
    let mut ttl = u32::MAX;
    let (mut failed, mut empty) = (None, None);
    for outcome in outcomes {
        match outcome {
            Outcome::Found(found, t) => {
                ips.extend(found);
                ttl = ttl.min(t);
            }
            Outcome::Failed(why) => failed = failed.or(Some(why)),
            Outcome::Empty(why) => empty = empty.or(Some(why)),
        }
    }
    if !ips.is_empty() {
        return Ok(Answer {
            ips,
            ttl: Duration::from_secs(u64::from(ttl)),
        });
    }
    Err(match failed {
        Some(why) => Next::Ask(why),
        None => Next::Stop(format!("no addresses ({})", empty.unwrap_or("no records"))),
    })
}

#[cfg(test)]
mod tests;
