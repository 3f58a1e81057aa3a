//! The stub against DNS servers these tests run on loopback (UDP and TCP on one port), each
//! answering from a plan: which datagrams (or TCP reply) a query gets.

use super::*;
use hickory_proto::op::{Message, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME};
use hickory_proto::rr::{RData, Record, RecordType};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Via {
    Udp,
    Tcp,
}

/// What a test server sends for a query: any number of datagrams (over TCP, the first).
type Plan = fn(&Message, Via) -> Vec<Vec<u8>>;

struct Server {
    addr: SocketAddr,
    /// Each query seen: its name, type and transport.
    seen: Arc<Mutex<Vec<(String, RecordType, Via)>>>,
}

impl Server {
    async fn start(plan: Plan) -> Self {
        let (udp, tcp) = loop {
            let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            if let Ok(tcp) = TcpListener::bind(udp.local_addr().unwrap()).await {
                break (udp, tcp);
            }
        };
        let addr = udp.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let note = move |q: &Message, via| {
            let q0 = &q.queries[0];
            log.lock()
                .unwrap()
                .push((q0.name.to_ascii(), q0.query_type, via));
        };
        let note_tcp = note.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            loop {
                let (n, peer) = udp.recv_from(&mut buf).await.unwrap();
                let q = Message::from_vec(&buf[..n]).unwrap();
                note(&q, Via::Udp);
                for m in plan(&q, Via::Udp) {
                    udp.send_to(&m, peer).await.unwrap();
                }
            }
        });
        tokio::spawn(async move {
            loop {
                let (mut s, _) = tcp.accept().await.unwrap();
                let mut len = [0u8; 2];
                s.read_exact(&mut len).await.unwrap();
                let mut q = vec![0u8; usize::from(u16::from_be_bytes(len))];
                s.read_exact(&mut q).await.unwrap();
                let q = Message::from_vec(&q).unwrap();
                note_tcp(&q, Via::Tcp);
                if let Some(m) = plan(&q, Via::Tcp).first() {
                    let len = u16::try_from(m.len()).unwrap().to_be_bytes();
                    s.write_all(&[&len[..], m].concat()).await.unwrap();
                }
            }
        });
        Self { addr, seen }
    }

    fn seen(&self) -> Vec<(String, RecordType, Via)> {
        self.seen.lock().unwrap().clone()
    }
}

/// A reply to `q` with these answers, owned by the name asked.
fn reply(q: &Message, rcode: ResponseCode, data: Vec<RData>) -> Message {
    let mut m = Message::response(q.metadata.id, OpCode::Query);
    m.metadata.response_code = rcode;
    m.add_queries(q.queries.clone());
    let owner = q.queries[0].name.clone();
    m.add_answers(
        data.into_iter()
            .map(|d| Record::from_rdata(owner.clone(), 60, d)),
    );
    m
}

/// `reply`, encoded.
fn wire(q: &Message, rcode: ResponseCode, data: Vec<RData>) -> Vec<u8> {
    reply(q, rcode, data).to_vec().unwrap()
}

/// 127.0.0.N for an A question, ::N for AAAA.
fn address(q: &Message, n: u8) -> RData {
    match q.queries[0].query_type {
        RecordType::A => RData::A(A::new(127, 0, 0, n)),
        _ => RData::AAAA(AAAA::new(0, 0, 0, 0, 0, 0, 0, n.into())),
    }
}

fn stub(servers: &[&Server]) -> Stub {
    let addrs: Vec<_> = servers.iter().map(|s| s.addr).collect();
    Stub::new(&addrs, Duration::from_secs(10))
}

fn ips(v: &[&str]) -> Vec<IpAddr> {
    v.iter().map(|s| s.parse().unwrap()).collect()
}

#[tokio::test]
async fn a_and_aaaa_come_from_one_exchange() {
    let server =
        Server::start(|q, _| vec![wire(q, ResponseCode::NoError, vec![address(q, 1)])]).await;
    let got = stub(&[&server]).lookup("both.test").await.unwrap();
    assert_eq!(got.ips, ips(&["127.0.0.1", "::1"]));
    assert_eq!(got.ttl, Duration::from_secs(60));
    let seen = server.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(
        seen.iter()
            .all(|(n, _, via)| n == "both.test." && *via == Via::Udp)
    );
}

#[tokio::test]
async fn a_truncated_answer_is_asked_again_over_tcp() {
    let server = Server::start(|q, via| {
        let mut m = reply(q, ResponseCode::NoError, vec![]);
        match (q.queries[0].query_type, via) {
            (RecordType::A, Via::Udp) => m.metadata.truncation = true,
            (RecordType::A, Via::Tcp) => m = reply(q, ResponseCode::NoError, vec![address(q, 5)]),
            _ => {}
        }
        vec![m.to_vec().unwrap()]
    })
    .await;
    let got = stub(&[&server]).lookup("big.test").await.unwrap();
    assert_eq!(got.ips, ips(&["127.0.0.5"]));
    let tcp: Vec<_> = server
        .seen()
        .into_iter()
        .filter(|s| s.2 == Via::Tcp)
        .collect();
    assert_eq!(tcp, [("big.test.".to_string(), RecordType::A, Via::Tcp)]);
}

