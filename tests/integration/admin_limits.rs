//! The admin listener under attack: idle connections are capped and timed out like the proxy's
//! (so they neither exhaust file descriptors nor starve the proxy), and on a non-loopback bind
//! what reveals the policy needs the admin token (fail closed without one).

use std::io::Read;
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use crate::common::netns::Netns;
use crate::common::*;

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// Leaves the process `pid` only `spare` file descriptors beyond those it has open.
fn limit_fds(pid: u32, spare: usize) {
    let limit = open_fds(pid) + spare;
    let ok = Command::new("prlimit")
        .args(["--pid", &pid.to_string()])
        .arg(format!("--nofile={limit}:{limit}"))
        .status()
        .unwrap()
        .success();
    assert!(ok, "prlimit (util-linux)");
}

#[test]
fn an_idle_connection_flood_on_admin_neither_starves_the_proxy_nor_outlives_the_header_timeout() {
    let up = Upstream::start();
    // The default admin cap (admin.max_connections: 32).
    let proxy = ProxyProc::start("limits: {header_read_timeout_ms: 1500}\n");
    // Few file descriptors to spare: before the admin listener had a cap, the flood took them all
    // and the proxy could accept nothing (its accept loop only backs off on EMFILE).
    let spare = 64;
    limit_fds(proxy.pid(), spare);
    let admin = proxy.admin.unwrap();
    let flood: Vec<TcpStream> = (0..4 * spare)
        .map(|_| {
            TcpStream::connect_timeout(&admin, Duration::from_secs(10))
                .expect("the admin listener accepts (or refuses) every connection")
        })
        .collect();

    // The proxy keeps answering while the idle connections are held open.
    let url = up.url("/echo/during");
    eventually("the proxy to answer", Duration::from_secs(20), || {
        (curl(&["-x", &proxy.url(), "--max-time", "5", &url]).status == 200).then_some(())
    });
    // Every idle connection is closed by intentgate: at once with 503 `overloaded` over the cap,
    // the rest when the header-read timeout passes.
    let mut overloaded = 0;
    for mut s in flood {
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got)
            .expect("the server closes the idle connection");
        let got = String::from_utf8_lossy(&got);
        if got.starts_with("HTTP/1.1 503") {
            assert!(has_error_code(&got, "overloaded"), "{got}");
            overloaded += 1;
        }
    }
    assert!(overloaded > 0);
    // The admin listener answers probes again, and counted what it refused.
    eventually("admin to answer probes", Duration::from_secs(20), || {
        (curl(&["--max-time", "5", &proxy.admin_url("/healthz")]).status == 200).then_some(())
    });
    assert_eq!(curl(&[&proxy.admin_url("/readyz")]).status, 200);
    let refused = r#"intentgate_refusals_total{error="too_many_admin_connections"}"#;
    assert!(proxy.metric(refused) >= f64::from(overloaded));
    assert_eq!(
        curl(&["-x", &proxy.url(), &up.url("/echo/after")]).status,
        200
    );
}

