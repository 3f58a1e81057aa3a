//! WebSocket upgrades: decided like any GET (absolute-form and inside an intercepted TLS tunnel),
//! relayed as tunnels when the upstream answers 101, bounded by the tunnel limit and idle timeout,
//! audited once with byte counts; any other upgrade token refused.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine;

use crate::common::tls::TestCa;
use crate::common::*;

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// SHA-1 (RFC 3174), only for the handshake's `Sec-WebSocket-Accept`.
fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0];
    let mut msg = data.to_vec();
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&((data.len() as u64) * 8).to_be_bytes());
    for chunk in msg.chunks(64) {
        let mut w = [0u32; 80];
        for i in 0..16 {
            w[i] = u32::from_be_bytes(chunk[i * 4..i * 4 + 4].try_into().unwrap());
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A827999),
                20..=39 => (b ^ c ^ d, 0x6ED9EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1BBCDC),
                _ => (b ^ c ^ d, 0xCA62C1D6),
            };
            let t = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(*wi);
            (e, d, c, b, a) = (d, c, b.rotate_left(30), a, t);
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e]) {
            *x = x.wrapping_add(y);
        }
    }
    let mut out = [0u8; 20];
    for (i, x) in h.iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&x.to_be_bytes());
    }
    out
}

fn accept(key: &str) -> String {
    let mut s = key.as_bytes().to_vec();
    s.extend_from_slice(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(sha1(&s))
}

fn read_head(s: &mut impl Read) -> String {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).unwrap_or(0) == 0 {
            break;
        }
        head.push(b[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// Reads one frame: (opcode, unmasked payload).
pub(crate) fn read_frame(s: &mut impl Read) -> Option<(u8, Vec<u8>)> {
    let mut h = [0u8; 2];
    s.read_exact(&mut h).ok()?;
    let mut len = u64::from(h[1] & 0x7f);
    if len == 126 {
        let mut l = [0u8; 2];
        s.read_exact(&mut l).ok()?;
        len = u64::from(u16::from_be_bytes(l));
    } else if len == 127 {
        let mut l = [0u8; 8];
        s.read_exact(&mut l).ok()?;
        len = u64::from_be_bytes(l);
    }
    let mut mask = [0u8; 4];
    if h[1] & 0x80 != 0 {
        s.read_exact(&mut mask).ok()?;
    }
    let mut data = vec![0u8; len as usize];
    s.read_exact(&mut data).ok()?;
    for (i, b) in data.iter_mut().enumerate() {
        *b ^= mask[i % 4];
    }
    Some((h[0] & 0x0f, data))
}

pub(crate) fn frame(opcode: u8, data: &[u8], mask: bool) -> Vec<u8> {
    assert!(data.len() < 126);
    let mut f = vec![
        0x80 | opcode,
        data.len() as u8 | if mask { 0x80 } else { 0 },
    ];
    let key = [7u8, 1, 9, 3];
    if mask {
        f.extend_from_slice(&key);
    }
    f.extend(
        data.iter()
            .enumerate()
            .map(|(i, b)| if mask { b ^ key[i % 4] } else { *b }),
    );
    f
}

/// A WebSocket echo server (plain or TLS) that counts the handshakes it saw.
pub(crate) struct WsUpstream {
    pub(crate) addr: SocketAddr,
    handshakes: Arc<AtomicUsize>,
}

fn echo<S: Read + Write>(mut s: S, handshakes: &AtomicUsize) {
    let head = read_head(&mut s);
    if head.is_empty() {
        return;
    }
    handshakes.fetch_add(1, Ordering::SeqCst);
    let key = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("sec-websocket-key:")
                .map(|_| l[18..].trim().to_string())
        })
        .unwrap_or_default();
    let resp = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        accept(&key)
    );
    if s.write_all(resp.as_bytes()).is_err() {
        return;
    }
    let _ = s.flush();
    while let Some((op, data)) = read_frame(&mut s) {
        if s.write_all(&frame(op, &data, false)).is_err() || op == 8 {
            return;
        }
        let _ = s.flush();
    }
}