#[tokio::test]
async fn replies_with_another_id_or_question_are_ignored() {
    let server = Server::start(|q, _| {
        let mut other_id = reply(q, ResponseCode::NoError, vec![address(q, 66)]);
        other_id.metadata.id = q.metadata.id.wrapping_add(1);
        let mut forged = reply(q, ResponseCode::NoError, vec![address(q, 67)]);
        forged.queries[0].name = Name::from_ascii("elsewhere.test.").unwrap();
        // The right id, then bytes that do not decode.
        let mut garbage = wire(q, ResponseCode::NoError, vec![address(q, 68)]);
        garbage.truncate(garbage.len() - 2);
        let real = wire(q, ResponseCode::NoError, vec![address(q, 7)]);
        let (other_id, forged) = (other_id.to_vec().unwrap(), forged.to_vec().unwrap());
        vec![other_id, forged, garbage, real]
    })
    .await;
    let got = stub(&[&server]).lookup("spoofed.test").await.unwrap();
    assert_eq!(got.ips, ips(&["127.0.0.7", "::7"]));
}

#[tokio::test]
async fn a_server_that_fails_is_passed_over_and_one_that_says_no_is_final() {
    let failing = Server::start(|q, _| vec![wire(q, ResponseCode::ServFail, vec![])]).await;
    let nx = Server::start(|q, _| vec![wire(q, ResponseCode::NXDomain, vec![])]).await;
    let good =
        Server::start(|q, _| vec![wire(q, ResponseCode::NoError, vec![address(q, 9)])]).await;
    // A closed port: the ICMP refusal ends that server's turn at once.
    let closed = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let closed_addr = closed.local_addr().unwrap();
    drop(closed);

    let s = Stub::new(
        &[closed_addr, failing.addr, good.addr],
        Duration::from_secs(10),
    );
    assert_eq!(
        s.lookup("x.test").await.unwrap().ips,
        ips(&["127.0.0.9", "::9"])
    );

    let s = Stub::new(&[nx.addr, good.addr], Duration::from_secs(10));
    let err = s.lookup("gone.test").await.unwrap_err();
    assert_eq!(err, "no addresses (NXDOMAIN)");
    assert!(
        good.seen().iter().all(|(n, ..)| n != "gone.test."),
        "not sent further"
    );

    let s = Stub::new(&[failing.addr], Duration::from_secs(10));
    let err = s.lookup("x.test").await.unwrap_err();
    assert_eq!(err, format!("{}: Server Failure", failing.addr));
}

#[tokio::test]
async fn a_cname_chain_is_asked_link_by_link() {
    let server = Server::start(|q, _| {
        let asked = q.queries[0].name.to_ascii();
        let data = match asked.as_str() {
            "alias.test." => vec![RData::CNAME(CNAME(Name::from_ascii("real.test.").unwrap()))],
            "real.test." => vec![address(q, 3)],
            _ => vec![],
        };
        vec![wire(q, ResponseCode::NoError, data)]
    })
    .await;
    let got = stub(&[&server]).lookup("alias.test").await.unwrap();
    assert_eq!(got.ips, ips(&["127.0.0.3", "::3"]));
    assert_eq!(server.seen().len(), 4, "{:?}", server.seen());
}

#[test]
fn both_answers_and_the_smallest_ttl_make_the_answer() {
    let v4 = IpAddr::from([192, 0, 2, 1]);
    let found = answer([Outcome::Found(vec![v4], 300), Outcome::Empty("no records")]);
    assert_eq!(
        found,
        Ok(Answer {
            ips: vec![v4],
            ttl: Duration::from_secs(300)
        })
    );
    let v6: IpAddr = "2001:db8::1".parse().unwrap();
    let both = answer([Outcome::Found(vec![v4], 300), Outcome::Found(vec![v6], 5)]).unwrap();
    assert_eq!((both.ips, both.ttl), (vec![v4, v6], Duration::from_secs(5)));
    // One type failing does not cost the other's addresses.
    assert!(answer([Outcome::Failed("x".into()), Outcome::Found(vec![v6], 5)]).is_ok());
    assert_eq!(
        answer([Outcome::Failed("x".into()), Outcome::Empty("NXDOMAIN")]),
        Err(Next::Ask("x".into()))
    );
    assert_eq!(
        answer([Outcome::Empty("NXDOMAIN"), Outcome::Empty("NXDOMAIN")]),
        Err(Next::Stop("no addresses (NXDOMAIN)".into()))
    );
}

#[tokio::test]
async fn a_name_dns_cannot_carry_is_refused_before_any_query() {
    let s = Stub::new(&["127.0.0.1:9".parse().unwrap()], Duration::from_secs(1));
    let err = s.lookup(&"x".repeat(64)).await.unwrap_err();
    assert!(err.starts_with("not a DNS name"), "{err}");
}
