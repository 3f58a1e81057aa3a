//! `intentgate iptables` for real: the rules applied inside a network namespace the test creates
//! (never the host's), listed back with `iptables -S`, re-applied (idempotent) and removed.

use std::time::Duration;

use crate::common::netns::Netns;
use crate::common::*;

/// Runs a command inside the namespace: (success, stdout, stderr).
fn exec(ns: &Netns, args: &[&str]) -> (bool, String, String) {
    let out = ns.run(args[0], &args[1..]);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// intentgate's rules in one table, as `BIN -t TABLE -S` lists them.
fn rules(ns: &Netns, bin: &str, table: &str) -> Vec<String> {
    let (ok, out, err) = exec(ns, &[bin, "-t", table, "-S"]);
    assert!(ok, "{bin} -t {table} -S: {err}");
    out.lines()
        .filter(|l| l.contains("INTENTGATE"))
        .map(str::to_string)
        .collect()
}

#[test]
fn iptables_rules_are_applied_idempotently_and_cleaned_up_in_a_namespace() {
    let ns = Netns::new("ipt", &[]);
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
        let (ok, _, err) = exec(&ns, &apply);
        assert!(ok, "round {round}: {err}");
        assert_eq!(rules(&ns, "iptables", "nat"), want_nat, "round {round}");
        assert_eq!(
            rules(&ns, "iptables", "filter"),
            want_filter,
            "round {round}"
        );
    }
    // IPv6: applied when ip6tables has nat here, else a clear warning says IPv6 is not redirected.
    let v6 = exec(&ns, &["ip6tables", "-t", "nat", "-S"]).0;
    if v6 {
        let got = rules(&ns, "ip6tables", "nat");
        assert!(
            got.contains(&"-A INTENTGATE_OUTPUT -d ::1/128 -j RETURN".to_string()),
            "{got:?}"
        );
        assert!(!got.iter().any(|l| l.contains("10.0.0.0")), "{got:?}");
    }
    // Re-applied without --block-quic: the QUIC chain goes, the nat rules stay.
    let (ok, _, err) = exec(&ns, &apply[..apply.len() - 1]);
    assert!(ok, "{err}");
    assert!(rules(&ns, "iptables", "filter").is_empty());
    assert_eq!(rules(&ns, "iptables", "nat"), want_nat);

    let (ok, _, err) = exec(&ns, &[BIN, "iptables", "--cleanup"]);
    assert!(ok, "{err}");
    assert!(rules(&ns, "iptables", "nat").is_empty());
    assert!(rules(&ns, "iptables", "filter").is_empty());
    if v6 {
        assert!(rules(&ns, "ip6tables", "nat").is_empty());
    }
}

