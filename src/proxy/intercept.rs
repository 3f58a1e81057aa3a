//! Interception inside a CONNECT tunnel: the first bytes tell TLS from plain HTTP; TLS is
//! terminated with a leaf certificate for the tunnel's host (the SNI must name it), HTTP/1.1 or
//! HTTP/2 is served, and every inner request goes through the full pipeline on its own headers.

use std::sync::Arc;
use std::time::Duration;

use http::Request;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{debug, warn};

use super::gate::Refused;
use super::sender::Affinity;
use super::{Handled, Proxy, Target};
use crate::conn::guard::{Guard, InFlight};
use crate::error::ProxyError;
use crate::target::{self, Authority};
use crate::tls::leaf::LeafName;
use crate::tls::rewind;
use crate::tls::server::InterceptError;
use crate::tls::sni::Peek;
use crate::tls::woken::WokenReads;
use crate::vocab::{ConnectionMode, ErrorCode, Scheme};

/// What every request inside one intercepted tunnel shares.
pub struct TunnelInfo {
    pub authority: Authority,
    pub tls: bool,
    pub sni: Option<String>,
    /// `connection.mode` of its requests: `intercepted` (CONNECT) or `transparent`.
    pub mode: ConnectionMode,
    /// The authority as its canonical `host:port` and Host-header forms: a request naming one of
    /// these exactly names the tunnel's authority without being parsed again.
    canonical: [String; 2],
    /// The upstream connections its requests reuse (src/proxy/sender/).
    pub(super) kept: Affinity,
    /// The inner connection as its guard sees it (src/conn/guard.rs): its framing flag.
    pub(super) in_flight: InFlight,
    /// The refusal its CONNECT got, answered to each request inside (src/proxy/gate.rs).
    pub(super) refused: Option<Refused>,
}

impl TunnelInfo {
    fn new(
        authority: Authority,
        tls: bool,
        sni: Option<String>,
        mode: ConnectionMode,
        refused: Option<Refused>,
    ) -> Self {
        let canonical = [
            authority.to_host_port(),
            authority.host_header(if tls { 443 } else { 80 }),
        ];
        Self {
            authority,
            tls,
            sni,
            mode,
            canonical,
            kept: Affinity::default(),
            in_flight: InFlight::default(),
            refused,
        }
    }

    /// The canonical target of an inner request: it must name the tunnel's own authority
    /// (Host or `:authority`), or it is refused with 421.
    pub(super) fn target_of(&self, req: &Request<Incoming>) -> Result<Target, ProxyError> {
        if req.method() == http::Method::CONNECT {
            return Err(ProxyError::bad_request(
                "CONNECT inside a tunnel is refused",
                "open a new tunnel from the proxy",
            ));
        }
        let default_port = if self.tls { 443 } else { 80 };
        let raw = match req.uri().authority() {
            Some(a) => a.as_str(),
            None => req
                .headers()
                .get(http::header::HOST)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| {
                    ProxyError::bad_request("the request names no host", "send a Host header")
                })?,
        };
        // The usual case (the Host the client's URL gave) skips the parser: the canonical forms
        // parse back to the tunnel's own authority.
        if !self.canonical.iter().any(|c| c == raw) {
            let named = target::parse_authority(raw, Some(default_port))?;
            if named != self.authority {
                return Err(ProxyError::Misdirected {
                    named: named.to_host_port(),
                    tunnel: self.authority.to_host_port(),
                });
            }
        }
        if let Some(host) = req.headers().get(http::header::HOST) {
            if req.uri().authority().is_some() {
                target::check_host_header(req.headers(), &self.authority).map_err(|_| {
                    ProxyError::Misdirected {
                        named: host.to_str().unwrap_or("?").to_string(),
                        tunnel: self.authority.to_host_port(),
                    }
                })?;
            }
        }
        Ok(Target {
            authority: self.authority.clone(),
            path: target::canonical_path(req.uri().path())?,
            query: req.uri().query().map(str::to_string),
            scheme: if self.tls {
                Scheme::Https
            } else {
                Scheme::Http
            },
            mode: self.mode,
            sni: self.sni.clone(),
        })
    }
}

