//! The collector's side of the export: one HTTP/1.1 connection kept between posts (opened
//! again when the collector closed it), each post's head and body written in one call, the
//! answer read whole (status, headers, a `Content-Length` body) so the next post can follow.

use std::io::{self, BufRead, BufReader, IoSlice, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::config::{OtlpConfig, OtlpEncoding};

/// An answer's head and body, read at most (a larger one closes the connection).
const MAX_HEAD: u64 = 16 * 1024;
const MAX_BODY: u64 = 64 * 1024;

/// The collector: where to connect, what to name in `Host`, the base path, the resource.
pub(super) struct Target {
    authority: String,
    base: String,
    timeout: Duration,
    pub(super) service: String,
    conn: Option<BufReader<TcpStream>>,
    head: Vec<u8>,
}

/// What a post's failure left: whether it may be tried again on a new connection (a kept one
/// failed before any byte of the answer came).
struct Failed {
    error: String,
    retry: bool,
}

impl Target {
    pub(super) fn of(cfg: &OtlpConfig) -> io::Result<Self> {
        let rest = cfg.endpoint.strip_prefix("http://").ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "telemetry.otlp.endpoint must be http://",
            )
        })?;
        let (authority, base) = rest.split_once('/').map_or((rest, ""), |(a, b)| (a, b));
        let authority = if authority.contains(':') && !authority.ends_with(']') {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        Ok(Target {
            authority,
            base: format!("/{}", base.trim_end_matches('/')).replace("//", "/"),
            timeout: Duration::from_millis(cfg.timeout_ms),
            service: cfg.service_name.clone(),
            conn: None,
            head: Vec::with_capacity(256),
        })
    }

    /// One OTLP/HTTP request to `/v1/{signal}`; Ok for a 2xx answer.
    pub(super) fn post(
        &mut self,
        signal: &str,
        encoding: OtlpEncoding,
        body: &[u8],
    ) -> Result<(), String> {
        self.head.clear();
        let ct = match encoding {
            OtlpEncoding::Protobuf => "application/x-protobuf",
            OtlpEncoding::Json => "application/json",
        };
        // Writing into a Vec cannot fail.
        let _ = write!(
            self.head,
            "POST {}/v1/{signal} HTTP/1.1\r\nHost: {}\r\nContent-Type: {ct}\r\nContent-Length: {}\r\nUser-Agent: intentgate/{}\r\n\r\n",
            self.base.trim_end_matches('/'),
            self.authority,
            body.len(),
            env!("CARGO_PKG_VERSION")
        );
        let kept = self.conn.is_some();
        match self.exchange(body) {
            Err(f) if kept && f.retry => self.exchange(body),
            other => other,
        }
        .map_err(|f| {
            self.conn = None;
            format!("/v1/{signal}: {}", f.error)
        })
    }

    fn connect(&self) -> io::Result<BufReader<TcpStream>> {
        let addr = self
            .authority
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address"))?;
        let conn = TcpStream::connect_timeout(&addr, self.timeout)?;
        conn.set_read_timeout(Some(self.timeout))?;
        conn.set_write_timeout(Some(self.timeout))?;
        conn.set_nodelay(true)?;
        Ok(BufReader::new(conn))
    }

    /// Sends the head and `body` on the kept connection (or a new one) and reads the answer.
    fn exchange(&mut self, body: &[u8]) -> Result<(), Failed> {
        let fail = |retry: bool| {
            let authority = self.authority.clone();
            move |e: io::Error| Failed {
                error: format!("{authority}: {e}"),
                retry,
            }
        };
        let mut conn = match self.conn.take() {
            Some(c) => c,
            None => self.connect().map_err(fail(false))?,
        };
        write_both(conn.get_mut(), &self.head, body).map_err(fail(true))?;
        let mut status = String::new();
        let n = (&mut conn)
            .take(MAX_HEAD)
            .read_line(&mut status)
            .map_err(fail(true))?;
        if n == 0 {
            return Err(fail(true)(io::ErrorKind::UnexpectedEof.into()));
        }
        let keep = read_rest(&mut conn, status.starts_with("HTTP/1.1")).map_err(fail(false))?;
        if keep {
            self.conn = Some(conn);
        }
        let code = status.split_whitespace().nth(1).unwrap_or("");
        if code.starts_with('2') {
            Ok(())
        } else {
            Err(Failed {
                error: format!("the collector answered '{}'", status.trim()),
                retry: false,
            })
        }
    }
}

/// `head` then `body`, in as few writes as the socket takes.
fn write_both(conn: &mut TcpStream, head: &[u8], body: &[u8]) -> io::Result<()> {
    let mut bufs = [IoSlice::new(head), IoSlice::new(body)];
    let mut left = &mut bufs[..];
    while !left.is_empty() {
        match conn.write_vectored(left) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut left, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads the answer's headers and its `Content-Length` body; whether the connection can carry
/// the next request (HTTP/1.1, no `Connection: close`, a body of known, small length).
fn read_rest(conn: &mut BufReader<TcpStream>, http11: bool) -> io::Result<bool> {
    let mut keep = http11;
    let mut length = None;
    let mut line = String::new();
    let mut left = MAX_HEAD;
    loop {
        line.clear();
        let n = conn.take(left).read_line(&mut line)?;
        if n == 0 || !line.ends_with('\n') {
            return Ok(false);
        }
        left -= n as u64;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = value.parse::<u64>().ok();
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            || (name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close"))
        {
            keep = false;
        }
    }
    match length {
        Some(len) if keep && len <= MAX_BODY => {
            Ok(io::copy(&mut conn.take(len), &mut io::sink())? == len)
        }
        _ => Ok(false),
    }
}
