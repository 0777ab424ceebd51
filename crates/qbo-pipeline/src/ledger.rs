//! The run ledger (`qbo_pipeline.runs`, `qbo_pipeline.run_entities`): every run, its
//! parameters, status, times, per-entity figures and error.
//!
//! A running process holds a session advisory lock keyed by its run id; a `running` row whose
//! lock is free belongs to a process that died (`kill -9`, power loss) and is shown, and
//! recorded, as `abandoned`.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

/// How a run stands (`qbo_pipeline.runs.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Running,
    Succeeded,
    Failed,
    /// Its process ended without recording an outcome.
    Abandoned,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Abandoned => "abandoned",
        }
    }
}

/// How one entity of a run ended (`qbo_pipeline.run_entities.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EntityStatus {
    Succeeded,
    /// A stop request ended it; the same command resumes it.
    Stopped,
    Failed,
    /// Not extracted: the company does not offer the entity (its edition, region or
    /// settings lack the feature it needs); the run still succeeds. The note says why.
    Skipped,
}

impl EntityStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            EntityStatus::Succeeded => "succeeded",
            EntityStatus::Stopped => "stopped",
            EntityStatus::Failed => "failed",
            EntityStatus::Skipped => "skipped",
        }
    }
}

impl std::fmt::Display for EntityStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// Keeps the liveness lock of a run for as long as it lives.
pub struct RunGuard {
    pub run_id: i64,
    conn: Option<sqlx::pool::PoolConnection<sqlx::Postgres>>,
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            drop(conn.detach());
        }
    }
}

fn liveness_key_sql() -> &'static str {
    "hashtextextended('qbo_pipeline.run:' || $1::text, 0)"
}

/// Records a new run as `running`.
pub async fn start_run(
    pool: &PgPool,
    pipeline: &str,
    trigger: Option<&str>,
    realm: &str,
    params: &serde_json::Value,
) -> Result<RunGuard, sqlx::Error> {
    mark_abandoned(pool).await?;
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok());
    // The row and its liveness lock appear together: the INSERT and the (session-level)
    // lock run in one transaction on the connection that keeps the lock, so no other
    // process can see the `running` row before its lock is held (and call it abandoned).
    let mut conn = pool.acquire().await?;
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    let run_id: i64 = sqlx::query_scalar(
        "INSERT INTO qbo_pipeline.runs (pipeline, trigger_name, realm_id, params, status, host, pid)
         VALUES ($1, $2, $3, $4, 'running', $5, $6) RETURNING run_id",
    )
    .bind(pipeline)
    .bind(trigger)
    .bind(realm)
    .bind(params)
    .bind(host)
    .bind(std::process::id() as i32)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT pg_advisory_lock({})",
        liveness_key_sql()
    )))
    .bind(run_id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(RunGuard {
        run_id,
        conn: Some(conn),
    })
}

/// Records the end of a run and releases its liveness lock.
pub async fn finish_run(
    pool: &PgPool,
    mut guard: RunGuard,
    error: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE qbo_pipeline.runs SET status = $2, finished_at = now(), error = $3 WHERE run_id = $1",
    )
    .bind(guard.run_id)
    .bind(
        if error.is_some() {
            RunStatus::Failed
        } else {
            RunStatus::Succeeded
        }
        .as_str(),
    )
    .bind(error)
    .execute(pool)
    .await?;
    if let Some(mut conn) = guard.conn.take() {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT pg_advisory_unlock({})",
            liveness_key_sql()
        )))
        .bind(guard.run_id)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Marks `running` runs whose process is gone as `abandoned`.
pub async fn mark_abandoned(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let running: Vec<i64> =
        sqlx::query_scalar("SELECT run_id FROM qbo_pipeline.runs WHERE status = 'running'")
            .fetch_all(pool)
            .await?;
    let mut marked = 0;
    for run_id in running {
        if !alive(pool, run_id).await? {
            let updated = sqlx::query(
                "UPDATE qbo_pipeline.runs SET status = 'abandoned', finished_at = now(),
                     error = coalesce(error, 'the process ended without recording an outcome (killed?); run the same command again to resume')
                 WHERE run_id = $1 AND status = 'running'",
            )
            .bind(run_id)
            .execute(pool)
            .await?;
            marked += updated.rows_affected();
        }
    }
    Ok(marked)
}

