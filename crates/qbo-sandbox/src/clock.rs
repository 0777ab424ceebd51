//! Time as QBO writes it, and the sandbox clock.
//!
//! QBO writes record times in US/Pacific with the offset of that date (`-07:00` PDT, `-08:00`
//! PST) to the second, and envelope `time` with milliseconds. The [`Clock`] is real time unless
//! a test pins it ([`crate::state::SandboxState::set_clock`]); it stamps edits and anchors the
//! CDC horizon. Also here: `intuit_tid` values and small JSON-text helpers shared by the
//! generator and the envelopes.

use std::sync::RwLock;

use chrono::{DateTime, FixedOffset, TimeZone, Utc};
use chrono_tz::America::Los_Angeles;

/// `2016-02-29T16:00:00-08:00` for epoch second `secs`.
pub fn pacific_secs(secs: i64) -> String {
    match Utc.timestamp_opt(secs, 0).single() {
        Some(t) => t
            .with_timezone(&Los_Angeles)
            .format("%Y-%m-%dT%H:%M:%S%:z")
            .to_string(),
        None => "1970-01-01T00:00:00-08:00".to_owned(),
    }
}

/// `2020-09-29T06:04:23.783-07:00`: an envelope `time`.
pub fn pacific_millis(t: DateTime<Utc>) -> String {
    t.with_timezone(&Los_Angeles)
        .format("%Y-%m-%dT%H:%M:%S%.3f%:z")
        .to_string()
}

/// `2020-09-29`: the Pacific calendar date of epoch second `secs` (TxnDate).
pub fn pacific_date(secs: i64) -> String {
    match Utc.timestamp_opt(secs, 0).single() {
        Some(t) => t.with_timezone(&Los_Angeles).format("%Y-%m-%d").to_string(),
        None => "1970-01-01".to_owned(),
    }
}

/// Epoch seconds of a QBO timestamp string (`MetaData.LastUpdatedTime`), fractions dropped.
pub fn parse_epoch_secs(s: &str) -> Option<i64> {
    qbo_query::parse_datetime(s).map(|t| t.timestamp())
}

/// Epoch seconds of an instant with any offset.
pub fn epoch_of(t: &DateTime<FixedOffset>) -> i64 {
    t.timestamp()
}

/// The sandbox's notion of now: real time, or pinned by a test.
#[derive(Debug, Default)]
pub struct Clock {
    pinned: RwLock<Option<DateTime<Utc>>>,
}

impl Clock {
    pub fn now(&self) -> DateTime<Utc> {
        match self.pinned.read() {
            Ok(guard) => guard.unwrap_or_else(Utc::now),
            Err(poisoned) => poisoned.into_inner().unwrap_or_else(Utc::now),
        }
    }

    /// Pins the clock at its current now + `by` (a pinned clock moves from its pin, a real
    /// one from real time), saturating at the representable extremes; returns the new now.
    pub fn advance(&self, by: chrono::Duration) -> DateTime<Utc> {
        let mut guard = match self.pinned.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let base = guard.unwrap_or_else(Utc::now);
        let now = base
            .checked_add_signed(by)
            .unwrap_or(if by < chrono::Duration::zero() {
                DateTime::<Utc>::MIN_UTC
            } else {
                DateTime::<Utc>::MAX_UTC
            });
        *guard = Some(now);
        now
    }

    pub fn set(&self, now: Option<DateTime<Utc>>) {
        match self.pinned.write() {
            Ok(mut guard) => *guard = now,
            Err(poisoned) => *poisoned.into_inner() = now,
        }
    }
}

/// A fresh `intuit_tid` shaped like QBO's: `1-5f7330b9-a3afd5d437cafa6415b24e04`.
pub fn new_tid() -> String {
    let secs = Utc::now().timestamp().max(0);
    let a: u64 = rand::random();
    let b: u32 = rand::random();
    format!("1-{secs:08x}-{a:016x}{b:08x}")
}

