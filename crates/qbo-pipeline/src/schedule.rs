//! When triggers fire (pure; no I/O, the clock is a parameter).
//!
//! A trigger's [`Schedule`] is either one instant ([`Schedule::Once`]) or a cron expression
//! evaluated on the wall clock of an IANA time zone ([`Schedule::Cron`], via `croner`),
//! optionally not before a start time. The trigger store keeps the next fire time; this module
//! computes it:
//!
//! - [`Schedule::first_fire`]: when a new (or re-armed) trigger first comes due.
//! - [`Schedule::after_fire`]: after a run at `now`, the next fire time. **Catch-up rule**: a
//!   recurring trigger that came due while no scheduler ran fires *once* when one starts, and
//!   its next fire time is the first tick strictly after that run, never a missed tick
//!   ([`missed_ticks`] counts what was skipped, for the log).
//! - [`retry_delay`]: back-off between attempts of a failed run.
//!
//! Daylight-saving time follows Vixie cron (croner's rules): a fixed-time job whose local time
//! does not exist (02:30 on a spring-forward night) runs at the first instant after the gap
//! (03:00 local); in a repeated hour (fall-back) it runs once, at the first occurrence.
//! Interval jobs (`*/15 * * * *`) keep ticking through both halves of a repeated hour.

use chrono::{DateTime, LocalResult, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds};
use std::fmt;
use std::time::Duration;

/// The closed set of trigger kinds, as stored (`once`, `cron`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TriggerKind {
    Once,
    Cron,
}

impl TriggerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TriggerKind::Once => "once",
            TriggerKind::Cron => "cron",
        }
    }

    pub fn parse(text: &str) -> Option<TriggerKind> {
        match text {
            "once" => Some(TriggerKind::Once),
            "cron" => Some(TriggerKind::Cron),
            _ => None,
        }
    }
}

/// A schedule that cannot be used, with advice.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error(
        "invalid cron expression '{expr}': {reason}; use 5 fields (minute hour day-of-month month day-of-week, e.g. '30 2 * * *') or @hourly, @daily, @weekly, @monthly, @yearly"
    )]
    BadCron { expr: String, reason: String },
    #[error(
        "unknown time zone '{0}': use an IANA name such as UTC, America/New_York or America/Guayaquil"
    )]
    BadTimeZone(String),
    #[error(
        "invalid time '{0}': use RFC 3339 (2026-02-02T00:02:00Z, 2026-02-01T19:02:00-05:00) or 'YYYY-MM-DD HH:MM:SS' in the trigger's time zone"
    )]
    BadInstant(String),
    #[error("the cron expression '{0}' never fires")]
    NeverFires(String),
}

/// Parses an IANA time zone name (`UTC`, `America/New_York`).
pub fn parse_timezone(text: &str) -> Result<Tz, ScheduleError> {
    text.trim()
        .parse::<Tz>()
        .map_err(|_| ScheduleError::BadTimeZone(text.to_string()))
}

/// Parses an instant: RFC 3339 with an offset, or a local `YYYY-MM-DD HH:MM[:SS[.f]]` (also
/// with `T`) read on `tz`'s wall clock — the form the old project's triggers.yaml uses. A local
/// time that does not exist (DST gap) is an error; an ambiguous one takes the earlier instant.
pub fn parse_instant(text: &str, tz: Tz) -> Result<DateTime<Utc>, ScheduleError> {
    let t = text.trim();
    if let Ok(at) = DateTime::parse_from_rfc3339(t) {
        return Ok(at.with_timezone(&Utc));
    }
    if let Ok(at) = DateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S%.f%:z") {
        return Ok(at.with_timezone(&Utc));
    }
    for format in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(t, format) {
            return match tz.from_local_datetime(&naive) {
                LocalResult::Single(at) | LocalResult::Ambiguous(at, _) => {
                    Ok(at.with_timezone(&Utc))
                }
                LocalResult::None => Err(ScheduleError::BadInstant(format!(
                    "{t} (that local time does not exist in {tz}: the clocks skip it)"
                ))),
            };
        }
    }
    Err(ScheduleError::BadInstant(text.to_string()))
}

