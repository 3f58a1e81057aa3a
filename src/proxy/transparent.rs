//! Transparent mode: connections redirected by iptables to `listen.transparent`, their original
//! destination recovered by the listener (src/listen/redirect.rs), which sniffs the first
//! bytes. Plain HTTP is served and each request decided on the host it names; TLS is decided on
//! its SNI, intercepted or spliced exactly as a CONNECT would be; anything else, or silence (the
//! server speaks first), is decided on the IP and port (`connection.protocol = "tcp"`) and
//! spliced. Every one goes through the decision step (src/proxy/gate.rs). A name is always dialled at intentgate's own vetted resolution, never at the IP the
//! client chose, so a Host or SNI cannot carry a decision for one host onto another.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use http::Request;
use hyper::body::Incoming;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tracing::{Instrument, debug, info_span};

use super::audited::{Relayed, write_relayed};
use super::connect::TunnelCount;
use super::gate::{self, LivePolicy};
use super::{Handled, Proxy, Target, tunnel};
use crate::audit::{AuditRecord, Slot};
use crate::error::ProxyError;
use crate::policy::{ConnectionFacts, RequestFacts};
use crate::target::{self, Authority};
use crate::tls::sni::ClientHello;
use crate::vocab::{ConnectionMode, Protocol, Scheme};

/// The record of a decided opaque connection, written when it ends.
struct Decided {
    rec: AuditRecord,
    slot: Option<Slot>,
    started: Instant,
}

impl Decided {
    fn write(self, relayed: Option<Relayed>) {
        write_relayed(self.rec, self.slot, relayed, self.started, "connection");
    }
}

/// What the first bytes of a redirected connection said.
#[derive(Debug, PartialEq, Eq)]
pub enum Sniffed {
    /// An HTTP/1 request line.
    Http,
    /// A complete TLS ClientHello.
    Tls(ClientHello),
    /// Anything else, including nothing before the sniff timeout: decided on IP and port.
    Opaque,
}

/// The original destination of a redirected connection carrying plain HTTP, and what its
/// requests share (a relayed WebSocket keeps the connection guard out of its bytes; the
/// upstream connections they reuse).
pub struct Redirected {
    pub original: SocketAddr,
    pub in_flight: crate::conn::guard::InFlight,
    pub(super) kept: super::sender::Affinity,
}

impl Redirected {
    pub fn new(original: SocketAddr, in_flight: crate::conn::guard::InFlight) -> Self {
        Self {
            original,
            in_flight,
            kept: Default::default(),
        }
    }

    /// The canonical target of one request: the host it names (Host, or an absolute-form URI) at
    /// the port the client dialled. Without any host (HTTP/1.0) it is the IP the client dialled.
    pub(super) fn target_of<B>(&self, req: &Request<B>) -> Result<Target, ProxyError> {
        if req.method() == http::Method::CONNECT {
            return Err(ProxyError::bad_request(
                "CONNECT on a transparent connection is refused",
                "connect to the destination directly; intentgate decides it transparently",
            ));
        }
        let port = self.original.port();
        let host = req
            .headers()
            .get(http::header::HOST)
            .map(|v| {
                v.to_str().map_err(|_| {
                    ProxyError::bad_request("the Host header is not ASCII", "send a valid Host")
                })
            })
            .transpose()?;
        let named = match (req.uri().authority(), host) {
            (Some(a), _) => Some(a.as_str()),
            (None, h) => h,
        };
        let authority = match named {
            Some(raw) => target::parse_authority(raw, Some(port))?,
            None => Authority::new(self.original.ip().to_string(), port),
        };
        // An absolute-form target and its Host must agree, as in forward mode.
        if let (Some(_), Some(h)) = (req.uri().authority(), host) {
            if target::parse_authority(h, Some(port))? != authority {
                return Err(ProxyError::bad_request(
                    "the Host header does not match the request target",
                    "send the same host in the URL and the Host header (or omit Host)",
                ));
            }
        }
        if authority.port != port {
            return Err(ProxyError::bad_request(
                format!(
                    "the request names port {} but the connection was made to port {port}",
                    authority.port
                ),
                "name the port you connect to in the Host header (or omit it)",
            ));
        }
        Ok(Target {
            authority,
            path: target::canonical_path(req.uri().path())?,
            query: req.uri().query().map(str::to_string),
            scheme: Scheme::Http,
            mode: ConnectionMode::Transparent,
            sni: None,
        })
    }
}

