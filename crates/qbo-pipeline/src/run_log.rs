//! A run's log lines, kept in `qbo_pipeline.run_log` so the dashboard can show what a run
//! did whichever process ran it.
//!
//! [`RunLog`] is a bus sink: it turns the events worth reading afterwards into lines (a run's
//! start and outcome, plans, changed chunks, warnings, entity outcomes, and the throttled,
//! retried or failed requests of the run's company while it runs) and keeps them in memory
//! until the runtime flushes them, in one statement, every second. Pages and successful
//! requests make no line. Memory is bounded: past [`MAX_PENDING`] unflushed lines (a database
//! that does not answer) new lines are counted and dropped, and the count is logged.

use crate::events::{Event, Sink};
use crate::ledger::EntityStatus;
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::Mutex;

/// Unflushed lines kept at most.
pub const MAX_PENDING: usize = 20_000;
/// Lines recorded per run at most (a run with a million retries keeps its first lines).
pub const MAX_PER_RUN: u64 = 5_000;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct LogLine {
    pub run_id: i64,
    pub seq: i64,
    pub at: DateTime<Utc>,
    pub level: String,
    pub message: String,
}

#[derive(Default)]
struct State {
    pending: Vec<LogLine>,
    /// Lines made per run so far (its next `seq`).
    made: HashMap<i64, u64>,
    /// Runs in flight per realm: where a realm's request lines go.
    running: HashMap<String, Vec<i64>>,
    dropped: u64,
}

#[derive(Default)]
pub struct RunLog {
    state: Mutex<State>,
}

impl State {
    fn push(&mut self, run_id: i64, level: &'static str, message: String) {
        let n = self.made.entry(run_id).or_default();
        if *n >= MAX_PER_RUN {
            return;
        }
        if self.pending.len() >= MAX_PENDING {
            self.dropped += 1;
            return;
        }
        let line = LogLine {
            run_id,
            seq: *n as i64,
            at: Utc::now(),
            level: level.to_string(),
            message: if *n + 1 == MAX_PER_RUN {
                format!("{message} (the log of this run stops here: {MAX_PER_RUN} lines)")
            } else {
                message
            },
        };
        *n += 1;
        self.pending.push(line);
    }
}

