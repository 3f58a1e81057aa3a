//! Who the agent is: identity facts from config, then the environment (the Kubernetes downward
//! API, or outside Kubernetes the user running it), and the lifecycle checks that refuse an
//! ownerless or expired agent all egress.

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
    /// Where `owner` came from (`None` when there is no owner).
    pub owner_source: Option<OwnerSource>,
    pub spiffe_id: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// After this instant the agent is refused all egress (when lifecycle is enforced).
    #[serde(serialize_with = "ser_expires")]
    pub expires: Option<SystemTime>,
}

/// Where the agent's owner came from: the config (or `--owner`), or, outside Kubernetes, the user
/// running intentgate — `$USER`, else `$LOGNAME`, else the account name of the process's uid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OwnerSource {
    Config,
    EnvUser,
    EnvLogname,
    Account,
}

impl OwnerSource {
    /// The name used in the policy input (`agent.owner_source`) and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            OwnerSource::Config => "config",
            OwnerSource::EnvUser => "env_user",
            OwnerSource::EnvLogname => "env_logname",
            OwnerSource::Account => "account",
        }
    }

    /// Where it came from, in words (for `run`'s summary).
    pub fn describe(self) -> &'static str {
        match self {
            OwnerSource::Config => "from the config",
            OwnerSource::EnvUser => "from $USER",
            OwnerSource::EnvLogname => "from $LOGNAME",
            OwnerSource::Account => "the account name of this process's uid",
        }
    }
}

/// The account name of the process's real uid, from `/etc/passwd` (containers run with no
/// `$USER`; an account known only to NSS, e.g. LDAP, is not found here).
fn account_name() -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    account_in(&passwd, rustix::process::getuid().as_raw())
}

fn account_in(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|line| {
        let mut f = line.split(':');
        let (name, _, id) = (f.next()?, f.next()?, f.next()?);
        (id.parse() == Ok(uid) && !name.is_empty() && !name.starts_with(['#', '+', '-']))
            .then(|| name.to_string())
    })
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
    /// Builds the identity: explicit config values (flags are already written into the config)
    /// win over the environment (`INTENTGATE_AGENT_ID`, `POD_NAME`, `POD_NAMESPACE`,
    /// `POD_SERVICE_ACCOUNT`); outside Kubernetes (no `POD_NAMESPACE`) the owner defaults to
    /// `$USER`, then `$LOGNAME`, then the account name of the uid (see `OwnerSource`).
    pub fn from_config(
        cfg: &AgentConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, IdentityError> {
        Self::from_parts(cfg, env, &account_name)
    }

    fn from_parts(
        cfg: &AgentConfig,
        env: &dyn Fn(&str) -> Option<String>,
        account: &dyn Fn() -> Option<String>,
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
        // In Kubernetes the user a container runs as says nothing about who answers for it.
        let local = pod_namespace.is_none();
        let (owner, owner_source) = match given(&cfg.owner) {
            Some(o) => (Some(o), Some(OwnerSource::Config)),
            None if local => [
                (env("USER"), OwnerSource::EnvUser),
                (env("LOGNAME"), OwnerSource::EnvLogname),
            ]
            .into_iter()
            .find_map(|(v, src)| v.map(|v| (v, src)))
            .or_else(|| account().map(|a| (a, OwnerSource::Account)))
            .map_or((None, None), |(o, src)| (Some(o), Some(src))),
            None => (None, None),
        };
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
            owner_source,
            spiffe_id,
            labels: cfg.labels.clone(),
            expires,
        })
    }

    /// Why this agent must be refused all egress, if it must: it has no owner, or it is past
    /// `expires`. Callers consult `AgentConfig::enforce_lifecycle`. The clock is read only for
    /// an agent that expires.
    pub fn lifecycle_violation(&self, now: impl FnOnce() -> SystemTime) -> Option<String> {
        if self.owner.is_none() {
            return Some(format!(
                "agent '{}' has no owner: every agent needs someone who answers for it \
                 (set agent.owner in the config, or --owner)",
                self.id
            ));
        }
        match self.expires {
            Some(at) if now() >= at => Some(format!(
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
            a.lifecycle_violation(SystemTime::now)
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
    fn owner_falls_back_to_logname_then_the_account_of_the_uid() {
        let none = || None;
        let cfg = AgentConfig::default();
        let from = |env: &'static [(&'static str, &'static str)],
                    acct: &dyn Fn() -> Option<String>| {
            let a = Agent::from_parts(&cfg, &env_of(env), acct).unwrap();
            (a.owner, a.owner_source)
        };
        let bob = || Some("bob".to_string());
        assert_eq!(
            from(&[("USER", "alice"), ("LOGNAME", "al")], &bob),
            (Some("alice".into()), Some(OwnerSource::EnvUser))
        );
        assert_eq!(
            from(&[("USER", " "), ("LOGNAME", "al")], &bob),
            (Some("al".into()), Some(OwnerSource::EnvLogname))
        );
        assert_eq!(
            from(&[], &bob),
            (Some("bob".into()), Some(OwnerSource::Account))
        );
        assert_eq!(from(&[], &none), (None, None));
        // Not in Kubernetes, and not over an owner the config names.
        assert_eq!(from(&[("POD_NAMESPACE", "ns")], &bob), (None, None));
        let named = AgentConfig {
            owner: Some("team".into()),
            ..AgentConfig::default()
        };
        let a = Agent::from_parts(&named, &env_of(&[("USER", "alice")]), &bob).unwrap();
        assert_eq!(a.owner_source, Some(OwnerSource::Config));
    }

    #[test]
    fn account_names_are_read_from_passwd_lines() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\n# comment:x:5\nnobody:x:65534:65534::/:/usr/sbin/nologin\n";
        assert_eq!(account_in(passwd, 0).as_deref(), Some("root"));
        assert_eq!(account_in(passwd, 65534).as_deref(), Some("nobody"));
        assert_eq!(account_in(passwd, 1000), None);
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
        assert_eq!(a.lifecycle_violation(|| at - Duration::from_secs(1)), None);
        let why = a
            .lifecycle_violation(|| at + Duration::from_secs(1))
            .unwrap();
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
