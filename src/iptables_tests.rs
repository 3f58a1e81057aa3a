//! Unit tests of the generated iptables command lists.

use super::*;

fn lines(steps: &[Step]) -> Vec<String> {
    steps.iter().map(|s| s.to_string()).collect()
}

#[test]
fn default_plan_redirects_all_tcp_except_own_uid_and_loopback() {
    let got = lines(&apply_steps(&Plan::default(), Tables::system(Family::V4)));
    let want = [
        "iptables -t nat -L INTENTGATE_OUTPUT -n 2>/dev/null || iptables -t nat -N INTENTGATE_OUTPUT",
        "iptables -t nat -F INTENTGATE_OUTPUT",
        "iptables -t nat -A INTENTGATE_OUTPUT -m owner --uid-owner 15700 -j RETURN",
        "iptables -t nat -A INTENTGATE_OUTPUT -d 127.0.0.0/8 -j RETURN",
        "iptables -t nat -A INTENTGATE_OUTPUT -p tcp -j REDIRECT --to-ports 15702",
        "iptables -t nat -C OUTPUT -p tcp -j INTENTGATE_OUTPUT 2>/dev/null || iptables -t nat -A OUTPUT -p tcp -j INTENTGATE_OUTPUT",
        "iptables -t filter -D OUTPUT -p udp -j INTENTGATE_QUIC 2>/dev/null || true",
        "iptables -t filter -F INTENTGATE_QUIC 2>/dev/null || true",
        "iptables -t filter -X INTENTGATE_QUIC 2>/dev/null || true",
    ];
    assert_eq!(got, want);
}

