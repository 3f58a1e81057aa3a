//! Reaching the upstream: resolving and vetting destinations, dialing with timeouts (directly or
//! through a parent proxy's CONNECT), and classifying what went wrong.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::dns::Resolver;
use crate::audit::AuditRecord;
use crate::egress::{Class, EgressPolicy};
use crate::error::ProxyError;
use crate::target::Authority;

/// Why a connection to the upstream could not be made.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DialError {
    #[error("cannot resolve {host}: {detail}")]
    Resolve { host: String, detail: String },
    #[error("cannot connect to {target}: {detail}")]
    Connect { target: String, detail: String },
    #[error("connecting to {target} timed out after {ms} ms")]
    Timeout { target: String, ms: u64 },
    #[error("parent proxy refused {target}: {detail}")]
    Parent { target: String, detail: String },
    #[error("destination {host} ({ip}, {class}) is forbidden: {why}")]
    Forbidden {
        host: String,
        ip: std::net::IpAddr,
        class: &'static str,
        why: &'static str,
    },
}

impl From<DialError> for ProxyError {
    fn from(e: DialError) -> Self {
        match e {
            DialError::Resolve { host, detail } => ProxyError::UpstreamResolve { host, detail },
            DialError::Connect { target, detail } => ProxyError::UpstreamConnect { target, detail },
            DialError::Timeout { target, ms } => ProxyError::UpstreamTimeout {
                target,
                stage: "connect",
                after_ms: ms,
            },
            DialError::Parent { target, detail } => ProxyError::ParentProxy { target, detail },
            e @ DialError::Forbidden { class, .. } if class == Class::Proxy.as_str() => {
                ProxyError::Ourselves(e.to_string())
            }
            e @ DialError::Forbidden { .. } => ProxyError::DestinationForbidden(e.to_string()),
        }
    }
}

/// The refusal of `host` at the address `f` names.
fn forbidden(host: &str, f: crate::egress::Forbidden) -> DialError {
    DialError::Forbidden {
        host: host.to_string(),
        ip: f.ip,
        class: f.class.as_str(),
        why: f.why,
    }
}

/// A pending name's vetting refused after the decision: the refusal replaces the decision in
/// the audit record, as it would have come before it (`error` with its code).
fn refused_late(e: DialError, rec: &mut AuditRecord) -> ProxyError {
    let e = ProxyError::from(e);
    rec.decision = Some(crate::vocab::Verdict::Error);
    rec.error = Some(e.code());
    e
}

/// What is known of a destination's address when its decision is made (the vetting is split in
/// two around the decision, so that nothing denied is ever looked up in DNS).
pub(crate) enum Early {
    /// Vetted already: an IP literal (no lookup needed), or a name whose address the policy reads.
    Vetted(Option<(SocketAddr, Class)>),
    /// A name: resolved and vetted only once the decision lets the request go.
    Pending,
}

impl Early {
    /// `input.destination`: the address and its class, when known.
    pub(crate) fn destination(&self) -> Option<(std::net::IpAddr, &'static str)> {
        match self {
            Early::Vetted(Some((a, c))) => Some((a.ip(), c.as_str())),
            _ => None,
        }
    }
}

/// Opens TCP connections to upstreams, or to the parent proxy when one is configured. Every
/// address is vetted by the egress rules right before it is dialled.
#[derive(Clone)]
pub struct Dialer {
    connect_timeout: Duration,
    parent: Option<Arc<Authority>>,
    resolver: Arc<Resolver>,
    egress: Arc<EgressPolicy>,
}

impl Dialer {
    pub fn new(
        connect_timeout: Duration,
        parent: Option<Authority>,
        resolver: Arc<Resolver>,
        egress: Arc<EgressPolicy>,
    ) -> Self {
        Self {
            connect_timeout,
            parent: parent.map(Arc::new),
            resolver,
            egress,
        }
    }

    /// Whether plain-HTTP requests go straight to their destination (no parent proxy).
    pub fn is_direct(&self) -> bool {
        self.parent.is_none()
    }

    /// The address a destination would be dialled at, and its class; refused when every address
    /// it resolves to is forbidden. With a parent proxy only IP literals can be vetted here (the
    /// parent resolves names), so names yield `None`.
    async fn vet(&self, host: &str, port: u16) -> Result<Option<(SocketAddr, Class)>, DialError> {
        if self.parent.is_some() && host.parse::<std::net::IpAddr>().is_err() {
            return Ok(None);
        }
        let addrs = self.resolver.resolve(host, port).await?;
        Ok(self.allowed(host, &addrs)?.into_iter().next())
    }

