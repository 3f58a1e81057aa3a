//! Budgets shared through a real `redis-server` (installed by scripts/test) that the test starts
//! on a free loopback port: two proxies spend one budget; the store going away (deny: 503
//! `budget_store_unavailable`; or allow) and coming back; the store's answer awaited while the
//! upstream is dialled (through a relay that holds Redis's answers back).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;

/// A redis-server on 127.0.0.1:`port`, killed when dropped.
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start(port: u16) -> Self {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/test installs it)");
        eventually("redis-server to listen", Duration::from_secs(20), || {
            TcpStream::connect(("127.0.0.1", port)).ok()
        });
        Redis { child, port }
    }

    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port")
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

fn proxy(up: &Upstream, redis: &Redis, budget: &str, on_error: &str) -> ProxyProc {
    ProxyProc::start(&format!(
        "intent: work\nbudgets: {{redis_url: \"redis://127.0.0.1:{}\", on_store_error: {on_error}}}\nintents:\n  work:\n    allow: [{{hosts: [127.0.0.1], ports: [{}]}}]\n    budget: {budget}\n",
        redis.port,
        up.addr.port()
    ))
}

fn get(p: &ProxyProc, url: &str) -> CurlOut {
    curl(&["-x", &p.url(), url])
}

#[test]
fn two_proxies_share_one_budget() {
    let redis = Redis::start(Redis::free_port());
    let up = Upstream::start();
    let a = proxy(
        &up,
        &redis,
        "{calls: 3, bytes_out: 1000, window: 1h}",
        "deny",
    );
    let b = proxy(
        &up,
        &redis,
        "{calls: 3, bytes_out: 1000, window: 1h}",
        "deny",
    );
    let url = up.url("/echo");
    for p in [&a, &b, &a] {
        let out = get(p, &url);
        assert_eq!(out.status, 200, "{}", out.body);
    }
    let out = get(&b, &url);
    assert_eq!(out.status, 429, "{}", out.body);
    let body = out.json();
    assert_eq!(error_code(&body), "budget_exhausted");
    assert_eq!(body["budget"]["used"]["calls"], 3, "{body}");
    assert_eq!(up.requests(), 3);
    // Each proxy lists the shared counter as of its last exchange with the store.
    let listed = curl(&[&b.admin_url("/v1/budgets")]).json();
    assert_eq!(listed["budgets"][0]["used"]["calls"], 3, "{listed}");
}

#[test]
fn bytes_are_shared_too() {
    let redis = Redis::start(Redis::free_port());
    let up = Upstream::start();
    let a = proxy(&up, &redis, "{bytes_out: 100}", "deny");
    let b = proxy(&up, &redis, "{bytes_out: 100}", "deny");
    let url = up.url("/echo");
    let body = "x".repeat(150);
    assert_eq!(
        curl(&["-x", &a.url(), "--data-binary", &body, &url]).status,
        200
    );
    // The charge follows the call without a reply awaited: the other proxy sees it soon.
    let out = eventually("b to see a's bytes", Duration::from_secs(20), || {
        let out = get(&b, &url);
        (out.status == 429).then_some(out)
    });
    assert_eq!(out.json()["budget"]["used"]["bytes_out"], 150);
}

