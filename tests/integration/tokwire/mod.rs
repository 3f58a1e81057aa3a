//! Signed intent tokens wired into the proxy: a token in the request header, on the session
//! (`PUT /v1/intent {"token"}`) or given to `run --intent-token` declares the intent; each way a
//! token can fail is its own 403; a bare name is refused where a token is required or where it
//! contradicts the token; narrowing claims narrow; the verified claims reach Rego
//! (`input.intent.token`); the token never reaches the upstream, the logs or the audit.
//! Tokens are minted by `intentgate token mint` and by PyPI PyJWT (tests/clients/pyjwt_tokens.py).
//! Attestations (`attestation:`) are verified by an upstream written with PyJWT (`attest`).

mod attest;
mod jwks_url;
mod tokens;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::common::*;

pub const PY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/pyjwt_tokens.py");
pub const ISS: &str = "https://orchestrator.example";
pub const AGENT: &str = "test-agent";
pub const HEADER: &str = "intentgate-intent-token";

pub fn now() -> u64 {
    crate::issuer::now()
}

/// `intentgate token mint` for `intent` as our issuer and agent, signed with `key`.
pub fn mint_with(key: &Path, intent: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "token",
        "mint",
        "--key",
        p(key),
        "--intent",
        intent,
        "--agent",
        AGENT,
        "--ttl",
        "5m",
        "--issuer",
        ISS,
    ];
    args.extend_from_slice(extra);
    let (code, out, err) = run_cli(&args);
    assert_eq!(code, 0, "{err}");
    out.trim().to_string()
}

pub fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A proxy whose issuer `ISS` signs with an Ed25519 key made by `intentgate token keygen`, and
/// a PyJWT key (`py/`, RS256) of an issuer it does not know.
pub struct Env {
    pub up: Upstream,
    pub proxy: ProxyProc,
    pub keys: tempfile::TempDir,
    pub key: PathBuf,
    pub revoked: PathBuf,
}

impl Env {
    /// `extra` is appended to the config (e.g. `attestation:`).
    pub fn start(extra: &str) -> Self {
        Self::start_with(extra, "")
    }

    /// `intents` are more entries of the catalog (YAML, indented by two spaces).
    pub fn start_with(extra: &str, intents: &str) -> Self {
        let keys = tempfile::tempdir().unwrap();
        let key = keys.path().join("iss.pem");
        let (code, jwks, err) = run_cli(&["token", "keygen", "--out", p(&key)]);
        assert_eq!(code, 0, "{err}");
        let jwks_file = keys.path().join("iss.jwks.json");
        std::fs::write(&jwks_file, jwks).unwrap();
        let revoked = keys.path().join("revoked.txt");
        std::fs::write(&revoked, "# revoked jti\n").unwrap();
        let py_dir = keys.path().join("py");
        std::fs::create_dir(&py_dir).unwrap();
        py(&["keygen", "RS256", p(&py_dir)]);
        let rego = keys.path().join("sub.rego");
        // Rego reads the verified claims: a write needs the principal the task is done for.
        std::fs::write(
            &rego,
            "package intentgate\nimport rego.v1\n\
             deny contains \"write-issues needs a token naming its sub\" if {\n\
             \tinput.intent.name == \"write-issues\"\n\tnot input.intent.token.sub\n}\n",
        )
        .unwrap();
        let up = Upstream::start();
        let port = up.addr.port();
        let yaml = format!(
            "mode: enforce\n\
             policy: {{paths: [\"{rego}\"]}}\n\
             intent_tokens:\n  issuers: [{{issuer: \"{ISS}\", jwks_file: \"{jwks}\"}}]\n  revoked: \"{revoked}\"\n\
             intents:\n\
             \x20 read-issues:\n    allow: [{{hosts: [localhost], ports: [{port}], methods: [GET], paths: [\"/issues/**\"]}}]\n\
             \x20 write-issues:\n    requires_token: true\n\
             \x20   allow: [{{hosts: [localhost], ports: [{port}], methods: [GET, POST], paths: [\"/issues/**\"]}}]\n\
             {intents}{extra}",
            rego = rego.display(),
            jwks = jwks_file.display(),
            revoked = revoked.display(),
        );
        let proxy = ProxyProc::start(&yaml);
        Env {
            up,
            proxy,
            keys,
            key,
            revoked,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://localhost:{}{path}", self.up.addr.port())
    }

    /// `intentgate token mint` with our issuer's key.
    pub fn mint(&self, intent: &str, extra: &[&str]) -> String {
        mint_with(&self.key, intent, extra)
    }

    /// A token PyJWT signs with the unknown `py/` RS256 key (claims as given).
    pub fn py_mint(&self, claims: Value) -> String {
        py(&[
            "mint",
            p(&self.keys.path().join("py")),
            "RS256",
            &claims.to_string(),
        ])
    }

    /// curl through the proxy with the headers given.
    pub fn get(&self, method: &str, path: &str, headers: &[String]) -> CurlOut {
        let mut args = vec![
            "-x".to_string(),
            self.proxy.url(),
            "-X".into(),
            method.into(),
        ];
        for h in headers {
            args.push("-H".into());
            args.push(h.clone());
        }
        args.push(self.url(path));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        curl(&args)
    }
}

pub fn py(args: &[&str]) -> String {
    let out = Command::new("python3").arg(PY).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub fn tok(t: &str) -> String {
    format!("{HEADER}: {t}")
}

pub fn refused(out: &CurlOut, code: &str, token: &str) -> Value {
    assert_eq!(out.status, 403, "{code}: {out:?}");
    let j = out.json();
    assert_eq!(error_code(&j), code, "{j}");
    assert!(j["decision_id"].is_string() && j["hint"].is_string(), "{j}");
    assert!(
        !out.body.contains(token),
        "the refusal echoes the token: {j}"
    );
    j
}

/// Everything intentgate wrote (debug log, audit) and what the upstream saw.
pub fn assert_never_leaked(env: &Env, tokens: &[&str]) {
    let audit = std::fs::read_to_string(env.proxy.dir.path().join("audit.log")).unwrap();
    let (out, err) = (env.proxy.stdout(), env.proxy.stderr());
    for t in tokens {
        // Its payload part (unique: each token has a random jti) finds a leaked token.
        let sig = t.split('.').nth(1).unwrap();
        assert!(!audit.contains(sig), "a token is in the audit log");
        assert!(
            !out.contains(sig) && !err.contains(sig),
            "a token is in the log"
        );
        for seen in env.up.seen() {
            assert!(
                seen.headers.iter().all(|(_, v)| !v.contains(sig)),
                "a token reached the upstream: {seen:?}"
            );
        }
    }
}