#[test]
fn exclusions_come_before_the_redirect_and_are_split_by_family() {
    let plan = Plan {
        proxy_uid: 2000,
        port: 16000,
        exclude_ports: vec![22, 5432],
        exclude_cidrs: vec!["10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()],
        ..Plan::default()
    };
    let v4 = lines(&apply_steps(&plan, Tables::system(Family::V4)));
    let pos = |v: &[String], s: &str| v.iter().position(|l| l.contains(s)).unwrap();
    assert!(v4.iter().any(|l| l.ends_with("--uid-owner 2000 -j RETURN")));
    assert!(
        v4.iter()
            .any(|l| l.ends_with("-p tcp --dport 22 -j RETURN"))
    );
    assert!(
        v4.iter()
            .any(|l| l.ends_with("-p tcp --dport 5432 -j RETURN"))
    );
    assert!(v4.iter().any(|l| l.ends_with("-d 10.0.0.0/8 -j RETURN")));
    assert!(!v4.iter().any(|l| l.contains("fd00::")));
    assert!(pos(&v4, "10.0.0.0/8") < pos(&v4, "REDIRECT --to-ports 16000"));
    assert!(pos(&v4, "--dport 22") < pos(&v4, "REDIRECT"));
    let v6 = lines(&apply_steps(&plan, Tables::system(Family::V6)));
    assert!(v6.iter().all(|l| l.starts_with("ip6tables ")));
    assert!(v6.iter().any(|l| l.ends_with("-d ::1/128 -j RETURN")));
    assert!(v6.iter().any(|l| l.ends_with("-d fd00::/8 -j RETURN")));
    assert!(!v6.iter().any(|l| l.contains("10.0.0.0")));
}

#[test]
fn include_cidrs_limit_the_redirect() {
    let plan = Plan {
        include_cidrs: vec!["203.0.113.0/24".parse().unwrap()],
        ..Plan::default()
    };
    let v4 = lines(&apply_steps(&plan, Tables::system(Family::V4)));
    let redirects: Vec<_> = v4.iter().filter(|l| l.contains("REDIRECT")).collect();
    assert_eq!(
        redirects,
        [
            "iptables -t nat -A INTENTGATE_OUTPUT -d 203.0.113.0/24 -p tcp -j REDIRECT --to-ports 15702"
        ]
    );
    // No IPv6 block listed: IPv6 is not redirected at all.
    let v6 = lines(&apply_steps(&plan, Tables::system(Family::V6)));
    assert!(!v6.iter().any(|l| l.contains("REDIRECT")));
}

#[test]
fn block_quic_rejects_udp_443_in_the_filter_table() {
    let plan = Plan {
        block_quic: true,
        ..Plan::default()
    };
    let v4 = lines(&apply_steps(&plan, Tables::system(Family::V4)));
    assert!(
        v4.contains(&"iptables -t filter -A INTENTGATE_QUIC -p udp --dport 443 -j REJECT".into())
    );
    assert!(v4.contains(&"iptables -t filter -C OUTPUT -p udp -j INTENTGATE_QUIC 2>/dev/null || iptables -t filter -A OUTPUT -p udp -j INTENTGATE_QUIC".into()));
    assert!(!v4.iter().any(|l| l.contains("-X INTENTGATE_QUIC")));
}

#[test]
fn jumps_are_added_once_and_cleanup_removes_everything() {
    let steps = apply_steps(&Plan::default(), Tables::system(Family::V4));
    let adds = steps
        .iter()
        .filter(|s| matches!(s, Step::Run(c) if c.iter().any(|w| w == "OUTPUT")))
        .count();
    assert_eq!(adds, 0, "jumps into OUTPUT are always guarded by -C");
    let got = lines(&cleanup_steps(Tables::system(Family::V6)));
    assert_eq!(
        got,
        [
            "ip6tables -t nat -D OUTPUT -p tcp -j INTENTGATE_OUTPUT 2>/dev/null || true",
            "ip6tables -t nat -F INTENTGATE_OUTPUT 2>/dev/null || true",
            "ip6tables -t nat -X INTENTGATE_OUTPUT 2>/dev/null || true",
            "ip6tables -t filter -D OUTPUT -p udp -j INTENTGATE_QUIC 2>/dev/null || true",
            "ip6tables -t filter -F INTENTGATE_QUIC 2>/dev/null || true",
            "ip6tables -t filter -X INTENTGATE_QUIC 2>/dev/null || true",
        ]
    );
}

#[test]
fn cidrs_parse_and_refuse_nonsense() {
    assert_eq!(
        "10.1.2.3".parse::<Cidr>().unwrap().to_string(),
        "10.1.2.3/32"
    );
    assert_eq!("fd00::/8".parse::<Cidr>().unwrap().to_string(), "fd00::/8");
    assert!("10.0.0.0/33".parse::<Cidr>().is_err());
    assert!("example.com/8".parse::<Cidr>().is_err());
}

#[test]
fn a_backend_writes_with_its_own_programs() {
    let t = Tables {
        family: Family::V6,
        backend: Backend::Legacy,
    };
    let got = lines(&cleanup_steps(t));
    assert!(
        got.iter().all(|l| l.starts_with("ip6tables-legacy -t ")),
        "{got:?}"
    );
    let t = Tables {
        family: Family::V4,
        backend: Backend::Nft,
    };
    let got = lines(&apply_steps(&Plan::default(), t));
    assert!(
        got.iter().all(|l| l.starts_with("iptables-nft -t ")),
        "{got:?}"
    );
}

#[test]
fn the_backend_already_holding_rules_is_chosen() {
    use backend::{Probe, choose};
    let p = |nft, legacy| Probe { nft, legacy };
    let never = || -> bool { panic!("the system iptables is only asked when no rules exist") };
    // A mesh's (or an earlier run's) rules decide, whichever backend holds them.
    assert_eq!(choose(p(Some(0), Some(4)), never), Some(Backend::Legacy));
    assert_eq!(choose(p(None, Some(4)), never), Some(Backend::Legacy));
    assert_eq!(choose(p(Some(4), Some(0)), never), Some(Backend::Nft));
    assert_eq!(choose(p(Some(4), None), never), Some(Backend::Nft));
    assert_eq!(choose(p(Some(9), Some(3)), never), Some(Backend::Nft));
    assert_eq!(choose(p(Some(3), Some(9)), never), Some(Backend::Legacy));
    assert_eq!(choose(p(Some(3), Some(3)), never), Some(Backend::Nft));
    // No rules anywhere: the system's choice when it works, else the variant that runs.
    assert_eq!(choose(p(Some(0), Some(0)), || true), Some(Backend::System));
    assert_eq!(choose(p(Some(0), Some(0)), || false), Some(Backend::Nft));
    assert_eq!(choose(p(None, Some(0)), || false), Some(Backend::Legacy));
    assert_eq!(choose(p(None, None), || false), None);
    assert_eq!(choose(p(None, None), || true), Some(Backend::System));
    assert_eq!("legacy".parse(), Ok(BackendChoice::Legacy));
    assert!("iptables".parse::<BackendChoice>().is_err());
}
