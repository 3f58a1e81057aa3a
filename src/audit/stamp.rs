//! A record's `time`: RFC 3339 in UTC with microseconds (`2026-12-06T21:02:08.123456Z`), the
//! bytes humantime's `format_rfc3339_micros` writes, written by hand (the writer stamps every
//! record, and the formatter machinery cost ~630 instructions a record).

use std::time::{SystemTime, UNIX_EPOCH};

/// The last instant with a four-digit year (9999-12-31T23:59:59.999999Z), in µs.
const MAX_MICROS: u64 = 253_402_300_800_000_000 - 1;

/// `at` in RFC 3339 with microseconds; a time before 1970 as the epoch, one past year 9999 as
/// its last microsecond (humantime would panic on both).
#[cfg(test)]
pub(super) fn rfc3339_micros(at: SystemTime) -> String {
    let mut stamper = Stamper::default();
    String::from_utf8_lossy(stamper.stamp(at)).into_owned()
}

/// Writes stamps (`rfc3339_micros`), keeping the date and time of day of the last one: the
/// records of one second share them, and only the microseconds are written anew.
#[derive(Default)]
pub(super) struct Stamper {
    /// The second `text` holds, and the stamp (its microseconds those of the last call).
    secs: Option<u64>,
    text: [u8; 27],
}

impl Stamper {
    /// `at` in RFC 3339 with microseconds: ASCII digits and separators, nothing JSON escapes.
    pub(super) fn stamp(&mut self, at: SystemTime) -> &[u8; 27] {
        let micros = at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| {
                d.as_secs() * 1_000_000 + u64::from(d.subsec_micros())
            })
            .min(MAX_MICROS);
        let (secs, frac) = (micros / 1_000_000, micros % 1_000_000);
        let t = &mut self.text;
        if self.secs != Some(secs) {
            self.secs = Some(secs);
            let (y, m, d) = civil(secs / 86_400);
            let s = secs % 86_400;
            *t = *b"0000-00-00T00:00:00.000000Z";
            digits(&mut t[0..4], y);
            digits(&mut t[5..7], m);
            digits(&mut t[8..10], d);
            digits(&mut t[11..13], s / 3600);
            digits(&mut t[14..16], s / 60 % 60);
            digits(&mut t[17..19], s % 60);
        }
        micros6(&mut t[20..26], frac);
        t
    }
}

/// The two-digit numbers 00 to 99, written.
const PAIRS: [[u8; 2]; 100] = {
    let mut t = [[0; 2]; 100];
    let mut i = 0;
    while i < 100 {
        t[i] = [b'0' + (i / 10) as u8, b'0' + (i % 10) as u8];
        i += 1;
    }
    t
};

/// `n` (below 10^6: a second's microseconds) as six digits, two a step.
fn micros6(out: &mut [u8], n: u64) {
    let (hi, lo) = ((n / 10_000) as usize % 100, n % 10_000);
    let (mid, lo) = ((lo / 100) as usize, (lo % 100) as usize);
    if let Some(out) = out.first_chunk_mut::<6>() {
        let ([a, b], [c, d], [e, f]) = (PAIRS[hi], PAIRS[mid], PAIRS[lo]);
        *out = [a, b, c, d, e, f];
    }
}

/// `n`'s last `out.len()` decimal digits, zero-padded.
fn digits(out: &mut [u8], mut n: u64) {
    for o in out.iter_mut().rev() {
        *o = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// Year, month and day of the `days`th day since 1970-01-01 (proleptic Gregorian calendar),
/// counted in 400-year eras that start on March 1st so that a leap day ends its year.
fn civil(days: u64) -> (u64, u64, u64) {
    // Days from 0000-03-01 to 1970-01-01.
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    // Months from March: 0 is March, 11 February.
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = era * 400 + year_of_era + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn writes_what_humantime_writes() {
        let mut secs = 0u64;
        // Every day boundary for 3 years around leap years and centuries, then strides
        // through the whole range of four-digit years.
        let check = |s: u64, us: u32| {
            let t = UNIX_EPOCH + Duration::new(s, us * 1000 + 999);
            assert_eq!(
                rfc3339_micros(t),
                humantime::format_rfc3339_micros(t).to_string(),
                "{s}.{us}"
            );
        };
        for start in [0, 946_684_800 - 400 * 86_400, 4_107_542_400 - 400 * 86_400] {
            for day in 0..1200 {
                check(start + day * 86_400, 0);
                check(start + day * 86_400 + 86_399, 999_999);
            }
        }
        while secs < 253_402_300_800 {
            check(secs, (secs % 1_000_000) as u32);
            secs += 7_777_777;
        }
        check(253_402_300_799, 999_999);
        // One stamper over times in and across seconds, backwards too: what each alone writes.
        let mut stamper = Stamper::default();
        for (s, us) in [
            (5, 1),
            (5, 999_999),
            (6, 0),
            (5, 7),
            (86_399, 3),
            (86_400, 3),
            (6, 0),
        ] {
            let t = UNIX_EPOCH + Duration::new(s, us * 1000);
            assert_eq!(
                String::from_utf8_lossy(stamper.stamp(t)),
                humantime::format_rfc3339_micros(t).to_string(),
                "{s}.{us}"
            );
        }
        // Every microsecond of a second, as six digits.
        let mut six = [0; 6];
        for us in 0..1_000_000u64 {
            micros6(&mut six, us);
            assert_eq!(six, *format!("{us:06}").as_bytes(), "{us}");
        }
        let before = UNIX_EPOCH - Duration::from_secs(1);
        assert_eq!(rfc3339_micros(before), "1970-01-01T00:00:00.000000Z");
        let after = UNIX_EPOCH + Duration::from_secs(300_000_000_000);
        assert_eq!(rfc3339_micros(after), "9999-12-31T23:59:59.999999Z");
    }
}
