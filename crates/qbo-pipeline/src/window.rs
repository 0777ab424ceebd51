//! Extraction windows and their chunks (pure; no I/O).
//!
//! A backfill covers whole UTC days, both ends included: `[from T00:00:00Z, to T23:59:59Z]`.
//! The window is split into chunks (calendar days, 7-day weeks, calendar months or years, or
//! the whole window), each an independent unit of paging, concurrency and checkpointing.
//! QBO timestamps have one-second precision, so inclusive second bounds lose nothing.

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};
use chrono_tz::America::Los_Angeles;
use std::fmt;
use std::str::FromStr;

/// A validated extraction window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub from: NaiveDate,
    pub to: NaiveDate,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    #[error("invalid date '{0}': expected YYYY-MM-DD, e.g. 2024-01-31")]
    BadDate(String),
    #[error("--from {from} is after --to {to}: swap them or fix the dates")]
    Reversed { from: NaiveDate, to: NaiveDate },
    #[error("date {0} is before 2000-01-01; QuickBooks Online holds no data that old")]
    TooEarly(NaiveDate),
}

/// Parses `YYYY-MM-DD`, rejecting impossible dates such as 2023-02-30.
pub fn parse_day(text: &str) -> Result<NaiveDate, WindowError> {
    let t = text.trim();
    if t.len() != 10 {
        return Err(WindowError::BadDate(text.to_string()));
    }
    NaiveDate::parse_from_str(t, "%Y-%m-%d").map_err(|_| WindowError::BadDate(text.to_string()))
}

impl Window {
    pub fn new(from: NaiveDate, to: NaiveDate) -> Result<Self, WindowError> {
        if from > to {
            return Err(WindowError::Reversed { from, to });
        }
        let floor = NaiveDate::from_ymd_opt(2000, 1, 1).expect("valid constant date");
        if from < floor {
            return Err(WindowError::TooEarly(from));
        }
        Ok(Window { from, to })
    }

    /// First instant of the window: `from T00:00:00Z`.
    pub fn start(&self) -> DateTime<Utc> {
        day_start(self.from)
    }

    /// Last instant of the window: `to T23:59:59Z`.
    pub fn end(&self) -> DateTime<Utc> {
        day_start(self.to) + Duration::seconds(86_399)
    }
}

fn day_start(d: NaiveDate) -> DateTime<Utc> {
    Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0).expect("midnight exists"))
}

/// How a window is split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChunkSize {
    Day,
    Week,
    Month,
    #[default]
    Year,
    Whole,
}

impl ChunkSize {
    pub fn as_str(self) -> &'static str {
        match self {
            ChunkSize::Day => "day",
            ChunkSize::Week => "week",
            ChunkSize::Month => "month",
            ChunkSize::Year => "year",
            ChunkSize::Whole => "whole",
        }
    }
}

impl fmt::Display for ChunkSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ChunkSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "day" => Ok(ChunkSize::Day),
            "week" => Ok(ChunkSize::Week),
            "month" => Ok(ChunkSize::Month),
            "year" => Ok(ChunkSize::Year),
            "whole" | "none" => Ok(ChunkSize::Whole),
            other => Err(format!(
                "unknown chunk size '{other}': use day, week, month, year or whole"
            )),
        }
    }
}

/// One chunk: `[start, end]`, both inclusive, whole seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl Chunk {
    /// RFC 3339 UTC text of the start, as stored in `extract_window_start_utc`.
    pub fn start_rfc3339(&self) -> String {
        self.start.format("%Y-%m-%dT%H:%M:%SZ").to_string()
    }
    pub fn end_rfc3339(&self) -> String {
        self.end.format("%Y-%m-%dT%H:%M:%SZ").to_string()
    }
}