#[test]
fn the_store_going_away_fails_closed_or_open_and_coming_back_counts_again() {
    let port = Redis::free_port();
    let mut redis = Redis::start(port);
    let up = Upstream::start();
    let deny = proxy(&up, &redis, "{calls: 100, window: 1h}", "deny");
    let allow = proxy(&up, &redis, "{calls: 100, window: 1h}", "allow");
    let url = up.url("/echo");
    assert_eq!(get(&deny, &url).status, 200);
    assert_eq!(get(&allow, &url).status, 200);
    redis.stop();
    let out = eventually(
        "a refusal while the store is away",
        Duration::from_secs(20),
        || {
            let out = get(&deny, &url);
            (out.status == 503).then_some(out)
        },
    );
    let body = out.json();
    assert_eq!(error_code(&body), "budget_store_unavailable", "{body}");
    assert!(
        body["hint"].as_str().unwrap().contains("on_store_error"),
        "{body}"
    );
    // on_store_error: allow lets calls go uncounted.
    eventually(
        "allow to forward while the store is away",
        Duration::from_secs(20),
        || (get(&allow, &url).status == 200).then_some(()),
    );
    let recs = deny.audit();
    assert!(
        recs.iter()
            .any(|r| r["status"] == 503 && r["error"] == "budget_store_unavailable"),
        "{recs:?}"
    );
    // The store comes back (empty): calls go and are counted again.
    let _redis = Redis::start(port);
    eventually(
        "calls to go once the store is back",
        Duration::from_secs(30),
        || (get(&deny, &url).status == 200).then_some(()),
    );
    let listed = curl(&[&deny.admin_url("/v1/budgets")]).json();
    assert!(
        listed["budgets"][0]["used"]["calls"].as_u64().unwrap() >= 1,
        "{listed}"
    );
}

/// A loopback relay in front of Redis that holds each of its answers back until the upstream has
/// accepted a connection (at most 1 s, below the proxy's 2 s store timeout), and notes for each
/// answer how many connections the upstream had accepted when it was let through.
struct SlowRelay {
    port: u16,
    upstream_conns_at_answer: Arc<Mutex<Vec<usize>>>,
}

impl SlowRelay {
    fn start(redis: &Redis, up: &Upstream) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind relay");
        let port = listener.local_addr().expect("addr").port();
        let noted = Arc::new(Mutex::new(Vec::new()));
        let (redis_port, state, at_answer) = (redis.port, up.state.clone(), noted.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(store) = TcpStream::connect(("127.0.0.1", redis_port)) else {
                    return;
                };
                let (mut c_in, mut s_out) = (
                    client.try_clone().expect("clone"),
                    store.try_clone().expect("clone"),
                );
                std::thread::spawn(move || std::io::copy(&mut c_in, &mut s_out));
                let (mut store, mut client) = (store, client);
                let (state, at_answer) = (state.clone(), at_answer.clone());
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16 * 1024];
                    while let Ok(n @ 1..) = store.read(&mut buf) {
                        let held = Instant::now();
                        let conns = || state.connections.load(std::sync::atomic::Ordering::SeqCst);
                        while conns() == 0 && held.elapsed() < Duration::from_secs(1) {
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        at_answer.lock().expect("lock").push(conns());
                        if client.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        SlowRelay {
            port,
            upstream_conns_at_answer: noted,
        }
    }
}

#[test]
fn the_upstream_is_dialled_while_the_store_answers_and_a_refused_call_sends_nothing() {
    let redis = Redis::start(Redis::free_port());
    let up = Upstream::start();
    let relay = SlowRelay::start(&redis, &up);
    let p = ProxyProc::start(&format!(
        "intent: work\nbudgets: {{redis_url: \"redis://127.0.0.1:{}\"}}\nintents:\n  work:\n    allow: [{{hosts: [127.0.0.1], ports: [{}]}}]\n    budget: {{calls: 1, window: 1h}}\n",
        relay.port,
        up.addr.port()
    ));
    let url = up.url("/echo");
    let out = get(&p, &url);
    assert_eq!(out.status, 200, "{}", out.body);
    // The first answer the store gave (the call's check) was let through only after the
    // upstream had accepted the call's connection: the dial did not wait for it.
    let first = relay.upstream_conns_at_answer.lock().expect("lock")[0];
    assert_eq!(
        first, 1,
        "the upstream connection was opened before the store answered"
    );
    // Over budget: refused, and the upstream never sees the request (its connection, if one
    // was acquired, stays idle).
    let out = get(&p, &url);
    assert_eq!(out.status, 429, "{}", out.body);
    assert_eq!(error_code(&out.json()), "budget_exhausted");
    assert_eq!(up.requests(), 1);
    // The writer thread appends the refusal's record after the answer: wait for both records.
    let recs = p.audit_n(2);
    assert!(
        recs.iter()
            .any(|r| r["status"] == 429 && r["code"] == "budget_exhausted"),
        "{recs:?}"
    );
}