    /// Vetting before the decision: an IP literal's address classes need no lookup and are
    /// applied at once; a name is resolved here only when the policy reads `input.destination`
    /// (`reads_destination`), else it stays `Pending` for `vet_pending`.
    pub(crate) async fn vet_early(
        &self,
        host: &str,
        port: u16,
        reads_destination: bool,
    ) -> Result<Early, DialError> {
        // An IP literal is its own (one) address: parsed once, vetted without a lookup.
        if let Ok(ip) = host.parse::<std::net::IpAddr>() {
            let addr = SocketAddr::new(ip, port);
            // One address: vetted without the list `allowed` builds.
            let class = self.egress.check(addr).map_err(|f| forbidden(host, f))?;
            return Ok(Early::Vetted(Some((addr, class))));
        }
        if reads_destination {
            return Ok(Early::Vetted(self.vet(host, port).await?));
        }
        Ok(Early::Pending)
    }

    /// Vetting after the decision let the request go: a pending name is resolved (the shared
    /// cache then holds the resolution the dial uses) and its addresses vetted. A refusal (or a
    /// name that does not resolve) replaces the decision in the audit record, as it would have
    /// come before it: `error` with its code.
    pub(crate) async fn vet_pending(
        &self,
        early: &Early,
        host: &str,
        port: u16,
        rec: &mut AuditRecord,
    ) -> Result<(), ProxyError> {
        if let Early::Pending = early {
            if let Err(e) = self.vet(host, port).await {
                return Err(refused_late(e, rec));
            }
        }
        Ok(())
    }

    /// `vet_early` without an await where none is needed (an IP literal, a name the policy does
    /// not read the address of, a name the resolver's cache holds): `None` where a name must be
    /// looked up first.
    /// An IP literal is the one `to` carries: its host is not read again.
    pub(crate) fn vet_early_now(
        &self,
        to: &Authority,
        reads_destination: bool,
    ) -> Option<Result<Early, DialError>> {
        let (host, port) = (to.host.as_str(), to.port);
        if let Some(ip) = to.ip() {
            let addr = SocketAddr::new(ip, port);
            let class = self.egress.check(addr).map_err(|f| forbidden(host, f));
            return Some(class.map(|c| Early::Vetted(Some((addr, c)))));
        }
        if !reads_destination {
            return Some(Ok(Early::Pending));
        }
        self.vet_name_now(host, port).map(|r| r.map(Early::Vetted))
    }

    /// `vet_pending` without an await where none is needed: `None` where the pending name must
    /// be looked up first (it is not in the resolver's cache).
    pub(crate) fn vet_pending_now(
        &self,
        early: &Early,
        host: &str,
        port: u16,
        rec: &mut AuditRecord,
    ) -> Option<Result<(), ProxyError>> {
        let Early::Pending = early else {
            return Some(Ok(()));
        };
        let vetted = self.vet_name_now(host, port)?;
        Some(vetted.map(drop).map_err(|e| refused_late(e, rec)))
    }

    /// `vet` for a name (not an IP literal) from the resolver's cache: `None` on a miss. The
    /// first vetted address, as `vet` has it, without the lists it builds.
    fn vet_name_now(
        &self,
        host: &str,
        port: u16,
    ) -> Option<Result<Option<(SocketAddr, Class)>, DialError>> {
        if self.parent.is_some() {
            return Some(Ok(None));
        }
        let ips = self.resolver.cached_now(host)?;
        let mut first_refusal = None;
        for ip in ips.iter() {
            let addr = SocketAddr::new(*ip, port);
            match self.egress.check(addr) {
                Ok(class) => return Some(Ok(Some((addr, class)))),
                Err(f) => {
                    first_refusal.get_or_insert(f);
                }
            }
        }
        // A cached resolution is never empty: every address was refused.
        Some(match first_refusal {
            Some(f) => Err(forbidden(host, f)),
            None => Ok(None),
        })
    }

