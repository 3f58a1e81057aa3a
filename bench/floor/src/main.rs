//! hyper-floor: the least a hyper/tokio HTTP/1 forward proxy costs per request, a benchmark
//! reference for issue 26's targets 1-2 (bench/floor_cost.sh, bench/load.py's `hyper-floor`
//! peers), not product code. The same stack, versions and server setup as intentgate
//! (src/listen/mod.rs `http1_builder`, src/app.rs `runtime`), and none of its work: no policy,
//! no audit, no headers added, no limits beyond hyper's.
//!
//!   hyper-floor --listen 127.0.0.1:PORT [--no-header-timer] [--max-headers N] [--workers N]
//!               [--tls --ca-cert PEM --ca-key PEM --upstream-ca PEM]
//!
//! Prints the bound address on stdout. Each client connection gets one kept upstream connection
//! (`hyper::client::conn::http1`), dialled again when it closed or the authority changed; the
//! request goes absolute-form → origin-form with the hop-by-hop headers dropped, the response
//! streams back (the upstream's `Incoming` body passed through). `--tls`: CONNECT accepted and
//! its tunnel's TLS terminated with a leaf for 127.0.0.1/localhost signed once at start by the
//! CA, the inner requests served by hyper the same way and sent to the tunnel's target over
//! rustls (verified against `--upstream-ca`): interception's work, as intentgate does it.

mod forward;
mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1 as server;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const USAGE: &str = "usage: hyper-floor --listen ADDR [--no-header-timer] [--max-headers N] [--workers N] \
                     [--tls --ca-cert PEM --ca-key PEM --upstream-ca PEM]";

/// The command line.
struct Args {
    listen: SocketAddr,
    header_timer: bool,
    max_headers: usize,
    workers: usize,
    tls: bool,
    ca_cert: Option<PathBuf>,
    ca_key: Option<PathBuf>,
    upstream_ca: Option<PathBuf>,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        header_timer: true,
        max_headers: 100 + 16,
        workers: 1,
        tls: false,
        ca_cert: None,
        ca_key: None,
        upstream_ca: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--listen" => {
                let v = value()?;
                a.listen = v.parse().map_err(|e| format!("--listen {v}: {e}"))?;
            }
            "--no-header-timer" => a.header_timer = false,
            "--max-headers" => {
                let v = value()?;
                a.max_headers = v.parse().map_err(|e| format!("--max-headers {v}: {e}"))?;
            }
            "--workers" => {
                let v = value()?;
                a.workers = v.parse().map_err(|e| format!("--workers {v}: {e}"))?;
            }
            "--tls" => a.tls = true,
            "--ca-cert" => a.ca_cert = Some(value()?.into()),
            "--ca-key" => a.ca_key = Some(value()?.into()),
            "--upstream-ca" => a.upstream_ca = Some(value()?.into()),
            _ => return Err(format!("unknown argument {arg:?}")),
        }
    }
    Ok(a)
}

fn main() -> std::process::ExitCode {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("hyper-floor: {e}\n{USAGE}");
            return std::process::ExitCode::from(2);
        }
    };
    // As intentgate's src/app.rs: one worker (the default) is a current-thread runtime.
    let rt = match a.workers {
        0 | 1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
    };
    let result = rt
        .map_err(|e| e.to_string())
        .and_then(|rt| rt.block_on(serve(a)));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hyper-floor: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// intentgate's server settings (src/listen/mod.rs `http1_builder`, default limits): header
/// read timeout 30 s on tokio's timer (unless `--no-header-timer`), 40 KiB buffer, 116 headers
/// (`--max-headers N`; 0 leaves hyper's default, 100 on the stack).
fn http1_builder(header_timer: bool, max_headers: usize) -> server::Builder {
    let mut b = server::Builder::new();
    if header_timer {
        b.timer(TokioTimer::new())
            .header_read_timeout(Duration::from_millis(30_000));
    }
    if max_headers > 0 {
        b.max_headers(max_headers);
    }
    b.max_buf_size(32 * 1024 + 8192)
        .keep_alive(true)
        .half_close(false);
    b
}

async fn serve(a: Args) -> Result<(), String> {
    let tls = if a.tls {
        let need = |p: Option<PathBuf>, flag: &str| p.ok_or(format!("--tls needs {flag}"));
        let (cert, key) = (need(a.ca_cert, "--ca-cert")?, need(a.ca_key, "--ca-key")?);
        Some(Arc::new(tls::Tls::new(
            &cert,
            &key,
            &need(a.upstream_ca, "--upstream-ca")?,
        )?))
    } else {
        None
    };
    let listener = TcpListener::bind(a.listen)
        .await
        .map_err(|e| e.to_string())?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    println!("{bound}");
    let builder = Arc::new(http1_builder(a.header_timer, a.max_headers));
    // SIGTERM and SIGINT end the process through exit() (intentgate shuts down on them too,
    // src/app.rs), so that a build instrumented for a profile (bench/floor_pgo.sh) writes its counts.
    tokio::spawn(async {
        use tokio::signal::unix::{SignalKind, signal};
        if let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            std::process::exit(0);
        }
    });
    if a.header_timer {
        // tokio's time driver wakes its own thread (an eventfd write) whenever a timer becomes
        // the earliest one; with hyper's header-read sleep the only timer, that is every request
        // (0.5-1 write a request). intentgate always has an earlier one (its guard's 1 s idle
        // timer): so does the floor, a 1 s tick.
        tokio::spawn(async {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
            }
        });
    }
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (builder, tls) = (builder.clone(), tls.clone());
        tokio::spawn(async move {
            let conn = Arc::new(forward::Conn::new(None, tls, builder.clone()));
            let service = service_fn(move |req| forward::handle(conn.clone(), req));
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
    }
}
