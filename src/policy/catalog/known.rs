//! The catalog's questions about one intent: its entry found by name once per request
//! (`Catalog::know`), then reached by its place (`Known`) for every later question — the
//! verdict, the token check, the counters, the budget, the credential, the attestation.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Catalog, Compiled, ScopeVerdict, bodyless_bit};
use crate::config::Mode;
use crate::intent::{Intent, Known};

/// Numbers catalogs, for `Known` (0: an empty default catalog).
static CATALOGS: AtomicU64 = AtomicU64::new(1);

/// A new catalog's number.
pub(super) fn next_id() -> u64 {
    CATALOGS.fetch_add(1, Ordering::Relaxed)
}

impl Catalog {
    /// The entry of the intent named `name`.
    pub(super) fn get(&self, name: &str) -> Option<&Compiled> {
        self.intents.get(name).and_then(|&i| self.entries.get(i))
    }

    /// The entry of an intent and its place: straight from its `Known` place when that is in
    /// this catalog (inlined: a request asks six times), else by its name (`entry_by_name`).
    #[inline]
    pub(super) fn entry(&self, name: &str, known: Option<Known>) -> Option<(Known, &Compiled)> {
        match known {
            Some(k) if k.catalog == self.id => Some((k, self.entries.get(k.index as usize)?)),
            _ => self.entry_by_name(name),
        }
    }

    /// `entry` of an intent without its place (or with another catalog's).
    #[inline(never)]
    fn entry_by_name(&self, name: &str) -> Option<(Known, &Compiled)> {
        let index = u32::try_from(*self.intents.get(name)?).ok()?;
        let c = self.entries.get(index as usize)?;
        Some((
            Known {
                catalog: self.id,
                index,
            },
            c,
        ))
    }

    /// The entry of a request's intent (`entry`).
    pub(super) fn entry_of(&self, intent: &Intent) -> Option<&Compiled> {
        Some(self.entry(intent.name.as_deref()?, intent.known)?.1)
    }

    /// Finds `intent` in the catalog once, for the questions asked about it later
    /// (`Intent::known`), and gives it the catalog's own name (shared, not copied); an intent
    /// it does not define is left as it is.
    pub fn know(&self, intent: &mut Intent) {
        intent.known = None;
        if let Some((name, known)) = intent.name.as_deref().and_then(|n| self.shared(n)) {
            intent.name = Some(name);
            intent.known = Some(known);
        }
    }

    /// `name` as a request's intent carries it: the catalog's own (shared) and its place when it
    /// defines it, else a new one (`intent::resolve_in`).
    pub fn share(&self, name: &str) -> (Arc<str>, Option<Known>) {
        match self.shared(name) {
            Some((name, known)) => (name, Some(known)),
            None => (Arc::from(name), None),
        }
    }

    /// The catalog's own name `name` (shared) and its place, if it defines it.
    pub fn shared(&self, name: &str) -> Option<(Arc<str>, Known)> {
        let (known, c) = self.entry(name, None)?;
        Some((Arc::clone(&c.name), known))
    }

    /// A request's intent as the upstream tag's value, if the catalog defines it (made once).
    pub fn intent_tag(&self, intent: &Intent) -> Option<&http::HeaderValue> {
        self.entry_of(intent)?.tag.as_ref()
    }

    /// The top-level mode (for intents that set none).
    pub fn default_mode(&self) -> Mode {
        self.default_mode
    }

    /// The mode an intent sets for itself, if it does.
    pub fn mode_of(&self, intent: &str) -> Option<Mode> {
        self.get(intent).and_then(|c| c.mode)
    }

    /// Whether the catalog defines `intent`.
    pub fn contains(&self, intent: &str) -> bool {
        self.intents.contains_key(intent)
    }

    /// Where `intent` is among the catalog's intents (0 to `len() - 1`, each its own), for
    /// tables kept beside the catalog (src/proxy/tally.rs); `None` if it does not define it.
    pub fn index_of(&self, intent: &str) -> Option<usize> {
        self.intents.get(intent).copied()
    }

    /// `index_of` a request's intent (its `Known` place, when found in this catalog).
    pub fn index_of_intent(&self, intent: &Intent) -> Option<usize> {
        match intent.known {
            Some(k) if k.catalog == self.id => Some(k.index as usize),
            _ => self.index_of(intent.name.as_deref()?),
        }
    }

    /// The budget of `intent`, if it has one.
    pub fn budget(&self, intent: &str) -> Option<&std::sync::Arc<crate::budget::Limits>> {
        self.get(intent)?.budget.as_ref()
    }

