//! OAuth 2.0 token sources: client credentials (RFC 6749 4.4) and token exchange (RFC 8693).

use std::sync::Arc;

use super::Secret;
use crate::config::{CredentialSpec, ExchangeScope};
use crate::metrics::Metrics;

/// The tokens of one OAuth 2.0 credential.
pub(super) struct Tokens;

impl Tokens {
    pub(super) fn new(
        name: &str,
        _spec: &CredentialSpec,
        _tls: &crate::tls::Tls,
        _metrics: &Arc<Metrics>,
    ) -> Result<Self, String> {
        Err(format!(
            "credentials.{name}: OAuth 2.0 sources are not supported yet"
        ))
    }

    pub(super) async fn current(&self, _scope: &ExchangeScope) -> Result<Arc<Secret>, String> {
        Err("not supported".into())
    }
}