/// Creates the per-entity row of a run.
pub async fn start_entity(
    pool: &PgPool,
    run_id: i64,
    entity: &str,
    chunks_total: i32,
    chunks_skipped: i32,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO qbo_pipeline.run_entities (run_id, entity, chunks_total, chunks_skipped, chunks_done)
         VALUES ($1, $2, $3, $4, $4)
         ON CONFLICT (run_id, entity) DO UPDATE SET chunks_total = EXCLUDED.chunks_total,
             chunks_skipped = EXCLUDED.chunks_skipped, chunks_done = EXCLUDED.chunks_done",
    )
    .bind(run_id)
    .bind(entity)
    .bind(chunks_total)
    .bind(chunks_skipped)
    .execute(pool)
    .await?;
    Ok(())
}

/// One entity's figures in a sync run: its row is created if the full-load engine did not
/// create it, and the sync's own figures are added to what that engine recorded.
pub async fn record_sync_entity(
    pool: &PgPool,
    run_id: i64,
    e: &crate::sync::EntitySync,
) -> Result<(), sqlx::Error> {
    let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let note = match (&e.note, &e.error) {
        (Some(n), Some(err)) => Some(format!("{n}; {err}")),
        (n, err) => n.clone().or_else(|| err.clone()),
    };
    sqlx::query(
        "INSERT INTO qbo_pipeline.run_entities (run_id, entity, records, rows_written, requests,
             retries, throttled, expected, status, note, mode, changes, rows_deleted)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $3, $12)
         ON CONFLICT (run_id, entity) DO UPDATE SET
             records = EXCLUDED.records, rows_written = EXCLUDED.rows_written,
             requests = EXCLUDED.requests, retries = EXCLUDED.retries,
             throttled = EXCLUDED.throttled, expected = EXCLUDED.expected,
             status = EXCLUDED.status, note = EXCLUDED.note, mode = EXCLUDED.mode,
             changes = EXCLUDED.changes, rows_deleted = EXCLUDED.rows_deleted",
    )
    .bind(run_id)
    .bind(e.entity.cli_name())
    .bind(n(e.changes))
    .bind(n(e.rows_written))
    .bind(i32::try_from(e.requests).unwrap_or(i32::MAX))
    .bind(i32::try_from(e.retries).unwrap_or(i32::MAX))
    .bind(i32::try_from(e.throttled).unwrap_or(i32::MAX))
    .bind(e.qbo_count.map(n))
    .bind(e.status.as_str())
    .bind(note)
    .bind(&e.mode)
    .bind(n(e.rows_deleted))
    .execute(pool)
    .await?;
    Ok(())
}

/// Final figures of one entity (request counters are kept in memory during the run).
#[allow(clippy::too_many_arguments)]
pub async fn finish_entity(
    pool: &PgPool,
    run_id: i64,
    entity: &str,
    status: EntityStatus,
    requests: i64,
    retries: i64,
    throttled: i64,
    expected: Option<i64>,
    note: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        // An upsert: an entity that failed before it was planned (its first request is the
        // window count) still gets its row, status and request figures.
        "INSERT INTO qbo_pipeline.run_entities (run_id, entity, status, requests, retries, throttled, expected, note)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (run_id, entity) DO UPDATE SET status = $3, requests = $4, retries = $5,
             throttled = $6, expected = coalesce($7, run_entities.expected), note = $8",
    )
    .bind(run_id)
    .bind(entity)
    .bind(status.as_str())
    .bind(i32::try_from(requests).unwrap_or(i32::MAX))
    .bind(i32::try_from(retries).unwrap_or(i32::MAX))
    .bind(i32::try_from(throttled).unwrap_or(i32::MAX))
    .bind(expected)
    .bind(note)
    .execute(pool)
    .await?;
    Ok(())
}

/// One row of `runs list`.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct RunRow {
    pub run_id: i64,
    pub pipeline: String,
    pub trigger_name: Option<String>,
    pub realm_id: String,
    pub params: serde_json::Value,
    pub status: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
    pub records: i64,
    pub requests: i64,
    /// The newest validation of this run's data: passed or not, and its evidence folder.
    pub validation_passed: Option<bool>,
    pub validation_evidence: Option<String>,
}

/// Per-entity figures of one run.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct RunEntityRow {
    pub entity: String,
    pub status: String,
    pub chunks_total: i32,
    pub chunks_done: i32,
    pub chunks_skipped: i32,
    pub chunks_verified: i32,
    pub pages: i32,
    pub records: i64,
    pub rows_written: i64,
    pub requests: i32,
    pub retries: i32,
    pub throttled: i32,
    pub expected: Option<i64>,
    /// Why the entity was skipped, when it was.
    pub note: Option<String>,
    /// A sync's: how it read the entity (`full`, `cdc`, `query`, `reread`, `+verify`).
    pub mode: Option<String>,
    /// A sync's: the changes QBO reported, and the rows marked deleted.
    pub changes: Option<i64>,
    pub rows_deleted: Option<i64>,
}

