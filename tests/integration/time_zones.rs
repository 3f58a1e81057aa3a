//! Rego's `time` builtins with a zone (`time.clock([ns, zone])`…), decided by the real proxy, match
//! Python's `zoneinfo` (the system's tzdata) on both sides of DST changes and after 2099; an
//! unknown zone is a `policy_error` that names it.

use std::process::Command;

use crate::common::*;

/// Denies every request with the clock, date and weekday of the instant `x-at` (ns) in `x-zone`.
const POLICY: &str = r#"package intentgate
import rego.v1
deny contains json.marshal([time.clock(at), time.date(at), time.weekday(at)]) if {
	at := [to_number(input.request.headers["x-at"]), input.request.headers["x-zone"]]
}
"#;

/// Instants (Unix seconds) on both sides of changes that no tzdb release of 2015–2024 moved.
const CASES: &[(i64, &str)] = &[
    // New York springs forward 2021-03-14 07:00 UTC and falls back 2021-11-07 06:00 UTC.
    (1_615_705_199, "America/New_York"),
    (1_615_705_200, "America/New_York"),
    (1_636_264_799, "America/New_York"),
    (1_636_264_800, "America/New_York"),
    // The same fall back through a link.
    (1_636_264_799, "US/Eastern"),
    (1_636_264_800, "US/Eastern"),
    // Southern hemisphere: Sydney leaves DST 2021-04-03 16:00 UTC, enters it 2021-10-02 16:00 UTC.
    (1_617_465_599, "Australia/Sydney"),
    (1_617_465_600, "Australia/Sydney"),
    (1_633_190_399, "Australia/Sydney"),
    (1_633_190_400, "Australia/Sydney"),
    // A half-hour zone, and a date that differs from UTC's.
    (1_700_000_000, "Asia/Kolkata"),
    (1_451_606_399, "Asia/Kolkata"),
    (1_451_634_000, "America/Los_Angeles"),
    // Past chrono-tz 0.10's tables (they end in 2099): New York's rule (unchanged since 2007)
    // still gives EDT at 2100-07-01 00:00 UTC.
    (4_118_083_200, "America/New_York"),
    // London springs forward 2019-03-31 01:00 UTC.
    (1_553_993_999, "Europe/London"),
    (1_553_994_000, "Europe/London"),
];

/// `[[h, m, s], [y, m, d], weekday]` of each case, from Python's `zoneinfo`.
fn zoneinfo_answers() -> Vec<serde_json::Value> {
    let cases = serde_json::to_string(CASES).unwrap();
    let script = "import json, sys\n\
        from datetime import datetime\n\
        from zoneinfo import ZoneInfo\n\
        out = []\n\
        for unix, zone in json.loads(sys.argv[1]):\n\
        \x20   d = datetime.fromtimestamp(unix, ZoneInfo(zone))\n\
        \x20   out.append([[d.hour, d.minute, d.second], [d.year, d.month, d.day], d.strftime('%A')])\n\
        print(json.dumps(out))\n";
    let out = Command::new("python3")
        .args(["-c", script, &cases])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn time_builtins_with_zones_match_python_zoneinfo_and_unknown_zones_fail_closed() {
    let up = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("clock.rego"), POLICY).unwrap();
    let proxy = ProxyProc::start(&format!(
        "agent: {{id: bot, owner: me}}\nintent: any\n\
         intents: {{any: {{allow: [{{hosts: [localhost], ports: [{}]}}]}}}}\n\
         policy: {{paths: [\"{}\"]}}\n",
        up.addr.port(),
        dir.path().display()
    ));
    let url = up.url("/echo").replace("127.0.0.1", "localhost");
    let ask = |ns: &str, zone: &str| {
        curl(&[
            "-x",
            &proxy.url(),
            "-H",
            &format!("x-at: {ns}"),
            "-H",
            &format!("x-zone: {zone}"),
            &url,
        ])
    };
    for ((unix, zone), want) in CASES.iter().zip(zoneinfo_answers()) {
        // Half a second past the instant: the builtins take nanoseconds.
        let out = ask(&format!("{unix}500000000"), zone);
        assert_eq!(out.status, 403, "{out:?}");
        let reason = out.json()["reason"].as_str().unwrap().to_owned();
        let got: serde_json::Value = serde_json::from_str(&reason).unwrap();
        assert_eq!(got, want, "{unix} in {zone}");
    }
    // Names are matched exactly (as chrono-tz did); an unknown one is an evaluation error that
    // names the zone, and the request is refused.
    for zone in ["Mars/Olympus", "america/new_york"] {
        let out = ask("1700000000000000000", zone);
        assert_eq!(out.status, 403, "{out:?}");
        let body = out.json();
        assert_eq!(error_code(&body), "policy_error", "{body}");
        let reason = body["reason"].as_str().unwrap();
        assert!(
            reason.contains(&format!("unknown time zone \"{zone}\"")),
            "{reason}"
        );
    }
    assert_eq!(up.requests(), 0);
}
