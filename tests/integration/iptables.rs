//! `intentgate iptables` for real: the rules applied inside a network namespace the test creates
//! (never the host's), listed back with `iptables -S`, re-applied (idempotent) and removed.

use std::process::Command;

use crate::common::*;

/// A network namespace that is deleted when the test ends, however it ends.
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Self {
        let name = format!("ig{tag}{}", std::process::id());
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .unwrap()
            .success();
        assert!(ok, "ip netns add (tests run as root)");
        Netns(name)
    }

    /// Runs a command inside the namespace: (success, stdout, stderr).
    fn exec(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.0])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn rules(&self, bin: &str, table: &str) -> Vec<String> {
        let (ok, out, err) = self.exec(&[bin, "-t", table, "-S"]);
        assert!(ok, "{bin} -t {table} -S: {err}");
        out.lines()
            .filter(|l| l.contains("INTENTGATE"))
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.0])
            .status();
    }
}

#[test]
fn iptables_rules_are_applied_idempotently_and_cleaned_up_in_a_namespace() {
    let ns = Netns::new("ipt");
    let apply = [
        BIN,
        "iptables",
        "--proxy-uid",
        "15700",
        "--port",
        "15702",
        "--exclude-ports",
        "22,5432",
        "--exclude-cidrs",
        "10.0.0.0/8",
        "--block-quic",
    ];
    let want_nat = [
        "-N INTENTGATE_OUTPUT",
        "-A OUTPUT -p tcp -j INTENTGATE_OUTPUT",
        "-A INTENTGATE_OUTPUT -m owner --uid-owner 15700 -j RETURN",
        "-A INTENTGATE_OUTPUT -d 127.0.0.0/8 -j RETURN",
        "-A INTENTGATE_OUTPUT -p tcp -m tcp --dport 22 -j RETURN",
        "-A INTENTGATE_OUTPUT -p tcp -m tcp --dport 5432 -j RETURN",
        "-A INTENTGATE_OUTPUT -d 10.0.0.0/8 -j RETURN",
        "-A INTENTGATE_OUTPUT -p tcp -j REDIRECT --to-ports 15702",
    ];
    let want_filter = [
        "-N INTENTGATE_QUIC",
        "-A OUTPUT -p udp -j INTENTGATE_QUIC",
        "-A INTENTGATE_QUIC -m owner --uid-owner 15700 -j RETURN",
        "-A INTENTGATE_QUIC -p udp -m udp --dport 443 -j REJECT --reject-with icmp-port-unreachable",
    ];
    // Twice: the second run (an init container restarted) must leave exactly the same rules.
    for round in 0..2 {
        let (ok, _, err) = ns.exec(&apply);
        assert!(ok, "round {round}: {err}");
        assert_eq!(ns.rules("iptables", "nat"), want_nat, "round {round}");
        assert_eq!(ns.rules("iptables", "filter"), want_filter, "round {round}");
    }
    // IPv6: applied when ip6tables has nat here, else a clear warning says IPv6 is not redirected.
    let v6 = ns.exec(&["ip6tables", "-t", "nat", "-S"]).0;
    if v6 {
        let got = ns.rules("ip6tables", "nat");
        assert!(
            got.contains(&"-A INTENTGATE_OUTPUT -d ::1/128 -j RETURN".to_string()),
            "{got:?}"
        );
        assert!(!got.iter().any(|l| l.contains("10.0.0.0")), "{got:?}");
    }
    // Re-applied without --block-quic: the QUIC chain goes, the nat rules stay.
    let (ok, _, err) = ns.exec(&apply[..apply.len() - 1]);
    assert!(ok, "{err}");
    assert!(ns.rules("iptables", "filter").is_empty());
    assert_eq!(ns.rules("iptables", "nat"), want_nat);

    let (ok, _, err) = ns.exec(&[BIN, "iptables", "--cleanup"]);
    assert!(ok, "{err}");
    assert!(ns.rules("iptables", "nat").is_empty());
    assert!(ns.rules("iptables", "filter").is_empty());
    if v6 {
        assert!(ns.rules("ip6tables", "nat").is_empty());
    }
}

#[test]
fn iptables_dry_run_prints_the_commands_and_changes_nothing() {
    let ns = Netns::new("iptd");
    let (ok, out, err) = ns.exec(&[
        BIN,
        "iptables",
        "--dry-run",
        "--include-cidrs",
        "203.0.113.0/24",
    ]);
    assert!(ok, "{err}");
    assert!(
        out.lines().any(|l| l
            == "iptables -t nat -A INTENTGATE_OUTPUT -d 203.0.113.0/24 -p tcp -j REDIRECT --to-ports 15702"),
        "{out}"
    );
    assert!(
        out.lines().any(|l| l.starts_with("ip6tables -t nat ")),
        "{out}"
    );
    assert!(ns.rules("iptables", "nat").is_empty());
    // Invalid input is refused by the command line, with the reason.
    let (code, _, err) = run_cli(&["iptables", "--dry-run", "--exclude-cidrs", "10.0.0.0/40"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("prefix length"), "{err}");
}
