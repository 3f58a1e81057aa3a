//! OAuth 2.0 credential sources (src/cred/oauth2.rs) against a token endpoint started by the
//! test (RFC 6749 client credentials, RFC 8693 token exchange; tokens that expire in seconds),
//! which can be made to fail: fetched on first allowed use only, refreshed in the background,
//! the old token kept through a failed refresh until it expires, then 503.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;

use crate::common::tls::TestCa;
use crate::common::*;
use crate::cred_server::serve;

const CLIENT_SECRET: &str = "client-s3cr3t-5d2c";
const SUBJECT: &str = "sa-jwt-subject-77aa";

/// The token endpoint: counts requests; while `fail` is set answers 500 `server_error`.
struct TokenEndpoint {
    addr: std::net::SocketAddr,
    requests: Arc<AtomicUsize>,
    fail: Arc<AtomicBool>,
}

fn form(body: &[u8]) -> Vec<(String, String)> {
    let decode = |s: &str| {
        let b = s.replace('+', " ");
        let b = b.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' && i + 2 < b.len() + 1 {
                let h = std::str::from_utf8(&b[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(h, 16).unwrap());
                i += 3;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        String::from_utf8(out).unwrap()
    };
    std::str::from_utf8(body)
        .unwrap()
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

fn token_endpoint(tls: Arc<rustls::ServerConfig>, expires_in: u64) -> TokenEndpoint {
    let requests = Arc::new(AtomicUsize::new(0));
    let fail = Arc::new(AtomicBool::new(false));
    let (n, f) = (requests.clone(), fail.clone());
    let addr = serve(
        Some(tls),
        Arc::new(move |p, body| {
            let i = n.fetch_add(1, Ordering::SeqCst) + 1;
            if f.load(Ordering::SeqCst) {
                return (500, r#"{"error":"server_error"}"#.into());
            }
            let form = form(body);
            let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
            let basic = base64::engine::general_purpose::STANDARD
                .encode(format!("agent-client:{CLIENT_SECRET}"));
            let auth = p.headers.get("authorization").and_then(|v| v.to_str().ok());
            let json_type = p
                .headers
                .get("content-type")
                .is_some_and(|v| v == "application/x-www-form-urlencoded");
            if p.method != http::Method::POST || p.uri.path() != "/token" || !json_type {
                return (400, r#"{"error":"invalid_request"}"#.into());
            }
            let token = match get("grant_type") {
                Some("client_credentials") if auth == Some(&format!("Basic {basic}")) => {
                    format!(
                        "cc-token-{i}-{}",
                        get("scope").unwrap_or("").replace(' ', ".")
                    )
                }
                Some("urn:ietf:params:oauth:grant-type:token-exchange")
                    if get("subject_token") == Some(SUBJECT)
                        && get("subject_token_type")
                            == Some("urn:ietf:params:oauth:token-type:jwt") =>
                {
                    format!("tx-token-{i}-{}", get("audience").unwrap_or("none"))
                }
                Some(_) => return (401, r#"{"error":"invalid_client"}"#.into()),
                None => return (400, r#"{"error":"unsupported_grant_type"}"#.into()),
            };
            let reply = serde_json::json!({"access_token": token, "token_type": "Bearer",
                "expires_in": expires_in});
            (200, reply.to_string())
        }),
    );
    TokenEndpoint {
        addr,
        requests,
        fail,
    }
}

struct World {
    _dir: tempfile::TempDir,
    ca: String,
    up: Upstream,
    tokens: TokenEndpoint,
    proxy: ProxyProc,
}

/// An intercepting proxy whose intent `work` lets GET /echo/a/** and /echo/b/** go with the
/// credential `source` describes (`TOKEN_URL` and `CA` filled in), rule b asking for
/// `audience: b`.
fn world(source: &str, expires_in: u64) -> World {
    let dir = tempfile::tempdir().unwrap();
    init_ca(dir.path());
    let test_ca = TestCa::new("cred oauth CA");
    let up_ca = test_ca.write_pem(dir.path());
    let up = Upstream::start_tls(test_ca.server_config(&["localhost"]));
    let tokens = token_endpoint(test_ca.server_config(&["localhost"]), expires_in);
    std::fs::write(dir.path().join("client-secret"), CLIENT_SECRET).unwrap();
    std::fs::write(dir.path().join("sa-token"), SUBJECT).unwrap();
    let source = source
        .replace(
            "TOKEN_URL",
            &format!("https://localhost:{}/token", tokens.addr.port()),
        )
        .replace("DIR", &dir.path().display().to_string());
    let c = dir.path().join("ca");
    let p = up.addr.port();
    let inject = "credential: oa, header: Authorization, format: \"Bearer {}\"";
    let proxy = ProxyProc::start(&format!(
        "agent: {{id: o, owner: o}}\nintent: work\n\
         tls: {{ca_cert: \"{c}/ca.pem\", ca_key: \"{c}/ca-key.pem\", upstream_ca: \"{}\"}}\n\
         credentials:\n  oa: {source}\n\
         intents:\n  work:\n    allow:\n\
         \x20     - {{hosts: [localhost], ports: [{p}], methods: [GET], paths: [\"/echo/a/**\"], inject: {{{inject}}}}}\n\
         \x20     - {{hosts: [localhost], ports: [{p}], methods: [GET], paths: [\"/echo/b/**\"], inject: {{{inject}, audience: b}}}}\n",
        up_ca.display(),
        c = c.display(),
    ));
    World {
        ca: c.join("ca.pem").display().to_string(),
        _dir: dir,
        up,
        tokens,
        proxy,
    }
}

impl World {
    /// GET `path` through the proxy: (status, the Authorization the upstream saw, the body).
    fn get(&self, path: &str) -> (u16, String, serde_json::Value) {
        let url = format!("https://localhost:{}{path}", self.up.addr.port());
        let out = curl(&["-x", &self.proxy.url(), "--cacert", &self.ca, &url]);
        let body = out.json();
        let auth = body["headers"]["authorization"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        (out.status, auth, body)
    }
}

#[test]
fn client_credentials_fetched_on_first_allowed_use_refreshed_and_refused_once_expired() {
    let w = world(
        "{oauth2_client_credentials: {token_url: TOKEN_URL, client_id: agent-client, \
         client_secret: {file: DIR/client-secret}, scopes: [repo.read, issues]}}",
        3,
    );
    // (No `ca`: the token endpoint is trusted as upstreams are, through tls.upstream_ca.)
    // A denied call makes no token request.
    let (status, _, body) = w.get("/echo/other");
    assert_eq!(status, 403, "{body}");
    assert_eq!(w.tokens.requests.load(Ordering::SeqCst), 0);
    // The first allowed call fetches one; the next uses it.
    let (status, auth, body) = w.get("/echo/a/1");
    assert_eq!(status, 200, "{body}");
    assert_eq!(auth, "Bearer cc-token-1-repo.read.issues");
    assert_eq!(w.get("/echo/a/2").1, auth);
    assert_eq!(w.tokens.requests.load(Ordering::SeqCst), 1);
    // Shortly before expiry it is refreshed in the background: every call meanwhile answers.
    let refreshed = eventually("a refreshed token", Duration::from_secs(30), || {
        let (status, a, body) = w.get("/echo/a/3");
        assert_eq!(status, 200, "{body}");
        (a != auth).then_some(a)
    });
    assert!(refreshed.starts_with("Bearer cc-token-"), "{refreshed}");
    // The endpoint fails: the current token is used until it expires, then 503.
    w.tokens.fail.store(true, Ordering::SeqCst);
    let refused = eventually("the token to expire", Duration::from_secs(30), || {
        let (status, a, body) = w.get("/echo/a/4");
        match status {
            200 => {
                assert!(a.starts_with("Bearer cc-token-"), "{body}");
                None
            }
            _ => Some((status, body)),
        }
    });
    assert_eq!(refused.0, 503, "{}", refused.1);
    assert_eq!(error_code(&refused.1), "credential_unavailable");
    let errors = w
        .proxy
        .metric("intentgate_credential_refresh_total{credential=\"oa\",result=\"error\"}");
    assert!(errors >= 1.0, "{errors}");
    // It comes back with the endpoint.
    w.tokens.fail.store(false, Ordering::SeqCst);
    eventually("a token again", Duration::from_secs(30), || {
        (w.get("/echo/a/5").0 == 200).then_some(())
    });
    assert!(
        w.proxy
            .metric("intentgate_credential_expiry_seconds{credential=\"oa\"}")
            > 1.7e9
    );
    // Records name the token's version and expiry; no token nor the client secret is written.
    let recs = w.proxy.audit();
    let first = recs.iter().find(|r| r["path"] == "/echo/a/1").unwrap();
    assert_eq!(first["credential"]["name"], "oa", "{first}");
    assert_eq!(first["credential"]["version"], 1, "{first}");
    assert!(
        first["credential"]["expires"]
            .as_str()
            .unwrap()
            .ends_with('Z'),
        "{first}"
    );
    let all = w.proxy.stdout()
        + &w.proxy.stderr()
        + &std::fs::read_to_string(w.proxy.path("audit.log")).unwrap();
    assert!(
        all.contains("credential token request failed"),
        "the log was read"
    );
    for secret in ["cc-token-", CLIENT_SECRET] {
        assert!(!all.contains(secret), "{secret} leaked: {all}");
    }
}

#[test]
fn token_exchange_trades_the_subject_token_per_rule_audience() {
    let w = world(
        "{oauth2_token_exchange: {token_url: TOKEN_URL, subject_token_file: DIR/sa-token, \
         audience: a, ca: DIR/test-ca.pem}}",
        60,
    );
    let (status, a, body) = w.get("/echo/a/1");
    assert_eq!(status, 200, "{body}");
    assert!(
        a.starts_with("Bearer tx-token-") && a.ends_with("-a"),
        "{a}"
    );
    let (status, b, body) = w.get("/echo/b/1");
    assert_eq!(status, 200, "{body}");
    assert!(b.ends_with("-b"), "rule b's audience: {b}");
    // Each rule's token is cached on its own.
    assert_eq!(w.get("/echo/a/2").1, a);
    assert_eq!(w.get("/echo/b/2").1, b);
    assert_eq!(w.tokens.requests.load(Ordering::SeqCst), 2);
    let all = w.proxy.stdout() + &w.proxy.stderr();
    assert!(
        !all.contains(SUBJECT) && !all.contains("tx-token-"),
        "{all}"
    );
}
