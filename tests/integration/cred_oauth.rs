//! OAuth 2.0 credential sources (src/cred/oauth2.rs) against a token endpoint started by the
//! test (RFC 6749 client credentials, RFC 8693 token exchange; tokens that expire in seconds),
//! which can be made to fail: fetched on first allowed use only, refreshed in the background,
//! the old token kept through a failed refresh until it expires, then 503. With
//! `subject_token: intent_token`, the agent's own intent token is what is exchanged: one access
//! token per intent token, one exchange for concurrent first uses.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;

use crate::common::tls::TestCa;
use crate::common::*;
use crate::cred_server::serve;

const CLIENT_SECRET: &str = "client-s3cr3t-5d2c";
const SUBJECT: &str = "sa-jwt-subject-77aa";

/// The token endpoint: counts requests; while `fail` is set answers 500 `server_error`. It
/// exchanges the file's `SUBJECT`, and the intent tokens in `jwts` exactly (its access token
/// names which: `itx-token-N-AUDIENCE-INDEX`), each exchange of one held for `hold` (so that
/// concurrent calls overlap it); `subjects` are the intent tokens it was given.
struct TokenEndpoint {
    addr: std::net::SocketAddr,
    requests: Arc<AtomicUsize>,
    fail: Arc<AtomicBool>,
    jwts: Arc<Mutex<Vec<String>>>,
    subjects: Arc<Mutex<Vec<String>>>,
    hold: Arc<Mutex<Duration>>,
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
    let jwts = Arc::new(Mutex::new(Vec::<String>::new()));
    let subjects = Arc::new(Mutex::new(Vec::new()));
    let hold = Arc::new(Mutex::new(Duration::ZERO));
    let (n, f) = (requests.clone(), fail.clone());
    let (known, seen, held) = (jwts.clone(), subjects.clone(), hold.clone());
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
            let jwt = "urn:ietf:params:oauth:token-type:jwt";
            let subject = get("subject_token").unwrap_or_default();
            let known = known.lock().unwrap().iter().position(|t| t == subject);
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
                Some("urn:ietf:params:oauth:grant-type:token-exchange")
                    if known.is_some() && get("subject_token_type") == Some(jwt) =>
                {
                    seen.lock().unwrap().push(subject.to_string());
                    let hold = *held.lock().unwrap();
                    tokio::task::block_in_place(|| std::thread::sleep(hold));
                    let aud = get("audience").unwrap_or("none");
                    format!("itx-token-{i}-{aud}-{}", known.unwrap())
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
        jwts,
        subjects,
        hold,
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
/// credential `source` describes (`TOKEN_URL` and `DIR` filled in), rule b asking for
/// `audience: b`.
fn world(source: &str, expires_in: u64) -> World {
    world_with(&format!("  oa: {source}\n"), "", "", expires_in)
}

/// `world`, with `credentials` (the section's lines, `oa` among them), more `rules` of intent
/// `work` and more top-level config (`extra`).
fn world_with(credentials: &str, rules: &str, extra: &str, expires_in: u64) -> World {
    let dir = tempfile::tempdir().unwrap();
    init_ca(dir.path());
    let test_ca = TestCa::new("cred oauth CA");
    let up_ca = test_ca.write_pem(dir.path());
    let up = Upstream::start_tls(test_ca.server_config(&["localhost"]));
    let tokens = token_endpoint(test_ca.server_config(&["localhost"]), expires_in);
    std::fs::write(dir.path().join("client-secret"), CLIENT_SECRET).unwrap();
    std::fs::write(dir.path().join("sa-token"), SUBJECT).unwrap();
    let credentials = credentials
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
         credentials:\n{credentials}\
         intents:\n  work:\n    allow:\n\
         \x20     - {{hosts: [localhost], ports: [{p}], methods: [GET], paths: [\"/echo/a/**\"], inject: {{{inject}}}}}\n\
         \x20     - {{hosts: [localhost], ports: [{p}], methods: [GET], paths: [\"/echo/b/**\"], inject: {{{inject}, audience: b}}}}\n\
         {rules}{extra}",
        up_ca.display(),
        c = c.display(),
        rules = rules.replace("PORT", &p.to_string()),
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
        self.get_with(path, &[])
    }

    /// `get` with more curl arguments (`-H …`).
    fn get_with(&self, path: &str, extra: &[&str]) -> (u16, String, serde_json::Value) {
        let url = format!("https://localhost:{}{path}", self.up.addr.port());
        let purl = self.proxy.url();
        let mut args = vec!["-x", &purl, "--cacert", &self.ca];
        args.extend_from_slice(extra);
        args.push(&url);
        let out = curl(&args);
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

/// `subject_token: intent_token`: the agent's own verified intent token is the subject token
/// (the endpoint checks it is exactly the token the test minted); one access token per intent
/// token (and rule scope), one exchange for concurrent first uses, none for a denied call; a
/// call without a token is refused unless the credential falls back on a file.
#[test]
fn token_exchange_trades_the_agents_own_intent_token() {
    const ISS: &str = "https://orchestrator.example";
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("iss.pem");
    let (code, jwks, err) = run_cli(&["token", "keygen", "--out", key.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let jwks_file = keys.path().join("iss.jwks.json");
    std::fs::write(&jwks_file, jwks).unwrap();
    let mint = |task: &str| {
        let k = key.to_str().unwrap();
        let args = [
            "token", "mint", "--key", k, "--intent", "work", "--task", task, "--agent", "o",
            "--ttl", "5m", "--issuer", ISS,
        ];
        let (code, out, err) = run_cli(&args);
        assert_eq!(code, 0, "{err}");
        out.trim().to_string()
    };
    let tokens: Vec<String> = ["T-1", "T-2", "T-3"].iter().map(|t| mint(t)).collect();
    let exchange = "token_url: TOKEN_URL, subject_token: intent_token, ca: DIR/test-ca.pem";
    let inject = "credential: fb, header: Authorization, format: \"Bearer {}\"";
    let w = world_with(
        &format!(
            "  oa: {{oauth2_token_exchange: {{{exchange}, audience: a}}}}\n\
             \x20 fb: {{oauth2_token_exchange: {{{exchange}, subject_token_file: DIR/sa-token, audience: fb}}}}\n"
        ),
        &format!(
            "      - {{hosts: [localhost], ports: [PORT], methods: [GET], paths: [\"/echo/c/**\"], inject: {{{inject}}}}}\n"
        ),
        &format!(
            "intent_tokens: {{issuers: [{{issuer: \"{ISS}\", jwks_file: \"{}\"}}]}}\n",
            jwks_file.display()
        ),
        60,
    );
    *w.tokens.jwts.lock().unwrap() = tokens.clone();
    let requests = || w.tokens.requests.load(Ordering::SeqCst);
    let with = |i: usize| format!("intentgate-intent-token: {}", tokens[i]);
    let get = |path: &str, i: usize| w.get_with(path, &["-H", &with(i)]);

    // A denied call makes no exchange.
    let (status, _, body) = get("/echo/other", 0);
    assert_eq!(status, 403, "{body}");
    assert_eq!(error_code(&body), "intent_violation");
    // A call without an intent token (the default intent allows it) is refused: nothing to
    // exchange, nothing sent upstream.
    let (status, _, body) = w.get("/echo/a/none");
    assert_eq!(status, 403, "{body}");
    assert_eq!(error_code(&body), "credential_requires_intent_token");
    assert!(
        body["hint"].as_str().unwrap().contains("intent token"),
        "{body}"
    );
    assert_eq!(requests(), 0);
    assert!(w.up.seen().is_empty(), "nothing reached the upstream");
    // A credential with a file to fall back on exchanges the file's token for such a call.
    let (status, auth, body) = w.get("/echo/c/none");
    assert_eq!(status, 200, "{body}");
    assert_eq!(auth, "Bearer tx-token-1-fb");

    // The intent token itself is exchanged; a second call with it uses the same access token.
    let (status, a0, body) = get("/echo/a/1", 0);
    assert_eq!(status, 200, "{body}");
    assert_eq!(a0, "Bearer itx-token-2-a-0");
    assert_eq!(*w.tokens.subjects.lock().unwrap(), [tokens[0].clone()]);
    assert_eq!(get("/echo/a/2", 0).1, a0);
    assert_eq!(requests(), 2);
    // Another rule's audience is another access token; with a token, `fb` exchanges it too.
    assert_eq!(get("/echo/b/1", 0).1, "Bearer itx-token-3-b-0");
    assert_eq!(get("/echo/c/1", 0).1, "Bearer itx-token-4-fb-0");
    assert_eq!(requests(), 4);

    // Concurrent first uses of another token: one exchange (the endpoint holds it a while, so
    // that the calls overlap it), one access token for all.
    *w.tokens.hold.lock().unwrap() = Duration::from_millis(1500);
    let auths: Vec<String> = std::thread::scope(|s| {
        let calls: Vec<_> = (0..6)
            .map(|n| {
                let get = &get;
                s.spawn(move || {
                    let (status, a, body) = get(&format!("/echo/a/par{n}"), 1);
                    assert_eq!(status, 200, "{body}");
                    a
                })
            })
            .collect();
        calls.into_iter().map(|c| c.join().unwrap()).collect()
    });
    assert_eq!(requests(), 5, "one exchange for six concurrent calls");
    assert!(
        auths.iter().all(|a| *a == "Bearer itx-token-5-a-1"),
        "{auths:?}"
    );
    *w.tokens.hold.lock().unwrap() = Duration::ZERO;
    // A third token: its own exchange.
    assert_eq!(get("/echo/a/3", 2).1, "Bearer itx-token-6-a-2");
    assert_eq!(get("/echo/a/4", 1).1, auths[0]);
    assert_eq!(requests(), 6);
    assert_eq!(w.tokens.subjects.lock().unwrap().len(), 5);

    // Records name the credential; neither an intent token nor an access token is written.
    let recs = eventually("the records", Duration::from_secs(10), || {
        let r = w.proxy.audit();
        r.iter().any(|r| r["path"] == "/echo/a/4").then_some(r)
    });
    let none = recs.iter().find(|r| r["path"] == "/echo/a/none").unwrap();
    assert_eq!(none["error"], "credential_requires_intent_token", "{none}");
    let first = recs.iter().find(|r| r["path"] == "/echo/a/1").unwrap();
    assert_eq!(first["credential"]["name"], "oa", "{first}");
    assert_eq!(first["intent"]["verified"], true, "{first}");
    let all = w.proxy.stdout()
        + &w.proxy.stderr()
        + &std::fs::read_to_string(w.proxy.path("audit.log")).unwrap();
    assert!(all.contains("/echo/a/par5"), "the outputs were read");
    for secret in tokens
        .iter()
        .map(String::as_str)
        .chain(["itx-token-", SUBJECT])
    {
        assert!(!all.contains(secret), "{secret} leaked: {all}");
    }
}