/// A validated cron expression on a time zone's wall clock.
#[derive(Clone)]
pub struct CronSchedule {
    expr: String,
    // Boxed: croner's pattern is large and `Schedule` is passed around by value.
    cron: Box<Cron>,
    tz: Tz,
}

impl fmt::Debug for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CronSchedule({:?} in {})", self.expr, self.tz)
    }
}

impl PartialEq for CronSchedule {
    fn eq(&self, other: &Self) -> bool {
        self.expr == other.expr && self.tz == other.tz
    }
}

impl CronSchedule {
    /// Five-field cron (minute granularity) or an `@hourly`-style alias, on `tz`.
    pub fn parse(expr: &str, tz: Tz) -> Result<CronSchedule, ScheduleError> {
        let normalized = expr.split_whitespace().collect::<Vec<_>>().join(" ");
        let bad = |reason: String| ScheduleError::BadCron {
            expr: expr.to_string(),
            reason,
        };
        if normalized.is_empty() {
            return Err(bad("it is empty".into()));
        }
        if normalized.eq_ignore_ascii_case("@once") {
            return Err(bad("@once is a one-time trigger: give its time instead (--once-at, or start_time in YAML)".into()));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .build()
            .parse(&normalized)
            .map_err(|e| bad(e.to_string()))?;
        let schedule = CronSchedule {
            expr: normalized,
            cron: Box::new(cron),
            tz,
        };
        // A pattern such as `0 0 30 2 *` parses but never matches.
        let probe = Utc
            .with_ymd_and_hms(2000, 1, 1, 0, 0, 0)
            .single()
            .expect("valid");
        if schedule.next_after(probe).is_none() {
            return Err(ScheduleError::NeverFires(expr.to_string()));
        }
        Ok(schedule)
    }

    pub fn expr(&self) -> &str {
        &self.expr
    }

    pub fn timezone(&self) -> Tz {
        self.tz
    }

    /// The first tick strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&t.with_timezone(&self.tz), false)
            .ok()
            .map(|at| at.with_timezone(&Utc))
    }

    /// The first tick at or after `t`.
    pub fn next_from(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&t.with_timezone(&self.tz), true)
            .ok()
            .map(|at| at.with_timezone(&Utc))
    }
}

/// When a trigger fires.
#[derive(Debug, Clone, PartialEq)]
pub enum Schedule {
    /// Once, at this instant (a past instant fires as soon as a scheduler looks).
    Once(DateTime<Utc>),
    /// Every tick of a cron expression, not before `start` when given.
    Cron {
        cron: CronSchedule,
        start: Option<DateTime<Utc>>,
    },
}

impl Schedule {
    pub fn kind(&self) -> TriggerKind {
        match self {
            Schedule::Once(_) => TriggerKind::Once,
            Schedule::Cron { .. } => TriggerKind::Cron,
        }
    }

    /// When a trigger armed at `now` first comes due: a one-time trigger at its instant (even
    /// if past); a recurring one at its first tick at or after `start`, or strictly after
    /// `now` without one. A start in the past counts as no start: ticks missed before `now`
    /// are not owed.
    pub fn first_fire(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Once(at) => Some(*at),
            Schedule::Cron { cron, start } => match start {
                Some(s) if *s > now => cron.next_from(*s),
                _ => cron.next_after(now),
            },
        }
    }

    /// The next fire time after a run that started at `now` succeeded (or used its last
    /// attempt): none for a one-time trigger; for a recurring one the first tick strictly
    /// after `now` — ticks missed while no scheduler ran are not replayed.
    pub fn after_fire(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Once(_) => None,
            Schedule::Cron { cron, start } => match start {
                Some(s) if *s > now => cron.next_from(*s),
                _ => cron.next_after(now),
            },
        }
    }
}

/// How many ticks of `schedule` fell in `(due, now]` besides the one being fired: the ticks
/// the catch-up rule folds into a single run. Counting stops at `cap`.
pub fn missed_ticks(schedule: &Schedule, due: DateTime<Utc>, now: DateTime<Utc>, cap: u32) -> u32 {
    let Schedule::Cron { cron, .. } = schedule else {
        return 0;
    };
    let mut n = 0;
    let mut t = due;
    while n < cap {
        match cron.next_after(t) {
            Some(next) if next <= now => {
                n += 1;
                t = next;
            }
            _ => break,
        }
    }
    n
}

