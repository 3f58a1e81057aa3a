//! Destination safety: every address a name resolves to is classified, and only addresses that
//! are public (or explicitly allowed) are dialled. Classification happens after DNS, on the exact
//! address that is then connected to, so a name cannot be re-resolved in between (DNS rebinding).
//! Every comparison is made on the unmapped address: `::ffff:127.0.0.1` is `127.0.0.1`.

mod own;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

pub use own::OwnListeners;

/// What kind of address a destination is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Public,
    Loopback,
    Unspecified,
    LinkLocal,
    Private,
    Cgnat,
    UniqueLocal,
    Multicast,
    Broadcast,
    Documentation,
    Benchmarking,
    Reserved,
    Nat64,
    SixToFour,
    Teredo,
    /// One of intentgate's own listeners.
    Proxy,
}

impl Class {
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Public => "public",
            Class::Loopback => "loopback",
            Class::Unspecified => "unspecified",
            Class::LinkLocal => "link_local",
            Class::Private => "private",
            Class::Cgnat => "cgnat",
            Class::UniqueLocal => "unique_local",
            Class::Multicast => "multicast",
            Class::Broadcast => "broadcast",
            Class::Documentation => "documentation",
            Class::Benchmarking => "benchmarking",
            Class::Reserved => "reserved",
            Class::Nat64 => "nat64",
            Class::SixToFour => "6to4",
            Class::Teredo => "teredo",
            Class::Proxy => "proxy",
        }
    }
}

/// The address an IPv6 spelling of an IPv4 address stands for: IPv4-mapped `::ffff:a.b.c.d` and
/// IPv4-compatible `::a.b.c.d` become `a.b.c.d` (`::` and `::1` stay what they are).
pub fn unmapped(ip: IpAddr) -> IpAddr {
    let IpAddr::V6(v6) = ip else {
        return ip;
    };
    if let Some(v4) = v6.to_ipv4_mapped() {
        return IpAddr::V4(v4);
    }
    let bits = u128::from(v6);
    if bits >> 32 == 0 && bits > 1 {
        return IpAddr::V4(Ipv4Addr::from(bits as u32));
    }
    ip
}

/// Classifies an address. IPv6 forms that embed an IPv4 address (mapped, compatible) are
/// classified by that address; transition prefixes that can reach arbitrary IPv4 space
/// (NAT64, 6to4, Teredo) are classes of their own and not public.
pub fn classify(ip: IpAddr) -> Class {
    match unmapped(ip) {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Class {
    let o = ip.octets();
    match o {
        [0, 0, 0, 0] => Class::Unspecified,
        [0, ..] => Class::Reserved,
        [127, ..] => Class::Loopback,
        [10, ..] => Class::Private,
        [172, b, ..] if (16..=31).contains(&b) => Class::Private,
        [192, 168, ..] => Class::Private,
        [169, 254, ..] => Class::LinkLocal,
        [100, b, ..] if (64..=127).contains(&b) => Class::Cgnat,
        [192, 0, 0, _] => Class::Reserved,
        [192, 0, 2, _] | [198, 51, 100, _] | [203, 0, 113, _] => Class::Documentation,
        [198, b, ..] if b == 18 || b == 19 => Class::Benchmarking,
        [255, 255, 255, 255] => Class::Broadcast,
        [a, ..] if (224..=239).contains(&a) => Class::Multicast,
        [a, ..] if a >= 240 => Class::Reserved,
        _ => Class::Public,
    }
}

/// An IPv6 address that is not an IPv4 one in disguise (see `unmapped`).
fn classify_v6(ip: Ipv6Addr) -> Class {
    let s = ip.segments();
    if ip.is_unspecified() {
        return Class::Unspecified;
    }
    if ip.is_loopback() {
        return Class::Loopback;
    }
    match s[0] {
        0xfe80..=0xfebf => Class::LinkLocal,
        0xfc00..=0xfdff => Class::UniqueLocal,
        0xff00..=0xffff => Class::Multicast,
        0x2002 => Class::SixToFour,
        0x2001 if s[1] == 0 => Class::Teredo,
        0x2001 if s[1] == 0xdb8 => Class::Documentation,
        0x2001 if s[1] == 2 && s[2] == 0 => Class::Benchmarking,
        0x0064 if s[1] == 0xff9b => Class::Nat64,
        0x0100 if s[1..4] == [0, 0, 0] => Class::Reserved, // discard-only 100::/64
        0x2000..=0x3fff => Class::Public,
        _ => Class::Reserved,
    }
}

/// A CIDR block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("'{s}' is not an IP address or CIDR"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("'{s}' has an invalid prefix length"))?,
            None => max,
        };
        // `::ffff:10.0.0.0/104` is `10.0.0.0/8`: addresses are compared unmapped.
        match unmapped(addr) {
            IpAddr::V4(v4) if addr.is_ipv6() && prefix >= 96 => Ok(Cidr {
                addr: IpAddr::V4(v4),
                prefix: prefix - 96,
            }),
            _ => Ok(Cidr { addr, prefix }),
        }
    }
}

