//! Who the agent is: built once at load from the config, the Kubernetes downward API and flags.
//! Identity never comes from the agent's own requests.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::Serialize;

use crate::config::AgentConfig;

/// The agent behind this sidecar.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Agent {
    pub id: String,
    pub namespace: Option<String>,
    pub service_account: Option<String>,
    pub owner: Option<String>,
    pub spiffe_id: Option<String>,
    pub labels: BTreeMap<String, String>,
    #[serde(skip)]
    pub expires: Option<SystemTime>,
    /// `expires` as written, for the policy input and the audit log.
    #[serde(rename = "expires")]
    pub expires_text: Option<String>,
}

impl Agent {
    /// Builds the identity. Explicit config values (CLI flags are already written into the config)
    /// win over the environment (`POD_NAME`, `POD_NAMESPACE`, `POD_SERVICE_ACCOUNT`,
    /// `INTENTGATE_AGENT_ID`); outside Kubernetes (no `POD_NAMESPACE`) the owner defaults to `$USER`.
    pub fn from_config(
        cfg: &AgentConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, String> {
        let nonempty = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
        let in_k8s = nonempty(env("POD_NAMESPACE")).is_some();
        let namespace = nonempty(cfg.namespace.clone()).or_else(|| nonempty(env("POD_NAMESPACE")));
        let service_account =
            nonempty(cfg.service_account.clone()).or_else(|| nonempty(env("POD_SERVICE_ACCOUNT")));
        let id = nonempty(cfg.id.clone())
            .or_else(|| nonempty(env("INTENTGATE_AGENT_ID")))
            .or_else(|| service_account.clone())
            .or_else(|| nonempty(env("POD_NAME")))
            .unwrap_or_else(|| "local-agent".to_string());
        let owner = nonempty(cfg.owner.clone())
            .or_else(|| if in_k8s { None } else { nonempty(env("USER")) });
        let spiffe_id = match (&namespace, &service_account) {
            (Some(ns), Some(sa)) => Some(format!("spiffe://{}/ns/{ns}/sa/{sa}", cfg.trust_domain)),
            _ => None,
        };
        let expires = match &cfg.expires {
            Some(text) => Some(
                humantime::parse_rfc3339_weak(text)
                    .map_err(|e| format!("agent.expires '{text}' is not an RFC 3339 time: {e}"))?,
            ),
            None => None,
        };
        Ok(Self {
            id,
            namespace,
            service_account,
            owner,
            spiffe_id,
            labels: cfg.labels.clone(),
            expires,
            expires_text: cfg.expires.clone(),
        })
    }

    /// Why this agent must be refused all egress, if it must: no owner, or past `expires`.
    pub fn lifecycle_violation(&self, now: SystemTime) -> Option<String> {
        if self.owner.is_none() {
            return Some(format!(
                "agent '{}' has no owner; every agent must have an accountable owner (agent.owner or --owner)",
                self.id
            ));
        }
        match (self.expires, &self.expires_text) {
            (Some(exp), Some(text)) if now >= exp => {
                Some(format!("agent '{}' expired at {text}", self.id))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn kubernetes_env_and_config_precedence() {
        let cfg = AgentConfig::default();
        let a = Agent::from_config(
            &cfg,
            &env(&[
                ("POD_NAMESPACE", "support"),
                ("POD_SERVICE_ACCOUNT", "support-bot"),
                ("USER", "alice"),
            ]),
        )
        .unwrap();
        assert_eq!(a.id, "support-bot");
        assert_eq!(a.namespace.as_deref(), Some("support"));
        assert_eq!(
            a.spiffe_id.as_deref(),
            Some("spiffe://cluster.local/ns/support/sa/support-bot")
        );
        assert_eq!(
            a.owner, None,
            "inside Kubernetes the owner must be declared"
        );

        let cfg = AgentConfig {
            id: Some("bot".into()),
            namespace: Some("dev".into()),
            ..AgentConfig::default()
        };
        let a = Agent::from_config(&cfg, &env(&[("POD_NAMESPACE", "other"), ("USER", "alice")]))
            .unwrap();
        assert_eq!(
            (a.id.as_str(), a.namespace.as_deref()),
            ("bot", Some("dev"))
        );
        let local =
            Agent::from_config(&AgentConfig::default(), &env(&[("USER", "alice")])).unwrap();
        assert_eq!(local.owner.as_deref(), Some("alice"));
        assert_eq!(local.id, "local-agent");
    }

    #[test]
    fn lifecycle() {
        let now = SystemTime::now();
        let cfg = AgentConfig {
            owner: Some("team".into()),
            expires: Some("2020-01-01T00:00:00Z".into()),
            ..AgentConfig::default()
        };
        let a = Agent::from_config(&cfg, &env(&[])).unwrap();
        assert!(a.lifecycle_violation(now).unwrap().contains("expired"));
        let cfg = AgentConfig {
            expires: Some("2999-01-01T00:00:00Z".into()),
            ..cfg
        };
        assert!(
            Agent::from_config(&cfg, &env(&[]))
                .unwrap()
                .lifecycle_violation(now)
                .is_none()
        );
        let ownerless = Agent::from_config(&AgentConfig::default(), &env(&[])).unwrap();
        assert!(
            ownerless
                .lifecycle_violation(now)
                .unwrap()
                .contains("no owner")
        );
        let bad = AgentConfig {
            expires: Some("tomorrow".into()),
            ..AgentConfig::default()
        };
        assert!(Agent::from_config(&bad, &env(&[])).is_err());
    }
}
