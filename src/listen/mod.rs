//! Listeners: accept client connections, serve HTTP/1.1 on them with our limits and timeouts,
//! and drain them gracefully on shutdown.

pub mod redirect;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::StatusCode;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tracing::{Instrument, debug, debug_span, warn};

use crate::audit::Audit;
use crate::config::Limits;
use crate::conn::guard::{Guard, InFlight};
use crate::conn::park::Dock;
use crate::error::{Blame, ErrorReply};
use crate::proxy::{ClientConn, Proxy};
use crate::vocab::ErrorCode;

/// Counts live connections and wakes the drain when the last one ends.
#[derive(Default)]
pub struct Tracker {
    live: AtomicUsize,
    idle: Notify,
}

impl Tracker {
    pub fn live(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }

    /// Counts a new connection. `Err` when `cap` were already live: the connection is still
    /// counted (until the token drops) while it is refused.
    pub(crate) fn admit(self: &Arc<Self>, cap: usize) -> Result<LiveConn, LiveConn> {
        let over = self.live.fetch_add(1, Ordering::AcqRel) >= cap;
        let live = LiveConn(self.clone());
        if over { Err(live) } else { Ok(live) }
    }

    /// Waits until every connection has ended or the deadline passes; returns those still open.
    pub async fn drain(&self, deadline: Duration) -> usize {
        let wait = async {
            loop {
                let notified = self.idle.notified();
                if self.live() == 0 {
                    return;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(deadline, wait).await;
        self.live()
    }
}

/// Decrements the live count on drop, however the connection task ends.
pub(crate) struct LiveConn(Arc<Tracker>);

impl Drop for LiveConn {
    fn drop(&mut self) {
        if self.0.live.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// The HTTP/1 server settings every client connection gets: limits and timeouts set explicitly,
/// hyper's own head limits slightly above ours so our JSON answers come first. hyper bounds the
/// time a request head takes (`limits.header_read_timeout_ms`).
pub(crate) fn http1_builder(limits: &Limits) -> http1::Builder {
    let mut b = guarded_http1_builder(limits);
    b.timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(limits.header_read_timeout_ms));
    b
}

/// `http1_builder` without hyper's header-read timeout (nor a timer: hyper's HTTP/1 server
/// uses one for nothing else), for connections whose guard bounds the heads in its place
/// (`Guard::bounding_heads`): hyper's timeout armed a boxed timer for every head.
pub(crate) fn guarded_http1_builder(limits: &Limits) -> http1::Builder {
    let mut b = http1::Builder::new();
    b.header_read_timeout(None)
        .max_buf_size((limits.max_header_bytes + 8192).max(8192))
        .max_headers(limits.max_headers + 16)
        .keep_alive(true)
        .half_close(false);
    b
}

/// The next accepted connection (with TCP_NODELAY), or `None` once `shutdown` flips. Accept
/// errors (out of file descriptors and the like) back off briefly instead of spinning.
pub(crate) async fn accept(
    listener: &TcpListener,
    shutdown: &mut watch::Receiver<bool>,
    which: &'static str,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    return Some((stream, peer));
                }
                Err(e) => {
                    warn!(error = %e, listener = which, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.changed() => return None,
        }
    }
}

/// Answers a connection over its listener's cap with 503 `overloaded` and closes it; `live`
/// keeps it counted until then.
pub(crate) fn refuse_overloaded(mut stream: TcpStream, live: LiveConn) {
    tokio::spawn(async move {
        let _live = live;
        let body = ErrorReply {
            status: StatusCode::SERVICE_UNAVAILABLE,
            blame: Blame::Proxy,
            code: ErrorCode::Overloaded,
            reason: "too many client connections",
            hint: "retry after a short wait",
            decision_id: &crate::ids::decision_id(),
            agent: None,
            intent: None,
        }
        .raw();
        let _ = stream.write_all(&body).await;
    });
}

/// A connection asked to shut down gracefully: it finishes its current request, unless that
/// outlives the grace period; then it is dropped, and a response still streaming writes its
/// record (`ended: "shutdown"`, src/proxy/audited.rs).
pub(crate) async fn finish_or_close<F>(conn: std::pin::Pin<&mut F>, audit: &Audit) -> F::Output
where
    F: std::future::Future<Output = hyper::Result<()>>,
{
    tokio::select! {
        r = conn => r,
        () = audit.closing() => Ok(()),
    }
}

/// How long a client connection stays idle before it is parked (src/conn/park.rs): a client
/// sending its requests back to back keeps its hyper connection (a new one costs ~6,000
/// instructions, a seventh of a request).
const PARK_AFTER: Duration = Duration::from_secs(1);

/// Serves one client connection of the proxy listener: a hyper connection until it has been
/// idle for `PARK_AFTER` (its guard then ends it), the socket parked until the client sends
/// again, for at most `idle` (`limits.header_read_timeout_ms`, which bounds idle keep-alive
/// connections), then a new hyper connection, and so on (src/conn/park.rs). The guard bounds
/// each head by `idle` too, in hyper's place (src/conn/wait.rs).
async fn serve_client(
    mut stream: TcpStream,
    peer: SocketAddr,
    proxy: Arc<Proxy>,
    builder: &http1::Builder,
    mut shutdown: watch::Receiver<bool>,
    idle: Duration,
) {
    let in_flight = InFlight::from_peer(peer.ip());
    let client = Arc::new(ClientConn::new(in_flight.clone()));
    let dock = Arc::new(Dock::default());
    loop {
        let lent = dock.lend(stream);
        let guard = Guard::parking(lent, in_flight.clone(), PARK_AFTER).bounding_heads(idle);
        let io = TokioIo::new(guard);
        let (own, client, requests) = (proxy.clone(), client.clone(), in_flight.clone());
        let service = service_fn(move |req| {
            let pending = requests.request();
            let handled = own.clone().handle(req, client.clone());
            async move {
                handled
                    .await
                    .map(|resp| resp.map(|body| pending.hold(body)))
            }
        });
        // Boxed: a parked connection's task keeps only the socket.
        let mut conn = Box::pin(builder.serve_connection(io, service).with_upgrades());
        let result = tokio::select! {
            r = conn.as_mut() => r,
            _ = shutdown.changed() => {
                conn.as_mut().graceful_shutdown();
                finish_or_close(conn.as_mut(), &proxy.audit).await
            }
        };
        drop(conn); // the socket goes back to the dock
        if let Err(e) = result {
            debug!(error = %e, "connection ended with an error");
            return;
        }
        let Some(parked) = dock.take().filter(|_| in_flight.take_parked()) else {
            return;
        };
        if *shutdown.borrow() {
            return;
        }
        let woke = tokio::select! {
            r = tokio::time::timeout(idle, parked.readable()) => matches!(r, Ok(Ok(()))),
            _ = shutdown.changed() => false,
        };
        if !woke {
            return;
        }
        stream = parked;
    }
}

/// Accepts connections until `shutdown` flips, serving each with the proxy.
pub async fn serve_proxy(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    limits: Limits,
    tracker: Arc<Tracker>,
    mut shutdown: watch::Receiver<bool>,
) {
    let builder = Arc::new(guarded_http1_builder(&limits));
    loop {
        let Some((stream, peer)) = accept(&listener, &mut shutdown, "proxy").await else {
            break;
        };
        let live = match tracker.admit(limits.max_connections) {
            Ok(live) => live,
            Err(live) => {
                proxy.metrics.refused(ErrorCode::TooManyConnections);
                refuse_overloaded(stream, live);
                continue;
            }
        };
        let proxy = proxy.clone();
        let builder = builder.clone();
        let shutdown = shutdown.clone();
        // At debug level: at the default `info` a span entered and left on every poll of the
        // connection cost ~560 instructions a request (1 %); the client is the agent beside us.
        let span = debug_span!("conn", %peer);
        let idle = Duration::from_millis(limits.header_read_timeout_ms);
        tokio::spawn(
            async move {
                let _live = live;
                serve_client(stream, peer, proxy, &builder, shutdown, idle).await;
            }
            .instrument(span),
        );
    }
}
