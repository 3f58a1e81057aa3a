//! One HTTPS GET (or form POST) with a verified certificate, a deadline and a body limit, for the
//! control-plane reads above this layer: the sidecar polling its bundle, the bundle server reading
//! the service-account issuer's discovery document and keys, the webhook asking the API server for
//! its version, credential sources asking an OAuth 2.0 token endpoint for a token (src/cred) and
//! `intentgate token verify --jwks URL`.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::TcpStream;

use crate::tls::client::{UpstreamAlpn, UpstreamTls};

/// An HTTPS server the control deployment reads from (the API server, an issuer): its URL, the
/// CA to trust for it (default: the system roots) and a bearer token file sent to it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    pub url: String,
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Read at each request (the kubelet rotates projected tokens); sent only to `url`'s origin.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
}

/// What came back.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A verified HTTPS origin to GET from.
#[derive(Clone)]
pub struct Origin {
    host: String,
    port: u16,
    authority: String,
    tls: UpstreamTls,
}

impl std::fmt::Debug for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.authority)
    }
}

/// The trust for an endpoint: exactly the PEM roots in `ca` (text or file), else the system's.
pub fn trust(ca: Option<&str>) -> Result<UpstreamTls, String> {
    match ca {
        Some(ca) => {
            let (bytes, source) = if ca.trim_start().starts_with("-----BEGIN") {
                (ca.as_bytes().to_vec(), "(PEM text)")
            } else {
                (std::fs::read(ca).map_err(|e| format!("{ca}: {e}"))?, ca)
            };
            let roots = crate::tls::client::pem_roots(&bytes, std::path::Path::new(source))
                .map_err(|e| e.to_string())?;
            UpstreamTls::with_roots(roots)
        }
        None => UpstreamTls::new(crate::config::UpstreamRoots::System, None),
    }
    .map_err(|e| e.to_string())
}

impl Origin {
    /// The origin of an `https://` URL.
    pub fn of(uri: &Uri, tls: UpstreamTls) -> Result<Self, String> {
        if uri.scheme_str() != Some("https") {
            return Err(format!("'{uri}' must be an https:// URL"));
        }
        let host = uri.host().ok_or_else(|| format!("'{uri}': no host"))?;
        let port = uri.port_u16().unwrap_or(443);
        Ok(Origin {
            host: host.to_string(),
            port,
            authority: uri.authority().map_or(host, |a| a.as_str()).to_string(),
            tls,
        })
    }

    /// Whether `uri` is on this origin (a bearer token goes nowhere else).
    pub fn same(&self, uri: &Uri) -> bool {
        uri.scheme_str() == Some("https")
            && uri.host() == Some(self.host.as_str())
            && uri.port_u16().unwrap_or(443) == self.port
    }

    /// GETs `path_and_query` with `headers`; the body is bounded by `limit`, the whole exchange by
    /// `deadline`. Any status is an answer; the caller decides.
    pub async fn get(
        &self,
        path_and_query: &str,
        headers: &[(HeaderName, HeaderValue)],
        limit: usize,
        deadline: Duration,
    ) -> Result<Answer, String> {
        self.send(Method::GET, path_and_query, headers, None, limit, deadline)
            .await
    }

    /// POSTs `form` (`application/x-www-form-urlencoded`) to `path`, as `get` otherwise.
    pub async fn post_form(
        &self,
        path: &str,
        headers: &[(HeaderName, HeaderValue)],
        form: String,
        limit: usize,
        deadline: Duration,
    ) -> Result<Answer, String> {
        self.send(Method::POST, path, headers, Some(form), limit, deadline)
            .await
    }

    async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        headers: &[(HeaderName, HeaderValue)],
        form: Option<String>,
        limit: usize,
        deadline: Duration,
    ) -> Result<Answer, String> {
        let at = |e: String| format!("https://{}{path_and_query}: {e}", self.authority);
        let exchange = self.exchange(method, path_and_query, headers, form, limit);
        tokio::time::timeout(deadline, exchange)
            .await
            .map_err(|_| at(format!("no answer within {deadline:?}")))?
            .map_err(at)
    }

    async fn exchange(
        &self,
        method: Method,
        path: &str,
        headers: &[(HeaderName, HeaderValue)],
        form: Option<String>,
        limit: usize,
    ) -> Result<Answer, String> {
        let is_form = form.is_some();
        let tcp = TcpStream::connect((self.host.trim_matches(['[', ']']), self.port))
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let tls = self
            .tls
            .connect(tcp, &self.host, UpstreamAlpn::Http1)
            .await
            .map_err(|e| e.to_string())?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
        let conn = tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, self.authority.as_str())
            .header(
                header::USER_AGENT,
                concat!("intentgate/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(Bytes::from(form.unwrap_or_default())))
            .map_err(|e| e.to_string())?;
        if is_form {
            req.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-www-form-urlencoded"),
            );
        }
        for (k, v) in headers {
            req.headers_mut().insert(k.clone(), v.clone());
        }
        let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
        let (parts, body) = resp.into_parts();
        let body = Limited::new(body, limit)
            .collect()
            .await
            .map_err(|e| format!("reading the body: {e}"))?
            .to_bytes();
        conn.abort();
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }
}

impl Endpoint {
    /// The origin and path of `url`, trusting `ca_file`.
    pub fn origin(&self) -> Result<(Origin, Uri), String> {
        let uri: Uri = self
            .url
            .parse()
            .map_err(|e| format!("'{}': {e}", self.url))?;
        let ca = self.ca_file.as_ref().map(|p| p.display().to_string());
        let origin = Origin::of(&uri, trust(ca.as_deref())?)?;
        Ok((origin, uri))
    }

    /// `Authorization: Bearer …` from `token_file`, read now.
    pub fn bearer(&self) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
        let Some(file) = &self.token_file else {
            return Ok(Vec::new());
        };
        bearer_header(file)
    }
}

/// The `Authorization` header for the token in `file` (trimmed; must be one line of text).
pub fn bearer_header(file: &std::path::Path) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
    let token = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let mut value = HeaderValue::from_str(&format!("Bearer {}", token.trim()))
        .map_err(|_| format!("{}: not a token", file.display()))?;
    value.set_sensitive(true);
    Ok(vec![(header::AUTHORIZATION, value)])
}
