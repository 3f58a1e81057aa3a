//! The stand-in against what chrono-tz 0.10.4 did: every name it knew, matched as it matched,
//! and the offsets around DST changes (UTC → local, and local → UTC through gaps and folds).

use chrono::{LocalResult, NaiveDate, NaiveDateTime, Offset, TimeZone};
use chrono_tz::Tz;

fn tz(name: &str) -> Tz {
    name.parse().unwrap()
}

fn wall(s: &str) -> NaiveDateTime {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap()
}

/// (seconds east of UTC, abbreviation) of `name` at a Unix time.
fn at(name: &str, unix: i64) -> (i32, String) {
    let o = tz(name).timestamp_opt(unix, 0).unwrap().offset().to_owned();
    (o.fix().local_minus_utc(), o.to_string())
}

#[test]
fn every_name_chrono_tz_knew_resolves_to_itself() {
    let names = include_str!("chrono-tz-0.10.4-names.txt");
    assert_eq!(names.lines().count(), 597);
    for name in names.lines() {
        let zone: Tz = name.parse().unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(zone.name(), name);
        // Parsed once, then the same zone.
        assert_eq!(tz(name), zone);
    }
}

#[test]
fn names_are_case_sensitive_and_errors_name_the_zone() {
    for bad in [
        "america/new_york",
        "AMERICA/NEW_YORK",
        "America/NewYork",
        "",
        "Mars/Olympus",
    ] {
        let e = bad.parse::<Tz>().unwrap_err();
        assert_eq!(e.to_string(), format!("unknown time zone {bad:?}"));
    }
    assert_eq!(tz("US/Eastern").to_string(), "US/Eastern");
    assert_eq!(format!("{:?}", tz("Asia/Kolkata")), "Asia/Kolkata");
}

#[test]
fn offsets_on_both_sides_of_transitions() {
    // New York, 2021-03-14 07:00 UTC (02:00 EST → 03:00 EDT) and 2021-11-07 06:00 UTC.
    assert_eq!(
        at("America/New_York", 1_615_705_199),
        (-5 * 3600, "EST".into())
    );
    assert_eq!(
        at("America/New_York", 1_615_705_200),
        (-4 * 3600, "EDT".into())
    );
    assert_eq!(at("US/Eastern", 1_636_264_799), (-4 * 3600, "EDT".into()));
    assert_eq!(at("US/Eastern", 1_636_264_800), (-5 * 3600, "EST".into()));
    // Sydney leaves DST 2021-04-04 03:00 AEDT (2021-04-03 16:00 UTC).
    assert_eq!(
        at("Australia/Sydney", 1_617_465_599),
        (11 * 3600, "AEDT".into())
    );
    assert_eq!(
        at("Australia/Sydney", 1_617_465_600),
        (10 * 3600, "AEST".into())
    );
    assert_eq!(at("Asia/Kolkata", 1_700_000_000), (19_800, "IST".into()));
    // Before the first transition: local mean time, as chrono-tz had it.
    assert_eq!(at("Asia/Kolkata", -4_000_000_000).0, 21_208);
    // Far beyond the listed transitions the footer's rule holds (2200-07-01 is EDT).
    assert_eq!(
        at("America/New_York", 7_273_756_800),
        (-4 * 3600, "EDT".into())
    );
}

#[test]
fn wall_times_in_gaps_and_folds() {
    let ny = tz("America/New_York");
    // Spring forward: 02:30 does not exist.
    assert_eq!(
        ny.from_local_datetime(&wall("2021-03-14 02:30:00")),
        LocalResult::None
    );
    // Fall back: 01:30 happens twice, EDT first.
    match ny.from_local_datetime(&wall("2021-11-07 01:30:00")) {
        LocalResult::Ambiguous(a, b) => {
            assert_eq!(a.timestamp(), 1_636_263_000);
            assert_eq!(b.timestamp(), 1_636_266_600);
            assert_eq!(
                (a.offset().to_string(), b.offset().to_string()),
                ("EDT".into(), "EST".into())
            );
        }
        other => panic!("{other:?}"),
    }
    let single = ny
        .from_local_datetime(&wall("2021-07-01 12:00:00"))
        .single()
        .unwrap();
    assert_eq!(single.timestamp(), 1_625_155_200);
    // A whole day skipped: Samoa went from 2011-12-29 to 2011-12-31.
    let apia = tz("Pacific/Apia");
    assert_eq!(
        apia.from_local_datetime(&wall("2011-12-30 12:00:00")),
        LocalResult::None
    );
    assert_eq!(
        apia.offset_from_local_date(&NaiveDate::from_ymd_opt(2011, 12, 30).unwrap()),
        LocalResult::None
    );
    // A date gets an offset in force on that day, even one that starts in a gap.
    let d = ny.offset_from_local_date(&NaiveDate::from_ymd_opt(2021, 3, 14).unwrap());
    assert_eq!(d.single().unwrap().to_string(), "EST");
}
