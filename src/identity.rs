//! Who the agent is: identity facts from config, then the environment (the Kubernetes downward
//! API), and the lifecycle checks that refuse an ownerless or expired agent all egress.

use std::collections::BTreeMap;
use std::time::SystemTime;

use crate::config::AgentConfig;

/// The agent intentgate speaks for. Built once at start-up (and on reload).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Agent {
    pub id: String,
    pub namespace: Option<String>,
    pub service_account: Option<String>,
    pub owner: Option<String>,
    pub spiffe_id: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// After this instant the agent is refused all egress (when lifecycle is enforced).
    #[serde(serialize_with = "ser_expires")]
    pub expires: Option<SystemTime>,
}

/// An identity that cannot be built from the configuration.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("agent.expires: '{value}' is not an RFC 3339 time (e.g. 2027-06-30T00:00:00Z): {msg}")]
    Expires { value: String, msg: String },
}

fn ser_expires<S: serde::Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.collect_str(&humantime::format_rfc3339_seconds(*t)),
        None => s.serialize_none(),
    }
}

/// The id used when neither config, flags nor environment name the agent.
pub const UNNAMED: &str = "unnamed-agent";

impl Agent {
    /// Builds the identity from the process environment.
    pub fn from_env(cfg: &AgentConfig) -> Result<Self, IdentityError> {
        Self::from_config(cfg, &|k| std::env::var(k).ok())
    }

    /// Builds the identity: explicit config values (flags are already written into the config)
    /// win over the environment (`INTENTGATE_AGENT_ID`, `POD_NAME`, `POD_NAMESPACE`,
    /// `POD_SERVICE_ACCOUNT`); outside Kubernetes (no `POD_NAMESPACE`) the owner defaults to `$USER`.
    pub fn from_config(
        cfg: &AgentConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, IdentityError> {
        let env = |k: &str| {
            env(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let given = |v: &Option<String>| {
            v.as_ref()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        };
        let pod_namespace = env("POD_NAMESPACE");
        let id = given(&cfg.id)
            .or_else(|| env("INTENTGATE_AGENT_ID"))
            .or_else(|| env("POD_NAME"))
            .unwrap_or_else(|| UNNAMED.to_string());
        let namespace = given(&cfg.namespace).or_else(|| pod_namespace.clone());
        let service_account = given(&cfg.service_account).or_else(|| env("POD_SERVICE_ACCOUNT"));
        let owner = given(&cfg.owner).or_else(|| {
            if pod_namespace.is_none() {
                env("USER")
            } else {
                None
            }
        });
        let spiffe_id = match (&namespace, &service_account) {
            (Some(ns), Some(sa)) => Some(format!(
                "spiffe://{}/ns/{ns}/sa/{sa}",
                cfg.trust_domain.trim_end_matches('/')
            )),
            _ => None,
        };
        let expires = match &cfg.expires {
            None => None,
            Some(raw) => Some(humantime::parse_rfc3339_weak(raw.trim()).map_err(|e| {
                IdentityError::Expires {
                    value: raw.clone(),
                    msg: e.to_string(),
                }
            })?),
        };
        Ok(Agent {
            id,
            namespace,
            service_account,
            owner,
            spiffe_id,
            labels: cfg.labels.clone(),
            expires,
        })
    }

    /// Why this agent must be refused all egress, if it must: it has no owner, or it is past
    /// `expires`. Callers consult `AgentConfig::enforce_lifecycle`.
    pub fn lifecycle_violation(&self, now: SystemTime) -> Option<String> {
        if self.owner.is_none() {
            return Some(format!(
                "agent '{}' has no owner: every agent needs someone who answers for it \
                 (set agent.owner in the config)",
                self.id
            ));
        }
        match self.expires {
            Some(at) if now >= at => Some(format!(
                "agent '{}' expired at {}: its owner must renew it (agent.expires)",
                self.id,
                humantime::format_rfc3339_seconds(at)
            )),
            _ => None,
        }
    }

    /// `expires` as RFC 3339, for the policy input and logs.
    pub fn expires_rfc3339(&self) -> Option<String> {
        self.expires
            .map(|t| humantime::format_rfc3339_seconds(t).to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn kubernetes_env_fills_what_config_leaves_out() {
        let cfg = AgentConfig::default();
        let env = env_of(&[
            ("POD_NAME", "bot-7f9"),
            ("POD_NAMESPACE", "support"),
            ("POD_SERVICE_ACCOUNT", "support-bot"),
            ("USER", "alice"),
        ]);
        let a = Agent::from_config(&cfg, &env).unwrap();
        assert_eq!(a.id, "bot-7f9");
        assert_eq!(a.namespace.as_deref(), Some("support"));
        assert_eq!(
            a.spiffe_id.as_deref(),
            Some("spiffe://cluster.local/ns/support/sa/support-bot")
        );
        // In Kubernetes $USER is not an owner.
        assert_eq!(a.owner, None);
        assert!(
            a.lifecycle_violation(SystemTime::now())
                .unwrap()
                .contains("no owner")
        );
    }

    #[test]
    fn config_wins_over_env_and_user_is_owner_outside_kubernetes() {
        let cfg = AgentConfig {
            id: Some("support-bot".into()),
            namespace: Some("team".into()),
            ..AgentConfig::default()
        };
        let env = env_of(&[("INTENTGATE_AGENT_ID", "other"), ("USER", "alice")]);
        let a = Agent::from_config(&cfg, &env).unwrap();
        assert_eq!(a.id, "support-bot");
        assert_eq!(a.owner.as_deref(), Some("alice"));
        assert_eq!(a.spiffe_id, None, "no service account, no SPIFFE id");
        let a = Agent::from_config(
            &AgentConfig::default(),
            &env_of(&[("INTENTGATE_AGENT_ID", "x")]),
        )
        .unwrap();
        assert_eq!(a.id, "x");
        let a = Agent::from_config(&AgentConfig::default(), &env_of(&[])).unwrap();
        assert_eq!(a.id, UNNAMED);
    }

    #[test]
    fn expiry_is_parsed_and_enforced() {
        let cfg = AgentConfig {
            owner: Some("team".into()),
            expires: Some("2027-06-30T00:00:00Z".into()),
            ..AgentConfig::default()
        };
        let a = Agent::from_config(&cfg, &env_of(&[])).unwrap();
        let at = a.expires.unwrap();
        assert_eq!(a.lifecycle_violation(at - Duration::from_secs(1)), None);
        let why = a.lifecycle_violation(at + Duration::from_secs(1)).unwrap();
        assert!(why.contains("expired at 2027-06-30T00:00:00Z"), "{why}");
        let bad = AgentConfig {
            expires: Some("next tuesday".into()),
            ..AgentConfig::default()
        };
        let err = Agent::from_config(&bad, &env_of(&[]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("agent.expires") && err.contains("next tuesday"),
            "{err}"
        );
    }
}
