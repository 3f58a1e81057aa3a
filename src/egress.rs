//! Destination safety: every address a name resolves to is classified, and only addresses that
//! are public (or explicitly allowed) are dialled. Classification happens after DNS, on the exact
//! address that is then connected to, so a name cannot be re-resolved in between (DNS rebinding).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

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

/// Classifies an address. IPv6 forms that embed an IPv4 address (mapped, compatible) are
/// classified by that address; transition prefixes that can reach arbitrary IPv4 space
/// (NAT64, 6to4, Teredo) are classes of their own and not public.
pub fn classify(ip: IpAddr) -> Class {
    match ip {
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

fn classify_v6(ip: Ipv6Addr) -> Class {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    let s = ip.segments();
    if ip.is_unspecified() {
        return Class::Unspecified;
    }
    if ip.is_loopback() {
        return Class::Loopback;
    }
    // IPv4-compatible ::a.b.c.d (deprecated, still routable on some stacks).
    if s[..6] == [0; 6] {
        return classify_v4(Ipv4Addr::new(
            (s[6] >> 8) as u8,
            s[6] as u8,
            (s[7] >> 8) as u8,
            s[7] as u8,
        ));
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
        Ok(Cidr { addr, prefix })
    }
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match (self.addr, ip) {
            (IpAddr::V4(_), IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => return false,
            },
            _ => ip,
        };
        match (self.addr, ip) {
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
#[derive(Debug, Clone, Default)]
pub struct EgressPolicy {
    pub allow: Vec<Cidr>,
    pub deny: Vec<Cidr>,
    /// intentgate's own listeners: never a destination.
    pub own: Vec<SocketAddr>,
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
            own: Vec::new(),
        })
    }

    /// Decides one resolved address (with its port, to recognise our own listeners).
    pub fn check(&self, addr: SocketAddr) -> Result<Class, Forbidden> {
        let ip = addr.ip();
        let class = classify(ip);
        let own = self.own.iter().any(|o| {
            o.port() == addr.port()
                && (o.ip() == ip || (o.ip().is_unspecified() && classify(ip) != Class::Public))
        });
        if own {
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
        let mut p = EgressPolicy::new(&["127.0.0.0/8".into()], &[]).unwrap();
        p.own.push("127.0.0.1:15700".parse().unwrap());
        assert_eq!(
            p.check("127.0.0.1:15700".parse().unwrap())
                .unwrap_err()
                .class,
            Class::Proxy
        );
        assert!(p.check("127.0.0.1:15799".parse().unwrap()).is_ok());
    }
}
