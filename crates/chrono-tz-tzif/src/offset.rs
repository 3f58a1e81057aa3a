//! chrono's `TimeZone` for `Tz`: UTC → local by the zone's rules, local → UTC by trying every
//! offset the zone has used (a wall time in a gap has none, one in a fold two).

use std::fmt;

use chrono::{
    FixedOffset, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, Offset, TimeZone, Utc,
};
use tz::timezone::LocalTimeType;

use crate::Tz;

/// The offset of a zone at some instant, with its abbreviation ("EST", "+0530"…).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TzOffset {
    tz: Tz,
    local: &'static LocalTimeType,
}

impl TzOffset {
    /// The abbreviation of the zone at this instant.
    pub fn abbreviation(&self) -> &'static str {
        self.local.time_zone_designation()
    }

    fn seconds_east(&self) -> i32 {
        self.local.ut_offset()
    }
}

impl Offset for TzOffset {
    fn fix(&self) -> FixedOffset {
        // Every offset of a zone was checked to be representable when it was parsed.
        FixedOffset::east_opt(self.seconds_east()).unwrap_or_else(|| Utc.fix())
    }
}

impl fmt::Display for TzOffset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.abbreviation())
    }
}

impl fmt::Debug for TzOffset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.abbreviation())
    }
}

impl Tz {
    fn offset_at(self, unix: i64) -> TzOffset {
        TzOffset {
            tz: self,
            local: self.0.local_type(unix),
        }
    }
}

impl TimeZone for Tz {
    type Offset = TzOffset;

    fn from_offset(offset: &TzOffset) -> Self {
        offset.tz
    }

    fn offset_from_utc_datetime(&self, utc: &NaiveDateTime) -> TzOffset {
        self.offset_at(utc.and_utc().timestamp())
    }

    fn offset_from_utc_date(&self, utc: &NaiveDate) -> TzOffset {
        self.offset_from_utc_datetime(&utc.and_time(NaiveTime::MIN))
    }

    /// A wall time maps to the instants `wall - o` for the offsets `o` the zone has in force at
    /// `wall - o`: none in a gap (spring forward), two in a fold (fall back), earliest first.
    fn offset_from_local_datetime(&self, local: &NaiveDateTime) -> LocalResult<TzOffset> {
        let wall = local.and_utc().timestamp();
        // The offsets are sorted ascending, so their instants come out latest first.
        let mut hits = self
            .0
            .offsets
            .iter()
            .map(|&o| wall - i64::from(o))
            .map(|unix| (unix, self.offset_at(unix)))
            .filter(|(unix, at)| unix + i64::from(at.seconds_east()) == wall)
            .map(|(_, at)| at);
        match (hits.next(), hits.last()) {
            (None, _) => LocalResult::None,
            (Some(only), None) => LocalResult::Single(only),
            (Some(latest), Some(earliest)) => LocalResult::Ambiguous(earliest, latest),
        }
    }

    /// chrono lets a date take any offset in force at some moment of that day: the one at its
    /// first valid wall time among midnight and the day's last second.
    fn offset_from_local_date(&self, local: &NaiveDate) -> LocalResult<TzOffset> {
        let ends = [
            NaiveTime::MIN,
            NaiveTime::from_hms_opt(23, 59, 59).unwrap_or(NaiveTime::MIN),
        ];
        ends.iter()
            .find_map(
                |t| match self.offset_from_local_datetime(&local.and_time(*t)) {
                    LocalResult::Single(o) | LocalResult::Ambiguous(o, _) => Some(o),
                    LocalResult::None => None,
                },
            )
            .map_or(LocalResult::None, LocalResult::Single)
    }
}
