//! One server asked for the A and AAAA records of a name at once, over a UDP socket of this lookup
//! alone: connected to the server (the kernel drops datagrams from any other source), bound to a
//! fresh kernel-chosen random port, each query with a random id. A reply is decoded only when its
//! id is one in flight, and used only when its question is the one asked; a truncated reply is
//! asked again over TCP.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::Message;
use hickory_proto::rr::{Name, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::{Instant, timeout_at};

use super::chase::{Chase, Outcome};

/// The largest UDP reply read. Without EDNS a server sends at most 512 bytes; a longer datagram
/// is still read whole (and decoded like any other) rather than cut.
const UDP_READ: usize = 4096;

/// What `server` says about the A and AAAA records of `name` (in that order) within `timeout`,
/// or why it said nothing usable.
pub(super) async fn ask(
    server: SocketAddr,
    name: &Name,
    timeout: Duration,
) -> Result<[Outcome; 2], String> {
    let until = Instant::now() + timeout;
    let mut ids = Ids::new();
    let mut chases = [
        Chase::new(name.clone(), RecordType::A, ids.next()?),
        Chase::new(name.clone(), RecordType::AAAA, ids.next()?),
    ];
    let io = |e: std::io::Error| e.to_string();
    let local: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(local).await.map_err(io)?;
    sock.connect(server).await.map_err(io)?;
    for c in &chases {
        sock.send(&c.wire()?).await.map_err(io)?;
    }
    // Not zeroed: `recv_buf` writes into the spare capacity and counts what it wrote.
    let mut buf = Vec::with_capacity(UDP_READ);
    while chases.iter().any(Chase::pending) {
        buf.clear();
        // A timeout ends the wait; a refused port (ICMP) or another socket error ends the exchange
        // with this server for the questions still open (an answer already taken is kept).
        let read = match timeout_at(until, sock.recv_buf(&mut buf)).await {
            Err(_) => break,
            Ok(Err(e)) => {
                let why = e.to_string();
                chases
                    .iter_mut()
                    .filter(|c| c.pending())
                    .for_each(|c| c.fail(why.clone()));
                break;
            }
            Ok(Ok(read)) => read,
        };
        let got = buf.get(..read).unwrap_or_default();
        // The id before anything else: a datagram for no query in flight is not decoded.
        let Some(id) = got.first_chunk::<2>().map(|b| u16::from_be_bytes(*b)) else {
            continue;
        };
        if !chases.iter().any(|c| c.pending() && c.id() == id) {
            continue;
        }
        let Ok(reply) = Message::from_vec(got) else {
            continue;
        };
        let Some(chase) = chases
            .iter_mut()
            .find(|c| c.pending() && c.answered_by(&reply))
        else {
            continue;
        };
        let reply = if reply.metadata.truncation {
            match over_tcp(server, chase, until).await {
                Ok(whole) => whole,
                Err(e) => {
                    chase.fail(format!("over TCP: {e}"));
                    continue;
                }
            }
        } else {
            reply
        };
        if chase.take(&reply) {
            chase.renew(ids.next()?);
            sock.send(&chase.wire()?).await.map_err(io)?;
        }
    }
    let ms = timeout.as_millis();
    Ok(chases.map(|c| c.finish(ms)))
}

/// The query in flight of `chase` asked again over a TCP connection of its own, and the reply,
/// which must answer it.
async fn over_tcp(server: SocketAddr, chase: &Chase, until: Instant) -> Result<Message, String> {
    let exchange = async {
        let query = chase.wire()?;
        let len = u16::try_from(query.len()).map_err(|_| "query too long")?;
        let mut framed = Vec::with_capacity(2 + query.len());
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&query);
        let io = |e: std::io::Error| e.to_string();
        let mut stream = TcpStream::connect(server).await.map_err(io)?;
        stream.write_all(&framed).await.map_err(io)?;
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).await.map_err(io)?;
        let mut whole = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut whole).await.map_err(io)?;
        let reply = Message::from_vec(&whole).map_err(|e| e.to_string())?;
        if !chase.answered_by(&reply) {
            return Err("the reply does not answer the question".to_string());
        }
        Ok(reply)
    };
    timeout_at(until, exchange)
        .await
        .map_err(|_| "no answer in time".to_string())?
}

/// Random query ids, read from the system's generator eight at a time (one read covers the two
/// questions of a lookup and up to six CNAME targets asked after them).
struct Ids {
    bytes: [u8; 16],
    used: usize,
}

impl Ids {
    fn new() -> Self {
        Self {
            bytes: [0; 16],
            used: 16,
        }
    }

    /// The next id; an error (and so no query) when the system has no random bytes to give.
    fn next(&mut self) -> Result<u16, String> {
        if self.used >= self.bytes.len() {
            getrandom::fill(&mut self.bytes).map_err(|e| format!("no random query id: {e}"))?;
            self.used = 0;
        }
        let id = u16::from_be_bytes([self.bytes[self.used], self.bytes[self.used + 1]]);
        self.used += 2;
        Ok(id)
    }
}
