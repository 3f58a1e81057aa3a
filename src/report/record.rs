//! One audit record as `report` reads it: borrowed from the line buffer (no copy of a string
//! unless it carries a JSON escape), only the fields the report uses; the rest is skipped.

use std::borrow::Cow;

use serde::Deserialize;

/// The fields of an audit line (`docs/operations.md`) the report reads.
#[derive(Deserialize)]
pub(crate) struct Record<'a> {
    #[serde(borrow)]
    pub(crate) time: Cow<'a, str>,
    #[serde(borrow, default)]
    pub(crate) agent: Agent<'a>,
    #[serde(borrow, default)]
    pub(crate) intent: Intent<'a>,
    #[serde(borrow, default)]
    pub(crate) connection: Cow<'a, str>,
    #[serde(borrow)]
    pub(crate) method: Cow<'a, str>,
    #[serde(borrow)]
    pub(crate) host: Cow<'a, str>,
    pub(crate) port: u16,
    #[serde(borrow, default)]
    pub(crate) path: Cow<'a, str>,
    pub(crate) decision: Decision,
    #[serde(borrow, default)]
    pub(crate) reasons: Vec<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(crate) error: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(crate) code: Option<Cow<'a, str>>,
}

/// `agent`: who made the call.
#[derive(Deserialize, Default)]
pub(crate) struct Agent<'a> {
    #[serde(borrow, default)]
    pub(crate) id: Cow<'a, str>,
    #[serde(borrow, default)]
    pub(crate) namespace: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(crate) service_account: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(crate) owner: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(crate) expires: Option<Cow<'a, str>>,
}

/// `intent`: what the agent declared it was doing.
#[derive(Deserialize, Default)]
pub(crate) struct Intent<'a> {
    #[serde(borrow, default)]
    pub(crate) name: Option<Cow<'a, str>>,
}

/// `decision`.
#[derive(Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Decision {
    Allow,
    /// Forwarded in monitor mode; enforcing would have refused it.
    WouldDeny,
    Deny,
    /// Refused before the policy (`error` holds the code the client got).
    Error,
}

impl Record<'_> {
    /// The CONNECT that opened an intercepted tunnel: its requests are the calls.
    pub(crate) fn is_tunnel_setup(&self) -> bool {
        self.method == "CONNECT" && self.connection == "intercepted"
    }

    /// Why it was refused, as a code: the policy's `code`, or the `error` given to the client.
    pub(crate) fn refusal_code(&self) -> &str {
        self.code
            .as_deref()
            .or(self.error.as_deref())
            .unwrap_or("unknown")
    }

    /// The first reason given, or the error code.
    pub(crate) fn first_reason(&self) -> &str {
        self.reasons
            .first()
            .map(|r| r.as_ref())
            .or(self.error.as_deref())
            .unwrap_or("")
    }
}

/// Seconds since the Unix epoch of an RFC 3339 time in UTC as the audit log writes it
/// (`2026-11-28T13:41:02.123456Z`, also without fraction, or with a `+HH:MM` offset).
pub(crate) fn epoch_secs(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<i64> {
        let mut n = 0i64;
        for &c in b.get(from..to)? {
            if !c.is_ascii_digit() {
                return None;
            }
            n = n * 10 + i64::from(c - b'0');
        }
        Some(n)
    };
    let (y, mo, d) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (h, mi, sec) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        rest = &frac[digits..];
    }
    let at = s.len() - rest.len();
    let offset = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && &rest[3..4] == ":" => {
            let mins = num(at + 1, at + 3)? * 60 + num(at + 4, at + 6)?;
            match &rest[..1] {
                "+" => mins * 60,
                "-" => -mins * 60,
                _ => return None,
            }
        }
        _ => return None,
    };
    Some(days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec - offset)
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `2026-11-28 13:41` (UTC) for people; seconds are left out.
pub(crate) fn format_minute(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// The date of a day number (inverse of `days_from_civil`).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}