    /// The vetted subset of `addrs`, in order; an error naming the first refusal if none is left.
    fn allowed(
        &self,
        host: &str,
        addrs: &[SocketAddr],
    ) -> Result<Vec<(SocketAddr, Class)>, DialError> {
        let mut ok = Vec::with_capacity(addrs.len());
        let mut first_refusal = None;
        for a in addrs {
            match self.egress.check(*a) {
                Ok(class) => ok.push((*a, class)),
                Err(f) => {
                    first_refusal.get_or_insert(f);
                }
            }
        }
        match first_refusal {
            Some(f) if ok.is_empty() => Err(forbidden(host, f)),
            _ => Ok(ok),
        }
    }

    /// Resolves `host`, vets every address, and connects to the first vetted one that answers,
    /// within the connect timeout.
    pub async fn dial(&self, host: &str, port: u16) -> Result<TcpStream, DialError> {
        self.dial_checked(host, port, true).await
    }

    /// A connection for plain-HTTP requests to `dest`: to the parent proxy when there is one
    /// (which then gets absolute-form targets), else to the vetted destination.
    pub(super) async fn dial_plain(&self, dest: &Authority) -> Result<TcpStream, DialError> {
        match &self.parent {
            Some(p) => self.dial_parent(p).await,
            None => self.dial(&dest.host, dest.port).await,
        }
    }

    /// The parent proxy is the operator's own choice (often on a private network): not vetted.
    async fn dial_parent(&self, parent: &Authority) -> Result<TcpStream, DialError> {
        self.dial_checked(&parent.host, parent.port, false).await
    }

    async fn dial_checked(&self, host: &str, port: u16, vet: bool) -> Result<TcpStream, DialError> {
        let target = crate::hostport::HostPort(host, port).to_string();
        let work = async {
            let addrs = self.resolver.resolve(host, port).await?;
            let addrs: Vec<SocketAddr> = if vet {
                self.allowed(host, &addrs)?
                    .into_iter()
                    .map(|(a, _)| a)
                    .collect()
            } else {
                addrs
            };
            let mut last = None;
            for addr in addrs {
                match TcpStream::connect(addr).await {
                    Ok(s) => {
                        let _ = s.set_nodelay(true);
                        return Ok(s);
                    }
                    Err(e) => last = Some(e),
                }
            }
            Err(DialError::Connect {
                target: target.clone(),
                detail: last.map_or_else(|| "no addresses".to_string(), |e| e.to_string()),
            })
        };
        match tokio::time::timeout(self.connect_timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(DialError::Timeout {
                target,
                ms: self.connect_timeout.as_millis() as u64,
            }),
        }
    }

    /// A raw byte stream to `dest`: direct, or through the parent proxy with CONNECT.
    pub async fn tunnel(&self, dest: &Authority) -> Result<TcpStream, DialError> {
        let Some(parent) = &self.parent else {
            return self.dial(&dest.host, dest.port).await;
        };
        let mut stream = self.dial_parent(parent).await?;
        let target = dest.to_host_port();
        let request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
        let handshake = async {
            stream.write_all(request.as_bytes()).await?;
            read_connect_reply(&stream).await
        };
        let status = tokio::time::timeout(self.connect_timeout, handshake)
            .await
            .map_err(|_| DialError::Timeout {
                target: format!("parent proxy for {target}"),
                ms: self.connect_timeout.as_millis() as u64,
            })?
            .map_err(|e| DialError::Parent {
                target: target.clone(),
                detail: e.to_string(),
            })?;
        if !status.starts_with("HTTP/1.1 200") && !status.starts_with("HTTP/1.0 200") {
            return Err(DialError::Parent {
                target,
                detail: format!("answered '{status}'"),
            });
        }
        Ok(stream)
    }
}

/// Reads the parent's reply head (and nothing after it, so no tunnel bytes are consumed);
/// returns its status line.
async fn read_connect_reply(stream: &TcpStream) -> std::io::Result<String> {
    let mut buf = [0u8; 8192];
    loop {
        stream.readable().await?;
        let n = stream.peek(&mut buf).await?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed during CONNECT",
            ));
        }
        if let Some(end) = buf[..n].windows(4).position(|w| w == b"\r\n\r\n") {
            let mut head = vec![0u8; end + 4];
            let mut read = 0;
            while read < head.len() {
                stream.readable().await?;
                match stream.try_read(&mut head[read..]) {
                    Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                    Ok(k) => read += k,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(e),
                }
            }
            let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
            return Ok(String::from_utf8_lossy(line).into_owned());
        }
        if n == buf.len() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "reply head too large",
            ));
        }
    }
}