/// Splits the window into consecutive, non-overlapping chunks covering it exactly.
pub fn plan(window: Window, size: ChunkSize) -> Vec<Chunk> {
    let mut chunks = Vec::new();
    let mut day = window.from;
    while day <= window.to {
        let next = match size {
            ChunkSize::Day => day.succ_opt(),
            ChunkSize::Week => day.checked_add_days(chrono::Days::new(7)),
            ChunkSize::Month => first_of_next_month(day),
            ChunkSize::Year => NaiveDate::from_ymd_opt(day.year() + 1, 1, 1),
            ChunkSize::Whole => None,
        };
        let last_day = match next {
            Some(n) if n <= window.to => n.pred_opt().unwrap_or(window.to),
            _ => window.to,
        };
        chunks.push(Chunk {
            start: day_start(day),
            end: day_start(last_day) + Duration::seconds(86_399),
        });
        match last_day.succ_opt() {
            Some(n) => day = n,
            None => break,
        }
    }
    chunks
}

fn first_of_next_month(d: NaiveDate) -> Option<NaiveDate> {
    if d.month() == 12 {
        NaiveDate::from_ymd_opt(d.year() + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(d.year(), d.month() + 1, 1)
    }
}

/// Formats an instant the way QBO writes `MetaData` times: US-Pacific local time with its
/// offset (`2013-12-31T16:00:00-08:00`). Every production client sends this form; `Z`
/// literals are not documented (qbo-api.md §2).
pub fn qbo_literal(at: DateTime<Utc>) -> String {
    at.with_timezone(&Los_Angeles)
        .format("%Y-%m-%dT%H:%M:%S%:z")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        parse_day(s).unwrap()
    }

    #[test]
    fn window_bounds_are_whole_utc_days() {
        let w = Window::new(d("2014-01-01"), d("2025-12-31")).unwrap();
        assert_eq!(w.start().to_rfc3339(), "2014-01-01T00:00:00+00:00");
        assert_eq!(w.end().to_rfc3339(), "2025-12-31T23:59:59+00:00");
    }

    #[test]
    fn bad_dates_are_rejected_with_advice() {
        for bad in [
            "2023-02-30",
            "2023-13-01",
            "20230101",
            "yesterday",
            "",
            "2023-1-1",
        ] {
            let err = parse_day(bad).unwrap_err();
            assert!(err.to_string().contains("YYYY-MM-DD"), "{bad}");
        }
        let err = Window::new(d("2025-01-02"), d("2025-01-01")).unwrap_err();
        assert!(err.to_string().contains("after"));
        assert!(Window::new(d("1999-12-31"), d("2025-01-01")).is_err());
    }

    #[test]
    fn chunks_tile_the_window_exactly() {
        let w = Window::new(d("2015-03-15"), d("2017-02-10")).unwrap();
        for size in [
            ChunkSize::Day,
            ChunkSize::Week,
            ChunkSize::Month,
            ChunkSize::Year,
            ChunkSize::Whole,
        ] {
            let chunks = plan(w, size);
            assert_eq!(chunks.first().unwrap().start, w.start(), "{size}");
            assert_eq!(chunks.last().unwrap().end, w.end(), "{size}");
            for pair in chunks.windows(2) {
                assert_eq!(pair[1].start - pair[0].end, Duration::seconds(1), "{size}");
            }
        }
        assert_eq!(plan(w, ChunkSize::Year).len(), 3);
        assert_eq!(plan(w, ChunkSize::Month).len(), 24);
        assert_eq!(plan(w, ChunkSize::Whole).len(), 1);
        assert_eq!(plan(w, ChunkSize::Day).len(), 699);
        let months = plan(w, ChunkSize::Month);
        assert_eq!(months[0].start_rfc3339(), "2015-03-15T00:00:00Z");
        assert_eq!(months[0].end_rfc3339(), "2015-03-31T23:59:59Z");
        assert_eq!(months[1].start_rfc3339(), "2015-04-01T00:00:00Z");
    }

    #[test]
    fn one_day_window_is_one_chunk() {
        let w = Window::new(d("2020-02-29"), d("2020-02-29")).unwrap();
        assert_eq!(
            plan(w, ChunkSize::Year),
            vec![Chunk {
                start: w.start(),
                end: w.end()
            }]
        );
    }

    #[test]
    fn literals_use_pacific_offsets() {
        let winter = Utc.with_ymd_and_hms(2014, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(qbo_literal(winter), "2013-12-31T16:00:00-08:00");
        let summer = Utc.with_ymd_and_hms(2015, 7, 1, 12, 0, 0).unwrap();
        assert_eq!(qbo_literal(summer), "2015-07-01T05:00:00-07:00");
    }
}
