//! Transparent mode for real: a client namespace and an upstream namespace joined by a veth pair
//! (test-only addresses 10.233.0.0/24), the nat rules applied by `intentgate iptables` itself,
//! intentgate running as root (uid 0, excluded by the rules) and a client running as uid 65534
//! with no proxy variables. Its HTTP, HTTPS and raw TCP connections are redirected, decided by
//! policy, and either reach the upstream (tagged) or never arrive.

mod setup;

use setup::*;

fn tagged(entry: &serde_json::Value) -> bool {
    entry["headers"]["intentgate-agent"] == "tp-agent"
        && entry["headers"]["intentgate-intent"] == "ops"
}

#[test]
fn transparent_http_is_decided_on_its_host_and_dialled_at_intentgates_own_resolution() {
    let s = setup("h");
    let resolve = |name: &str, ip: &str| format!("{name}:80:{ip}");
    // Allowed: reaches the upstream tagged, at the address intentgate resolved.
    let (code, body) = s.curl(&[
        "--resolve",
        &resolve("api.tp.test", UPSTREAM_IP),
        "http://api.tp.test/allowed/one",
    ]);
    assert_eq!(code, 200, "{body}");
    let rec = s.audit_of("api.tp.test", 80, Some("/allowed/one"));
    assert_eq!(rec["connection"], "transparent", "{rec}");
    assert_eq!(rec["decision"], "allow", "{rec}");
    assert_eq!(rec["agent"]["id"], "tp-agent", "{rec}");
    let got: Vec<_> = s
        .upstream_log()
        .into_iter()
        .filter(|e| e["path"] == "/allowed/one")
        .collect();
    // Exactly once, tagged: intentgate's own connection (uid 0) was not redirected back to it.
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(tagged(&got[0]), "{:?}", got[0]);
    assert_eq!(got[0]["local"], UPSTREAM_IP);
    assert_eq!(
        s.audit()
            .iter()
            .filter(|r| r["path"] == "/allowed/one")
            .count(),
        1
    );

    // A Host naming an allowed name on a connection to another address: intentgate dials its own
    // resolution of the name, so the decision and the connection are about the same host.
    let (code, body) = s.curl(&[
        "--resolve",
        &resolve("api.tp.test", DECOY_IP),
        "http://api.tp.test/allowed/decoy",
    ]);
    assert_eq!(code, 200, "{body}");
    let log = s.upstream_log();
    let decoy = log.iter().find(|e| e["path"] == "/allowed/decoy").unwrap();
    assert_eq!(decoy["local"], UPSTREAM_IP, "{decoy}");
    assert!(!log.iter().any(|e| e["local"] == DECOY_IP), "{log:?}");

    // Denied by path and by host: a JSON refusal, and nothing arrives upstream.
    let (code, body) = s.curl(&[
        "--resolve",
        &resolve("api.tp.test", UPSTREAM_IP),
        "http://api.tp.test/secret",
    ]);
    assert_eq!(code, 403, "{body}");
    let j: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(j["decision_id"].is_string() && j["hint"].is_string(), "{j}");
    let (code, body) = s.curl(&[
        "--resolve",
        &resolve("hidden.tp.test", UPSTREAM_IP),
        "http://hidden.tp.test/allowed/two",
    ]);
    assert_eq!(code, 403, "{body}");
    assert_eq!(s.audit_of("hidden.tp.test", 80, None)["decision"], "deny");
    assert_eq!(
        s.dns_queries("hidden.tp.test"),
        0,
        "a denied name was looked up"
    );
    let log = s.upstream_log();
    assert!(
        !log.iter()
            .any(|e| e["path"] == "/secret" || e["path"] == "/allowed/two"),
        "{log:?}"
    );

    // No loops: the listener's own address, redirected, is a forbidden destination; connecting to
    // the listener directly (not redirected) is refused outright.
    let (code, body) = s.curl(&[&format!("http://{CLIENT_IP}:15702/")]);
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("destination_forbidden"), "{body}");
    let (code, body) = s.curl(&["http://127.0.0.1:15702/"]);
    assert_eq!(code, 0, "{body}");
    let admin = s.ready["admin"].as_str().unwrap();
    let metrics = s.client.curl(&[&format!("http://{admin}/metrics")]);
    assert!(
        metrics.contains(r#"intentgate_refusals_total{error="transparent_not_redirected"} 1"#),
        "{metrics}"
    );
    // Five HTTP connections were served (the allowed, decoy and three refused ones).
    assert!(
        metrics.contains(r#"intentgate_transparent_connections_total{protocol="http"} 5"#),
        "{metrics}"
    );

    // Over IPv6 (IP6T_SO_ORIGINAL_DST on the dual-stack listener): decided on the Host the same
    // way, sent to intentgate's own resolution of the name, refused paths never arrive.
    let six = format!("[{UPSTREAM_IP6}]");
    let (code, body) = s.curl(&[
        "--resolve",
        &resolve("api.tp.test", &six),
        "http://api.tp.test/allowed/six",
    ]);
    assert_eq!(code, 200, "{body}");
    let rec = s.audit_of("api.tp.test", 80, Some("/allowed/six"));
    assert_eq!(rec["connection"], "transparent", "{rec}");
    let log = s.upstream_log();
    let six_seen = log.iter().find(|e| e["path"] == "/allowed/six").unwrap();
    assert!(tagged(six_seen), "{six_seen}");
    assert_eq!(six_seen["local"], UPSTREAM_IP, "{six_seen}");
    let (code, body) = s.curl(&[
        "--resolve",
        &resolve("api.tp.test", &six),
        "http://api.tp.test/secret6",
    ]);
    assert_eq!(code, 403, "{body}");
    assert!(!s.upstream_log().iter().any(|e| e["path"] == "/secret6"));

    // A WebSocket on a redirected connection: decided on its Host like any GET, upgraded, relayed
    // (one frame each way), tagged, audited; a denied one is refused before any upgrade.
    let said = s.websocket(DECOY_IP, "api.tp.test", "/allowed/ws");
    assert_eq!(
        said, "HTTP/1.1 101 Switching Protocols\nhello\n",
        "{said:?}"
    );
    let ws: Vec<_> = s
        .upstream_log()
        .into_iter()
        .filter(|e| e["kind"] == "ws")
        .collect();
    assert_eq!(ws.len(), 1, "{ws:?}");
    assert!(tagged(&ws[0]), "{:?}", ws[0]);
    assert_eq!(ws[0]["local"], UPSTREAM_IP, "own resolution, not the decoy");
    let rec = s.audit_of("api.tp.test", 80, Some("/allowed/ws"));
    assert_eq!(rec["connection"], "transparent", "{rec}");
    assert!(
        rec["reasons"].to_string().contains("websocket relay ended"),
        "{rec}"
    );
    let said = s.websocket(UPSTREAM_IP, "api.tp.test", "/secret-ws");
    assert!(said.starts_with("HTTP/1.1 403"), "{said:?}");
    assert!(!s.upstream_log().iter().any(|e| e["path"] == "/secret-ws"));
}

#[test]
fn transparent_https_is_intercepted_or_spliced_on_its_sni() {
    let s = setup("s");
    let ig_ca = s.ig_ca.to_str().unwrap().to_string();
    let up_ca = s.client.dir().join("test-ca.pem");
    let up_ca = up_ca.to_str().unwrap();
    let resolve = |name: &str, ip: &str| format!("{name}:443:{ip}");
    // Intercepted (a CA is configured): decided per request, HTTP/1.1 and HTTP/2, tagged.
    for (proto, path) in [("--http1.1", "/allowed/tls1"), ("--http2", "/allowed/tls2")] {
        let (code, body) = s.curl(&[
            proto,
            "--cacert",
            &ig_ca,
            "--resolve",
            &resolve("api.tp.test", UPSTREAM_IP),
            &format!("https://api.tp.test{path}"),
        ]);
        assert_eq!(code, 200, "{proto}: {body}");
        let rec = s.audit_of("api.tp.test", 443, Some(path));
        assert_eq!(rec["connection"], "transparent", "{rec}");
        assert_eq!(rec["scheme"], "https", "{rec}");
    }
    let log = s.upstream_log();
    for path in ["/allowed/tls1", "/allowed/tls2"] {
        let e = log.iter().find(|e| e["path"] == path).unwrap();
        assert_eq!(e["kind"], "https", "{e}");
        assert!(tagged(e), "{e}");
    }
    let (code, body) = s.curl(&[
        "--cacert",
        &ig_ca,
        "--resolve",
        &resolve("api.tp.test", UPSTREAM_IP),
        "https://api.tp.test/secret",
    ]);
    assert_eq!(code, 403, "{body}");
    // The same over IPv6: the SNI decides, the request is intercepted and tagged.
    let (code, body) = s.curl(&[
        "--cacert",
        &ig_ca,
        "--resolve",
        &resolve("api.tp.test", &format!("[{UPSTREAM_IP6}]")),
        "https://api.tp.test/allowed/tls6",
    ]);
    assert_eq!(code, 200, "{body}");
    let e = s
        .upstream_log()
        .into_iter()
        .find(|e| e["path"] == "/allowed/tls6")
        .unwrap();
    assert!(tagged(&e) && e["kind"] == "https", "{e}");

    // Spliced (tls.splice): decided on the SNI, dialled at intentgate's own resolution of it
    // (the client aimed at the decoy address), end-to-end TLS with the upstream's certificate.
    let (code, body) = s.curl(&[
        "--cacert",
        up_ca,
        "--resolve",
        &resolve("spliced.tp.test", DECOY_IP),
        "https://spliced.tp.test/through",
    ]);
    assert_eq!(code, 200, "{body}");
    let rec = s.audit_of("spliced.tp.test", 443, None);
    assert_eq!(
        (&rec["decision"], &rec["scheme"], &rec["method"]),
        (&"allow".into(), &"tls".into(), &"CONNECT".into()),
        "{rec}"
    );
    let log = s.upstream_log();
    let e = log.iter().find(|e| e["path"] == "/through").unwrap();
    assert_eq!(e["local"], UPSTREAM_IP, "{e}");
    assert!(
        e["headers"]["intentgate-agent"].is_null(),
        "not intercepted: {e}"
    );
    // A spliced name outside the catalog: the connection is closed, nothing arrives.
    let (code, body) = s.curl(&[
        "--cacert",
        up_ca,
        "--resolve",
        &resolve("hidden.tp.test", UPSTREAM_IP),
        "https://hidden.tp.test/never",
    ]);
    assert_eq!(code, 0, "{body}");
    assert_eq!(s.audit_of("hidden.tp.test", 443, None)["decision"], "deny");
    assert_eq!(
        s.dns_queries("hidden.tp.test"),
        0,
        "a denied SNI was looked up"
    );
    // TLS without SNI (curl sends none for an IP): decided on IP:port as raw TCP, not in scope.
    let (code, body) = s.curl(&["--cacert", up_ca, &format!("https://{UPSTREAM_IP}/nosni")]);
    assert_eq!(code, 0, "{body}");
    let rec = s.audit_of(UPSTREAM_IP, 443, None);
    assert_eq!(
        (&rec["decision"], &rec["scheme"]),
        (&"deny".into(), &"tcp".into()),
        "{rec}"
    );
    let log = s.upstream_log();
    assert!(
        !log.iter()
            .any(|e| ["/never", "/secret", "/nosni"].contains(&e["path"].as_str().unwrap_or(""))),
        "{log:?}"
    );
}

#[test]
fn transparent_tcp_is_decided_on_ip_and_port_when_the_server_speaks_first() {
    let s = setup("t");
    // In scope by IP and port: the banner arrives (the client sent nothing until then).
    let said = s.smtp(UPSTREAM_IP, 5432);
    assert_eq!(said, "220 hello\r\n250 EHLO agent\r\n", "{said:?}");
    let rec = s.audit_of(UPSTREAM_IP, 5432, None);
    assert_eq!(
        (&rec["decision"], &rec["scheme"], &rec["connection"]),
        (&"allow".into(), &"tcp".into(), &"transparent".into()),
        "{rec}"
    );
    // Out of scope (port 2526), and in scope but refused by a Rego rule that reads
    // `connection.protocol == "tcp"` (port 2525): closed before any byte, nothing arrives.
    for port in [2526, 2525] {
        assert_eq!(s.smtp(UPSTREAM_IP, port), "\n", "port {port}");
        let rec = s.audit_of(UPSTREAM_IP, port, None);
        assert_eq!(rec["decision"], "deny", "{rec}");
    }
    let rego = s.audit_of(UPSTREAM_IP, 2525, None);
    assert!(
        rego["reasons"]
            .to_string()
            .contains("no plain SMTP from agents"),
        "{rego}"
    );
    // IPv6: the original destination comes from IP6T_SO_ORIGINAL_DST on the same dual-stack
    // listener.
    let said = s.smtp(UPSTREAM_IP6, 5432);
    assert_eq!(said, "220 hello\r\n250 EHLO agent\r\n", "{said:?}");
    assert_eq!(s.audit_of(UPSTREAM_IP6, 5432, None)["decision"], "allow");
    assert_eq!(s.smtp(UPSTREAM_IP6, 2526), "\n");
    assert_eq!(s.audit_of(UPSTREAM_IP6, 2526, None)["decision"], "deny");
    let log = s.upstream_log();
    let tcp: Vec<_> = log.iter().filter(|e| e["kind"] == "tcp").collect();
    assert_eq!(tcp.len(), 2, "{tcp:?}");
    assert!(tcp.iter().all(|e| e["port"] == 5432), "{tcp:?}");
    assert!(tcp.iter().any(|e| e["local"] == UPSTREAM_IP6), "{tcp:?}");
}

#[test]
fn transparent_connections_under_a_default_intent_the_agent_may_not_claim_are_refused() {
    // The default intent `ops` in monitor mode, claimable by another agent only: before the
    // claim was checked in every mode, all of this was forwarded as would_deny.
    let s = setup_with("c", |yaml| {
        yaml.replace(
            "intents:\n  ops:\n",
            "intents:\n  ops:\n    mode: monitor\n    claimable_by: {agents: [someone-else]}\n",
        )
    });
    let (code, body) = s.curl(&[
        "--resolve",
        &format!("api.tp.test:80:{UPSTREAM_IP}"),
        "http://api.tp.test/allowed/claim",
    ]);
    assert_eq!(code, 403, "{body}");
    assert!(
        crate::common::has_error_code(&body, "intent_not_claimable"),
        "{body}"
    );
    // Spliced TLS, decided on its SNI: closed before anything is dialled.
    let up_ca = s.client.dir().join("test-ca.pem");
    let (code, body) = s.curl(&[
        "--cacert",
        up_ca.to_str().unwrap(),
        "--resolve",
        &format!("spliced.tp.test:443:{UPSTREAM_IP}"),
        "https://spliced.tp.test/claim",
    ]);
    assert_eq!(code, 0, "{body}");
    for (host, port) in [("api.tp.test", 80), ("spliced.tp.test", 443)] {
        let rec = s.audit_of(host, port, None);
        assert_eq!(
            (&rec["decision"], &rec["mode"], &rec["connection"]),
            (&"deny".into(), &"enforce".into(), &"transparent".into()),
            "{rec}"
        );
        assert_eq!(rec["intent"]["source"], "default", "{rec}");
        assert!(
            rec["reasons"]
                .to_string()
                .contains("may not claim intent 'ops'"),
            "{rec}"
        );
    }
    let log = s.upstream_log();
    assert!(
        !log.iter()
            .any(|e| e["path"] == "/allowed/claim" || e["path"] == "/claim"),
        "{log:?}"
    );
}
