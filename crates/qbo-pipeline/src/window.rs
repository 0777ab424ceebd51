//! Extraction windows and their chunks (pure; no I/O).
//!
//! A backfill covers whole UTC days, both ends included: `[from T00:00:00Z, to T23:59:59Z]`.
//! The window is split into chunks (calendar days, 7-day weeks, calendar months or years, the
//! whole window, or `auto`: a number of equal day-aligned spans sized from QBO's count of the
//! window, see [`auto_chunks`]), each an independent unit of paging, concurrency and
//! checkpointing.
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
    #[error(
        "--to {to} is after tomorrow ({latest}): QBO holds no record updated in the future; use a date up to {latest}"
    )]
    InFuture { to: NaiveDate, latest: NaiveDate },
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
    /// A window of whole UTC days from 2000-01-01 to at most tomorrow (UTC): no record can
    /// be updated later, and an unbounded end would plan millions of chunks.
    pub fn new(from: NaiveDate, to: NaiveDate) -> Result<Self, WindowError> {
        Self::new_at(from, to, Utc::now())
    }

    /// [`Window::new`] with the clock given.
    pub fn new_at(from: NaiveDate, to: NaiveDate, now: DateTime<Utc>) -> Result<Self, WindowError> {
        if from > to {
            return Err(WindowError::Reversed { from, to });
        }
        let floor = NaiveDate::from_ymd_opt(2000, 1, 1).expect("valid constant date");
        if from < floor {
            return Err(WindowError::TooEarly(from));
        }
        let latest = now.date_naive() + Duration::days(1);
        if to > latest {
            return Err(WindowError::InFuture { to, latest });
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

    /// Number of days, both ends included.
    pub fn days(&self) -> u64 {
        (self.to - self.from).num_days() as u64 + 1
    }

    /// The window as one chunk: `[start, end]`.
    pub fn chunk(&self) -> Chunk {
        Chunk {
            start: self.start(),
            end: self.end(),
        }
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
    Year,
    Whole,
    /// Sized from the data: see [`auto_chunks`].
    #[default]
    Auto,
}

impl ChunkSize {
    pub fn as_str(self) -> &'static str {
        match self {
            ChunkSize::Day => "day",
            ChunkSize::Week => "week",
            ChunkSize::Month => "month",
            ChunkSize::Year => "year",
            ChunkSize::Whole => "whole",
            ChunkSize::Auto => "auto",
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
            "auto" => Ok(ChunkSize::Auto),
            other => Err(format!(
                "unknown chunk size '{other}': use auto, day, week, month, year or whole"
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

/// Splits the window into consecutive, non-overlapping chunks covering it exactly. `Auto`
/// needs QBO's count of the window ([`plan_auto`]); without one it falls back to years.
pub fn plan(window: Window, size: ChunkSize) -> Vec<Chunk> {
    let mut chunks = Vec::new();
    let mut day = window.from;
    while day <= window.to {
        let next = match size {
            ChunkSize::Day => day.succ_opt(),
            ChunkSize::Week => day.checked_add_days(chrono::Days::new(7)),
            ChunkSize::Month => first_of_next_month(day),
            ChunkSize::Year | ChunkSize::Auto => NaiveDate::from_ymd_opt(day.year() + 1, 1, 1),
            ChunkSize::Whole => None,
        };
        let last_day = match next {
            Some(n) if n <= window.to => n.pred_opt().unwrap_or(window.to),
            _ => window.to,
        };
        chunks.push(
            Window {
                from: day,
                to: last_day,
            }
            .chunk(),
        );
        match last_day.succ_opt() {
            Some(n) => day = n,
            None => break,
        }
    }
    chunks
}

/// Pages an `auto` chunk is sized to hold at least once a window outgrows the parallel plan:
/// each chunk costs at most one partial page, so this keeps chunking under 0.5% of requests.
pub const AUTO_PAGES_PER_CHUNK: u64 = 200;
/// Pages a chunk holds at least when the window is split for parallelism alone.
pub const AUTO_MIN_PAGES_PER_CHUNK: u64 = 25;

/// How many chunks `auto` splits a window of `expected` records into.
///
/// Every chunk ends with a partial page (or an empty one), so chunks cost requests: a fixed
/// calendar split of a large window spends about half a request per chunk. `auto` aims at
/// `concurrency` chunks, so that many page at once, as long as each holds at least
/// [`AUTO_MIN_PAGES_PER_CHUNK`] pages (a small window is one chunk). A window of more than
/// [`AUTO_PAGES_PER_CHUNK`] pages per concurrent chunk gets more chunks, each of at least
/// that many pages, so the overhead stays under 0.5% of the window's requests however large
/// it is; their number is a multiple of `concurrency`, so the last wave of chunks keeps every
/// slot busy. The result never exceeds the window's days (chunks are whole days).
pub fn auto_chunks(expected: u64, page_size: u32, concurrency: usize, days: u64) -> u64 {
    let pages = expected.div_ceil(u64::from(page_size.max(1)));
    let concurrency = (concurrency as u64).max(1);
    let chunks = if pages >= AUTO_PAGES_PER_CHUNK * concurrency {
        pages / (AUTO_PAGES_PER_CHUNK * concurrency) * concurrency
    } else {
        concurrency.min(pages / AUTO_MIN_PAGES_PER_CHUNK)
    };
    chunks.clamp(1, days.max(1))
}

/// Splits the window into `count` consecutive day-aligned spans of (nearly) equal length.
pub fn plan_even(window: Window, count: u64) -> Vec<Chunk> {
    let days = window.days();
    let count = count.clamp(1, days);
    (0..count)
        .map(|i| {
            Window {
                from: window.from + chrono::Days::new(days * i / count),
                to: window.from + chrono::Days::new(days * (i + 1) / count - 1),
            }
            .chunk()
        })
        .collect()
}

/// The `auto` plan of a window QBO counts `expected` records in (see [`auto_chunks`]).
///
/// Days from yesterday on (at `now`) are still open: records keep entering them, so a later
/// re-run must read them again. They get a chunk of their own, so that such a re-run reads
/// only them and proves the closed past unchanged ([`crate::backfill`]).
pub fn plan_auto(
    window: Window,
    expected: u64,
    page_size: u32,
    concurrency: usize,
    now: DateTime<Utc>,
) -> Vec<Chunk> {
    let open_from = (now - Duration::days(1)).date_naive();
    let (closed, open) = if open_from > window.from && open_from <= window.to {
        let last_closed = open_from.pred_opt().expect("after window.from");
        (
            Window {
                from: window.from,
                to: last_closed,
            },
            Some(
                Window {
                    from: open_from,
                    to: window.to,
                }
                .chunk(),
            ),
        )
    } else {
        (window, None)
    };
    let count = auto_chunks(expected, page_size, concurrency, closed.days());
    let mut chunks = plan_even(closed, count);
    chunks.extend(open);
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
/// literals are not documented by Intuit.
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
    fn auto_sizes_chunks_from_the_count() {
        let days = 4383; // 2014-01-01..2025-12-31
        // Small windows: one chunk; then up to `concurrency`, each of >= 25 pages.
        assert_eq!(auto_chunks(0, 1000, 4, days), 1);
        assert_eq!(auto_chunks(20_000, 1000, 4, days), 1);
        assert_eq!(auto_chunks(50_000, 1000, 4, days), 2);
        assert_eq!(auto_chunks(100_000, 1000, 4, days), 4);
        assert_eq!(auto_chunks(1_000_000, 1000, 4, days), 4);
        assert_eq!(auto_chunks(1_000_000, 1000, 10, days), 10);
        // Large windows: chunks of >= 200 pages (< 0.5% more requests), in multiples of
        // `concurrency`.
        assert_eq!(auto_chunks(1_600_000, 1000, 4, days), 8);
        assert_eq!(auto_chunks(10_000_000, 1000, 4, days), 48);
        assert_eq!(auto_chunks(1_000_000, 100, 4, days), 48);
        assert_eq!(auto_chunks(10_000_000, 1000, 1, days), 50);
        // Never more chunks than days.
        assert_eq!(auto_chunks(10_000_000, 1000, 4, 3), 3);
        assert_eq!(auto_chunks(10_000_000, 1000, 4, 1), 1);
        for pages in [1u64, 7, 25, 99, 100, 999, 1000, 1001, 5_000, 123_456] {
            let k = auto_chunks(pages * 1000, 1000, 4, days);
            assert!(k <= pages.div_ceil(AUTO_PAGES_PER_CHUNK).max(4), "{pages}");
            assert!(k == 1 || pages / k >= AUTO_MIN_PAGES_PER_CHUNK, "{pages}");
            // Monotonic: more data never means fewer chunks.
            assert!(
                auto_chunks(pages * 1000 + 1000, 1000, 4, days) >= k,
                "{pages}"
            );
        }
    }

    #[test]
    fn even_plans_tile_the_window_exactly() {
        let w = Window::new(d("2014-01-01"), d("2025-12-31")).unwrap();
        for count in [1, 2, 3, 5, 7, 50, 4383, 10_000] {
            let chunks = plan_even(w, count);
            assert_eq!(chunks.len() as u64, count.min(4383), "{count}");
            assert_eq!(chunks.first().unwrap().start, w.start(), "{count}");
            assert_eq!(chunks.last().unwrap().end, w.end(), "{count}");
            for pair in chunks.windows(2) {
                assert_eq!(pair[1].start - pair[0].end, Duration::seconds(1), "{count}");
            }
            let lengths: Vec<i64> = chunks
                .iter()
                .map(|c| (c.end - c.start).num_days() + 1)
                .collect();
            let (min, max) = (lengths.iter().min().unwrap(), lengths.iter().max().unwrap());
            assert!(max - min <= 1, "{count}: {lengths:?}");
        }
    }

    #[test]
    fn auto_plans_keep_open_days_in_a_chunk_of_their_own() {
        let w = Window::new(d("2014-01-01"), d("2025-12-31")).unwrap();
        let later = Utc.with_ymd_and_hms(2026, 11, 28, 15, 0, 0).unwrap();
        let four = plan_auto(w, 1_000_000, 1000, 4, later);
        assert_eq!(four, plan_even(w, 4));
        assert_eq!(four[1].start_rfc3339(), "2016-12-31T00:00:00Z");
        assert_eq!(plan_auto(w, 10, 1000, 4, later), plan(w, ChunkSize::Whole));

        // The window reaches the present: yesterday and today are one more chunk.
        let now = Utc.with_ymd_and_hms(2025, 7, 10, 0, 30, 0).unwrap();
        let chunks = plan_auto(w, 1_000_000, 1000, 4, now);
        assert_eq!(chunks.len(), 5);
        let open = chunks.last().unwrap();
        assert_eq!(open.start_rfc3339(), "2025-07-09T00:00:00Z");
        assert_eq!(open.end, w.end());
        assert_eq!(chunks[3].end_rfc3339(), "2025-07-08T23:59:59Z");
        assert_eq!(chunks[0].start, w.start());
        for pair in chunks.windows(2) {
            assert_eq!(pair[1].start - pair[0].end, Duration::seconds(1));
        }
        // A window of only open days is sized like any other.
        let recent = Window::new(d("2025-07-09"), d("2025-07-10")).unwrap();
        assert_eq!(
            plan_auto(recent, 1_000_000, 1000, 4, now),
            plan_even(recent, 2)
        );
        let single = Window::new(d("2025-07-10"), d("2025-07-10")).unwrap();
        assert_eq!(plan_auto(single, 5, 1000, 4, now).len(), 1);
    }

    #[test]
    fn windows_end_at_tomorrow_at_the_latest() {
        let now = Utc.with_ymd_and_hms(2026, 12, 2, 23, 0, 0).unwrap();
        assert!(Window::new_at(d("2026-01-01"), d("2026-12-03"), now).is_ok());
        let err = Window::new_at(d("2026-01-01"), d("9999-12-31"), now).unwrap_err();
        assert_eq!(
            err,
            WindowError::InFuture {
                to: d("9999-12-31"),
                latest: d("2026-12-03")
            }
        );
        assert!(err.to_string().contains("use a date up to 2026-12-03"));
        // The longest possible plan stays small: one chunk per day since 2000.
        let w = Window::new_at(d("2000-01-01"), d("2026-12-03"), now).unwrap();
        assert!(plan(w, ChunkSize::Day).len() < 10_000);
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
