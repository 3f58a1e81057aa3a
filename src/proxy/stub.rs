//! A minimal DNS stub client for `dns.servers`: A and AAAA queries over UDP, answers parsed with
//! bounds checks everywhere (a hostile server can only make a lookup fail).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::net::UdpSocket;

const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;

/// Builds a recursive query for `name` and `qtype`.
fn query(id: u16, name: &str, qtype: u16) -> Option<Vec<u8>> {
    let mut q = Vec::with_capacity(32 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD; 1 question
    for label in name.trim_end_matches('.').split('.') {
        let len = u8::try_from(label.len())
            .ok()
            .filter(|l| (1..64).contains(l))?;
        q.push(len);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes()); // IN
    Some(q)
}

/// Skips a (possibly compressed) name starting at `pos`; the position after it.
fn skip_name(msg: &[u8], mut pos: usize) -> Option<usize> {
    for _ in 0..128 {
        let len = *msg.get(pos)?;
        match len {
            0 => return Some(pos + 1),
            l if l & 0xc0 == 0xc0 => return msg.get(pos + 1).map(|_| pos + 2),
            l if l & 0xc0 == 0 => pos += 1 + l as usize,
            _ => return None,
        }
    }
    None
}

fn u16_at(msg: &[u8], pos: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*msg.get(pos)?, *msg.get(pos + 1)?]))
}

/// The A/AAAA addresses in a response to query `id` (CNAME records are skipped; the server
/// returns the chain's addresses in the same answer section).
fn answers(msg: &[u8], id: u16) -> Option<Vec<IpAddr>> {
    if u16_at(msg, 0)? != id || msg.get(2)? & 0x80 == 0 {
        return None;
    }
    let rcode = msg.get(3)? & 0x0f;
    if rcode != 0 {
        return Some(Vec::new());
    }
    let (qd, an) = (u16_at(msg, 4)?, u16_at(msg, 6)?);
    let mut pos = 12;
    for _ in 0..qd {
        pos = skip_name(msg, pos)? + 4;
    }
    let mut out = Vec::new();
    for _ in 0..an {
        pos = skip_name(msg, pos)?;
        let (rtype, rdlen) = (u16_at(msg, pos)?, u16_at(msg, pos + 8)? as usize);
        let data = msg.get(pos + 10..pos + 10 + rdlen)?;
        match (rtype, rdlen) {
            (TYPE_A, 4) => out.push(IpAddr::V4(Ipv4Addr::new(
                data[0], data[1], data[2], data[3],
            ))),
            (TYPE_AAAA, 16) => {
                let mut b = [0u8; 16];
                b.copy_from_slice(data);
                out.push(IpAddr::V6(Ipv6Addr::from(b)));
            }
            _ => {}
        }
        pos += 10 + rdlen;
    }
    Some(out)
}

/// Asks each server in turn for A and AAAA records of `name`; the addresses of the first
/// server that answers.
pub async fn lookup(
    servers: &[SocketAddr],
    name: &str,
    timeout: Duration,
) -> Result<Vec<IpAddr>, String> {
    let mut last = "no DNS server configured".to_string();
    for server in servers {
        match ask(*server, name, timeout).await {
            Ok(ips) => return Ok(ips),
            Err(e) => last = format!("{server}: {e}"),
        }
    }
    Err(last)
}

async fn ask(server: SocketAddr, name: &str, timeout: Duration) -> Result<Vec<IpAddr>, String> {
    let bind: SocketAddr = if server.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        ([0u16; 8], 0).into()
    };
    let sock = UdpSocket::bind(bind).await.map_err(|e| e.to_string())?;
    sock.connect(server).await.map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for (i, qtype) in [TYPE_A, TYPE_AAAA].into_iter().enumerate() {
        let mut idb = [0u8; 2];
        let _ = getrandom::fill(&mut idb);
        let id = u16::from_be_bytes(idb) ^ i as u16;
        let q = query(id, name, qtype).ok_or("not a valid DNS name")?;
        sock.send(&q).await.map_err(|e| e.to_string())?;
        let mut buf = [0u8; 1500];
        let got = tokio::time::timeout(timeout, async {
            loop {
                let n = sock.recv(&mut buf).await.map_err(|e| e.to_string())?;
                // Answers to other ids (late, spoofed) are ignored.
                if let Some(a) = answers(&buf[..n], id) {
                    return Ok::<_, String>(a);
                }
            }
        })
        .await
        .map_err(|_| "timed out".to_string())??;
        out.extend(got);
    }
    if out.is_empty() {
        return Err(format!("no addresses for {name}"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_answers_with_compression_and_refuses_garbage() {
        let q = query(0x1234, "a.test", TYPE_A).unwrap();
        let mut r = q.clone();
        r[2] = 0x81; // response, RD
        r[3] = 0x80; // RA, rcode 0
        r[7] = 1; // one answer
        r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 1]);
        assert_eq!(
            answers(&r, 0x1234).unwrap(),
            vec![IpAddr::from([127, 0, 0, 1])]
        );
        assert!(answers(&r, 0x9999).is_none(), "wrong id");
        for cut in 0..r.len() {
            let _ = answers(&r[..cut], 0x1234); // never panics
        }
        assert!(query(1, &"x".repeat(64), TYPE_A).is_none());
    }
}
