//! Clients: curl (a real client no one here wrote), raw sockets for malformed input, and a hyper
//! client speaking to the proxy in absolute form.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};

use super::rt;

/// What curl got.
#[derive(Debug)]
pub struct CurlOut {
    pub status: u16,
    pub body: String,
    pub stderr: String,
}

impl CurlOut {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// Runs curl with `args` (add `-x PROXY` yourself); the status and body of the last response.
pub fn curl(args: &[&str]) -> CurlOut {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "30", "-w", "\n%{http_code}"])
        .args(args)
        .env_remove("http_proxy")
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("ALL_PROXY")
        .stdin(Stdio::null())
        .output()
        .expect("curl is installed (scripts/test installs it)");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    CurlOut {
        status: code.trim().parse().unwrap_or(0),
        body: body.to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Writes `bytes` on a fresh connection and returns the first response (complete once its
/// Content-Length is read), or everything read until the peer closes (or 10 s pass).
pub fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(bytes).expect("write");
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
        let text = String::from_utf8_lossy(&out);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().to_string())
                })
                .and_then(|v| v.parse::<usize>().ok());
            if len.is_some_and(|n| body.len() >= n) {
                break;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Writes `bytes` and reads until the peer closes: (everything read, whether it closed).
pub fn closes_after(addr: SocketAddr, bytes: &[u8]) -> (String, bool) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(bytes).expect("write");
    let mut out = Vec::new();
    let closed = s.read_to_end(&mut out).is_ok();
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

/// The JSON body of a raw HTTP response.
pub fn raw_json(resp: &str) -> serde_json::Value {
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {resp}"))
}

/// The stable code of an error body intentgate wrote, after checking it has the one error shape:
/// `error` as the LLM SDKs read it (`message` = the reason and the hint in one sentence, `type`,
/// `code`), then our `reason`, `hint` and `decision_id`.
pub fn error_code(body: &serde_json::Value) -> String {
    let e = &body["error"];
    let field = |v: &serde_json::Value, k: &str| {
        v[k].as_str()
            .unwrap_or_else(|| panic!("no string {k} in the error body {body}"))
            .to_string()
    };
    let (reason, hint, message) = (
        field(body, "reason"),
        field(body, "hint"),
        field(e, "message"),
    );
    field(body, "decision_id");
    field(e, "type");
    assert!(
        message.starts_with(&reason) && message.ends_with(&hint),
        "error.message carries the reason and the hint: {body}"
    );
    field(e, "code")
}

/// The code of the error body in a raw HTTP response (see `error_code`).
pub fn raw_error_code(resp: &str) -> String {
    error_code(&raw_json(resp))
}

/// Whether `text` (a body, maybe in a raw response or followed by curl's `-w` output) is an
/// error body (of the one shape, see `error_code`) with `code`.
pub fn has_error_code(text: &str, code: &str) -> bool {
    let body = text.rfind('}').map_or("", |end| &text[..=end]);
    let body = body.find('{').map_or("", |start| &body[start..]);
    serde_json::from_str(body)
        .is_ok_and(|v: serde_json::Value| v["error"].is_object() && error_code(&v) == code)
}

/// A keep-alive HTTP/1.1 connection to the proxy, sending absolute-form requests.
pub struct ProxyConn {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl ProxyConn {
    pub fn open(proxy: SocketAddr) -> Self {
        rt().block_on(async {
            let tcp = tokio::net::TcpStream::connect(proxy)
                .await
                .expect("connect proxy");
            let (sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                    .await
                    .expect("handshake");
            tokio::spawn(conn);
            Self { sender }
        })
    }

    /// Sends `req` and collects the whole response.
    pub fn send(&mut self, req: Request<Full<Bytes>>) -> Response<Bytes> {
        rt().block_on(async {
            self.sender.ready().await.expect("connection ready");
            let resp = self.sender.send_request(req).await.expect("send");
            let (parts, body) = resp.into_parts();
            let body = body.collect().await.expect("body").to_bytes();
            Response::from_parts(parts, body)
        })
    }

    pub fn get(&mut self, url: &str) -> Response<Bytes> {
        self.send(
            Request::get(url)
                .body(Full::new(Bytes::new()))
                .expect("request"),
        )
    }
}

/// One request on a fresh connection.
pub fn send(proxy: SocketAddr, req: Request<Full<Bytes>>) -> Response<Bytes> {
    ProxyConn::open(proxy).send(req)
}

pub fn body_json(resp: &Response<Bytes>) -> serde_json::Value {
    serde_json::from_slice(resp.body())
        .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", resp.body()))
}

/// What a Python client got.
#[derive(Debug)]
pub struct PyOut {
    pub status: u16,
    pub body: String,
    pub headers: serde_json::Value,
}

impl PyOut {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// Runs `tests/clients/fetch.py` with `library` (`requests` or `httpx`) through `proxy`.
pub fn python(library: &str, proxy: &str, method: &str, url: &str, extra: &[&str]) -> PyOut {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/fetch.py");
    let out = Command::new("python3")
        .arg(script)
        .args([library, proxy, method, url])
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .expect("python3 is installed (scripts/test installs requests and httpx)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "{library} failed ({e}): {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    PyOut {
        status: v["status"].as_u64().unwrap_or(0) as u16,
        body: v["body"].as_str().unwrap_or_default().to_string(),
        headers: v["headers"].clone(),
    }
}
