//! The request pipeline: every request the agent sends passes through `Proxy::handle`, in the
//! order written down in `pipeline` (one comment per step, so a reader finds the path in one place).

mod dns;
mod headers;
pub mod target;
pub mod tunnel;
pub mod upstream;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::header::{HOST, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tracing::{Instrument, debug, info_span, warn};

use crate::config::Config;
use crate::egress::EgressPolicy;
use crate::error::{self, Blame, Body, ProxyError};
use crate::listen::guard::{InFlight, InFlightToken};
use crate::metrics::Metrics;
use target::Authority;
use upstream::{Dialer, HttpClient};

pub use headers::VIA;

/// Everything the request path needs, shared by all connections.
pub struct Proxy {
    cfg: Arc<Config>,
    client: HttpClient,
    dialer: Dialer,
    strip: Vec<HeaderName>,
    tunnels: AtomicUsize,
    pub metrics: Arc<Metrics>,
}

impl Proxy {
    pub fn new(
        cfg: Arc<Config>,
        parent: Option<Authority>,
        egress: EgressPolicy,
        metrics: Arc<Metrics>,
    ) -> Self {
        let resolver = Arc::new(dns::Resolver::new(
            Duration::from_millis(cfg.dns.cache_ttl_ms),
            4096,
        ));
        let dialer = Dialer::new(
            Duration::from_millis(cfg.limits.connect_timeout_ms),
            parent,
            resolver,
            Arc::new(egress),
        );
        let client = upstream::http_client(dialer.clone(), &cfg.limits);
        let strip = cfg
            .headers
            .strip
            .iter()
            .filter_map(|h| HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes()).ok())
            .collect();
        Self {
            cfg,
            client,
            dialer,
            strip,
            tunnels: AtomicUsize::new(0),
            metrics,
        }
    }

    /// Number of open CONNECT tunnels.
    pub fn tunnels_active(&self) -> usize {
        self.tunnels.load(Ordering::Relaxed)
    }