fn line(event: &Event) -> Option<(&'static str, String)> {
    Some(match event {
        Event::RunStarted(e) => (
            "info",
            format!(
                "backfill started: pipeline {}, window {} to {}, {} entities{}",
                e.pipeline,
                e.from,
                e.to,
                e.entities.len(),
                e.trigger
                    .as_deref()
                    .map(|t| format!(", trigger {t}"))
                    .unwrap_or_default()
            ),
        ),
        Event::SyncStarted(e) => (
            "info",
            format!(
                "sync started: pipeline {}, {} entities{}",
                e.pipeline,
                e.entities.len(),
                e.trigger
                    .as_deref()
                    .map(|t| format!(", trigger {t}"))
                    .unwrap_or_default()
            ),
        ),
        Event::SyncEntityFinished(f) => {
            let e = &f.entity;
            match e.status {
                EntityStatus::Failed => (
                    "error",
                    format!(
                        "{}: sync failed: {}",
                        e.entity,
                        e.error.as_deref().unwrap_or("")
                    ),
                ),
                EntityStatus::Skipped => (
                    "info",
                    format!(
                        "{}: not synced: {}",
                        e.entity,
                        e.note.as_deref().unwrap_or("the company does not offer it")
                    ),
                ),
                _ => (
                    "info",
                    format!(
                        "{}: synced by {}: {} changes, {} rows written, {} deleted, {} requests{}",
                        e.entity,
                        e.mode,
                        e.changes,
                        e.rows_written,
                        e.rows_deleted,
                        e.requests,
                        match (e.qbo_count, e.live_rows) {
                            (Some(q), Some(l)) => format!("; QBO counts {q}, {l} live rows"),
                            _ => String::new(),
                        }
                    ),
                ),
            }
        }
        Event::EntityPlanned(e) => (
            "info",
            format!(
                "{}: {} expected, {} chunks ({}){}",
                e.entity,
                e.expected
                    .map_or_else(|| "count unknown,".to_string(), |n| n.to_string()),
                e.chunks,
                e.chunking,
                if e.resumed {
                    format!(", resuming: {} chunks already done", e.chunks_done)
                } else {
                    String::new()
                }
            ),
        ),
        Event::ChunkChanged(e) => (
            "info",
            format!(
                "{}: chunk from {} changed since its last load (QBO {}, stored {}): reading it again",
                e.entity, e.chunk_start, e.in_qbo, e.stored
            ),
        ),
        Event::CountUnreadable(e) => (
            "warn",
            format!("{}: QBO's count is unreadable: {}", e.entity, e.error),
        ),
        Event::TieSecond(e) => (
            "info",
            format!(
                "{}: a whole page shares the second {}: read by offset",
                e.entity, e.second
            ),
        ),
        Event::WholeReadMismatch(e) => (
            "warn",
            format!(
                "{}: read {} records, QBO counts {}{}",
                e.entity,
                e.read,
                e.expected
                    .map_or_else(|| "?".to_string(), |n| n.to_string()),
                if e.retrying { "; reading again" } else { "" }
            ),
        ),
        Event::WholeReadUnproved(e) => (
            "warn",
            format!(
                "{}: {} records read whole without a usable count: completeness not proved",
                e.entity, e.records
            ),
        ),
        Event::EntityFinished(e) => match e.status {
            EntityStatus::Failed => (
                "error",
                format!("{}: failed: {}", e.entity, e.error.as_deref().unwrap_or("")),
            ),
            EntityStatus::Skipped => (
                "warn",
                format!(
                    "{}: skipped: {}",
                    e.entity,
                    e.note.as_deref().unwrap_or("the company does not offer it")
                ),
            ),
            _ => (
                "info",
                format!(
                    "{}: {}: {} records, {} rows written, {} requests ({} retries, {} throttled) in {:.1} s",
                    e.entity,
                    e.status,
                    e.records,
                    e.rows_written,
                    e.requests,
                    e.retries,
                    e.throttled,
                    e.seconds
                ),
            ),
        },
        Event::RunFinished(e) => match &e.error {
            None if e.interrupted => ("warn", format!("run interrupted after {:.1} s", e.seconds)),
            None => (
                "info",
                format!("run {} in {:.1} s", e.status.as_str(), e.seconds),
            ),
            Some(err) => (
                "error",
                format!("run {} after {:.1} s: {err}", e.status.as_str(), e.seconds),
            ),
        },
        _ => return None,
    })
}

impl Sink for RunLog {
    fn on(&self, event: &Event) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match event {
            Event::RunStarted(e) => state
                .running
                .entry(e.run.realm.to_string())
                .or_default()
                .push(e.run.run_id),
            Event::SyncStarted(e) => state
                .running
                .entry(e.run.realm.to_string())
                .or_default()
                .push(e.run.run_id),
            Event::RequestFinished(r) => {
                let failed = !matches!(r.outcome, qbo_client::Outcome::Ok);
                if !(failed || r.retried) {
                    return;
                }
                let Some(runs) = state.running.get(&*r.realm).cloned() else {
                    return;
                };
                let message = format!(
                    "{} request, attempt {}: {}{}",
                    r.endpoint.as_str(),
                    r.attempt,
                    crate::usage::outcome_label(&r.outcome),
                    match (r.retried, r.retry_after_ms) {
                        (true, Some(ms)) => format!("; sent again in {:.1} s", ms as f64 / 1000.0),
                        (true, None) => "; sent again".to_string(),
                        _ => String::new(),
                    }
                );
                let level = if r.retried { "warn" } else { "error" };
                for run in runs {
                    state.push(run, level, message.clone());
                }
                return;
            }
            _ => {}
        }
        let Some(run) = event.run() else { return };
        let run_id = run.run_id;
        if let Some((level, message)) = line(event) {
            state.push(run_id, level, message);
        }
        if let Event::RunFinished(e) = event {
            if let Some(runs) = state.running.get_mut(&*e.run.realm) {
                runs.retain(|r| *r != run_id);
            }
            state.made.remove(&run_id);
        }
    }
}