/// Back-off before retry `attempt` (1 = the first retry): `base`, doubling per attempt, at
/// most one hour (and never less than `base`).
pub fn retry_delay(base: Duration, attempt: u32) -> Duration {
    let factor = 1u32 << attempt.saturating_sub(1).min(16);
    base.saturating_mul(factor)
        .min(Duration::from_secs(3600).max(base))
}

/// What happens to a trigger after a run that started at `now`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AfterRun {
    /// `true`: the trigger stays active; `false`: it becomes inactive.
    pub active: bool,
    /// The next fire time (None when inactive).
    pub next_fire_at: Option<DateTime<Utc>>,
    /// Failed attempts counted so far toward `max_attempts` (0 after a success).
    pub attempts: u32,
    /// Whether this outcome is final for the fire (success, or the last attempt failed).
    pub final_outcome: bool,
}

/// The trigger's lifecycle after a run (pure): success → a one-time trigger becomes inactive,
/// a recurring one waits for its next tick; failure → retried after [`retry_delay`] while
/// fewer than `max_attempts` attempts failed (a recurring trigger retries no later than its
/// next tick), then a one-time trigger becomes inactive and a recurring one waits for its
/// next tick.
pub fn after_run(
    schedule: &Schedule,
    now: DateTime<Utc>,
    succeeded: bool,
    attempts_before: u32,
    max_attempts: u32,
    backoff: Duration,
) -> AfterRun {
    let next_tick = schedule.after_fire(now);
    if succeeded {
        return AfterRun {
            active: next_tick.is_some(),
            next_fire_at: next_tick,
            attempts: 0,
            final_outcome: true,
        };
    }
    let attempts = attempts_before + 1;
    if attempts < max_attempts.max(1) {
        let delay = chrono::Duration::from_std(retry_delay(backoff, attempts))
            .unwrap_or(chrono::Duration::hours(1));
        let retry_at = now + delay;
        let next = match next_tick {
            Some(tick) if tick < retry_at => tick,
            _ => retry_at,
        };
        return AfterRun {
            active: true,
            next_fire_at: Some(next),
            attempts,
            final_outcome: false,
        };
    }
    AfterRun {
        active: next_tick.is_some(),
        next_fire_at: next_tick,
        attempts: 0,
        final_outcome: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::America::{Guayaquil, New_York};

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn cron(expr: &str, tz: Tz) -> Schedule {
        Schedule::Cron {
            cron: CronSchedule::parse(expr, tz).unwrap(),
            start: None,
        }
    }

    #[test]
    fn once_fires_at_its_instant_even_if_past_and_never_again() {
        let at = utc("2026-02-02T00:02:00Z");
        let s = Schedule::Once(at);
        assert_eq!(s.first_fire(utc("2026-01-01T00:00:00Z")), Some(at));
        assert_eq!(
            s.first_fire(utc("2027-01-01T00:00:00Z")),
            Some(at),
            "a past instant is due at once"
        );
        assert_eq!(s.after_fire(utc("2026-02-02T00:02:05Z")), None);
        assert_eq!(s.kind(), TriggerKind::Once);
    }

    #[test]
    fn old_project_times_parse_in_their_zone() {
        // triggers.yaml wrote `start_time: 2026-02-02 00:02:00` (UTC); Guayaquil is UTC-5.
        assert_eq!(
            parse_instant("2026-02-02 00:02:00", Tz::UTC).unwrap(),
            utc("2026-02-02T00:02:00Z")
        );
        assert_eq!(
            parse_instant("2026-02-01 19:02:00", Guayaquil).unwrap(),
            utc("2026-02-02T00:02:00Z")
        );
        assert_eq!(
            parse_instant("2026-02-01T19:02:00-05:00", Tz::UTC).unwrap(),
            utc("2026-02-02T00:02:00Z")
        );
        assert_eq!(
            parse_instant("2026-02-02 00:02:00.000000", Tz::UTC).unwrap(),
            utc("2026-02-02T00:02:00Z")
        );
        assert_eq!(
            parse_instant("2026-02-02 00:02", Tz::UTC).unwrap(),
            utc("2026-02-02T00:02:00Z")
        );
        assert!(parse_instant("tomorrow", Tz::UTC).is_err());
        // 02:30 on 2025-03-09 does not exist in New York.
        let err = parse_instant("2025-03-09 02:30:00", New_York).unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
        // 01:30 on 2025-11-02 happens twice: the first (EDT) is taken.
        assert_eq!(
            parse_instant("2025-11-02 01:30:00", New_York).unwrap(),
            utc("2025-11-02T05:30:00Z")
        );
    }

    #[test]
    fn bad_cron_and_timezone_are_explained() {
        for bad in [
            "",
            "* * *",
            "61 * * * *",
            "0 0 * * * *",
            "every day",
            "@once",
            "@always_on",
        ] {
            let err = CronSchedule::parse(bad, Tz::UTC).unwrap_err();
            assert!(err.to_string().contains("cron expression"), "{bad}: {err}");
        }
        assert!(matches!(
            CronSchedule::parse("0 0 30 2 *", Tz::UTC),
            Err(ScheduleError::NeverFires(_))
        ));
        let err = parse_timezone("Mars/Olympus").unwrap_err();
        assert!(err.to_string().contains("IANA"), "{err}");
        assert_eq!(parse_timezone("America/New_York").unwrap(), New_York);
    }

    #[test]
    fn aliases_are_the_usual_cron_lines() {
        let now = utc("2026-02-02T10:17:00Z");
        assert_eq!(
            cron("@hourly", Tz::UTC).after_fire(now),
            Some(utc("2026-02-02T11:00:00Z"))
        );
        assert_eq!(
            cron("@daily", Tz::UTC).after_fire(now),
            Some(utc("2026-02-03T00:00:00Z"))
        );
        assert_eq!(
            cron("@monthly", Tz::UTC).after_fire(now),
            Some(utc("2026-03-01T00:00:00Z"))
        );
        // @daily in Guayaquil is local midnight, 05:00 UTC.
        assert_eq!(
            cron("@daily", Guayaquil).after_fire(now),
            Some(utc("2026-02-03T05:00:00Z"))
        );
    }

    #[test]
    fn a_daily_0230_new_york_cron_across_spring_forward() {
        // 2025-03-09: clocks jump from 02:00 EST to 03:00 EDT; 02:30 does not exist.
        let s = cron("30 2 * * *", New_York);
        let before = s.after_fire(utc("2025-03-07T12:00:00Z")).unwrap();
        assert_eq!(before, utc("2025-03-08T07:30:00Z"), "02:30 EST");
        // Day of the gap: runs at the first instant after it, 03:00 EDT = 07:00 UTC.
        let gap_day = s.after_fire(before).unwrap();
        assert_eq!(gap_day, utc("2025-03-09T07:00:00Z"));
        assert_eq!(
            gap_day.with_timezone(&New_York).to_rfc3339(),
            "2025-03-09T03:00:00-04:00"
        );
        // The day after: 02:30 EDT = 06:30 UTC.
        assert_eq!(s.after_fire(gap_day).unwrap(), utc("2025-03-10T06:30:00Z"));
    }

    #[test]
    fn a_daily_0130_new_york_cron_runs_once_on_fall_back() {
        // 2025-11-02: 01:00-02:00 happens twice (EDT, then EST).
        let s = cron("30 1 * * *", New_York);
        let first = s.after_fire(utc("2025-11-01T12:00:00Z")).unwrap();
        assert_eq!(first, utc("2025-11-02T05:30:00Z"), "01:30 EDT");
        let next = s.after_fire(first).unwrap();
        assert_eq!(
            next,
            utc("2025-11-03T06:30:00Z"),
            "not again at 01:30 EST; next day 01:30 EST"
        );
    }

    #[test]
    fn an_interval_cron_ticks_through_both_halves_of_a_repeated_hour() {
        let s = cron("*/30 * * * *", New_York);
        let mut t = utc("2025-11-02T04:45:00Z"); // 00:45 EDT
        let mut ticks = Vec::new();
        for _ in 0..5 {
            t = s.after_fire(t).unwrap();
            ticks.push(t);
        }
        let want: Vec<DateTime<Utc>> = ["05:00", "05:30", "06:00", "06:30", "07:00"]
            .iter()
            .map(|hm| utc(&format!("2025-11-02T{hm}:00Z")))
            .collect();
        assert_eq!(ticks, want, "every half hour of absolute time, 01:xx twice");
    }

    #[test]
    fn the_hourly_alias_is_absolute_across_spring_forward() {
        let s = cron("@hourly", New_York);
        let t = s.after_fire(utc("2025-03-09T06:30:00Z")).unwrap(); // 01:30 EST
        assert_eq!(
            t,
            utc("2025-03-09T07:00:00Z"),
            "03:00 EDT follows 01:59 EST"
        );
    }

    #[test]
    fn start_time_delays_the_first_tick() {
        let s = Schedule::Cron {
            cron: CronSchedule::parse("@daily", Tz::UTC).unwrap(),
            start: Some(utc("2026-03-01T00:00:00Z")),
        };
        assert_eq!(
            s.first_fire(utc("2026-02-02T10:00:00Z")),
            Some(utc("2026-03-01T00:00:00Z"))
        );
        assert_eq!(
            s.first_fire(utc("2026-04-02T10:00:00Z")),
            Some(utc("2026-04-03T00:00:00Z"))
        );
    }

    #[test]
    fn catch_up_fires_once_then_resumes_the_grid() {
        let s = cron("*/10 * * * *", Tz::UTC);
        let armed = utc("2026-02-02T10:00:00Z");
        let due = s.first_fire(armed).unwrap();
        assert_eq!(due, utc("2026-02-02T10:10:00Z"));
        // Down until 10:55: five ticks (10:10 .. 10:50) came due.
        let now = utc("2026-02-02T10:55:00Z");
        assert_eq!(
            missed_ticks(&s, due, now, 1000),
            4,
            "four besides the one fired"
        );
        assert_eq!(s.after_fire(now), Some(utc("2026-02-02T11:00:00Z")));
    }

    #[test]
    fn retries_back_off_then_give_up() {
        let base = Duration::from_secs(60);
        assert_eq!(retry_delay(base, 1), Duration::from_secs(60));
        assert_eq!(retry_delay(base, 2), Duration::from_secs(120));
        assert_eq!(retry_delay(base, 3), Duration::from_secs(240));
        assert_eq!(retry_delay(base, 30), Duration::from_secs(3600));
        assert_eq!(retry_delay(Duration::ZERO, 5), Duration::ZERO);

        let once = Schedule::Once(utc("2026-02-02T00:00:00Z"));
        let now = utc("2026-02-02T00:00:10Z");
        let a1 = after_run(&once, now, false, 0, 3, base);
        assert_eq!(
            a1,
            AfterRun {
                active: true,
                next_fire_at: Some(now + chrono::Duration::seconds(60)),
                attempts: 1,
                final_outcome: false
            }
        );
        let a2 = after_run(&once, now, false, 1, 3, base);
        assert_eq!(a2.next_fire_at, Some(now + chrono::Duration::seconds(120)));
        let a3 = after_run(&once, now, false, 2, 3, base);
        assert_eq!(
            a3,
            AfterRun {
                active: false,
                next_fire_at: None,
                attempts: 0,
                final_outcome: true
            }
        );
        let ok = after_run(&once, now, true, 2, 3, base);
        assert_eq!(
            ok,
            AfterRun {
                active: false,
                next_fire_at: None,
                attempts: 0,
                final_outcome: true
            }
        );
        // A single attempt allowed: the first failure is final.
        assert!(after_run(&once, now, false, 0, 1, base).final_outcome);

        // A recurring trigger retries no later than its next tick and stays active.
        let hourly = cron("@hourly", Tz::UTC);
        let now = utc("2026-02-02T10:59:30Z");
        let r = after_run(&hourly, now, false, 0, 3, base);
        assert_eq!(r.next_fire_at, Some(utc("2026-02-02T11:00:00Z")));
        let last = after_run(&hourly, now, false, 2, 3, base);
        assert_eq!(
            last,
            AfterRun {
                active: true,
                next_fire_at: Some(utc("2026-02-02T11:00:00Z")),
                attempts: 0,
                final_outcome: true
            }
        );
    }
}