#[test]
fn on_a_non_loopback_bind_policy_reads_need_the_token_and_fail_closed_without_one() {
    let mut ns = Netns::new("adr", &["198.18.0.1/32"]);
    let token = ns.dir().join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let base = "listen: {proxy: 127.0.0.1:0, admin: 0.0.0.0:0}\nagent: {id: a, owner: t}\n\
                intents: {x: {allow: [{hosts: [example.com]}]}}\n";
    let without = ns.intentgate(base);
    let with = ns.intentgate(&format!(
        "{base}admin: {{token_file: \"{}\"}}\n",
        token.display()
    ));
    let port = |info: &serde_json::Value| {
        info["admin"]
            .as_str()
            .unwrap()
            .rsplit(':')
            .next()
            .unwrap()
            .to_string()
    };
    let curl_ns = |args: &[&str]| ns.curl(&[&["-w", "\n%{http_code}"], args].concat());
    let explain = r#"{"method": "GET", "url": "https://example.com/", "intent": "x"}"#;
    // GET /v1/policy, GET /v1/intent, POST /v1/explain at `at`, with `auth` headers.
    let reads = |at: &str, auth: &[&str]| -> Vec<String> {
        let urls = [
            format!("{at}/v1/policy"),
            format!("{at}/v1/intent"),
            format!("{at}/v1/explain"),
        ];
        urls.iter()
            .map(|url| {
                let mut args = auth.to_vec();
                if url.ends_with("explain") {
                    args.extend(["-X", "POST", "-d", explain]);
                }
                args.push(url);
                curl_ns(&args)
            })
            .collect()
    };

    // No token configured: from outside, probes answer and policy reads are refused.
    let (outside, inside) = (
        format!("http://198.18.0.1:{}", port(&without)),
        format!("http://127.0.0.1:{}", port(&without)),
    );
    for probe in ["/healthz", "/readyz", "/metrics"] {
        let r = curl_ns(&[&format!("{outside}{probe}")]);
        assert!(r.ends_with("200"), "{probe}: {r}");
    }
    for r in reads(&outside, &["-H", "Authorization: Bearer s3cret"]) {
        assert!(r.ends_with("403"), "{r}");
        assert!(has_error_code(&r, "admin_loopback_only"), "{r}");
        assert!(
            r.contains("admin.token_file") && r.contains("decision_id"),
            "{r}"
        );
        assert!(!r.contains("example.com"), "the policy leaked: {r}");
    }
    for r in reads(&inside, &[]) {
        assert!(r.ends_with("200"), "{r}");
    }

    // With a token: outside needs it (401 without or wrong), then reads; loopback reads as before.
    let (outside, inside) = (
        format!("http://198.18.0.1:{}", port(&with)),
        format!("http://127.0.0.1:{}", port(&with)),
    );
    for auth in [&[][..], &["-H", "Authorization: Bearer wrong"][..]] {
        for r in reads(&outside, auth) {
            assert!(r.ends_with("401"), "{r}");
            assert!(has_error_code(&r, "admin_unauthorized"), "{r}");
        }
    }
    let good = ["-H", "Authorization: Bearer s3cret"];
    for r in reads(&outside, &good)
        .into_iter()
        .chain(reads(&inside, &[]))
    {
        assert!(r.ends_with("200"), "{r}");
    }
    let policy = curl_ns(&[good[0], good[1], &format!("{outside}/v1/policy")]);
    assert!(policy.contains("\"intents\":[\"x\"]"), "{policy}");
    // Mutations stay loopback-only, token or not.
    let r = curl_ns(&[
        good[0],
        good[1],
        "-X",
        "POST",
        &format!("{outside}/v1/reload"),
    ]);
    assert!(r.ends_with("403"), "{r}");
}

#[test]
fn an_empty_admin_token_file_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, " \n").unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: {{proxy: 127.0.0.1:0, admin: 127.0.0.1:0}}\nagent: {{owner: t}}\n\
             admin: {{token_file: \"{}\"}}\n",
            token.display()
        ),
    )
    .unwrap();
    // It exits, or it is listening (the empty token was accepted: `Bearer ` would match it).
    let (code, err) = serve_outcome(&config, &dir.path().join("ready.json"));
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains(&format!("admin.token_file {} is empty", token.display())),
        "{err}"
    );
}

#[test]
fn the_proxy_listener_backs_off_when_out_of_file_descriptors_and_recovers() {
    let up = Upstream::start();
    let proxy = ProxyProc::start("limits: {header_read_timeout_ms: 1500}\n");
    let spare = 32;
    limit_fds(proxy.pid(), spare);
    // More idle connections than descriptors: accept fails with EMFILE until some time out.
    let flood: Vec<TcpStream> = (0..3 * spare)
        .map(|_| TcpStream::connect_timeout(&proxy.addr, Duration::from_secs(10)).unwrap())
        .collect();
    for mut s in flood {
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got)
            .expect("the server closes the idle connection");
    }
    assert_eq!(
        curl(&["-x", &proxy.url(), &up.url("/echo/after")]).status,
        200
    );
    // Each failed accept is logged once, then the loop waits (50 ms) for descriptors to free up:
    // a loop that retried at once would log millions of lines in the seconds the flood lasted.
    // The bound follows from the reads' own 60 s timeout (at most ~1,200 back-offs), not from
    // how fast this machine is.
    let failed = proxy.stderr().matches("accept failed").count();
    assert!((1..5000).contains(&failed), "accept failed {failed} times");
}
