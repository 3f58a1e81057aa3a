//! The commands that answer without serving traffic: `check` (config, policy, Rego unit tests),
//! `explain` (would this request be allowed, and why, including where it would go), `learn
//! --from-audit` and `ca`. Their output may be cut short by a reader (`| head`): they then stop
//! printing quietly.

mod destination;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::json;

use crate::bundle::Bundle;
use crate::config::{Config, Loaded};
use crate::identity::Agent;
use crate::intent::{self, Intent, IntentSource, SessionStore};
use crate::policy::{ConnectionFacts, PolicySet, RequestFacts};
use crate::target;
use crate::vocab::{ConnectionMode, ErrorCode, Protocol, Scheme};

use destination::Destination;
pub use destination::Pinned;

/// `println!` for the commands' output, through `out`.
macro_rules! say {
    ($($t:tt)*) => {
        out(format_args!($($t)*))
    };
}

/// Prints one line to stdout. A reader that went away (`| head`: a broken pipe) ends the output
/// quietly; any other write error is reported once on stderr.
fn out(line: std::fmt::Arguments<'_>) {
    use std::sync::atomic::{AtomicBool, Ordering};
    static STOPPED: AtomicBool = AtomicBool::new(false);
    if STOPPED.load(Ordering::Relaxed) {
        return;
    }
    if let Err(e) = writeln!(std::io::stdout().lock(), "{line}") {
        STOPPED.store(true, Ordering::Relaxed);
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("intentgate: cannot write the output: {e}");
        }
    }
}

fn agent_or_exit(cfg: &Config) -> Result<Agent, ExitCode> {
    Agent::from_config(&cfg.agent, &|k| std::env::var(k).ok()).map_err(|e| {
        eprintln!("intentgate: invalid configuration: {e}");
        ExitCode::from(2)
    })
}

/// With `policy.bundle_url`, the bundle is fetched once, as `serve` would.
fn bundle(loaded: &Loaded) -> Result<Option<Arc<Bundle>>, ExitCode> {
    crate::bundle::fetch::first_blocking(&loaded.config).map_err(|e| {
        eprintln!("intentgate: policy bundle: {e}");
        ExitCode::from(2)
    })
}

/// Validates the configuration and policy (fetching the bundle when there is one), then runs the
/// Rego unit tests (`test_*` rules).
/// Exit 0 when all is well, 1 when a test fails, 2 when the config or policy is invalid.
pub fn check(loaded: &Loaded) -> ExitCode {
    let bundle = match bundle(loaded) {
        Ok(b) => b,
        Err(code) => return code,
    };
    let agent = match agent_or_exit(&loaded.config) {
        Ok(a) => a,
        Err(code) => return code,
    };
    let mut policy = match PolicySet::load_with(&loaded.config, bundle.as_deref(), &agent, true) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("intentgate: invalid policy: {e}");
            return ExitCode::from(2);
        }
    };
    say!("{}: configuration ok", loaded.source);
    say!(
        "policy ok: revision {}, {} modules, {} intents",
        policy.revision(),
        policy.modules().len(),
        policy.catalog().len()
    );
    let results = policy.run_tests();
    let failed = results.iter().filter(|r| !r.passed).count();
    for r in &results {
        let status = if r.passed { "PASS" } else { "FAIL" };
        match &r.error {
            Some(e) => say!("{status} {} ({}): {e}", r.name, r.file),
            None => say!("{status} {} ({})", r.name, r.file),
        }
    }
    say!(
        "rego tests: {} passed, {failed} failed",
        results.len() - failed
    );
    if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// What `explain` is asked about.
pub struct ExplainRequest<'a> {
    pub method: &'a str,
    pub url: &'a str,
    pub intent: Option<&'a str>,
    pub task: Option<&'a str>,
    pub headers: &'a [String],
}