impl WsUpstream {
    pub(crate) fn start(tls: Option<Arc<rustls::ServerConfig>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let handshakes = Arc::new(AtomicUsize::new(0));
        let seen = handshakes.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (seen, tls) = (seen.clone(), tls.clone());
                std::thread::spawn(move || match tls {
                    Some(cfg) => {
                        let conn_tls = rustls::ServerConnection::new(cfg).unwrap();
                        echo(rustls::StreamOwned::new(conn_tls, conn), &seen);
                    }
                    None => echo(conn, &seen),
                });
            }
        });
        Self { addr, handshakes }
    }

    fn seen(&self) -> usize {
        self.handshakes.load(Ordering::SeqCst)
    }
}

fn proxy_for(up: &WsUpstream, extra: &str) -> ProxyProc {
    ProxyProc::start(&format!(
        "intents:\n  chat:\n    allow:\n      - hosts: [127.0.0.1, localhost]\n        ports: [{}]\n        methods: [GET]\n        paths: [\"/chat\"]\n{extra}",
        up.addr.port()
    ))
}

/// Sends an absolute-form upgrade request; returns the socket and the response head.
pub(crate) fn upgrade(
    proxy: SocketAddr,
    up: SocketAddr,
    path: &str,
    token: &str,
) -> (TcpStream, String) {
    let mut s = TcpStream::connect(proxy).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET http://{up}{path} HTTP/1.1\r\nHost: {up}\r\nConnection: Upgrade\r\nUpgrade: {token}\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\nintentgate-intent: chat\r\n\r\n"
    )
    .unwrap();
    let head = read_head(&mut s);
    (s, head)
}

/// The JSON body that follows `head` on `s` (read by its Content-Length).
fn json_after(s: &mut TcpStream, head: &str) -> serde_json::Value {
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or_else(|| panic!("no content-length: {head}"));
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    serde_json::from_slice(&body).unwrap()
}

#[test]
fn sha1_matches_the_rfc_6455_example() {
    assert_eq!(accept(KEY), ACCEPT);
}

#[test]
fn an_allowed_websocket_echoes_and_is_audited_once_with_byte_counts() {
    let up = WsUpstream::start(None);
    let proxy = proxy_for(&up, "");
    let (mut s, head) = upgrade(proxy.addr, up.addr, "/chat", "websocket");
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.contains(&format!("sec-websocket-accept: {ACCEPT}")),
        "{head}"
    );
    assert!(
        head.to_ascii_lowercase().contains("upgrade: websocket"),
        "{head}"
    );
    for msg in ["hello", "second message"] {
        s.write_all(&frame(1, msg.as_bytes(), true)).unwrap();
        assert_eq!(read_frame(&mut s), Some((1, msg.as_bytes().to_vec())));
    }
    s.write_all(&frame(8, b"", true)).unwrap();
    assert_eq!(read_frame(&mut s).map(|f| f.0), Some(8));
    drop(s);
    let rec = proxy.audit_n(1).pop().unwrap();
    assert_eq!(rec["status"], 101, "{rec}");
    assert_eq!(rec["decision"], "allow", "{rec}");
    // Client frames are masked (6 + len bytes), echoes are not (2 + len).
    assert_eq!(rec["bytes_in"], 11 + 20 + 6, "{rec}");
    assert_eq!(rec["bytes_out"], 7 + 16 + 2, "{rec}");
    assert_eq!(up.seen(), 1);
    assert!(proxy.metric("intentgate_websocket_upgrades_total{result=\"upgraded\"}") >= 1.0);
    eventually("tunnel slot released", Duration::from_secs(10), || {
        (proxy.metric("intentgate_tunnels_active") == 0.0).then_some(())
    });
}

#[test]
fn a_denied_websocket_is_403_and_never_reaches_the_upstream() {
    let up = WsUpstream::start(None);
    let proxy = proxy_for(&up, "");
    let (mut s, head) = upgrade(proxy.addr, up.addr, "/admin", "websocket");
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    let body = json_after(&mut s, &head);
    assert_eq!(error_code(&body), "intent_violation", "{body}");
    assert_eq!(up.seen(), 0);
}