/// Appends `s` as a JSON string literal (quotes included).
pub fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let escape: Option<&str> = match b {
            b'"' => Some("\\\""),
            b'\\' => Some("\\\\"),
            b'\n' => Some("\\n"),
            b'\r' => Some("\\r"),
            b'\t' => Some("\\t"),
            0..=0x1f => None,
            _ => continue,
        };
        out.push_str(&s[start..i]);
        match escape {
            Some(e) => out.push_str(e),
            None => out.push_str(&format!("\\u{b:04x}")),
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// A money amount in cents written as QBO does: `100.00`, `337.50`, `0` for zero.
pub fn money(cents: i64) -> String {
    if cents == 0 {
        return "0".to_owned();
    }
    let sign = if cents < 0 { "-" } else { "" };
    let c = cents.unsigned_abs();
    format!("{sign}{}.{:02}", c / 100, c % 100)
}

/// A decimal in hundredths written with no trailing zeros: `75`, `22.5`, `0.25`.
pub fn decimal(hundredths: i64) -> String {
    let sign = if hundredths < 0 { "-" } else { "" };
    let h = hundredths.unsigned_abs();
    let (int, frac) = (h / 100, h % 100);
    match frac {
        0 => format!("{sign}{int}"),
        f if f % 10 == 0 => format!("{sign}{int}.{}", f / 10),
        f => format!("{sign}{int}.{f:02}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacific_offsets_follow_daylight_saving() {
        // 2016-03-01T00:00:00Z is a UTC day boundary written in PST.
        assert_eq!(pacific_secs(1_456_790_400), "2016-02-29T16:00:00-08:00");
        // 2015-10-07T18:43:20Z is PDT.
        assert_eq!(pacific_secs(1_444_243_400), "2015-10-07T11:43:20-07:00");
        assert_eq!(pacific_date(1_456_790_400), "2016-02-29");
    }

    #[test]
    fn envelope_time_has_millis_and_offset() {
        let t = Utc.timestamp_millis_opt(1_601_384_663_783).unwrap();
        assert_eq!(pacific_millis(t), "2020-09-29T06:04:23.783-07:00");
    }

    #[test]
    fn parse_epoch_reads_offsets() {
        assert_eq!(
            parse_epoch_secs("2016-02-29T16:00:00-08:00"),
            Some(1_456_790_400)
        );
        assert_eq!(parse_epoch_secs("garbage"), None);
    }

    #[test]
    fn json_strings_escape_quotes_backslashes_and_controls() {
        let mut out = String::new();
        push_json_str(&mut out, "a\"b\\c\nd\u{1}é😀");
        assert_eq!(out, r#""a\"b\\c\nd\u0001é😀""#);
        let parsed: String = serde_json::from_str(&out).unwrap();
        assert_eq!(parsed, "a\"b\\c\nd\u{1}é😀");
    }

    #[test]
    fn numbers_are_written_like_qbo() {
        assert_eq!(money(10000), "100.00");
        assert_eq!(money(33750), "337.50");
        assert_eq!(money(0), "0");
        assert_eq!(money(5), "0.05");
        assert_eq!(decimal(7500), "75");
        assert_eq!(decimal(2250), "22.5");
        assert_eq!(decimal(50), "0.5");
        assert_eq!(decimal(125), "1.25");
    }

    #[test]
    fn tids_look_like_qbo() {
        let tid = new_tid();
        let parts: Vec<&str> = tid.split('-').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0], "1");
        assert_eq!(parts[1].len(), 8);
        assert_eq!(parts[2].len(), 24);
        assert_ne!(new_tid(), tid);
    }

    #[test]
    fn pinned_clock_returns_the_pin() {
        let clock = Clock::default();
        let t = Utc.timestamp_opt(1_700_000_000, 0).unwrap();
        clock.set(Some(t));
        assert_eq!(clock.now(), t);
        clock.set(None);
        assert!(clock.now() > t);
    }
}
