//! Tests of the live policy's shared intent names.

use std::sync::Arc;

use super::LivePolicy;
use crate::config::{Config, IntentSpec, ScopeRule};
use crate::identity::Agent;
use crate::policy::PolicySet;

fn live(default: Option<&str>) -> LivePolicy {
    let mut cfg = Config::default();
    for name in ["triage", "watch"] {
        cfg.intents.insert(
            name.into(),
            IntentSpec {
                allow: vec![ScopeRule {
                    hosts: vec![format!("{name}.example.com")],
                    ..ScopeRule::default()
                }],
                ..IntentSpec::default()
            },
        );
    }
    let agent = Agent {
        id: "bot".into(),
        namespace: None,
        service_account: None,
        owner: Some("team".into()),
        owner_source: None,
        spiffe_id: None,
        labels: Default::default(),
        expires: None,
    };
    let policy = PolicySet::load(&cfg, &agent).unwrap();
    LivePolicy::new(policy, agent, default.map(|d| (d.to_string(), None)))
}

/// The default intent's name, found once, is what the catalog shares for it; every other name
/// is looked up as before.
#[test]
fn names_are_shared_as_the_catalog_shares_them() {
    for default in [None, Some("triage"), Some(" triage "), Some("absent")] {
        let live = live(default);
        let catalog = live.policy.catalog();
        for name in ["triage", "watch", "absent", "triag"] {
            let (got, want) = (live.share(name), catalog.share(name));
            assert_eq!((&*got.0, got.1), (&*want.0, want.1), "{default:?} {name}");
            if want.1.is_some() {
                assert!(Arc::ptr_eq(&got.0, &want.0), "the catalog's own name");
            }
        }
    }
}
