//! `intentgate_requests_total`'s counters, kept per intent of the live catalog: every request
//! counts itself once, and `with_label_values` hashes its three labels (SipHash) and looks them
//! up under a lock each time (~240 instructions a request). A counter is resolved from the
//! metric on its first use only, so a series still appears only once a request counts in it.

use std::sync::OnceLock;

use prometheus::{IntCounter, IntCounterVec};

use crate::config::Mode;
use crate::intent::Intent;
use crate::policy::Catalog;
use crate::vocab::Verdict;

const MODES: usize = 2;
const CELLS: usize = Verdict::ALL.len() * MODES;

/// One intent's counters, by decision and mode.
type Cells = [OnceLock<IntCounter>; CELLS];

/// One entry per intent of the catalog (in `Catalog::index_of`'s order), then the labels
/// `none` (no intent) and `unknown` (a name the catalog lacks).
pub(crate) struct Tally(Box<[OnceLock<Box<Cells>>]>);

impl Tally {
    pub(crate) fn new(catalog: &Catalog) -> Self {
        Tally((0..catalog.len() + 2).map(|_| OnceLock::new()).collect())
    }

    /// Counts one request of `intent` under the catalog the tally was made for.
    pub(crate) fn count(
        &self,
        metric: &IntCounterVec,
        catalog: &Catalog,
        intent: &Intent,
        decision: Verdict,
        mode: Mode,
    ) {
        let (at, label) = match intent.name.as_deref() {
            None => (catalog.len(), "none"),
            Some(n) => match catalog.index_of_intent(intent) {
                Some(i) => (i, n),
                None => (catalog.len() + 1, "unknown"),
            },
        };
        let resolve = || metric.with_label_values(&[decision.as_str(), mode.as_str(), label]);
        let Some(entry) = self.0.get(at) else {
            // Not the catalog this tally was made for (cannot happen: each is made with its own).
            return resolve().inc();
        };
        let cells = entry.get_or_init(|| Box::new(std::array::from_fn(|_| OnceLock::new())));
        let cell = &cells[decision as usize * MODES + mode as usize];
        cell.get_or_init(resolve).inc();
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::config::IntentSpec;
    use crate::metrics::Metrics;

    #[test]
    fn counts_land_under_the_labels_with_label_values_gave_and_appear_on_first_use() {
        let names = ["a", "b", "c"].map(|n| (n.to_string(), IntentSpec::default()));
        let sources = [("t.yaml".to_string(), BTreeMap::from(names))];
        let catalog = Catalog::compile(&sources, Mode::Enforce).unwrap();
        let mut seen: Vec<usize> = ["a", "b", "c"]
            .iter()
            .map(|n| catalog.index_of(n).unwrap())
            .collect();
        seen.sort_unstable();
        assert_eq!(seen, [0, 1, 2]);
        assert_eq!(catalog.index_of("d"), None);

        let m = Metrics::new().unwrap();
        let tally = Tally::new(&catalog);
        let count = |name: Option<&str>, d, mode| {
            let mut intent = Intent {
                name: name.map(Into::into),
                ..Intent::none()
            };
            tally.count(&m.requests, &catalog, &intent, d, mode);
            // Found in the catalog first, as the proxy's requests are: the same counters.
            catalog.know(&mut intent);
            tally.count(&m.requests, &catalog, &intent, d, mode);
        };
        count(Some("b"), Verdict::Allow, Mode::Enforce);
        count(Some("b"), Verdict::WouldDeny, Mode::Monitor);
        count(Some("zzz"), Verdict::Deny, Mode::Enforce);
        count(None, Verdict::Error, Mode::Enforce);
        let v = |d: &str, mode: &str, i: &str| m.requests.with_label_values(&[d, mode, i]).get();
        assert_eq!(v("allow", "enforce", "b"), 2);
        assert_eq!(v("would_deny", "monitor", "b"), 2);
        assert_eq!(v("deny", "enforce", "unknown"), 2);
        assert_eq!(v("error", "enforce", "none"), 2);
        // Only what was counted is a series (`v` above made none new that were not).
        let text = m.render();
        assert!(!text.contains("intent=\"a\""));
        assert!(!text.contains("decision=\"deny\",intent=\"b\""));
    }
}
