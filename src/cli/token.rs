//! `intentgate token`: make a key, mint an intent token, print a key's JWKS, verify a token or an
//! attestation. For development, tests and upstream teams checking what we send.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::{Args, Subcommand};

use crate::token::attest::{Attester, Expected, Statement, verify_token};
use crate::token::mint::{MintRequest, SigningKey, jwks_json, mint};

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Make an Ed25519 signing key: writes it to --out (PKCS#8 PEM, mode 0600; refuses to
    /// overwrite) and prints its JWK Set (publish that as the issuer's jwks_file). Exit 0 ok, 2 error.
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the JWK Set of a key (PKCS#8 PEM: Ed25519, P-256 or RSA). Exit 0 ok, 2 error.
    Jwks {
        #[arg(long)]
        key: PathBuf,
    },
    /// Mint a signed intent token (for development and tests; an orchestrator signs its own) and
    /// print it. Exit 0 ok, 2 error.
    Mint(MintArgs),
    /// Verify a token or an attestation: signature against the JWK Set, exp/nbf/iat, and what
    /// the options name (issuer, audience, request binding). Prints the claims. Exit 0 valid,
    /// 1 refused (the reason is printed), 2 cannot check (unreadable key set, bad arguments).
    Verify(VerifyArgs),
    /// Sign a sample attestation for one request, as the proxy does (for upstream teams testing
    /// their verifier). Exit 0 ok, 2 error.
    Attest(AttestArgs),
}

#[derive(Args, Debug)]
pub struct AttestArgs {
    /// The Ed25519 signing key (PKCS#8 PEM).
    #[arg(long)]
    pub key: PathBuf,
    /// `iss`: the sidecar's SPIFFE id or configured issuer.
    #[arg(long)]
    pub issuer: String,
    /// `sub`: the agent.
    #[arg(long)]
    pub agent: String,
    #[arg(long)]
    pub method: String,
    /// The request's URL; `aud` is its host.
    #[arg(long)]
    pub url: String,
    #[arg(long)]
    pub intent: Option<String>,
    #[arg(long)]
    pub task: Option<String>,
    /// `sub` of the intent token the intent came with.
    #[arg(long)]
    pub token_sub: Option<String>,
    #[arg(long, default_value = "sample")]
    pub decision_id: String,
    #[arg(long, default_value = "sample")]
    pub policy_revision: String,
    /// Validity (at most 60s).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
}

#[derive(Args, Debug)]
pub struct MintArgs {
    /// The signing key (PKCS#8 PEM: Ed25519 → EdDSA, P-256 → ES256, RSA → RS256).
    #[arg(long)]
    pub key: PathBuf,
    /// The intent (a catalog name).
    #[arg(long)]
    pub intent: String,
    /// The agent the token is for (`aud`): its SPIFFE id or id.
    #[arg(long)]
    pub agent: String,
    /// How long the token is valid (e.g. 90s, 5m).
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
    #[arg(long, default_value = "intentgate-dev")]
    pub issuer: String,
    /// The principal the task is done for.
    #[arg(long)]
    pub sub: Option<String>,
    /// The task (free text or an id).
    #[arg(long)]
    pub task: Option<String>,
    /// The token id (default: random).
    #[arg(long)]
    pub jti: Option<String>,
    /// The key id in the header (default: the key's RFC 7638 thumbprint).
    #[arg(long)]
    pub kid: Option<String>,
    /// More claims as a JSON object, e.g. '{"methods":["GET"],"max_calls":10}'.
    #[arg(long)]
    pub claims: Option<String>,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// The JWK Set: a file, or an https:// URL (e.g. a sidecar's /.well-known/jwks.json).
    #[arg(long)]
    pub jwks: String,
    /// CA certificate (PEM) to trust for an https:// --jwks (default: the system roots).
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// The token, or `-` to read it from standard input (keeps it out of the process list).
    pub token: String,
    /// Require this `iss`.
    #[arg(long)]
    pub issuer: Option<String>,
    /// Require `aud` to name this.
    #[arg(long)]
    pub audience: Option<String>,
    /// With --url: check an attestation's request binding (`req`) for this request.
    #[arg(long, requires = "url")]
    pub method: Option<String>,
    /// With --method: the request's URL (scheme://authority/path?query).
    #[arg(long, requires = "method")]
    pub url: Option<String>,
    /// Clock skew tolerated on exp/nbf/iat, in seconds.
    #[arg(long, default_value_t = 30)]
    pub skew: u64,
}

/// Runs `intentgate token ...`.
pub fn run(cmd: TokenCommand) -> ExitCode {
    let result = match cmd {
        TokenCommand::Keygen { out } => keygen(&out),
        TokenCommand::Jwks { key } => read_key(&key).map(|k| print_jwks(&k)),
        TokenCommand::Mint(a) => mint_cmd(&a),
        TokenCommand::Verify(a) => return verify(&a),
        TokenCommand::Attest(a) => attest(&a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("intentgate token: {e}");
            ExitCode::from(2)
        }
    }
}

fn read_key(path: &Path) -> Result<SigningKey, String> {
    let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    SigningKey::from_pem(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn print_jwks(key: &SigningKey) {
    println!("{}", jwks_json(&[key]));
}

fn keygen(out: &Path) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let (key, der) = SigningKey::generate_ed25519()?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .map_err(|e| format!("{}: {e}", out.display()))?;
    f.write_all(SigningKey::pkcs8_pem(&der).as_bytes())
        .map_err(|e| format!("{}: {e}", out.display()))?;
    print_jwks(&key);
    Ok(())
}

fn mint_cmd(a: &MintArgs) -> Result<(), String> {
    let mut key = read_key(&a.key)?;
    if let Some(kid) = &a.kid {
        key = key.with_kid(kid.clone());
    }
    let extra = match &a.claims {
        None => serde_json::Map::new(),
        Some(text) => match serde_json::from_str(text) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => return Err("--claims must be a JSON object".into()),
        },
    };
    let req = MintRequest {
        issuer: a.issuer.clone(),
        agent: a.agent.clone(),
        intent: a.intent.clone(),
        sub: a.sub.clone(),
        task: a.task.clone(),
        ttl_seconds: a.ttl.as_secs().max(1),
        jti: a.jti.clone(),
        extra,
    };
    println!("{}", mint(&key, &req, SystemTime::now())?);
    Ok(())
}

fn attest(a: &AttestArgs) -> Result<(), String> {
    let (method, authority, pq) = request_parts(&a.method, &a.url)?;
    let host = a.url.parse::<http::Uri>().ok();
    let aud = host.as_ref().and_then(|u| u.host()).unwrap_or(authority);
    let attester = Attester::new(read_key(&a.key)?, a.issuer.clone(), a.ttl.as_secs())?;
    let statement = Statement {
        sub: &a.agent,
        aud,
        intent: a.intent.as_deref(),
        task: a.task.as_deref(),
        token_sub: a.token_sub.as_deref(),
        decision_id: &a.decision_id,
        policy_revision: &a.policy_revision,
        method,
        authority,
        path_and_query: pq,
    };
    println!("{}", attester.header_value(&statement, SystemTime::now())?);
    Ok(())
}

/// (method, authority, path and query) of `url`.
fn request_parts<'a>(method: &'a str, url: &'a str) -> Result<(&'a str, &'a str, &'a str), String> {
    let bad = || format!("--url '{url}' is not an absolute URL (scheme://authority/path?query)");
    let rest = url.split_once("://").ok_or_else(bad)?.1;
    let (authority, pq) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    if authority.is_empty() || url.parse::<http::Uri>().is_err() {
        return Err(bad());
    }
    Ok((method, authority, if pq.is_empty() { "/" } else { pq }))
}

