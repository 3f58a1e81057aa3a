//! Budgets per intent (src/budget/), through the real proxy with curl: calls and bytes budgets,
//! a window that resets, `expires_after`, monitor mode, a stream in flight, `GET /v1/budgets`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::common::*;

/// A proxy whose default intent `work` (mode `mode`) may reach `up` with `budget`.
fn proxy(up: &Upstream, mode: &str, budget: &str) -> ProxyProc {
    ProxyProc::start(&format!(
        "intent: work\nintents:\n  work:\n    mode: {mode}\n    allow: [{{hosts: [127.0.0.1], ports: [{}]}}]\n    budget: {budget}\n",
        up.addr.port()
    ))
}

/// curl through `proxy`, with the response headers written to a file; (output, headers).
fn call(proxy: &ProxyProc, args: &[&str]) -> (CurlOut, String) {
    let headers = proxy.dir.path().join("headers.txt");
    let h = headers.to_str().unwrap();
    let url = proxy.url();
    let mut all = vec!["-x", url.as_str(), "-D", h];
    all.extend_from_slice(args);
    let out = curl(&all);
    let text = std::fs::read_to_string(&headers).unwrap_or_default();
    (out, text.to_ascii_lowercase())
}

fn budgets(proxy: &ProxyProc) -> Vec<serde_json::Value> {
    let out = curl(&[&proxy.admin_url("/v1/budgets")]);
    assert_eq!(out.status, 200, "{}", out.body);
    out.json()["budgets"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn n_calls_pass_and_the_next_is_refused_with_what_was_used_and_when_it_resets() {
    let up = Upstream::start();
    let p = proxy(&up, "enforce", "{calls: 3, window: 1h}");
    let url = up.url("/echo");
    for i in 0..3 {
        let (out, _) = call(&p, &[&url]);
        assert_eq!(out.status, 200, "call {i}: {}", out.body);
    }
    let (out, headers) = call(&p, &[&url]);
    assert_eq!(out.status, 429, "{}", out.body);
    let body = out.json();
    assert_eq!(error_code(&body), "budget_exhausted");
    let reason = body["reason"].as_str().unwrap();
    assert!(reason.contains("budget of 3 calls"), "{reason}");
    assert!(reason.contains("3 used"), "{reason}");
    assert!(
        body["hint"].as_str().unwrap().contains("Retry-After"),
        "{body}"
    );
    assert_eq!(body["budget"]["used"]["calls"], 3, "{body}");
    assert_eq!(body["budget"]["limit"]["calls"], 3, "{body}");
    assert_eq!(body["budget"]["window"], "1h", "{body}");
    let resets = body["budget"]["resets_at"].as_str().expect("resets_at");
    assert!(reason.contains(resets), "{reason}");
    let retry: u64 = headers
        .lines()
        .find_map(|l| l.strip_prefix("retry-after:"))
        .expect("a Retry-After header")
        .trim()
        .parse()
        .unwrap();
    assert!((1..=3600).contains(&retry), "{retry}");
    // The upstream never saw the refused call.
    assert_eq!(up.requests(), 3);
    // The refusal's record names the budget's state.
    let recs = p.audit_n(4);
    let refused = recs.iter().find(|r| r["status"] == 429).expect("record");
    assert_eq!(refused["decision"], "deny");
    assert_eq!(refused["code"], "budget_exhausted");
    assert_eq!(refused["budget"]["used"]["calls"], 3, "{refused}");
    assert!(
        recs.iter()
            .filter(|r| r["status"] == 200)
            .all(|r| r.get("budget").is_none())
    );
}

#[test]
fn bytes_out_and_bytes_in_are_charged_when_the_call_ends() {
    let up = Upstream::start();
    let p = proxy(&up, "enforce", "{bytes_out: 100, bytes_in: 1000000}");
    let echo = up.url("/echo");
    // 150 bytes out: the call goes (the budget had not run out), then it has.
    let (out, _) = call(&p, &["--data-binary", &"x".repeat(150), &echo]);
    assert_eq!(out.status, 200, "{}", out.body);
    eventually("the request body charged", Duration::from_secs(20), || {
        let b = budgets(&p);
        (b.first()?["used"]["bytes_out"] == 150).then_some(())
    });
    let (out, _) = call(&p, &[&echo]);
    assert_eq!(out.status, 429, "{}", out.body);
    assert_eq!(out.json()["budget"]["exhausted"], "bytes_out");
    assert!(
        out.json()["reason"]
            .as_str()
            .unwrap()
            .contains("100 bytes_out (150 used)")
    );
    // No window: no Retry-After, and the hint says what to do instead.
    assert!(out.json()["budget"]["resets_at"].is_null());

    let up2 = Upstream::start();
    let p2 = proxy(&up2, "enforce", "{bytes_in: 100000}");
    let (out, _) = call(&p2, &[&up2.url("/bytes/300000")]);
    assert_eq!(out.status, 200);
    assert_eq!(out.body.len(), 300000);
    eventually("the response body charged", Duration::from_secs(20), || {
        let b = budgets(&p2);
        (b.first()?["used"]["bytes_in"] == 300000).then_some(())
    });
    let (out, _) = call(&p2, &[&up2.url("/echo")]);
    assert_eq!(out.status, 429, "{}", out.body);
    assert_eq!(out.json()["budget"]["exhausted"], "bytes_in");
    assert_eq!(up2.requests(), 1);
}

#[test]
fn a_window_resets_the_counts() {
    let up = Upstream::start();
    let p = proxy(&up, "enforce", "{calls: 1, window: 3s}");
    let url = up.url("/echo");
    // Two calls in one window: the second is refused (retried should a window end between them).
    let retry = eventually(
        "a call refused in its window",
        Duration::from_secs(30),
        || {
            let (out, headers) = call(&p, &[&url]);
            (out.status == 429).then_some(headers)
        },
    );
    assert!(retry.contains("retry-after: "), "{retry}");
    // The next window lets a call go again.
    eventually(
        "a call after the window reset",
        Duration::from_secs(30),
        || (call(&p, &[&url]).0.status == 200).then_some(()),
    );
}

#[test]
fn expires_after_ends_the_intent() {
    let up = Upstream::start();
    let p = proxy(&up, "enforce", "{expires_after: 2s}");
    let url = up.url("/echo");
    assert_eq!(call(&p, &[&url]).0.status, 200);
    let out = eventually("the intent to end", Duration::from_secs(30), || {
        let (out, _) = call(&p, &[&url]);
        (out.status == 429).then_some(out)
    });
    let body = out.json();
    assert_eq!(error_code(&body), "budget_expired");
    assert!(
        body["reason"].as_str().unwrap().contains("has ended"),
        "{body}"
    );
    assert_eq!(body["budget"]["exhausted"], "expired");
    assert!(body["budget"]["expires_at"].is_string());
}

#[test]
fn monitor_mode_records_would_deny_and_forwards() {
    let up = Upstream::start();
    let p = proxy(&up, "monitor", "{calls: 1}");
    let url = up.url("/echo");
    for _ in 0..3 {
        assert_eq!(call(&p, &[&url]).0.status, 200);
    }
    assert_eq!(up.requests(), 3);
    let recs = p.audit_n(3);
    assert_eq!(recs[0]["decision"], "allow", "{}", recs[0]);
    for r in &recs[1..] {
        assert_eq!(r["decision"], "would_deny", "{r}");
        assert_eq!(r["code"], "budget_exhausted", "{r}");
        assert_eq!(r["budget"]["limit"]["calls"], 1, "{r}");
    }
    // Monitor mode counts every call.
    assert_eq!(budgets(&p)[0]["used"]["calls"], 3);
}

#[test]
fn a_stream_in_flight_is_not_cut_and_the_next_call_is_refused() {
    let up = Upstream::start();
    let p = proxy(&up, "enforce", "{calls: 1}");
    let mut s = TcpStream::connect(p.addr).unwrap();
    write!(
        s,
        "GET {} HTTP/1.1\r\nHost: {}\r\n\r\n",
        up.url("/sse"),
        up.addr
    )
    .unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut got = String::new();
    let mut read_until = |needle: &str, got: &mut String| {
        eventually(&format!("'{needle}'"), Duration::from_secs(20), || {
            let mut buf = [0u8; 1024];
            if let Ok(n) = s.read(&mut buf) {
                got.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
            got.contains(needle).then_some(())
        })
    };
    read_until("data: one", &mut got);
    // The stream used the only call: the next one is refused while the stream goes on.
    let (out, _) = call(&p, &[&up.url("/echo")]);
    assert_eq!(out.status, 429, "{}", out.body);
    up.state.sse_gate.notify_one();
    read_until("data: two", &mut got);
}

#[test]
fn v1_budgets_lists_each_counter() {
    let up = Upstream::start();
    let p = proxy(&up, "enforce", "{calls: 5, bytes_out: 1000, window: 1h}");
    assert!(budgets(&p).is_empty());
    let url = up.url("/echo");
    assert_eq!(call(&p, &[&url]).0.status, 200);
    assert_eq!(call(&p, &["--data-binary", "hello", &url]).0.status, 200);
    let b = eventually("both calls' bytes", Duration::from_secs(20), || {
        let b = budgets(&p);
        (b.first()?["used"]["bytes_out"] == 5).then_some(b)
    });
    assert_eq!(b.len(), 1, "{b:?}");
    let c = &b[0];
    assert_eq!(c["agent"], "test-agent");
    assert_eq!(c["intent"], "work");
    assert_eq!(c["used"]["calls"], 2);
    assert_eq!(c["limit"]["calls"], 5);
    assert_eq!(c["limit"]["bytes_out"], 1000);
    assert!(c["limit"].get("bytes_in").is_none(), "{c}");
    assert!(c["resets_at"].is_string(), "{c}");
    assert!(c["exhausted"].is_null(), "{c}");
}

#[test]
fn a_broken_budget_names_the_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    for (text, want) in [
        ("budget: {calls: 3, windw: 1h}", "windw"),
        ("budget: {calls: 3, window: soon}", "window: 'soon'"),
        (
            "budget: {calls: 3, expires_after: 0s}",
            "expires_after: '0s'",
        ),
        ("budget: {window: 1h}", "set at least one of calls"),
    ] {
        let p = dir.path().join("budget.yaml");
        std::fs::write(
            &p,
            format!("intents:\n  work:\n    allow: [{{hosts: [example.com]}}]\n    {text}\n"),
        )
        .unwrap();
        let (code, _, stderr) = run_cli(&["check", "--config", p.to_str().unwrap()]);
        assert_eq!(code, 2, "{text}: {stderr}");
        assert!(stderr.contains("budget.yaml"), "{text}: {stderr}");
        assert!(stderr.contains(want), "{text}: {stderr}");
    }
}

#[test]
fn per_session_counts_start_again_with_a_new_session() {
    let up = Upstream::start();
    let p = proxy(&up, "enforce", "{calls: 1, window: per_session}");
    let url = up.url("/echo");
    let session = || {
        let out = curl(&[
            "-X",
            "PUT",
            "--data",
            r#"{"name": "work", "task": "T-1"}"#,
            &p.admin_url("/v1/intent"),
        ]);
        assert_eq!(out.status, 200, "{}", out.body);
    };
    session();
    assert_eq!(call(&p, &[&url]).0.status, 200);
    let (out, _) = call(&p, &[&url]);
    assert_eq!(out.status, 429, "{}", out.body);
    assert!(
        out.json()["reason"]
            .as_str()
            .unwrap()
            .contains("for this session")
    );
    session();
    assert_eq!(call(&p, &[&url]).0.status, 200);
}