/// Decides one hypothetical request and prints the decision, where it would go (resolved, with
/// `pinned` addresses first, and vetted by the egress rules as the proxy does) and the input it
/// evaluated. Exit 0 allow, 1 deny, 2 invalid config, policy or request.
pub fn explain(loaded: &Loaded, req: &ExplainRequest<'_>, pinned: &[Pinned]) -> ExitCode {
    let bundle = match bundle(loaded) {
        Ok(b) => b,
        Err(code) => return code,
    };
    let agent = match agent_or_exit(&loaded.config) {
        Ok(a) => a,
        Err(code) => return code,
    };
    let policy = match PolicySet::load_with(&loaded.config, bundle.as_deref(), &agent, false) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("intentgate: invalid policy: {e}");
            return ExitCode::from(2);
        }
    };
    let cfg = &loaded.config;
    let find = |host: &str, port: u16| {
        let d = Destination::find(cfg, host, port, pinned)?;
        if let (None, Some(note)) = (d.vetted(), d.note()) {
            eprintln!("intentgate: warning: {note}");
        }
        Ok(Some(d))
    };
    match explain_with(cfg, &agent, &policy, req, find) {
        Ok((allow, out)) => {
            say!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
            if allow {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("intentgate: {e}");
            ExitCode::from(2)
        }
    }
}

/// The decision and input for a hypothetical request, without resolving its destination (the
/// admin API's /v1/explain).
pub fn explain_json(
    cfg: &Config,
    agent: &Agent,
    policy: &PolicySet,
    req: &ExplainRequest<'_>,
) -> Result<(bool, serde_json::Value), String> {
    explain_with(cfg, agent, policy, req, |_, _| Ok(None))
}

/// The decision and input for a hypothetical request; `find` gives its destination (host, port)
/// vetted, when it can be known.
fn explain_with(
    cfg: &Config,
    agent: &Agent,
    policy: &PolicySet,
    req: &ExplainRequest<'_>,
    find: impl FnOnce(&str, u16) -> Result<Option<Destination>, String>,
) -> Result<(bool, serde_json::Value), String> {
    let uri: http::Uri = req
        .url
        .parse()
        .map_err(|e| format!("invalid URL '{}': {e}", req.url))?;
    let (scheme, default_port, mode) = match uri.scheme_str() {
        Some("http") => (Scheme::Http, 80, ConnectionMode::Forward),
        Some("https") => (Scheme::Https, 443, ConnectionMode::Intercepted),
        _ => return Err(format!("'{}' must be an http:// or https:// URL", req.url)),
    };
    let raw = uri.authority().map(|a| a.as_str()).unwrap_or_default();
    let authority = target::parse_authority(raw, Some(default_port)).map_err(|e| e.to_string())?;
    let path = target::canonical_path(uri.path()).map_err(|e| e.to_string())?;
    let mut headers = HeaderMap::new();
    for h in req.headers {
        let (k, v) = h
            .split_once(':')
            .ok_or_else(|| format!("header '{h}' must be NAME: VALUE"))?;
        let name = HeaderName::from_bytes(k.trim().to_ascii_lowercase().as_bytes())
            .map_err(|e| e.to_string())?;
        let value = HeaderValue::from_str(v.trim()).map_err(|e| e.to_string())?;
        headers.append(name, value);
    }
    let method = req.method.to_ascii_uppercase();
    let dest = find(&authority.host, authority.port)?;
    let vetted = dest.as_ref().and_then(Destination::vetted);
    let intent = match req.intent {
        Some(name) => Intent {
            name: Some(name.into()),
            task: req.task.map(str::to_string),
            source: IntentSource::Header,
            verified: false,
            claims: Default::default(),
            token: None,
            known: None,
        },
        None => intent::resolve(
            None,
            &SessionStore::default(),
            cfg.intent.as_deref().map(|i| (i, cfg.task.as_deref())),
        ),
    };
    let facts = RequestFacts {
        id: "explain",
        protocol: Protocol::Http11,
        method: &method,
        scheme,
        host: &authority.host,
        port: authority.port,
        path: Some(&path),
        query: uri.query(),
        headers: Some(&headers),
        connection: ConnectionFacts {
            mode,
            sni: None,
            intercepted: mode == ConnectionMode::Intercepted,
        },
        destination: vetted.map(|(ip, class)| (ip, class.as_str())),
        body: None,
        mcp: None,
        llm: None,
    };
    let (d, input) = policy.explain(agent, &intent, &facts);
    // An https URL is reached through an intercepted tunnel: its CONNECT is decided first, by
    // the tunnel rule (under the same intent, as if the CONNECT declared it).
    let tunnel = (mode == ConnectionMode::Intercepted).then(|| {
        let connect = RequestFacts {
            protocol: Protocol::Http11,
            method: "CONNECT",
            scheme: Scheme::Tcp,
            path: None,
            query: None,
            ..facts
        };
        policy.decide(agent, &intent, &connect)
    });
    let tunnel_refusal = tunnel.as_ref().filter(|t| t.blocks());
    let lifecycle = if cfg.agent.enforce_lifecycle {
        agent.lifecycle_violation(std::time::SystemTime::now)
    } else {
        None
    };
    // The order of the proxy: a forbidden destination is refused before the policy is asked,
    // a tunnel before the request inside it.
    let refusal = dest.as_ref().and_then(Destination::refusal);
    let overruled = refusal.is_some() || tunnel_refusal.is_some();
    let allow = d.allow && lifecycle.is_none() && !overruled;
    // What the policy alone says of the request, shown when the destination or tunnel overrules.
    let policy_view =
        overruled.then(|| json!({"allow": d.allow, "code": d.code_text(), "reasons": d.reasons}));
    let (code, reasons, hint) = match (&refusal, tunnel_refusal, lifecycle) {
        (Some(e), _, _) => (e.code().as_str(), vec![e.to_string()], e.hint()),
        (None, Some(t), _) => (t.code_text(), t.reasons.clone(), t.hint.clone()),
        (None, None, Some(r)) => (ErrorCode::AgentRefused.as_str(), vec![r], d.hint),
        (None, None, None) => (d.code_text(), d.reasons, d.hint),
    };
    let mut out = json!({
        "decision": {
            "allow": allow,
            "would_block": !allow && (overruled || d.mode == crate::config::Mode::Enforce),
            "mode": d.mode.as_str(),
            "code": code,
            "reasons": reasons,
            "hint": hint,
            "headers": d.headers.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "policy_revision": policy.revision(),
            "policy_micros": d.policy_micros,
        },
        "input": input,
    });
    if let Some(dest) = &dest {
        out["destination"] = dest.to_json();
    }
    if let Some(p) = policy_view {
        out["decision"]["policy"] = p;
    }
    if let Some(t) = &tunnel {
        out["decision"]["tunnel"] =
            json!({"allow": t.allow, "code": t.code_text(), "reasons": t.reasons});
    }
    Ok((allow, out))
}