fn verify(a: &VerifyArgs) -> ExitCode {
    let cannot = |e: String| {
        eprintln!("intentgate token verify: {e}");
        ExitCode::from(2)
    };
    let token = if a.token == "-" {
        let mut s = String::new();
        if let Err(e) = std::io::stdin().read_to_string(&mut s) {
            return cannot(format!("standard input: {e}"));
        }
        s.trim().to_string()
    } else {
        a.token.clone()
    };
    let text = match jwks_text(&a.jwks, a.ca.as_deref()) {
        Ok(t) => t,
        Err(e) => return cannot(e),
    };
    let keys = match crate::jws::Jwks::parse(&text) {
        Ok(k) => k,
        Err(e) => return cannot(format!("{}: {e}", a.jwks)),
    };
    let binding = match (&a.method, &a.url) {
        (Some(m), Some(u)) => match request_parts(m, u) {
            Ok(parts) => Some(parts),
            Err(e) => return cannot(e),
        },
        _ => None,
    };
    let expect = Expected {
        issuer: a.issuer.as_deref(),
        audience: a.audience.as_deref(),
        request: binding,
    };
    match verify_token(&keys, &token, &expect, SystemTime::now(), a.skew) {
        Ok(claims) => {
            if binding.is_none() && claims.get("req").is_some() {
                eprintln!(
                    "intentgate token verify: note: an attestation; give --method and --url to check its request binding"
                );
            }
            println!(
                "{}",
                serde_json::to_string_pretty(&claims).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("intentgate token verify: refused ({}): {e}", e.code());
            ExitCode::FAILURE
        }
    }
}

/// The JWK Set document from a file or an https:// URL.
fn jwks_text(source: &str, ca: Option<&Path>) -> Result<Vec<u8>, String> {
    if !source.starts_with("https://") {
        return std::fs::read(source).map_err(|e| format!("{source}: {e}"));
    }
    let uri: http::Uri = source
        .parse()
        .map_err(|e| format!("--jwks '{source}': {e}"))?;
    let tls = crate::tls::fetch::trust(ca.map(|p| p.display().to_string()).as_deref())?;
    let origin = crate::tls::fetch::Origin::of(&uri, tls)?;
    let pq = uri
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_string();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let answer = runtime.block_on(origin.get(&pq, &[], 1 << 20, Duration::from_secs(10)))?;
    if !answer.status.is_success() {
        return Err(format!("{source}: HTTP {}", answer.status));
    }
    Ok(answer.body.to_vec())
}
