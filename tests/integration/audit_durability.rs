//! Audit records survive a full disk and a shutdown: with `audit.on_failure: block` nothing is
//! forwarded without its record and the held records are written once space returns; with
//! `continue` requests flow and the lost records are counted; streams still open at the end of
//! the shutdown grace are closed and recorded with `ended: "shutdown"` and their bytes.
//!
//! The full disk is a small tmpfs the test mounts (root) on a temporary directory and unmounts
//! when it ends.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::*;
use crate::connect::connect_tunnel;
use crate::websocket::{WsUpstream, frame, read_frame, upgrade};

const PAGE: u64 = 4096;

/// A tmpfs of `size` mounted on a fresh directory, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount -t tmpfs failed (these tests run as root)");
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Fills the file system, then gives back one page: room for a few records, and the record
    /// that crosses into the next page is written only in part.
    fn fill_but_one_page(&self) -> PathBuf {
        let path = self.path("filler");
        let mut f = File::create(&path).unwrap();
        let chunk = vec![b'x'; PAGE as usize];
        while f.write_all(&chunk).is_ok() {}
        let len = f.metadata().unwrap().len();
        f.set_len((len / PAGE).saturating_sub(1) * PAGE).unwrap();
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

fn catalog(port: u16) -> String {
    format!(
        "intents:\n  read:\n    allow:\n      - hosts: [localhost, 127.0.0.1]\n        ports: [{port}]\n"
    )
}

/// Every line of the audit file parsed (a torn or merged line fails here).
fn records(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not one JSON record ({e}): {l}"))
        })
        .collect()
}

fn seqs(recs: &[serde_json::Value]) -> Vec<u64> {
    recs.iter().map(|r| r["seq"].as_u64().unwrap()).collect()
}

fn get(proxy: &ProxyProc, url: &str) -> CurlOut {
    curl(&["-x", &proxy.url(), "-H", "intentgate-intent: read", url])
}

#[test]
fn a_full_disk_blocks_requests_until_space_returns_and_no_forwarded_request_lacks_its_record() {
    let fs = Tmpfs::mount("64k");
    let log = fs.path("audit.log");
    let up = Upstream::start();
    // `audit.on_failure` is not set: `block` is the default.
    let mut proxy = ProxyProc::start(&format!(
        "{}audit: {{path: \"{}\"}}\n",
        catalog(up.addr.port()),
        log.display()
    ));
    let url = up.url("/echo");
    let filler = fs.fill_but_one_page();
    // Requests are answered until the writer fails, then refused: 503 audit_unavailable.
    let mut refused = None;
    for _ in 0..200 {
        let out = get(&proxy, &url);
        match out.status {
            200 => {}
            503 => {
                refused = Some(out);
                break;
            }
            s => panic!("unexpected {s}: {out:?}"),
        }
    }
    let refused = refused.expect("a full disk never blocked the proxy: requests kept flowing");
    let body = refused.json();
    assert_eq!(error_code(&body), "audit_unavailable", "{body}");
    for k in ["reason", "hint", "decision_id"] {
        assert!(
            body[k].as_str().is_some_and(|v| !v.is_empty()),
            "{k}: {body}"
        );
    }
    // While blocked nothing is forwarded: plain requests and CONNECTs are refused, readiness
    // says why.
    let hits = up.requests();
    for _ in 0..3 {
        assert_eq!(get(&proxy, &url).status, 503);
    }
    let connect = raw(
        proxy.addr,
        format!("CONNECT {} HTTP/1.1\r\n\r\n", up.addr).as_bytes(),
    );
    assert!(connect.starts_with("HTTP/1.1 503"), "{connect}");
    assert_eq!(raw_error_code(&connect), "audit_unavailable");
    assert_eq!(up.requests(), hits, "forwarded while the log was blocked");
    let ready = curl(&[&proxy.admin_url("/readyz")]);
    assert_eq!(ready.status, 503, "{ready:?}");
    assert_eq!(ready.json()["status"], "audit_unavailable");
    assert_eq!(proxy.metric("intentgate_audit_blocked"), 1.0);

    // Space returns: the held records are written, readiness and requests come back.
    std::fs::remove_file(filler).unwrap();
    eventually("readyz to recover", Duration::from_secs(20), || {
        (curl(&[&proxy.admin_url("/readyz")]).status == 200).then_some(())
    });
    for _ in 0..3 {
        assert_eq!(get(&proxy, &url).status, 200);
    }
    proxy.signal("TERM");
    assert!(proxy.wait_exit(Duration::from_secs(20)).success());

    let recs = records(&log);
    let n = recs.len() as u64;
    assert_eq!(seqs(&recs), (1..=n).collect::<Vec<_>>(), "contiguous seq");
    let forwarded = recs
        .iter()
        .filter(|r| r["status"] == 200 && r["decision"] == "allow")
        .count();
    assert_eq!(forwarded, up.requests(), "records vs upstream hits");
    let refusals = recs
        .iter()
        .filter(|r| r["error"] == "audit_unavailable")
        .count();
    assert_eq!(
        refusals, 5,
        "each 503 (1 + 3 + the CONNECT) has its record too"
    );
}