impl Proxy {
    /// Runs an intercepted tunnel to its end, its requests decided with `connection.mode =
    /// mode` (or, when its CONNECT was refused, each answered with that refusal).
    pub(super) async fn intercept<IO>(
        self: Arc<Self>,
        io: IO,
        authority: Authority,
        mode: ConnectionMode,
        refused: Option<Refused>,
    ) where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let wait = Duration::from_millis(self.cfg.limits.header_read_timeout_ms);
        let (peek, stream) = match tokio::time::timeout(wait, rewind::sniff(io)).await {
            Ok(Ok(x)) => x,
            Ok(Err(e)) => return debug!(error = %e, "tunnel closed before its first bytes"),
            Err(_) => return debug!("tunnel sent nothing before the header-read timeout"),
        };
        match peek {
            Peek::Hello(hello) => {
                let name = match LeafName::parse(&authority.host) {
                    Ok(n) => n,
                    Err(e) => {
                        return warn!(error = %e, "no certificate can be minted for this host");
                    }
                };
                let handshake = self.tls.interceptor.accept(stream, &name);
                match tokio::time::timeout(wait, handshake).await {
                    Ok(Ok(tls)) => {
                        let info = TunnelInfo::new(authority, true, hello.sni, mode, refused);
                        let tls = WokenReads::new(tls.stream);
                        self.serve_tunnel(TokioIo::new(tls), info).await;
                    }
                    Ok(Err(InterceptError::Sni(r))) => {
                        self.metrics.refused(r.code());
                        warn!(reason = %r, tunnel = %authority.to_host_port(), "TLS client refused");
                    }
                    Ok(Err(e)) => debug!(error = %e, "interception handshake failed"),
                    Err(_) => debug!("interception handshake timed out"),
                }
            }
            Peek::NotTls => {
                let info = TunnelInfo::new(authority, false, None, mode, refused);
                self.serve_tunnel(TokioIo::new(stream), info).await;
            }
            Peek::Malformed(why) => {
                self.metrics.refused(ErrorCode::MalformedClientHello);
                warn!(reason = why, "malformed TLS ClientHello in a tunnel");
            }
            Peek::NeedMore { .. } => debug!("tunnel closed mid-ClientHello"),
        }
    }

    async fn serve_tunnel<IO>(self: Arc<Self>, io: TokioIo<IO>, info: TunnelInfo)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        // The guard follows the inner request heads as on the listener (and answers hyper's
        // own refusals in JSON).
        let io = TokioIo::new(Guard::new(io.into_inner(), info.in_flight.clone()));
        let info = Arc::new(info);
        let limits = &self.cfg.limits;
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_millis(limits.header_read_timeout_ms))
            .max_buf_size((limits.max_header_bytes + 8192).max(8192))
            .max_headers(limits.max_headers + 16);
        builder
            .http2()
            .max_header_list_size((limits.max_header_bytes + 8192) as u32);
        let proxy = self.clone();
        let svc = service_fn(move |req| proxy.clone().handle_inner(req, info.clone()));
        // Shutdown closes the tunnel when its grace is over: a response still streaming is
        // dropped, which writes its record (`ended: "shutdown"`).
        tokio::select! {
            r = builder.serve_connection_with_upgrades(io, svc) => if let Err(e) = r {
                debug!(error = %e, "intercepted connection ended with an error");
            },
            () = self.audit.closing() => debug!("intercepted connection closed at shutdown"),
        }
    }

    /// Boxed for the reason `Proxy::handle` is, and as it is (made in its box).
    pub(super) fn handle_inner(
        self: Arc<Self>,
        req: Request<Incoming>,
        info: Arc<TunnelInfo>,
    ) -> Handled {
        super::pinned_in_box!(self.run(req, super::Source::Tunnel(info)))
    }
}