#[test]
fn iptables_dry_run_prints_the_commands_and_changes_nothing() {
    let ns = Netns::new("iptd", &[]);
    let (ok, out, err) = exec(
        &ns,
        &[
            BIN,
            "iptables",
            "--dry-run",
            "--include-cidrs",
            "203.0.113.0/24",
        ],
    );
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
    assert!(rules(&ns, "iptables", "nat").is_empty());
    // Invalid input is refused by the command line, with the reason.
    let (code, _, err) = run_cli(&["iptables", "--dry-run", "--exclude-cidrs", "10.0.0.0/40"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("prefix length"), "{err}");
}

/// The nat OUTPUT chain of one backend, as `BIN -t nat -S OUTPUT` lists it.
fn output_chain(ns: &Netns, bin: &str) -> Vec<String> {
    let (ok, out, err) = exec(ns, &[bin, "-t", "nat", "-S", "OUTPUT"]);
    assert!(ok, "{bin}: {err}");
    out.lines()
        .filter(|l| l.starts_with("-A "))
        .map(str::to_string)
        .collect()
}

/// A rule already in the namespace (here standing for a mesh's init container, which ran
/// first) decides the backend: intentgate's rules go into the same one, after it, so the order
/// of the jumps in nat OUTPUT is the order of the init containers. A re-run stays there, and
/// the cleanup removes ours only.
#[test]
fn iptables_backend_follows_the_rules_already_in_the_namespace() {
    let theirs = "-A OUTPUT -d 192.0.2.1/32 -p tcp -j RETURN";
    for (tag, bin, other) in [
        ("ipbl", "iptables-legacy", "iptables-nft"),
        ("ipbn", "iptables-nft", "iptables-legacy"),
    ] {
        let ns = Netns::new(tag, &[]);
        let mut seed = vec![bin, "-t", "nat"];
        seed.extend(theirs.split(' '));
        let (ok, _, err) = exec(&ns, &seed);
        assert!(ok, "{bin}: {err}");
        for round in 0..2 {
            let (ok, _, err) = exec(&ns, &[BIN, "iptables", "--block-quic"]);
            assert!(ok, "{bin}, round {round}: {err}");
            let backend = bin.trim_start_matches("iptables-");
            assert!(err.contains(&format!("backend {backend}")), "{err}");
            assert_eq!(
                output_chain(&ns, bin),
                [theirs, "-A OUTPUT -p tcp -j INTENTGATE_OUTPUT"],
                "{bin}, round {round}"
            );
            assert!(
                rules(&ns, bin, "nat").contains(
                    &"-A INTENTGATE_OUTPUT -p tcp -j REDIRECT --to-ports 15702".to_string()
                ),
                "{bin}"
            );
            assert_eq!(rules(&ns, bin, "filter").len(), 4, "{bin}");
            assert!(rules(&ns, other, "nat").is_empty(), "nothing in {other}");
            assert!(rules(&ns, other, "filter").is_empty(), "nothing in {other}");
        }
        let (ok, _, err) = exec(&ns, &[BIN, "iptables", "--cleanup"]);
        assert!(ok, "{err}");
        assert!(rules(&ns, bin, "nat").is_empty(), "{bin}");
        assert!(rules(&ns, bin, "filter").is_empty(), "{bin}");
        assert_eq!(output_chain(&ns, bin), [theirs], "{bin}: theirs stays");
    }
    // An explicit backend is used as asked, detection or not.
    let ns = Netns::new("ipbx", &[]);
    let (ok, _, err) = exec(&ns, &[BIN, "iptables", "--backend", "legacy"]);
    assert!(ok, "{err}");
    assert_eq!(rules(&ns, "iptables-legacy", "nat").len(), 5);
    assert!(rules(&ns, "iptables-nft", "nat").is_empty());
    let (code, _, err) = run_cli(&["iptables", "--dry-run", "--backend", "ebtables"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("expected auto, nft or legacy"), "{err}");
}

/// The rules of each backend really redirect: in a namespace whose only route is loopback, an
/// agent (uid 65534) dialling 198.18.0.1:80, where nothing listens, reaches the listener on the
/// transparent port instead; the proxy's own UID is not redirected and is refused.
#[test]
fn iptables_rules_of_either_backend_redirect_the_agent_but_not_the_proxy() {
    for (tag, backend) in [("iprl", "legacy"), ("iprn", "nft")] {
        let mut ns = Netns::new(tag, &["198.18.0.1/32"]);
        let ready = ns.dir().join("listening");
        let listener = format!(
            "import socket\n\
             s = socket.socket()\n\
             s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
             s.bind(('0.0.0.0', 15702))\n\
             s.listen(8)\n\
             open('{}', 'w').write('ok')\n\
             while True:\n\
             \x20   c, _ = s.accept()\n\
             \x20   c.sendall(b'redirected')\n\
             \x20   c.close()\n",
            ready.display()
        );
        ns.spawn("python3", &["-c", &listener]);
        eventually("the listener", Duration::from_secs(10), || {
            ready.exists().then_some(())
        });
        let (ok, _, err) = exec(&ns, &[BIN, "iptables", "--backend", backend]);
        assert!(ok, "{backend}: {err}");
        let dial = |uid: &str| {
            let client = "import socket\n\
                          try:\n\
                          \x20   s = socket.create_connection(('198.18.0.1', 80), timeout=5)\n\
                          \x20   print(s.recv(64).decode())\n\
                          except OSError as e:\n\
                          \x20   print(type(e).__name__)\n";
            let (_, out, err) = exec(
                &ns,
                &[
                    "setpriv",
                    "--reuid",
                    uid,
                    "--regid",
                    uid,
                    "--clear-groups",
                    "/usr/bin/python3",
                    "-c",
                    client,
                ],
            );
            format!("{}{err}", out.trim())
        };
        assert_eq!(dial("65534"), "redirected", "{backend}");
        assert_eq!(dial("15700"), "ConnectionRefusedError", "{backend}");
    }
}