#[test]
fn on_failure_continue_forwards_on_a_full_disk_and_counts_every_lost_record() {
    let fs = Tmpfs::mount("64k");
    let log = fs.path("audit.log");
    let up = Upstream::start();
    let proxy = ProxyProc::start(&format!(
        "{}audit: {{path: \"{}\", on_failure: continue}}\n",
        catalog(up.addr.port()),
        log.display()
    ));
    let url = up.url("/echo");
    let filler = fs.fill_but_one_page();
    for _ in 0..30 {
        assert_eq!(get(&proxy, &url).status, 200);
    }
    let lost = eventually("records counted lost", Duration::from_secs(10), || {
        let v = proxy.metric("intentgate_audit_records_lost_total");
        (v > 0.0).then_some(v)
    });
    assert_eq!(up.requests(), 30, "continue forwards everything");
    let ready = curl(&[&proxy.admin_url("/readyz")]);
    assert_eq!(ready.status, 200, "{ready:?}");

    // Space returns: the record cut short is completed first, the next ones follow whole.
    std::fs::remove_file(filler).unwrap();
    for _ in 0..3 {
        assert_eq!(get(&proxy, &url).status, 200);
    }
    let recs = eventually(
        "the records after recovery",
        Duration::from_secs(10),
        || {
            let recs = records(&log);
            let max = recs.last().map_or(0, |r| r["seq"].as_u64().unwrap());
            (max == 33).then_some(recs)
        },
    );
    let lost_now = proxy.metric("intentgate_audit_records_lost_total");
    assert_eq!(lost_now, lost, "nothing lost after space returned");
    let s = seqs(&recs);
    assert!(s.windows(2).all(|w| w[0] < w[1]), "{s:?}");
    // Every seq is either in the file or counted lost: the gaps are exactly the lost records.
    assert_eq!(recs.len() as f64 + lost, 33.0, "{s:?}");
}

