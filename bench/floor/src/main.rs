//! hyper-floor: the least a hyper/tokio HTTP/1 forward proxy costs per request, a benchmark
//! reference for issue 26's targets 1-2 (bench/floor_cost.sh, bench/load.py's `hyper-floor`
//! peer), not product code. The same stack, versions and server setup as intentgate
//! (src/listen/mod.rs `http1_builder`, src/app.rs `runtime`), and none of its work: no policy,
//! no audit, no headers added, no limits beyond hyper's.
//!
//!   hyper-floor --listen 127.0.0.1:PORT [--no-header-timer] [--workers N]
//!
//! Prints the bound address on stdout. Each client connection gets one kept upstream connection
//! (`hyper::client::conn::http1`), dialled again when it closed or the authority changed; the
//! request goes absolute-form → origin-form with the hop-by-hop headers dropped, the response
//! streams back (the upstream's `Incoming` body passed through).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1 as client;
use hyper::server::conn::http1 as server;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

type Body = Either<Incoming, Full<Bytes>>;

/// The command line.
struct Args {
    listen: SocketAddr,
    header_timer: bool,
    workers: usize,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        header_timer: true,
        workers: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--listen" => {
                let v = it.next().ok_or("--listen needs ADDR")?;
                a.listen = v.parse().map_err(|e| format!("--listen {v}: {e}"))?;
            }
            "--no-header-timer" => a.header_timer = false,
            "--workers" => {
                let v = it.next().ok_or("--workers needs N")?;
                a.workers = v.parse().map_err(|e| format!("--workers {v}: {e}"))?;
            }
            _ => return Err(format!("unknown argument {arg:?}")),
        }
    }
    Ok(a)
}

fn main() -> std::process::ExitCode {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("hyper-floor: {e}\nusage: hyper-floor --listen ADDR [--no-header-timer] [--workers N]");
            return std::process::ExitCode::from(2);
        }
    };
    // As intentgate's src/app.rs: one worker (the default) is a current-thread runtime.
    let rt = match a.workers {
        0 | 1 => tokio::runtime::Builder::new_current_thread().enable_all().build(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
    };
    let result = rt.and_then(|rt| rt.block_on(serve(a)));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hyper-floor: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// intentgate's server settings (src/listen/mod.rs `http1_builder`, default limits): header
/// read timeout 30 s on tokio's timer (unless `--no-header-timer`), 40 KiB buffer, 116 headers.
fn http1_builder(header_timer: bool) -> server::Builder {
    let mut b = server::Builder::new();
    if header_timer {
        b.timer(TokioTimer::new())
            .header_read_timeout(Duration::from_millis(30_000));
    }
    b.max_buf_size(32 * 1024 + 8192)
        .max_headers(100 + 16)
        .keep_alive(true)
        .half_close(false);
    b
}

async fn serve(a: Args) -> std::io::Result<()> {
    let listener = TcpListener::bind(a.listen).await?;
    println!("{}", listener.local_addr()?);
    let builder = Arc::new(http1_builder(a.header_timer));
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let builder = builder.clone();
        tokio::spawn(async move {
            let slot = Arc::new(Slot::default());
            let service = service_fn(move |req| forward(slot.clone(), req));
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
    }
}

/// A client connection's kept upstream connection (HTTP/1 serves its requests one at a time).
#[derive(Default)]
struct Slot(Mutex<Option<Upstream>>);

struct Upstream {
    authority: Authority,
    sender: client::SendRequest<Incoming>,
}

impl Slot {
    fn take(&self) -> Option<Upstream> {
        self.0.lock().ok().and_then(|mut g| g.take())
    }

    fn put(&self, up: Upstream) {
        if let Ok(mut g) = self.0.lock() {
            *g = Some(up);
        }
    }
}

async fn forward(slot: Arc<Slot>, mut req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let Some(authority) = req.uri().authority().cloned() else {
        return Ok(reply(StatusCode::BAD_REQUEST, "absolute-form target expected\n"));
    };
    let pq = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    *req.uri_mut() = Uri::from(pq);
    strip_hop_by_hop(req.headers_mut());
    if !req.headers().contains_key(header::HOST) {
        if let Ok(host) = authority.as_str().parse() {
            req.headers_mut().insert(header::HOST, host);
        }
    }
    let kept = match slot.take() {
        Some(mut up) if up.authority == authority => up.sender.ready().await.ok().map(|()| up),
        _ => None,
    };
    let mut up = match kept {
        Some(up) => up,
        None => match dial(authority).await {
            Ok(up) => up,
            Err(e) => return Ok(reply(StatusCode::BAD_GATEWAY, &format!("upstream: {e}\n"))),
        },
    };
    let sent = up.sender.send_request(req).await;
    slot.put(up);
    match sent {
        Ok(resp) => {
            let mut resp = resp.map(Either::Left);
            strip_hop_by_hop(resp.headers_mut());
            Ok(resp)
        }
        Err(e) => Ok(reply(StatusCode::BAD_GATEWAY, &format!("upstream: {e}\n"))),
    }
}

/// A new upstream connection (TCP_NODELAY), its hyper connection driven by a task of its own.
async fn dial(authority: Authority) -> std::io::Result<Upstream> {
    let port = authority.port_u16().unwrap_or(80);
    let tcp = TcpStream::connect((authority.host(), port)).await?;
    tcp.set_nodelay(true)?;
    let (sender, conn) = client::handshake(TokioIo::new(tcp))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(Upstream { authority, sender })
}

/// The hop-by-hop headers (RFC 9110 §7.6.1), dropped both ways with those `Connection` names;
/// `strip_hop_by_hop` matches them in this order.
static HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
    header::TRANSFER_ENCODING,
];

/// Drops the hop-by-hop headers: one pass over the names notes those present, and only they are
/// removed (a `Connection` token naming one of them adds nothing: it is removed anyway).
fn strip_hop_by_hop(h: &mut HeaderMap) {
    let mut present = 0u8;
    for name in h.keys() {
        // A match on the name (length, then bytes): cheaper than comparing against each of HOP.
        present |= match name.as_str() {
            "connection" => 1,
            "keep-alive" => 1 << 1,
            "proxy-connection" => 1 << 2,
            "proxy-authorization" => 1 << 3,
            "te" => 1 << 4,
            "trailer" => 1 << 5,
            "upgrade" => 1 << 6,
            "transfer-encoding" => 1 << 7,
            _ => 0,
        };
    }
    if present == 0 {
        return;
    }
    let only_own = |v: &HeaderValue| {
        let b = v.as_bytes();
        b.eq_ignore_ascii_case(b"keep-alive") || b.eq_ignore_ascii_case(b"close")
    };
    if present & 1 != 0 && !h.get_all(header::CONNECTION).iter().all(only_own) {
        let named: Vec<HeaderName> = h
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|list| list.split(','))
            .map(str::trim)
            .filter(|t| !t.is_empty() && !HOP.iter().any(|hop| t.eq_ignore_ascii_case(hop.as_str())))
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .collect();
        for name in &named {
            h.remove(name);
        }
    }
    for (i, name) in HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            h.remove(name);
        }
    }
}

fn reply(status: StatusCode, text: &str) -> Response<Body> {
    let mut r = Response::new(Either::Right(Full::new(Bytes::from(text.to_owned()))));
    *r.status_mut() = status;
    r
}