/// `intentgate ca init`: a new CA in `out`.
pub fn ca_init(out: &Path) -> ExitCode {
    match crate::tls::ca::init(out) {
        Ok(files) => {
            say!("CA certificate: {}", files.cert.display());
            say!("CA key:         {} (mode 0600)", files.key.display());
            say!("fingerprint:    {}", files.fingerprint);
            say!(
                "next: set tls.ca_cert and tls.ca_key in your config, and give the certificate to your clients"
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("intentgate: {e}");
            ExitCode::from(2)
        }
    }
}

/// `intentgate ca show`: the CA certificate at `path`.
pub fn ca_show(path: &Path) -> ExitCode {
    match crate::tls::ca::show(path) {
        Ok(s) => {
            say!("certificate: {}", s.path.display());
            say!("fingerprint: {}", s.fingerprint);
            say!("subject:     {}", s.subject);
            say!("not after:   {}", s.not_after);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("intentgate: {e}");
            ExitCode::from(2)
        }
    }
}

/// `intentgate learn --from-audit FILE… --out FILE [--generalise [MIN]]`.
pub fn learn(from_audit: &[PathBuf], out: &Path, generalise: Option<u32>) -> ExitCode {
    let log = match crate::audit::AuditLog::read(from_audit) {
        Ok(log) => log,
        Err(e) => {
            eprintln!("intentgate: {e}");
            return ExitCode::from(2);
        }
    };
    let catalog = crate::learn::Catalog::learn(&log, crate::learn::Options { generalise });
    let files: Vec<String> = from_audit.iter().map(|p| p.display().to_string()).collect();
    if let Err(e) = catalog.write(out, &files.join(", ")) {
        eprintln!("intentgate: {e}");
        return ExitCode::FAILURE;
    }
    eprintln!(
        "intentgate: {} records from {} files",
        log.records.len() + log.unreadable,
        files.len()
    );
    eprint!("{}", crate::learn::describe(&log.records));
    eprintln!("intentgate: {}", catalog.outcome(out));
    ExitCode::SUCCESS
}