    /// The service entry point: never fails; errors become JSON responses here.
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        in_flight: InFlight,
    ) -> Result<Response<Body>, Infallible> {
        let id = crate::ids::decision_id();
        let span =
            info_span!("request", decision_id = %id, method = %req.method(), target = %req.uri());
        let resp = match self
            .pipeline(req, &id, &in_flight)
            .instrument(span.clone())
            .await
        {
            Ok(resp) => resp,
            Err(err) => {
                span.in_scope(
                    || debug!(error = %err, code = err.code(), blame = ?err.blame(), "refused"),
                );
                self.count_error(&err);
                error::into_response(&err, &id)
            }
        };
        Ok(resp)
    }

    fn count_error(&self, err: &ProxyError) {
        match err.blame() {
            Blame::Upstream => self
                .metrics
                .upstream_errors
                .with_label_values(&[err.code()])
                .inc(),
            Blame::Client | Blame::Proxy => {
                self.metrics.refusals.with_label_values(&[err.code()]).inc()
            }
            Blame::Policy => {}
        }
    }

    async fn pipeline(
        self: &Arc<Self>,
        mut req: Request<Incoming>,
        id: &str,
        in_flight: &InFlight,
    ) -> Result<Response<Body>, ProxyError> {
        let limits = &self.cfg.limits;
        // 1. Limits first: nothing else reads a head that is over our size or count limit.
        headers::check_limits(req.headers(), limits.max_header_bytes, limits.max_headers)?;

        // 2. CONNECT: the tunnel path (decided on host and port alone; bytes copied after the 200).
        if req.method() == Method::CONNECT {
            return self.connect(req, in_flight.start()).await;
        }

        // 3. The canonical target: absolute-form only (origin-form means someone mistook us for the
        //    origin), host and path canonicalised ONCE and used for both the decision and forwarding.
        let (authority, path_and_query) = absolute_target(req.uri())?;
        check_host_header(&req, &authority)?;

        // 4. Destination safety: resolve (shared short-lived cache) and vet the addresses; the
        //    connection later dials only vetted addresses of the same resolution.
        let _destination = self.dialer.vet(&authority.host, authority.port).await?;

        // 5. Intent headers read before stripping (two different values are refused).
        let _intent = headers::single_value(req.headers(), &self.cfg.headers.intent)?;

        // 6. Headers the agent may not send upstream: hop-by-hop, its own intentgate/identity claims.
        let h = req.headers_mut();
        headers::remove_hop_by_hop(h);
        headers::strip_agent_claims(h, &self.strip);

        // 7. Tags and Via for the upstream; Host from the canonical authority.
        headers::add_via(h);
        let tag = HeaderValue::from_str(id).map_err(|_| ProxyError::bad_request("bad id", ""))?;
        h.insert(
            HeaderName::from_bytes(self.cfg.headers.decision_id.as_bytes())
                .map_err(|_| ProxyError::bad_request("bad header name", ""))?,
            tag,
        );
        if let Ok(host) = HeaderValue::from_str(&authority.host_header(80)) {
            h.insert(HOST, host);
        }

        // 8. Forward in origin-form (absolute-form to a parent proxy) over the pooled client.
        let uri: Uri = format!("http://{}{}", authority.to_host_port(), path_and_query)
            .parse()
            .map_err(|_| {
                ProxyError::bad_request("the request target could not be rebuilt", "check the URL")
            })?;
        *req.uri_mut() = uri;
        *req.version_mut() = Version::HTTP_11;
        let target = authority.to_host_port();
        let timeout = Duration::from_millis(limits.upstream_response_timeout_ms);
        let sent = std::time::Instant::now();
        let resp = match tokio::time::timeout(timeout, self.client.request(req)).await {
            Ok(Ok(resp)) => {
                self.metrics
                    .upstream_seconds
                    .observe(sent.elapsed().as_secs_f64());
                resp
            }
            Ok(Err(e)) => return Err(upstream::classify_client_error(&e, &target)),
            Err(_) => {
                return Err(ProxyError::UpstreamTimeout {
                    target,
                    stage: "response headers",
                    after_ms: limits.upstream_response_timeout_ms,
                });
            }
        };

        // 9. The response: hop-by-hop removed, Via added, body streamed as it arrives.
        let (mut parts, body) = resp.into_parts();
        headers::remove_hop_by_hop(&mut parts.headers);
        headers::add_via(&mut parts.headers);
        Ok(Response::from_parts(parts, body.boxed()))
    }

    /// CONNECT host:port → dial, answer 200, then splice bytes until either side closes.
    async fn connect(
        self: &Arc<Self>,
        req: Request<Incoming>,
        token: InFlightToken,
    ) -> Result<Response<Body>, ProxyError> {
        let raw = req
            .uri()
            .authority()
            .map(|a| a.as_str())
            .unwrap_or_default();
        let authority = target::parse_authority(raw, None)?;
        let _destination = self.dialer.vet(&authority.host, authority.port).await?;
        let _intent = headers::single_value(req.headers(), &self.cfg.headers.intent)?;

        let limit = self.cfg.limits.max_tunnels;
        if self.tunnels.fetch_add(1, Ordering::AcqRel) >= limit {
            self.tunnels.fetch_sub(1, Ordering::AcqRel);
            return Err(ProxyError::Overloaded {
                what: "tunnels",
                limit,
            });
        }
        let guard = TunnelCount(self.clone());
        let upstream = self.dialer.tunnel(&authority).await?;

        let idle = Duration::from_millis(self.cfg.limits.tunnel_idle_timeout_ms);
        let span = info_span!("tunnel", target = %authority.to_host_port());
        tokio::spawn(
            async move {
                // The token lives as long as the tunnel: the connection guard stays out of its bytes.
                let _token = token;
                let _count = guard;
                match hyper::upgrade::on(req).await {
                    Ok(upgraded) => {
                        let end = tunnel::splice(TokioIo::new(upgraded), upstream, idle).await;
                        debug!(?end, "tunnel ended");
                    }
                    Err(e) => warn!(error = %e, "CONNECT upgrade failed"),
                }
            }
            .instrument(span),
        );
        let mut resp = Response::new(Empty::new().map_err(|never| match never {}).boxed());
        *resp.status_mut() = StatusCode::OK;
        resp.headers_mut()
            .insert(http::header::VIA, HeaderValue::from_static(VIA));
        Ok(resp)
    }
}

/// Decrements the tunnel count when a tunnel ends.
struct TunnelCount(Arc<Proxy>);

impl Drop for TunnelCount {
    fn drop(&mut self) {
        self.0.tunnels.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The canonical authority and origin-form path (+ query) of an absolute-form request target.
fn absolute_target(uri: &Uri) -> Result<(Authority, String), ProxyError> {
    match uri.scheme_str() {
        None => return Err(ProxyError::NotAProxyRequest),
        Some("http") => {}
        Some("https") => {
            return Err(ProxyError::bad_request(
                "https:// targets must be tunnelled with CONNECT",
                "set HTTPS_PROXY so your client sends CONNECT host:443 for https URLs",
            ));
        }
        Some(other) => {
            return Err(ProxyError::bad_request(
                format!("unsupported scheme '{other}'"),
                "only http:// (forwarded) and CONNECT (tunnelled) are supported",
            ));
        }
    }
    let raw = uri.authority().map(|a| a.as_str()).unwrap_or_default();
    let authority = target::parse_authority(raw, Some(80))?;
    let path = target::canonical_path(uri.path())?;
    let pq = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    Ok((authority, pq))
}

/// A `Host` header that names another destination than the request target is refused: the
/// decision and the upstream must see the same host.
fn check_host_header(req: &Request<Incoming>, authority: &Authority) -> Result<(), ProxyError> {
    let Some(value) = req.headers().get(HOST) else {
        return Ok(());
    };
    let host = value
        .to_str()
        .ok()
        .and_then(|v| target::parse_authority(v, Some(80)).ok());
    if host.as_ref() != Some(authority) {
        return Err(ProxyError::bad_request(
            "the Host header does not match the request target",
            "send the same host in the URL and the Host header (or omit Host)",
        ));
    }
    Ok(())
}