impl Proxy {
    /// One plain-HTTP request on a transparent connection (the service the listener runs).
    pub fn handle_transparent(
        self: Arc<Self>,
        req: Request<Incoming>,
        info: Arc<Redirected>,
    ) -> Handled {
        // Made in its box, as `Proxy::handle`'s is.
        super::pinned_in_box!(self.run(req, super::Source::Transparent(info)))
    }

    /// A transparent connection that is not plain HTTP, to its end: TLS with a usable SNI is
    /// intercepted or decided on the name; anything else is decided on `original`. `io` replays
    /// the sniffed bytes.
    pub async fn transparent_stream<IO>(
        self: Arc<Self>,
        io: IO,
        original: SocketAddr,
        sniffed: Sniffed,
    ) where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let port = original.port();
        let sni = match &sniffed {
            Sniffed::Tls(hello) => hello.sni.clone(),
            _ => None,
        };
        // The SNI as a canonical name at the dialled port; one that is not a valid host name
        // counts as none (the connection is then decided on its IP).
        let named = sni
            .as_deref()
            .and_then(|n| target::canonical_host(n).ok())
            .map(|host| Authority::new(host, port));
        let (authority, protocol) = match named {
            Some(a) => (a, Protocol::Tls),
            None => (
                Authority::new(original.ip().to_string(), port),
                Protocol::Tcp,
            ),
        };
        self.metrics
            .transparent_connections
            .with_label_values(&[protocol.as_str()])
            .inc();
        if protocol == Protocol::Tls
            && self
                .cfg
                .tls
                .intercepts(&authority.host, self.clients_trust_ca)
        {
            // Intercepted: each inner request is decided on its own, as in a CONNECT tunnel.
            if let Err(e) = self.tunnel_slot() {
                self.count_error(&e);
                return debug!(error = %e, "transparent TLS refused");
            }
            let _count = TunnelCount(self.clone());
            let mode = ConnectionMode::Transparent;
            return self.intercept(io, authority, mode, None).await;
        }
        let (decided, upstream) = self
            .decide_opaque(&authority, protocol, sni.as_deref())
            .await;
        let span = info_span!("transparent", target = %authority.to_host_port(), protocol = protocol.as_str(), decision_id = %decided.rec.decision_id);
        let upstream = match upstream {
            Ok(u) => u,
            // The client gets no HTTP answer on a raw connection: it is closed; the audit
            // record and the metrics say why.
            Err(e) => {
                decided.write(None);
                return span.in_scope(|| debug!(error = %e, "transparent connection refused"));
            }
        };
        let _count = TunnelCount(self.clone());
        let idle = Duration::from_millis(self.cfg.limits.tunnel_idle_timeout_ms);
        let closing = self.audit.closing();
        async {
            // The record is written when the connection ends, with the bytes it moved.
            let s = tunnel::splice(io, upstream, idle, closing).await;
            debug!(end = ?s.end, "transparent connection ended");
            decided.write(Some(Relayed::from(&s)));
        }
        .instrument(span)
        .await;
    }

    /// Decides a connection on its destination alone and dials it (taking a tunnel slot on
    /// success). Returns the record to write when the connection ends (at once if refused).
    async fn decide_opaque(
        self: &Arc<Self>,
        authority: &Authority,
        protocol: Protocol,
        sni: Option<&str>,
    ) -> (Decided, Result<TcpStream, ProxyError>) {
        let started = Instant::now();
        // While the audit log cannot be written (`audit.on_failure: block`): closed, nothing
        // dialled (as `Proxy::run` answers 503).
        let blocked = self.audit.blocked();
        let slot = if blocked {
            self.audit.try_reserve()
        } else {
            self.audit.reserve().await
        };
        let mut rec = AuditRecord {
            decision_id: crate::ids::decision_id(),
            at: Some(SystemTime::now()),
            method: "CONNECT".into(),
            ..AuditRecord::default()
        };
        let scheme = match protocol {
            Protocol::Tls => Scheme::Tls,
            _ => Scheme::Tcp,
        };
        gate::note(
            &mut rec,
            ConnectionMode::Transparent,
            scheme,
            authority,
            None,
        );
        let live = self.live.load_full();
        rec.agent = Arc::clone(live.audit_agent());
        let result = if blocked {
            Err(ProxyError::AuditUnavailable)
        } else {
            self.opaque_pipeline(&live, &mut rec, authority, protocol, scheme, sni)
                .await
        };
        match &result {
            Ok(_) => rec.status = 200,
            Err(e) => self.failed(&mut rec, e),
        }
        (Decided { rec, slot, started }, result)
    }

    async fn opaque_pipeline(
        self: &Arc<Self>,
        live: &LivePolicy,
        rec: &mut AuditRecord,
        authority: &Authority,
        protocol: Protocol,
        scheme: Scheme,
        sni: Option<&str>,
    ) -> Result<TcpStream, ProxyError> {
        // No headers: the intent is the session's, else the default. The name (an SNI) is
        // resolved by the step only once the decision lets the connection go, and dialled at
        // that vetted resolution (never at the IP the client dialled).
        let facts = RequestFacts {
            id: "",
            protocol,
            method: "CONNECT",
            scheme,
            host: &authority.host,
            port: authority.port,
            path: None,
            query: None,
            headers: None,
            connection: ConnectionFacts {
                mode: ConnectionMode::Transparent,
                sni,
                intercepted: false,
            },
            destination: None,
            body: None,
            mcp: None,
            llm: None,
        };
        let call = gate::Call {
            facts,
            to: authority,
            declared: None,
            intent_token: None,
            bodyless_with_body: None,
        };
        let allowed = self.decide(live, rec, call).await?;
        crate::cred::refuse_spliced(
            live.policy.catalog(),
            &allowed.decision,
            &live.agent.id,
            rec,
        )?;
        self.tunnel_slot()?;
        match self.dialer.tunnel(authority).await {
            Ok(u) => Ok(u),
            Err(e) => {
                self.tunnels.fetch_sub(1, Ordering::AcqRel);
                Err(e.into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(original: &str, uri: &str, host: Option<&str>) -> Result<Target, ProxyError> {
        let mut b = Request::builder().uri(uri);
        if let Some(h) = host {
            b = b.header(http::header::HOST, h);
        }
        let r = Redirected {
            original: original.parse().unwrap(),
            in_flight: Default::default(),
            kept: Default::default(),
        };
        r.target_of(&b.body(()).unwrap())
    }

    #[test]
    fn the_target_is_the_named_host_at_the_dialled_port() {
        let t = target("10.0.0.9:8080", "/a/../b?x=1", Some("API.example.com:8080")).unwrap();
        assert_eq!(t.authority.to_host_port(), "api.example.com:8080");
        assert_eq!((t.path.as_str(), t.query.as_deref()), ("/b", Some("x=1")));
        assert_eq!(
            (t.mode, t.scheme),
            (ConnectionMode::Transparent, Scheme::Http)
        );
        // No port in Host: the dialled one (not 80).
        let t = target("10.0.0.9:8080", "/", Some("api.example.com")).unwrap();
        assert_eq!(t.authority.port, 8080);
        // No host at all (HTTP/1.0): the IP the client dialled.
        let t = target("[fd00::9]:80", "/", None).unwrap();
        assert_eq!(t.authority.to_host_port(), "[fd00::9]:80");
        // Absolute-form is accepted when Host agrees.
        let t = target("10.0.0.9:80", "http://a.example/p", Some("a.example")).unwrap();
        assert_eq!(t.authority.host, "a.example");
    }

    #[test]
    fn another_port_a_disagreeing_host_or_connect_is_refused() {
        for (uri, host) in [
            ("/", Some("api.example.com:9999")),
            ("http://a.example/p", Some("b.example")),
            ("http://a.example:81/p", None),
            ("/", Some("user@a.example")),
        ] {
            let e = target("10.0.0.9:80", uri, host).err();
            let code = e.map(|e| e.code());
            assert_eq!(
                code,
                Some(crate::vocab::ErrorCode::BadRequest),
                "{uri} {host:?}"
            );
        }
        let connect = Request::builder()
            .method(http::Method::CONNECT)
            .uri("a.example:443")
            .body(())
            .unwrap();
        let r = Redirected {
            original: "10.0.0.9:443".parse().unwrap(),
            in_flight: Default::default(),
            kept: Default::default(),
        };
        assert!(r.target_of(&connect).is_err());
    }
}
