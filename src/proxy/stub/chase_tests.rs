//! Tests of the stub resolver's CNAME chase.

use super::*;
use hickory_proto::rr::rdata::{A, AAAA};

fn name(s: &str) -> Name {
    Name::from_ascii(s).unwrap()
}

fn rec(owner: &str, ttl: u32, data: RData) -> Record {
    Record::from_rdata(name(owner), ttl, data)
}

fn cname(owner: &str, ttl: u32, target: &str) -> Record {
    rec(owner, ttl, RData::CNAME(CNAME(name(target))))
}

fn a(owner: &str, ttl: u32, last: u8) -> Record {
    rec(owner, ttl, RData::A(A::new(192, 0, 2, last)))
}

/// The server's side: a reply to the query `chase` has in flight, with these answers.
fn reply(chase: &Chase, rcode: ResponseCode, answers: Vec<Record>) -> Message {
    let query = Message::from_vec(&chase.wire().unwrap()).unwrap();
    let mut m = Message::response(query.metadata.id, OpCode::Query);
    m.metadata.response_code = rcode;
    m.add_queries(query.queries);
    m.add_answers(answers);
    // Over the wire and back, as the exchange sees it.
    Message::from_vec(&m.to_vec().unwrap()).unwrap()
}

fn ok(chase: &Chase, answers: Vec<Record>) -> Message {
    reply(chase, ResponseCode::NoError, answers)
}

fn ip(last: u8) -> IpAddr {
    IpAddr::from([192, 0, 2, last])
}

#[test]
fn a_reply_counts_only_with_the_id_and_the_question_asked() {
    let c = Chase::new(name("a.test."), RecordType::A, 0x1234);
    let good = ok(&c, vec![]);
    assert!(c.answered_by(&good));

    let mut other_id = good.clone();
    other_id.metadata.id = 0x1235;
    assert!(!c.answered_by(&other_id));

    let mut not_a_response = good.clone();
    not_a_response.metadata.message_type = MessageType::Query;
    assert!(!c.answered_by(&not_a_response));

    let question = |q: Vec<Query>| {
        let mut m = good.clone();
        m.queries = q;
        m
    };
    let forged = question(vec![Query::query(name("b.test."), RecordType::A)]);
    assert!(!c.answered_by(&forged), "another name");
    let other_type = question(vec![Query::query(name("a.test."), RecordType::AAAA)]);
    assert!(!c.answered_by(&other_type), "another type");
    assert!(!c.answered_by(&question(vec![])), "no question");
    let two = question(vec![c.query.clone(), c.query.clone()]);
    assert!(!c.answered_by(&two), "a second question");
    // DNS names compare without case.
    let upper = question(vec![Query::query(name("A.TEST."), RecordType::A)]);
    assert!(c.answered_by(&upper));
}

#[test]
fn a_chain_is_followed_within_a_reply_and_across_queries_with_the_smallest_ttl() {
    let mut c = Chase::new(name("a.test."), RecordType::A, 1);
    let r = ok(
        &c,
        vec![
            cname("a.test.", 300, "b.test."),
            cname("B.TEST.", 60, "c.test."),
            a("c.test.", 120, 1),
            a("c.test.", 200, 2),
        ],
    );
    assert!(!c.take(&r));
    assert_eq!(c.finish(0), Outcome::Found(vec![ip(1), ip(2)], 60));

    // The chain ends at a name without its addresses: that name is asked next.
    let mut c = Chase::new(name("a.test."), RecordType::A, 1);
    assert!(c.take(&ok(&c, vec![cname("a.test.", 30, "b.test.")])));
    c.renew(2);
    assert_eq!(c.id(), 2);
    let next = Message::from_vec(&c.wire().unwrap()).unwrap();
    assert_eq!(next.queries, [Query::query(name("b.test."), RecordType::A)]);
    assert!(next.metadata.recursion_desired);
    assert!(!c.take(&ok(&c, vec![a("b.test.", 600, 3)])));
    assert_eq!(c.finish(0), Outcome::Found(vec![ip(3)], 30));
}