/// Reads a response head from `s`, and the first chunk after it.
fn read_until(s: &mut TcpStream, needle: &str) -> String {
    let mut got = Vec::new();
    let mut b = [0u8; 1024];
    while !String::from_utf8_lossy(&got).contains(needle) {
        let n = s.read(&mut b).unwrap();
        assert!(
            n > 0,
            "closed before {needle:?}: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&b[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

fn decision_id(head: &str) -> String {
    head.lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("intentgate-decision-id:")
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_else(|| panic!("no decision id: {head}"))
}

#[test]
fn streams_open_when_the_grace_ends_are_closed_and_recorded_with_ended_shutdown() {
    let up = Upstream::start();
    let ws = WsUpstream::start(None);
    let mut proxy = ProxyProc::start(&format!(
        "intent: chat\nintents:\n  chat:\n    allow:\n      - hosts: [localhost, 127.0.0.1]\n        ports: [{}, {}]\n\
         limits: {{shutdown_grace_ms: 1000}}\n",
        up.addr.port(),
        ws.addr.port()
    ));
    let timeout = Some(Duration::from_secs(10));
    // An endless chunked response (server-sent events that never finish).
    let mut sse = TcpStream::connect(proxy.addr).unwrap();
    sse.set_read_timeout(timeout).unwrap();
    write!(
        sse,
        "GET {} HTTP/1.1\r\nHost: {}\r\n\r\n",
        up.url("/sse"),
        up.addr
    )
    .unwrap();
    let head = read_until(&mut sse, "data: one");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let sse_id = decision_id(&head);
    // A request still waiting for its upstream's answer.
    let mut slow = TcpStream::connect(proxy.addr).unwrap();
    slow.set_read_timeout(timeout).unwrap();
    let slow_url = up.url("/slow?ms=60000");
    write!(slow, "GET {slow_url} HTTP/1.1\r\nHost: {}\r\n\r\n", up.addr).unwrap();
    eventually(
        "the slow request to reach the upstream",
        Duration::from_secs(10),
        || {
            up.seen()
                .iter()
                .any(|r| r.uri.starts_with("/slow"))
                .then_some(())
        },
    );
    // A spliced CONNECT tunnel that carried one request and stays open.
    let mut tunnel = connect_tunnel(proxy.addr, &up.addr.to_string());
    tunnel.set_read_timeout(timeout).unwrap();
    let request = format!("GET /echo HTTP/1.1\r\nHost: {}\r\n\r\n", up.addr);
    tunnel.write_all(request.as_bytes()).unwrap();
    read_until(&mut tunnel, "\r\n\r\n");
    // A WebSocket that exchanged one message and stays open.
    let (mut socket, head) = upgrade(proxy.addr, ws.addr, "/chat", "websocket");
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let ws_id = decision_id(&head);
    socket.write_all(&frame(1, b"hello", true)).unwrap();
    assert_eq!(
        read_frame(&mut socket).map(|f| f.1),
        Some(b"hello".to_vec())
    );

    proxy.signal("TERM");
    let status = proxy.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "{status}: {}", proxy.stderr());
    // Every stream was closed by the proxy.
    let mut rest = Vec::new();
    for s in [&mut sse, &mut slow, &mut tunnel, &mut socket] {
        assert!(s.read_to_end(&mut rest).is_ok(), "not closed by the proxy");
    }

    let recs = proxy.audit();
    let mut by_id: HashMap<&str, Vec<&serde_json::Value>> = HashMap::new();
    for r in &recs {
        by_id
            .entry(r["decision_id"].as_str().unwrap())
            .or_default()
            .push(r);
    }
    assert!(
        by_id.values().all(|v| v.len() == 1),
        "one record per decision id: {recs:?}"
    );
    let stream = by_id
        .get(sse_id.as_str())
        .unwrap_or_else(|| panic!("no SSE record: {recs:?}"))[0];
    assert_eq!(stream["ended"], "shutdown", "{stream}");
    assert_eq!(stream["bytes_out"], "data: one\n\n".len(), "{stream}");
    let relay = by_id
        .get(ws_id.as_str())
        .unwrap_or_else(|| panic!("no WebSocket record: {recs:?}"))[0];
    assert_eq!(relay["ended"], "shutdown", "{relay}");
    assert_eq!(relay["bytes_in"], 6 + 5, "{relay}");
    assert_eq!(relay["bytes_out"], 2 + 5, "{relay}");
    let spliced = recs
        .iter()
        .find(|r| r["method"] == "CONNECT")
        .unwrap_or_else(|| panic!("no tunnel record: {recs:?}"));
    assert_eq!(spliced["ended"], "shutdown", "{spliced}");
    assert_eq!(spliced["bytes_in"], request.len(), "{spliced}");
    assert!(spliced["bytes_out"].as_u64().unwrap() > 0, "{spliced}");
    let waiting = recs
        .iter()
        .find(|r| r["path"] == "/slow")
        .unwrap_or_else(|| panic!("no record of the request in flight: {recs:?}"));
    assert_eq!(waiting["ended"], "shutdown", "{waiting}");
    assert_eq!(waiting["status"], 0, "no response was sent: {waiting}");
    assert_eq!(recs.len(), 4, "{recs:?}");
    assert_eq!(seqs(&recs), [1, 2, 3, 4]);
}

#[test]
fn a_stream_inside_an_intercepted_tunnel_is_recorded_with_ended_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("ca");
    let (code, out, err) = run_cli(&["ca", "init", "--out", ca_dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    let test_ca = crate::common::tls::TestCa::new("upstream test CA");
    let up_ca = test_ca.write_pem(dir.path());
    let up = Upstream::start_tls(test_ca.server_config(&["localhost"]));
    let mut proxy = ProxyProc::start(&format!(
        "intent: read\ntls: {{ca_cert: \"{}\", ca_key: \"{}\", upstream_ca: \"{}\"}}\n{}\
         limits: {{shutdown_grace_ms: 1000}}\n",
        ca_dir.join("ca.pem").display(),
        ca_dir.join("ca-key.pem").display(),
        up_ca.display(),
        catalog(up.addr.port()),
    ));
    // An HTTPS event stream that never ends, through an intercepted CONNECT.
    let (purl, ca) = (proxy.url(), ca_dir.join("ca.pem"));
    let url = format!("https://localhost:{}/sse", up.addr.port());
    let got = dir.path().join("got");
    let to = got.clone();
    let client = std::thread::spawn(move || {
        curl(&[
            "-N",
            "--http1.1",
            "-x",
            &purl,
            "--cacert",
            ca.to_str().unwrap(),
            "-o",
            to.to_str().unwrap(),
            &url,
        ])
    });
    eventually("the first event to arrive", Duration::from_secs(10), || {
        std::fs::read_to_string(&got)
            .is_ok_and(|t| t.contains("data: one"))
            .then_some(())
    });
    proxy.signal("TERM");
    assert!(proxy.wait_exit(Duration::from_secs(30)).success());
    client.join().unwrap();
    let recs = proxy.audit();
    let stream = recs
        .iter()
        .find(|r| r["path"] == "/sse")
        .unwrap_or_else(|| panic!("no record of the stream: {recs:?}"));
    assert_eq!(stream["connection"], "intercepted", "{stream}");
    assert_eq!(stream["ended"], "shutdown", "{stream}");
    assert_eq!(stream["bytes_out"], "data: one\n\n".len(), "{stream}");
}
