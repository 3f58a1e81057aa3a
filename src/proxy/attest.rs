//! Attestation out: after the decision, a forwarded request (plain or intercepted) under an
//! intent that attests (`attestation.enabled`, or `intents.X.attest`) gets a signed statement
//! of what was vetted (src/token/attest.rs) in `attestation.header`: the agent, the intent, the
//! task and `sub` of its intent token, the decision id, the policy revision, and a binding to
//! the method, authority (the Host sent upstream) and path-and-query. The public key is served
//! at `GET /.well-known/jwks.json` on the admin listener. One Ed25519 signature per request.

use std::time::SystemTime;

use http::{HeaderName, HeaderValue};

use super::gate::LivePolicy;
use crate::audit::AuditRecord;
use crate::config::AttestationConfig;
use crate::error::ProxyError;
use crate::identity::Agent;
use crate::intent::Intent;
use crate::token::attest::{Attester, Statement};
use crate::token::mint::SigningKey;
use crate::vocab::ErrorCode;

/// The signer and where its statements go.
#[derive(Debug)]
pub(crate) struct Attestation {
    attester: Attester,
    header: HeaderName,
    /// Every request, not only those of intents with `attest: true`.
    all: bool,
}

impl Attestation {
    /// Loads `attestation.key_file`, or makes a key (it then lives as long as the process).
    pub(crate) fn new(cfg: &AttestationConfig, agent: &Agent) -> Result<Self, String> {
        let key = match &cfg.key_file {
            Some(f) => {
                let text = std::fs::read(f)
                    .map_err(|e| format!("attestation.key_file: {}: {e}", f.display()))?;
                SigningKey::from_pem(&text)
                    .map_err(|e| format!("attestation.key_file: {}: {e}", f.display()))?
            }
            None => SigningKey::generate_ed25519()?.0,
        };
        let issuer = cfg
            .issuer
            .clone()
            .or_else(|| agent.spiffe_id.clone())
            .unwrap_or_else(|| agent.id.clone());
        let attester = Attester::new(key, issuer, cfg.ttl_seconds)
            .map_err(|e| format!("attestation.key_file: {e}"))?;
        Ok(Attestation {
            attester,
            header: HeaderName::from_bytes(cfg.header.as_bytes())
                .map_err(|_| format!("attestation.header: '{}' is not valid", cfg.header))?,
            all: cfg.enabled,
        })
    }

    /// The request header it is sent in (stripped from what the agent sends).
    pub(crate) fn header(&self) -> &HeaderName {
        &self.header
    }

    /// The JWK Set upstreams verify with.
    pub(crate) fn jwks(&self) -> serde_json::Value {
        self.attester.jwks()
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
        let attests = |n: &str| live.policy.catalog().attests(n);
        if !(a.all || intent.name.as_deref().is_some_and(attests)) {
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
        let signed = a
            .attester
            .header_value(&statement, SystemTime::now())
            .ok()
            .and_then(|v| HeaderValue::try_from(v).ok());
        let Some(value) = signed else {
            return Err(ProxyError::Denied {
                code: ErrorCode::AttestationFailed,
                reason: "the request's attestation could not be signed; it is not forwarded \
                         without one"
                    .into(),
                hint: "retry; if it persists, check attestation.key_file".into(),
                agent: agent.id.clone(),
                intent: intent.name.clone(),
            });
        };
        req.headers_mut().insert(a.header.clone(), value);
        Ok(())
    }
}
