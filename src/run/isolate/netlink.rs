//! Just enough rtnetlink to set up the child's network namespace without `ip`: bring `lo` up,
//! and (root mode) a routing table that sends TCP, and only TCP, to `lo`, where iptables
//! redirects it to the transparent listener.

use std::io;
use std::os::fd::OwnedFd;

use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const NLMSG_ERROR: u16 = 2;
const RTM_NEWLINK: u16 = 16;
const RTM_NEWROUTE: u16 = 24;
const RTM_NEWRULE: u16 = 32;
const AF_INET: u8 = 2;
const IFF_UP: u32 = 0x1;
/// `lo` is interface 1 in every network namespace.
pub(crate) const LOOPBACK: u32 = 1;

/// A route-netlink socket in the calling process's network namespace.
pub(crate) struct Netlink {
    fd: OwnedFd,
    seq: u32,
}

/// One `rtattr`: length, type, payload padded to 4 bytes.
fn attr(out: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    out.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(payload);
    out.resize(out.len().next_multiple_of(4), 0);
}

impl Netlink {
    pub(crate) fn open() -> io::Result<Self> {
        let fd = rustix::net::socket_with(
            AddressFamily::NETLINK,
            SocketType::RAW,
            SocketFlags::CLOEXEC,
            None,
        )?;
        Ok(Self { fd, seq: 0 })
    }

    /// Sends one request and waits for the kernel's acknowledgement.
    fn request(&mut self, kind: u16, flags: u16, body: &[u8]) -> io::Result<()> {
        self.seq += 1;
        let mut msg = Vec::with_capacity(16 + body.len());
        msg.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
        msg.extend_from_slice(&kind.to_ne_bytes());
        msg.extend_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        msg.extend_from_slice(&self.seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(body);
        rustix::net::send(&self.fd, &msg, SendFlags::empty())?;
        let mut buf = [0u8; 4096];
        loop {
            let (n, _) = rustix::net::recv(&self.fd, &mut buf[..], RecvFlags::empty())?;
            let mut at = 0;
            while at + 20 <= n {
                let u32_at =
                    |i: usize| u32::from_ne_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
                let len = u32_at(at) as usize;
                let kind = u16::from_ne_bytes([buf[at + 4], buf[at + 5]]);
                if kind == NLMSG_ERROR && u32_at(at + 8) == self.seq {
                    let errno = u32_at(at + 16) as i32;
                    return match errno {
                        0 => Ok(()),
                        e => Err(io::Error::from_raw_os_error(-e)),
                    };
                }
                if len < 16 {
                    break;
                }
                at += len.next_multiple_of(4);
            }
        }
    }

    /// `ip link set dev INDEX up`.
    pub(crate) fn link_up(&mut self, index: u32) -> io::Result<()> {
        let mut body = vec![0u8; 4]; // family, pad, type
        body.extend_from_slice(&index.to_ne_bytes());
        body.extend_from_slice(&IFF_UP.to_ne_bytes()); // flags
        body.extend_from_slice(&IFF_UP.to_ne_bytes()); // change
        self.request(RTM_NEWLINK, 0, &body)
    }

    /// `ip route add default dev lo src 127.0.0.1 table TABLE` (the source must be given: no
    /// address on `lo` has a scope wide enough to be picked for other destinations).
    pub(crate) fn default_route_to_lo(&mut self, table: u8) -> io::Result<()> {
        // rtmsg: family, dst_len, src_len, tos, table, protocol (boot), scope (link), type (unicast), flags
        let mut body = vec![AF_INET, 0, 0, 0, table, 3, 253, 1];
        body.extend_from_slice(&0u32.to_ne_bytes());
        attr(&mut body, 4, &LOOPBACK.to_ne_bytes()); // RTA_OIF
        attr(&mut body, 7, &[127, 0, 0, 1]); // RTA_PREFSRC
        self.request(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, &body)
    }

    /// `ip rule add ipproto tcp lookup TABLE priority PRIORITY` (Linux 4.17+).
    pub(crate) fn tcp_rule(&mut self, table: u8, priority: u32) -> io::Result<()> {
        // fib_rule_hdr: family, dst_len, src_len, tos, table, res1, res2, action (to table), flags
        let mut body = vec![AF_INET, 0, 0, 0, table, 0, 0, 1];
        body.extend_from_slice(&0u32.to_ne_bytes());
        attr(&mut body, 6, &priority.to_ne_bytes()); // FRA_PRIORITY
        attr(&mut body, 22, &[6]); // FRA_IP_PROTO: TCP
        self.request(RTM_NEWRULE, NLM_F_CREATE | NLM_F_EXCL, &body)
    }
}