/// A run with its figures summed per run (a lateral sum, so `ORDER BY run_id DESC LIMIT n`
/// reads n runs from the primary key instead of aggregating the whole ledger first).
const RUN_SELECT: &str =
    "SELECT r.run_id, r.pipeline, r.trigger_name, r.realm_id, r.params, r.status,
        r.started_at, r.finished_at, r.error,
        coalesce(s.records, 0)::bigint AS records, coalesce(s.requests, 0)::bigint AS requests,
        v.passed AS validation_passed, v.evidence_dir AS validation_evidence
    FROM qbo_pipeline.runs r
    LEFT JOIN LATERAL (SELECT sum(e.records) AS records, sum(e.requests) AS requests
                       FROM qbo_pipeline.run_entities e WHERE e.run_id = r.run_id) s ON true
    LEFT JOIN LATERAL (SELECT passed, evidence_dir FROM qbo_pipeline.validations x
                       WHERE x.run_id = r.run_id ORDER BY validation_id DESC LIMIT 1) v ON true";

/// Whether the process that started a `running` run still holds its liveness lock.
async fn alive(pool: &PgPool, run_id: i64) -> Result<bool, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let free: bool = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT pg_try_advisory_lock({})",
        liveness_key_sql()
    )))
    .bind(run_id)
    .fetch_one(&mut *conn)
    .await?;
    if free {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT pg_advisory_unlock({})",
            liveness_key_sql()
        )))
        .bind(run_id)
        .execute(&mut *conn)
        .await?;
    }
    Ok(!free)
}

/// Which runs to list.
#[derive(Debug, Clone, Default)]
pub struct RunFilter<'a> {
    /// Only these realms (all when empty).
    pub realms: &'a [String],
    pub pipeline: Option<&'a str>,
    pub status: Option<&'a str>,
    /// Started at or after.
    pub since: Option<DateTime<Utc>>,
}

/// The newest `limit` runs, filtered, without writing anything (for the web API): a
/// `running` run whose process is gone is shown `abandoned` (as `runs list` would record
/// it).
pub async fn list_runs_filtered(
    pool: &PgPool,
    limit: i64,
    filter: &RunFilter<'_>,
) -> Result<Vec<RunRow>, sqlx::Error> {
    let status = filter.status;
    let mut rows: Vec<RunRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{RUN_SELECT} WHERE (cardinality($2::text[]) = 0 OR r.realm_id = ANY($2))
           AND ($3::text IS NULL OR r.pipeline = $3)
           AND ($4::text IS NULL OR r.status = $4 OR ($4 = 'abandoned' AND r.status = 'running'))
           AND ($5::timestamptz IS NULL OR r.started_at >= $5)
         ORDER BY r.run_id DESC LIMIT $1"
    )))
    .bind(limit)
    .bind(filter.realms)
    .bind(filter.pipeline)
    .bind(status)
    .bind(filter.since)
    .fetch_all(pool)
    .await?;
    for row in &mut rows {
        if row.status == "running" && !alive(pool, row.run_id).await? {
            row.status = "abandoned".into();
        }
    }
    if let Some(status) = status {
        rows.retain(|r| r.status == status);
    }
    Ok(rows)
}

/// The newest `limit` runs, of the given realms only when `realms` is not empty. Reads
/// only: a `running` run whose process is gone is shown `abandoned` (the next run that
/// starts records it so).
pub async fn list_runs(
    pool: &PgPool,
    limit: i64,
    realms: &[String],
) -> Result<Vec<RunRow>, sqlx::Error> {
    list_runs_filtered(
        pool,
        limit,
        &RunFilter {
            realms,
            ..RunFilter::default()
        },
    )
    .await
}

pub async fn show_run(
    pool: &PgPool,
    run_id: i64,
) -> Result<Option<(RunRow, Vec<RunEntityRow>)>, sqlx::Error> {
    let run: Option<RunRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{RUN_SELECT} WHERE r.run_id = $1"
    )))
    .bind(run_id)
    .fetch_optional(pool)
    .await?;
    let Some(mut run) = run else { return Ok(None) };
    if run.status == "running" && !alive(pool, run.run_id).await? {
        run.status = "abandoned".into();
    }
    let entities = sqlx::query_as(
        "SELECT entity, status, chunks_total, chunks_done, chunks_skipped, chunks_verified, pages, records, rows_written,
                requests, retries, throttled, expected, note, mode, changes, rows_deleted
         FROM qbo_pipeline.run_entities WHERE run_id = $1 ORDER BY entity",
    )
    .bind(run_id)
    .fetch_all(pool)
    .await?;
    Ok(Some((run, entities)))
}