impl RunLog {
    /// Writes the pending lines in one statement; on failure they are kept (up to the
    /// bound) for the next try.
    pub async fn flush(&self, pool: &PgPool) -> Result<(), sqlx::Error> {
        let (taken, dropped) = {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            (
                std::mem::take(&mut state.pending),
                std::mem::take(&mut state.dropped),
            )
        };
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "run log lines were dropped: the database did not take them in time"
            );
        }
        if taken.is_empty() {
            return Ok(());
        }
        let mut runs = Vec::with_capacity(taken.len());
        let mut seqs = Vec::with_capacity(taken.len());
        let mut ats = Vec::with_capacity(taken.len());
        let mut levels = Vec::with_capacity(taken.len());
        let mut messages = Vec::with_capacity(taken.len());
        for l in &taken {
            runs.push(l.run_id);
            seqs.push(l.seq);
            ats.push(l.at);
            levels.push(l.level.clone());
            messages.push(l.message.clone());
        }
        let written = sqlx::query(
            "INSERT INTO qbo_pipeline.run_log (run_id, seq, at, level, message)
             SELECT l.* FROM UNNEST($1::bigint[], $2::bigint[], $3::timestamptz[], $4::text[], $5::text[])
                  AS l(run_id, seq, at, level, message)
             WHERE EXISTS (SELECT 1 FROM qbo_pipeline.runs r WHERE r.run_id = l.run_id)
             ON CONFLICT DO NOTHING",
        )
        .bind(&runs)
        .bind(&seqs)
        .bind(&ats)
        .bind(&levels)
        .bind(&messages)
        .execute(pool)
        .await;
        if let Err(e) = written {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let room = MAX_PENDING.saturating_sub(state.pending.len());
            let keep = taken.len().min(room);
            state.dropped += (taken.len() - keep) as u64;
            let mut back: Vec<LogLine> = taken.into_iter().take(keep).collect();
            back.append(&mut state.pending);
            state.pending = back;
            return Err(e);
        }
        Ok(())
    }
}

/// A run's lines, oldest first (at most `limit`).
pub async fn lines(pool: &PgPool, run_id: i64, limit: i64) -> Result<Vec<LogLine>, sqlx::Error> {
    sqlx::query_as(
        "SELECT run_id, seq, at, level, message FROM qbo_pipeline.run_log
         WHERE run_id = $1 ORDER BY seq LIMIT $2",
    )
    .bind(run_id)
    .bind(limit)
    .fetch_all(pool)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{RunFinished, RunRef};
    use crate::ledger::RunStatus;

    fn finished(run_id: i64) -> Event {
        Event::RunFinished(RunFinished {
            run: RunRef {
                run_id,
                realm: "1".into(),
            },
            status: RunStatus::Succeeded,
            interrupted: false,
            seconds: 1.0,
            error: None,
        })
    }

    #[test]
    fn memory_is_bounded_and_drops_are_counted() {
        let log = RunLog::default();
        for run in 0..(MAX_PENDING as i64 + 10) {
            log.on(&finished(run));
        }
        let state = log.state.lock().unwrap();
        assert_eq!(state.pending.len(), MAX_PENDING);
        assert_eq!(state.dropped, 10);
        // A finished run forgets its counter: nothing grows with the number of runs.
        assert!(state.made.is_empty());
    }

    #[test]
    fn lines_are_numbered_per_run() {
        let log = RunLog::default();
        log.on(&finished(7));
        let state = log.state.lock().unwrap();
        assert_eq!(state.pending[0].seq, 0);
        assert_eq!(state.pending[0].level, "info");
        assert!(
            state.pending[0].message.contains("succeeded"),
            "{:?}",
            state.pending[0]
        );
    }
}