    /// The budget of a request's intent, if it has one.
    pub fn budget_of(&self, intent: &Intent) -> Option<&std::sync::Arc<crate::budget::Limits>> {
        self.entry_of(intent)?.budget.as_ref()
    }

    /// Whether any rule of any intent allows `port` (a rule without `ports` allows 80 and 443).
    pub fn names_port(&self, port: u16) -> bool {
        self.entries
            .iter()
            .flat_map(|c| &c.rules)
            .any(|r| match &r.ports {
                None => port == 80 || port == 443,
                Some(ps) => ps.contains(&port),
            })
    }

    /// Whether the rule `scope` matched lets `method` (one of `BODYLESS`) carry a request body.
    pub fn allows_body(&self, scope: &ScopeVerdict, method: &http::Method) -> bool {
        let (Some(intent), Some(rule), Some(bit)) = (
            scope.intent.as_deref(),
            scope.rule,
            bodyless_bit(method.as_str()),
        ) else {
            return false;
        };
        scope.matched
            && self
                .entry(intent, scope.known)
                .and_then(|(_, c)| c.rules.get(rule.wrapping_sub(1)))
                .is_some_and(|r| r.body_methods & bit != 0)
    }

    /// The credential binding of the rule `scope` matched, if it has one.
    pub fn binding(&self, scope: &ScopeVerdict) -> Option<&std::sync::Arc<crate::config::Binding>> {
        let (intent, rule) = (scope.intent.as_deref()?, scope.rule?);
        let (_, c) = self.entry(intent, scope.known).filter(|_| scope.matched)?;
        c.rules.get(rule.wrapping_sub(1))?.inject.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::config::IntentSpec;

    fn catalog(sources: &[&[(&str, bool)]]) -> Catalog {
        let sources: Vec<(String, BTreeMap<String, IntentSpec>)> = sources
            .iter()
            .enumerate()
            .map(|(i, names)| {
                let specs = names.iter().map(|&(n, token)| {
                    let spec = IntentSpec {
                        requires_token: token,
                        attest: !token,
                        ..IntentSpec::default()
                    };
                    (n.to_string(), spec)
                });
                (format!("{i}.yaml"), specs.collect())
            })
            .collect();
        Catalog::compile(&sources, Mode::Enforce).unwrap()
    }

    fn named(name: &str) -> Intent {
        Intent {
            name: Some(name.into()),
            ..Intent::none()
        }
    }

    #[test]
    fn an_intent_found_once_gets_the_answers_its_name_gets() {
        let c = catalog(&[&[("a", true), ("b", false)]]);
        for name in ["a", "b"] {
            let mut i = named(name);
            c.know(&mut i);
            assert!(i.known.is_some());
            let (shared, _) = c.shared(name).unwrap();
            assert!(
                Arc::ptr_eq(i.name.as_ref().unwrap(), &shared),
                "the catalog's own name"
            );
            assert_eq!(c.index_of_intent(&i), c.index_of(name));
            assert_eq!(c.intent_requires_token(&i), c.requires_token(name));
            assert_eq!(c.intent_attests(&i), c.attests(name));
            assert_eq!(c.budget_of(&i).is_some(), c.budget(name).is_some());
        }
        let mut unknown = named("zzz");
        c.know(&mut unknown);
        assert_eq!(unknown.known, None);
        assert_eq!(c.index_of_intent(&unknown), None);
        assert!(!c.intent_requires_token(&unknown) && !c.intent_attests(&unknown));
        let mut none = Intent::none();
        c.know(&mut none);
        assert_eq!((none.known, c.index_of_intent(&none)), (None, None));
    }

    #[test]
    fn another_catalog_looks_the_name_up() {
        // "a" is first in one catalog, "b" first in the other (a reload, a shadow policy).
        let one = catalog(&[&[("a", true)], &[("b", false)]]);
        let two = catalog(&[&[("b", false)], &[("a", true)]]);
        assert_eq!(one.index_of("a"), two.index_of("b"));
        let mut a = named("a");
        one.know(&mut a);
        assert_eq!(two.index_of_intent(&a), two.index_of("a"));
        assert!(two.intent_requires_token(&a) && !two.intent_attests(&a));
        // An empty catalog (never compiled) answers nothing.
        let empty = Catalog::default();
        assert_eq!(empty.index_of_intent(&a), None);
        assert!(!empty.intent_requires_token(&a));
    }
}