#[test]
fn records_off_the_chain_or_of_another_type_or_class_are_ignored() {
    let mut c = Chase::new(name("a.test."), RecordType::A, 1);
    let mut chaos = a("a.test.", 1, 9);
    chaos.dns_class = DNSClass::CH;
    let r = ok(
        &c,
        vec![
            a("stray.test.", 1, 7),
            cname("z.test.", 1, "a.test."),
            rec(
                "a.test.",
                1,
                RData::AAAA(AAAA::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
            ),
            chaos,
            a("a.test.", 40, 4),
        ],
    );
    assert!(!c.take(&r));
    assert_eq!(c.finish(0), Outcome::Found(vec![ip(4)], 40));

    // Addresses of a name the chain passed through are not the answer: only its end's are.
    let mut c = Chase::new(name("a.test."), RecordType::A, 1);
    let r = ok(&c, vec![a("a.test.", 5, 1), cname("a.test.", 5, "b.test.")]);
    assert!(c.take(&r), "b.test. is asked");
    // And a reply to the next question cannot add records for a name asked before.
    assert!(!c.take(&ok(&c, vec![a("a.test.", 5, 1)])));
    assert_eq!(c.finish(0), Outcome::Empty("no records"));
}

#[test]
fn a_loop_or_a_chain_longer_than_eight_ends_the_chase() {
    let mut c = Chase::new(name("a.test."), RecordType::A, 1);
    let r = ok(
        &c,
        vec![
            cname("a.test.", 5, "b.test."),
            cname("b.test.", 5, "A.test."),
        ],
    );
    assert!(!c.take(&r));
    assert_eq!(c.finish(0), Outcome::Empty("CNAME loop"));

    // Around a loop one query at a time.
    let mut c = Chase::new(name("a.test."), RecordType::A, 1);
    assert!(c.take(&ok(&c, vec![cname("a.test.", 5, "b.test.")])));
    assert!(!c.take(&ok(&c, vec![cname("b.test.", 5, "a.test.")])));
    assert_eq!(c.finish(0), Outcome::Empty("CNAME loop"));

    // Eight links are followed, in one reply or one per query; the ninth is refused.
    let link = |i: usize| cname(&format!("c{i}.test."), 5, &format!("c{}.test.", i + 1));
    let mut c = Chase::new(name("c0.test."), RecordType::A, 1);
    let mut r: Vec<Record> = (0..MAX_CNAMES).map(link).collect();
    r.push(a(&format!("c{MAX_CNAMES}.test."), 5, 8));
    assert!(!c.take(&ok(&c, r)));
    assert_eq!(c.finish(0), Outcome::Found(vec![ip(8)], 5));

    let mut c = Chase::new(name("c0.test."), RecordType::A, 1);
    for i in 0..MAX_CNAMES {
        assert!(c.take(&ok(&c, vec![link(i)])), "link {i}");
    }
    assert!(!c.take(&ok(&c, vec![link(MAX_CNAMES)])));
    assert_eq!(c.finish(0), Outcome::Empty("CNAME chain too long"));
}

#[test]
fn the_response_code_decides_between_no_addresses_and_another_server() {
    let c = || Chase::new(name("a.test."), RecordType::AAAA, 1);
    let mut nx = c();
    assert!(!nx.take(&reply(&nx, ResponseCode::NXDomain, vec![])));
    assert_eq!(nx.finish(0), Outcome::Empty("NXDOMAIN"));

    // NXDOMAIN for the end of a chain: no addresses, and no further query.
    let mut nx = c();
    let r = reply(
        &nx,
        ResponseCode::NXDomain,
        vec![cname("a.test.", 5, "gone.test.")],
    );
    assert!(!nx.take(&r));
    assert_eq!(nx.finish(0), Outcome::Empty("NXDOMAIN"));

    let mut none = c();
    assert!(
        !none.take(&ok(&none, vec![a("a.test.", 5, 1)])),
        "A in AAAA"
    );
    assert_eq!(none.finish(0), Outcome::Empty("no records"));

    for rcode in [ResponseCode::ServFail, ResponseCode::Refused] {
        let mut failed = c();
        assert!(!failed.take(&reply(&failed, rcode, vec![a("a.test.", 5, 1)])));
        assert_eq!(failed.finish(0), Outcome::Failed(rcode.to_str().into()));
    }
    assert_eq!(
        c().finish(1500),
        Outcome::Failed("no answer within 1500 ms".into())
    );
}

#[test]
fn the_query_is_encoded_as_hickory_proto_encodes_it() {
    for (host, qtype) in [
        ("a.test.", RecordType::A),
        ("x.Very-Long.example.test.", RecordType::AAAA),
    ] {
        let c = Chase::new(name(host), qtype, 0xbeef);
        let mut m = Message::new(0xbeef, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(name(host), qtype));
        assert_eq!(c.wire().unwrap(), m.to_vec().unwrap(), "{host} {qtype}");
    }
}
