//! One question (a name and A or AAAA) chased to its addresses: the query on the wire, which
//! replies answer it, and what a reply says — the CNAME chain from the name asked, the addresses
//! at its end, the smallest TTL on the way. Replies are decoded by hickory-proto; nothing here
//! trusts a record that is not on the chain from the name asked.

use std::net::IpAddr;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::CNAME;
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

/// The most CNAME records one question follows (within one reply and across the queries that ask
/// for the targets): one query for the name and at most this many more.
pub(super) const MAX_CNAMES: usize = 8;

/// A query's header after its id: a standard query with recursion desired (flags 0x0100), one
/// question, no answer, authority or additional records.
const HEADER: [u8; 10] = [0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];

/// What a server said about one question.
#[derive(Debug, PartialEq)]
pub(super) enum Outcome {
    /// Addresses, and the smallest TTL of the records that led to them.
    Found(Vec<IpAddr>, u32),
    /// A final answer without addresses: the name does not exist, has no records of the type,
    /// or its CNAME chain loops or runs too long. Another server is not asked.
    Empty(&'static str),
    /// No usable answer from this server (SERVFAIL, REFUSED, a timeout, a broken TCP answer):
    /// the next server may have one.
    Failed(String),
}

/// One question in flight, or answered.
pub(super) struct Chase {
    /// The id of the query in flight.
    id: u16,
    /// The question in flight: the last name of `chain`.
    query: Query,
    /// The name asked first, then each CNAME target followed.
    chain: Vec<Name>,
    /// The smallest TTL of the CNAME records followed.
    ttl: u32,
    outcome: Option<Outcome>,
}

impl Chase {
    pub fn new(name: Name, qtype: RecordType, id: u16) -> Self {
        Self {
            id,
            query: Query::query(name.clone(), qtype),
            chain: vec![name],
            ttl: u32::MAX,
            outcome: None,
        }
    }

    /// The id of the query in flight.
    pub fn id(&self) -> u16 {
        self.id
    }

    pub fn pending(&self) -> bool {
        self.outcome.is_none()
    }

    /// The query in flight, encoded: recursion desired, no EDNS (a server answers at most 512
    /// bytes over UDP, so no answer is ever fragmented; a longer one comes truncated, then over
    /// TCP). Written here rather than by hickory-proto's encoder (a tenth of its cost): a query is
    /// a fixed header and one question, the name's labels as `Name` already checked them.
    pub fn wire(&self) -> Result<Vec<u8>, String> {
        let mut out = Vec::with_capacity(HEADER.len() + 2 + 255 + 4);
        out.extend_from_slice(&self.id.to_be_bytes());
        out.extend_from_slice(&HEADER);
        for label in self.query.name.iter() {
            let len = u8::try_from(label.len())
                .ok()
                .filter(|&l| l <= 63)
                .ok_or("a label longer than 63 bytes")?;
            out.push(len);
            out.extend_from_slice(label);
        }
        out.push(0);
        out.extend_from_slice(&u16::from(self.query.query_type).to_be_bytes());
        out.extend_from_slice(&u16::from(self.query.query_class).to_be_bytes());
        Ok(out)
    }

    /// Whether `reply` answers the query in flight: its id, a response to a standard query, and
    /// the question section exactly the question asked (the name compared without case).
    pub fn answered_by(&self, reply: &Message) -> bool {
        let m = &reply.metadata;
        m.id == self.id
            && m.message_type == MessageType::Response
            && m.op_code == OpCode::Query
            && reply.queries.as_slice() == std::slice::from_ref(&self.query)
    }

    /// Ends the chase without an answer from this server.
    pub fn fail(&mut self, why: String) {
        self.outcome = Some(Outcome::Failed(why));
    }

    /// Takes a (not truncated) reply that `answered_by` the query in flight. True when it ends at
    /// a CNAME target whose addresses were not in it: the question for that target is next, to
    /// be sent with a new id (`renew`).
    pub fn take(&mut self, reply: &Message) -> bool {
        let rcode = reply.metadata.response_code;
        if rcode != ResponseCode::NoError && rcode != ResponseCode::NXDomain {
            self.fail(rcode.to_str().to_string());
            return false;
        }
        let before = self.chain.len();
        if let Err(why) = self.follow(&reply.answers) {
            self.outcome = Some(Outcome::Empty(why));
            return false;
        }
        let ips = self.addresses(&reply.answers);
        if !ips.is_empty() {
            self.outcome = Some(Outcome::Found(ips, self.ttl));
            return false;
        }
        if rcode == ResponseCode::NXDomain {
            self.outcome = Some(Outcome::Empty("NXDOMAIN"));
            return false;
        }
        let target = match self.chain.last() {
            Some(end) if self.chain.len() > before => end.clone(),
            _ => {
                self.outcome = Some(Outcome::Empty("no records"));
                return false;
            }
        };
        self.query = Query::query(target, self.query.query_type);
        true
    }

    /// The next query's id.
    pub fn renew(&mut self, id: u16) {
        self.id = id;
    }

    /// What a chase that never got its answer says.
    pub fn finish(self, timeout_ms: u128) -> Outcome {
        self.outcome
            .unwrap_or_else(|| Outcome::Failed(format!("no answer within {timeout_ms} ms")))
    }

    /// Extends the chain, one record per step, with the CNAME records in `records` owned by its
    /// last name (the name asked, then each target reached). An error when the chain loops or
    /// grows past `MAX_CNAMES`.
    fn follow(&mut self, records: &[Record]) -> Result<(), &'static str> {
        loop {
            let next = records.iter().find_map(|r| match &r.data {
                RData::CNAME(CNAME(target))
                    if r.dns_class == DNSClass::IN && self.chain.last() == Some(&r.name) =>
                {
                    Some((target, r.ttl))
                }
                _ => None,
            });
            let Some((target, ttl)) = next else {
                return Ok(());
            };
            // A chain that comes back to a name already on it (asked in this reply or before).
            if self.chain.contains(target) {
                return Err("CNAME loop");
            }
            if self.chain.len() > MAX_CNAMES {
                return Err("CNAME chain too long");
            }
            self.chain.push(target.clone());
            self.ttl = self.ttl.min(ttl);
        }
    }

    /// The addresses of the type asked owned by the name at the end of the chain (the name asked
    /// or one this reply's CNAMEs lead to from it), their smallest TTL folded into the chain's.
    fn addresses(&mut self, records: &[Record]) -> Vec<IpAddr> {
        let Some(end) = self.chain.last() else {
            return Vec::new();
        };
        let mut ips = Vec::new();
        for r in records {
            if r.dns_class == DNSClass::IN
                && r.record_type() == self.query.query_type
                && &r.name == end
            {
                if let Some(ip) = r.data.ip_addr() {
                    ips.push(ip);
                    self.ttl = self.ttl.min(r.ttl);
                }
            }
        }
        ips
    }
}

#[cfg(test)]
#[path = "chase_tests.rs"]
mod tests;
