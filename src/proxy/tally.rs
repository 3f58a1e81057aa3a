//! `intentgate_requests_total`'s counters, kept per intent of the live catalog: every request
//! counts itself once, and `with_label_values` hashes its three labels (SipHash) and looks them
//! up under a lock each time (~240 instructions a request). A counter is resolved from the
//! metric on its first use only, so a series still appears only once a request counts in it.

use std::sync::OnceLock;

use prometheus::{IntCounter, IntCounterVec};

use crate::config::Mode;
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

    /// Counts one request of `intent` (its name) under the catalog the tally was made for.
    pub(crate) fn count(
        &self,
        metric: &IntCounterVec,
        catalog: &Catalog,
        intent: Option<&str>,
        decision: Verdict,
        mode: Mode,
    ) {
        let (at, label) = match intent {
            None => (catalog.len(), "none"),
            Some(n) => match catalog.index_of(n) {
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