impl Cidr {
    /// Whether the block holds `ip`, compared unmapped.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, unmapped(ip)) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// The egress rules in force: default-deny of non-public classes, with configured exceptions.
#[derive(Debug, Default)]
pub struct EgressPolicy {
    pub allow: Vec<Cidr>,
    pub deny: Vec<Cidr>,
    /// intentgate's own listeners: never a destination, whatever `allow` says.
    pub own: OwnListeners,
}

/// Why an address may not be dialled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forbidden {
    pub ip: IpAddr,
    pub class: Class,
    pub why: &'static str,
}

impl EgressPolicy {
    /// Builds the rules from config strings; errors name the bad entry.
    pub fn new(allow: &[String], deny: &[String]) -> Result<Self, String> {
        let parse = |v: &[String]| {
            v.iter()
                .map(|s| s.parse())
                .collect::<Result<Vec<Cidr>, _>>()
        };
        Ok(Self {
            allow: parse(allow)?,
            deny: parse(deny)?,
            own: OwnListeners::default(),
        })
    }

    /// Decides one resolved address (with its port, to recognise our own listeners), on its
    /// unmapped form.
    pub fn check(&self, addr: SocketAddr) -> Result<Class, Forbidden> {
        let ip = unmapped(addr.ip());
        let class = classify(ip);
        if self.own.contains(ip, addr.port()) {
            return Err(Forbidden {
                ip,
                class: Class::Proxy,
                why: "the destination is intentgate itself",
            });
        }
        if self.deny.iter().any(|c| c.contains(ip)) {
            return Err(Forbidden {
                ip,
                class,
                why: "the address is in egress.deny_cidrs",
            });
        }
        if class == Class::Public || self.allow.iter().any(|c| c.contains(ip)) {
            return Ok(class);
        }
        Err(Forbidden {
            ip,
            class,
            why: "non-public addresses are forbidden unless listed in egress.allow_cidrs",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Class {
        classify(s.parse().unwrap())
    }

    #[test]
    fn classes() {
        for (ip, class) in [
            ("8.8.8.8", Class::Public),
            ("127.0.0.1", Class::Loopback),
            ("127.255.0.9", Class::Loopback),
            ("0.0.0.0", Class::Unspecified),
            ("169.254.169.254", Class::LinkLocal),
            ("10.1.2.3", Class::Private),
            ("172.16.0.1", Class::Private),
            ("172.32.0.1", Class::Public),
            ("192.168.1.1", Class::Private),
            ("100.64.0.1", Class::Cgnat),
            ("100.128.0.1", Class::Public),
            ("224.0.0.1", Class::Multicast),
            ("255.255.255.255", Class::Broadcast),
            ("192.0.2.7", Class::Documentation),
            ("203.0.113.7", Class::Documentation),
            ("198.18.0.1", Class::Benchmarking),
            ("240.0.0.1", Class::Reserved),
            ("::1", Class::Loopback),
            ("::", Class::Unspecified),
            ("::ffff:127.0.0.1", Class::Loopback),
            ("::ffff:169.254.169.254", Class::LinkLocal),
            ("::127.0.0.1", Class::Loopback),
            ("fe80::1", Class::LinkLocal),
            ("fd00:ec2::254", Class::UniqueLocal),
            ("fc00::1", Class::UniqueLocal),
            ("ff02::1", Class::Multicast),
            ("64:ff9b::a9fe:a9fe", Class::Nat64),
            ("2002:7f00:1::", Class::SixToFour),
            ("2001::1", Class::Teredo),
            ("2001:db8::1", Class::Documentation),
            ("2606:4700::1111", Class::Public),
        ] {
            assert_eq!(c(ip), class, "{ip}");
        }
    }

    #[test]
    fn cidrs_and_policy() {
        let p = EgressPolicy::new(
            &["127.0.0.1/32".into(), "10.0.0.0/8".into()],
            &["8.8.8.0/24".into()],
        )
        .unwrap();
        assert!(p.check("127.0.0.1:80".parse().unwrap()).is_ok());
        assert!(p.check("[::ffff:127.0.0.1]:80".parse().unwrap()).is_ok());
        assert!(p.check("127.0.0.2:80".parse().unwrap()).is_err());
        assert!(p.check("10.9.9.9:80".parse().unwrap()).is_ok());
        assert_eq!(
            p.check("8.8.8.8:53".parse().unwrap()).unwrap_err().why,
            "the address is in egress.deny_cidrs"
        );
        assert!(p.check("1.1.1.1:443".parse().unwrap()).is_ok());
        let forbidden = p.check("169.254.169.254:80".parse().unwrap()).unwrap_err();
        assert_eq!(forbidden.class, Class::LinkLocal);
        assert!("1.2.3.4/33".parse::<Cidr>().is_err());
        assert!("nope".parse::<Cidr>().is_err());
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("9.9.9.9".parse().unwrap()));
    }

    #[test]
    fn own_listeners_are_never_destinations() {
        let mut p = EgressPolicy::new(&["127.0.0.0/8".into(), "::/0".into()], &[]).unwrap();
        p.own = ["127.0.0.1:15700".parse().unwrap()].into_iter().collect();
        for ours in [
            "127.0.0.1:15700",
            "[::ffff:127.0.0.1]:15700",
            "[::ffff:7f00:1]:15700",
            "[::127.0.0.1]:15700",
            "0.0.0.0:15700",
            "[::]:15700",
        ] {
            let f = p.check(ours.parse().unwrap()).unwrap_err();
            assert_eq!(f.class, Class::Proxy, "{ours}");
        }
        assert!(p.check("127.0.0.1:15799".parse().unwrap()).is_ok());
        // Bound to 127.0.0.1 only: another loopback address is another socket.
        assert!(p.check("127.0.0.2:15700".parse().unwrap()).is_ok());
        assert!(p.check("[::1]:15700".parse().unwrap()).is_ok());
    }

    #[test]
    fn a_wildcard_listener_is_ours_at_every_local_address() {
        let mut p = EgressPolicy::new(&["0.0.0.0/0".into(), "::/0".into()], &[]).unwrap();
        p.own = [
            "0.0.0.0:15700".parse().unwrap(),
            "[::]:15701".parse().unwrap(),
        ]
        .into_iter()
        .collect();
        let mut local: Vec<IpAddr> = if_addrs::get_if_addrs()
            .unwrap()
            .iter()
            .map(|i| i.ip())
            .collect();
        local.extend(
            ["127.0.0.9", "::1", "::ffff:127.0.0.1", "0.0.0.0"]
                .map(|a| a.parse::<IpAddr>().unwrap()),
        );
        for ip in local {
            for port in [15700, 15701] {
                let f = p.check(SocketAddr::new(ip, port)).unwrap_err();
                assert_eq!(f.class, Class::Proxy, "{ip}:{port}");
            }
            assert!(p.check(SocketAddr::new(ip, 15702)).is_ok(), "{ip}:15702");
        }
        // A public address that is not the host's is not ours; a non-public one at the port of
        // a wildcard listener is (it may be NATed back to us).
        assert!(p.check("192.88.99.9:15700".parse().unwrap()).is_ok());
        assert_eq!(
            p.check("10.96.0.1:15700".parse().unwrap())
                .unwrap_err()
                .class,
            Class::Proxy
        );
    }

    #[test]
    fn mapped_and_compatible_addresses_are_compared_unmapped() {
        for (ip, v4) in [
            ("::ffff:10.1.2.3", Some("10.1.2.3")),
            ("::10.1.2.3", Some("10.1.2.3")),
            ("::1", None),
            ("::", None),
            ("2001:db8::1", None),
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            let want = v4.map_or(ip, |v| v.parse().unwrap());
            assert_eq!(unmapped(ip), want);
        }
        // CIDRs in either spelling match addresses in either spelling.
        let p =
            EgressPolicy::new(&["::ffff:10.0.0.0/104".into()], &["10.9.0.0/16".into()]).unwrap();
        assert!(p.check("10.1.1.1:80".parse().unwrap()).is_ok());
        assert!(p.check("[::10.1.1.1]:80".parse().unwrap()).is_ok());
        for denied in ["[::ffff:10.9.0.1]:80", "[::10.9.0.1]:80"] {
            assert_eq!(
                p.check(denied.parse().unwrap()).unwrap_err().why,
                "the address is in egress.deny_cidrs",
                "{denied}"
            );
        }
    }
}
