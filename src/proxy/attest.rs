//! Attestation out: after the decision, a forwarded request (plain or intercepted) under an
//! intent that attests (`attestation.enabled`, or `intents.X.attest`) gets a signed statement
//! of what was vetted (src/token/attest.rs) in `attestation.header`: the agent, the intent, the
//! task and `sub` of its intent token, the decision id, the policy revision, and a binding to
//! the method, authority (the Host sent upstream) and path-and-query. The public key is served
//! at `GET /.well-known/jwks.json` on the admin listener. One Ed25519 signature per request.
//! A changed `attestation.key_file` is taken at the next request (looked at once a second): the
//! `kid` changes, and the replaced public key stays in the JWK Set until the attestations it
//! signed have expired (a broken new file keeps the key in use).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use http::{HeaderName, HeaderValue};
use serde_json::Value;

use super::gate::LivePolicy;
use crate::audit::AuditRecord;
use crate::config::AttestationConfig;
use crate::error::ProxyError;
use crate::identity::Agent;
use crate::intent::Intent;
use crate::token::attest::{Attester, Statement};
use crate::token::claims::unix;
use crate::token::keys::{Watched, parse_ed25519};
use crate::token::mint::SigningKey;
use crate::vocab::ErrorCode;

/// How long a replaced key's public half stays in the JWK Set beyond the attestation lifetime:
/// the clock skew an upstream may allow.
const RETIRED_EXTRA: Duration = Duration::from_secs(60);

/// The signer and where its statements go.
pub(crate) struct Attestation {
    attester: ArcSwap<Attester>,
    /// `attestation.key_file`, looked at for a change at most once a second.
    key_file: Option<Watched<SigningKey>>,
    /// Unix second at or after which `key_file` is looked at again.
    next_look: AtomicU64,
    /// Public keys replaced by a rotation, served until the attestations they signed expire.
    retired: Mutex<Vec<(Value, Instant)>>,
    header: HeaderName,
    /// Every request, not only those of intents with `attest: true`.
    all: bool,
}

impl std::fmt::Debug for Attestation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attestation")
            .field("header", &self.header)
            .field("all", &self.all)
            .finish_non_exhaustive()
    }
}

impl Attestation {
    /// Loads `attestation.key_file`, or makes a key (it then lives as long as the process).
    pub(crate) fn new(cfg: &AttestationConfig, agent: &Agent) -> Result<Self, String> {
        let key_file = match &cfg.key_file {
            Some(f) => Some(
                Watched::load(f, parse_ed25519)
                    .map_err(|e| format!("attestation.key_file: {e}"))?,
            ),
            None => None,
        };
        let key = match &key_file {
            Some(w) => w.get(),
            None => Arc::new(SigningKey::generate_ed25519()?.0),
        };
        let issuer = cfg
            .issuer
            .clone()
            .or_else(|| agent.spiffe_id.clone())
            .unwrap_or_else(|| agent.id.clone());
        let attester = Attester::new(key, issuer, cfg.ttl_seconds)
            .map_err(|e| format!("attestation.key_file: {e}"))?;
        Ok(Attestation {
            attester: ArcSwap::from_pointee(attester),
            key_file,
            next_look: AtomicU64::new(0),
            retired: Mutex::new(Vec::new()),
            header: HeaderName::from_bytes(cfg.header.as_bytes())
                .map_err(|_| format!("attestation.header: '{}' is not valid", cfg.header))?,
            all: cfg.enabled,
        })
    }

    /// The request header it is sent in (stripped from what the agent sends).
    pub(crate) fn header(&self) -> &HeaderName {
        &self.header
    }

    /// The JWK Set upstreams verify with: the key in use and those it replaced whose
    /// attestations may still be valid.
    pub(crate) fn jwks(&self) -> serde_json::Value {
        self.look(unix(SystemTime::now()));
        let mut jwks = self.attester.load().jwks();
        let now = Instant::now();
        if let (Some(keys), Ok(mut retired)) = (jwks["keys"].as_array_mut(), self.retired.lock()) {
            retired.retain(|(_, until)| *until > now);
            keys.extend(retired.iter().map(|(jwk, _)| jwk.clone()));
        }
        jwks
    }

    /// Takes a changed `key_file` (at most one look a second); a file that does not hold an
    /// Ed25519 key keeps the key in use (logged by `Watched`). The replaced key's public half
    /// stays in the JWK Set for the attestations it signed.
    fn look(&self, now: u64) {
        let Some(file) = &self.key_file else { return };
        let due = self.next_look.load(Ordering::Relaxed);
        if now < due
            || self
                .next_look
                .compare_exchange(due, now + 1, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
            || !file.refresh()
        {
            return;
        }
        let old = self.attester.load_full();
        let Ok(new) = old.with_key(file.get()) else {
            return;
        };
        let until = Instant::now() + Duration::from_secs(old.ttl()) + RETIRED_EXTRA;
        if let Ok(mut retired) = self.retired.lock() {
            // A key is listed once: the same file again, or a key rotated back, is not retired.
            let (old_jwks, new_jwks) = (old.jwks(), new.jwks());
            let kid = &new_jwks["keys"][0]["kid"];
            retired.retain(|(jwk, _)| jwk["kid"] != *kid);
            let old_keys = old_jwks["keys"].as_array().into_iter().flatten();
            retired.extend(
                old_keys
                    .filter(|jwk| jwk["kid"] != *kid)
                    .map(|jwk| (jwk.clone(), until)),
            );
        }
        self.attester.store(Arc::new(new));
        tracing::info!("attestation: signing key rotated (attestation.key_file changed)");
    }
}

impl super::Proxy {
    /// Adds the attestation of a request let go under `intent` (its record `rec`, to `host`,
    /// `pq` forwarded), if it is to carry one. A statement that cannot be signed stops the
    /// request (fail closed).
    pub(super) fn attest<B>(
        &self,
        req: &mut http::Request<B>,
        live: &LivePolicy,
        intent: &Intent,
        rec: &AuditRecord,
        host: &str,
        pq: &str,
    ) -> Result<(), ProxyError> {
        let a = &self.attestation;
        if !(a.all || live.policy.catalog().intent_attests(intent)) {
            return Ok(());
        }
        let agent = &live.agent;
        let authority = req
            .headers()
            .get(http::header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or(host);
        let statement = Statement {
            sub: agent.spiffe_id.as_deref().unwrap_or(&agent.id),
            aud: host,
            intent: intent.name.as_deref(),
            task: intent.task.as_deref(),
            token_sub: intent.token.as_ref().and_then(|t| t.sub.as_deref()),
            decision_id: &rec.decision_id,
            policy_revision: &rec.policy_revision,
            method: req.method().as_str(),
            authority,
            path_and_query: pq,
        };
        let now = SystemTime::now();
        a.look(unix(now));
        let signed = a
            .attester
            .load()
            .header_bytes(&statement, now)
            .ok()
            .and_then(|v| HeaderValue::from_maybe_shared(bytes::Bytes::from(v)).ok());
        let Some(value) = signed else {
            return Err(ProxyError::Denied {
                code: ErrorCode::AttestationFailed,
                reason: "the request's attestation could not be signed; it is not forwarded \
                         without one"
                    .into(),
                hint: "retry; if it persists, check attestation.key_file".into(),
                agent: agent.id.clone(),
                intent: intent.name.as_deref().map(str::to_string),
            });
        };
        req.headers_mut().insert(a.header.clone(), value);
        Ok(())
    }
}