#[test]
fn other_upgrade_tokens_are_400_and_never_reach_the_upstream() {
    let up = WsUpstream::start(None);
    let proxy = proxy_for(&up, "");
    for token in ["foo", "websocket, tls/1.0"] {
        let (mut s, head) = upgrade(proxy.addr, up.addr, "/chat", token);
        assert!(head.starts_with("HTTP/1.1 400"), "{token}: {head}");
        assert_eq!(error_code(&json_after(&mut s, &head)), "bad_request");
    }
    assert_eq!(up.seen(), 0);
}

#[test]
fn websockets_count_against_the_tunnel_limit_and_close_when_idle() {
    let up = WsUpstream::start(None);
    let proxy = proxy_for(
        &up,
        "limits: {max_tunnels: 1, tunnel_idle_timeout_ms: 1500}\n",
    );
    let (mut first, head) = upgrade(proxy.addr, up.addr, "/chat", "websocket");
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let (mut second, head) = upgrade(proxy.addr, up.addr, "/chat", "websocket");
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("retry-after: 1"),
        "{head}"
    );
    assert_eq!(error_code(&json_after(&mut second, &head)), "overloaded");
    assert_eq!(up.seen(), 1, "the refused upgrade reached the upstream");
    // Left idle, the first is closed by the proxy (a read sees EOF, not the 10 s read timeout).
    let mut buf = [0u8; 16];
    assert_eq!(first.read(&mut buf).unwrap(), 0);
    let rec = proxy
        .audit_n(2)
        .into_iter()
        .find(|r| r["status"] == 101)
        .unwrap();
    assert!(rec["reasons"].to_string().contains("idle"), "{rec}");
    // The slot is free again.
    let third = eventually("tunnel slot free", Duration::from_secs(10), || {
        let (s, head) = upgrade(proxy.addr, up.addr, "/chat", "websocket");
        head.starts_with("HTTP/1.1 101").then_some(s)
    });
    drop(third);
}

#[test]
fn a_websocket_inside_an_intercepted_tls_tunnel_with_python_websocket_client() {
    let dir = tempfile::tempdir().unwrap();
    init_ca(dir.path());
    let test_ca = TestCa::new("ws upstream CA");
    let up_ca = test_ca.write_pem(dir.path());
    let up = WsUpstream::start(Some(test_ca.server_config(&["localhost"])));
    let proxy = proxy_for(
        &up,
        &format!(
            "tls: {{ca_cert: \"{}\", ca_key: \"{}\", upstream_ca: \"{}\"}}\n",
            dir.path().join("ca/ca.pem").display(),
            dir.path().join("ca/ca-key.pem").display(),
            up_ca.display()
        ),
    );
    let script = r#"
import ssl, sys, websocket
url, port, ca = sys.argv[1], int(sys.argv[2]), sys.argv[3]
try:
    ws = websocket.create_connection(url, http_proxy_host="127.0.0.1", http_proxy_port=port,
        proxy_type="http", http_no_proxy=["no-such-host.invalid"], sslopt={"ca_certs": ca, "cert_reqs": ssl.CERT_REQUIRED}, header=["intentgate-intent: chat"], timeout=10)
except websocket.WebSocketBadStatusException as e:
    print("status", e.status_code); sys.exit(0)
ws.send("over tls"); print("echo", ws.recv()); ws.close()
"#;
    let run = |path: &str| {
        let out = std::process::Command::new("python3")
            .args([
                "-c",
                script,
                &format!("wss://localhost:{}{path}", up.addr.port()),
                &proxy.addr.port().to_string(),
                dir.path().join("ca/ca.pem").to_str().unwrap(),
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(
            out.status.success(),
            "{text}{}\naudit: {:?}",
            String::from_utf8_lossy(&out.stderr),
            proxy.audit()
        );
        text
    };
    assert_eq!(run("/admin"), "status 403");
    assert_eq!(up.seen(), 0, "a denied upgrade reached the upstream");
    assert_eq!(run("/chat"), "echo over tls");
    assert_eq!(up.seen(), 1);
}
