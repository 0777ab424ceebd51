//! Backfill jobs and their per-chunk checkpoints (`qbo_pipeline.backfill_jobs`,
//! `qbo_pipeline.checkpoints`).
//!
//! A job is one entity of one realm over one window with one chunking; its chunks are fixed
//! when it is first planned. When a run starts and
//! the job is `in_progress` (an earlier run failed or was killed), its finished chunks are
//! skipped and unfinished ones continue from their cursor. When it is `complete`, every chunk
//! starts over but keeps the time it was last completely loaded (`completed_at`), which lets
//! the engine prove a past chunk unchanged with one `COUNT(*)` instead of reading it again
//! ([`crate::backfill`]). `--restart` forgets everything, `completed_at` included. Checkpoint
//! rows are advanced by [`crate::load`] in the same transaction as the rows they cover.

use crate::entity::Entity;
use crate::window::{Chunk, ChunkSize, Window};
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use std::sync::Arc;

/// The saved progress of one chunk.
#[derive(Debug, Clone)]
pub struct ChunkState {
    pub chunk: Chunk,
    /// The newest committed record's `LastUpdatedTime` literal; `None` = not started.
    pub cursor: Option<String>,
    pub pages: i32,
    pub records: i64,
    pub done: bool,
    /// When the chunk was last completely loaded (by this job, in an earlier run).
    pub completed_at: Option<DateTime<Utc>>,
}

#[derive(Debug)]
pub struct Job {
    pub job_id: i64,
    /// Whether an interrupted earlier run is being resumed.
    pub resumed: bool,
    pub chunks: Vec<ChunkState>,
}

/// What identifies a job.
#[derive(Debug, Clone, Copy)]
pub struct JobKey<'a> {
    pub realm: &'a str,
    pub entity: Entity,
    pub window: Window,
    pub size: ChunkSize,
}

#[derive(sqlx::FromRow)]
struct CheckpointRow {
    chunk_start: DateTime<Utc>,
    chunk_end: DateTime<Utc>,
    cursor_text: Option<String>,
    pages: i32,
    records: i64,
    done: bool,
    completed_at: Option<DateTime<Utc>>,
}

/// Opens (or resumes, or resets) the job for this backfill.
///
/// `plan` gives the chunks of a job that has none yet (a new job, or one `--restart`
/// cleared); a job that has checkpoints keeps their chunks, so an `auto` plan made from an
/// earlier count stays the plan of its resumes and re-runs.
pub async fn open_job(
    pool: &PgPool,
    key: JobKey<'_>,
    plan: impl FnOnce() -> Vec<Chunk>,
    restart: bool,
    run_id: i64,
) -> Result<Job, sqlx::Error> {
    let JobKey {
        realm,
        entity,
        window,
        size,
    } = key;
    let mut tx = pool.begin().await?;
    let existing: Option<(i64, String)> = sqlx::query_as(
        "SELECT job_id, status FROM qbo_pipeline.backfill_jobs
         WHERE realm_id = $1 AND entity = $2 AND window_start = $3 AND window_end = $4 AND chunk = $5
         FOR UPDATE",
    )
    .bind(realm)
    .bind(entity.cli_name())
    .bind(window.start())
    .bind(window.end())
    .bind(size.as_str())
    .fetch_optional(&mut *tx)
    .await?;
    let (job_id, resumed) = match existing {
        Some((id, status)) if status == "in_progress" && !restart => (id, true),
        Some((id, _)) if restart => {
            sqlx::query("DELETE FROM qbo_pipeline.checkpoints WHERE job_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            (id, false)
        }
        Some((id, _)) => {
            // Complete: start every chunk over, remembering when each was last loaded.
            sqlx::query(
                "UPDATE qbo_pipeline.checkpoints
                 SET cursor_text = NULL, pages = 0, records = 0, done = false, updated_at = now()
                 WHERE job_id = $1",
            )
            .bind(id)
            .execute(&mut *tx)
            .await?;
            (id, false)
        }
        None => {
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO qbo_pipeline.backfill_jobs (realm_id, entity, window_start, window_end, chunk, status)
                 VALUES ($1, $2, $3, $4, $5, 'in_progress') RETURNING job_id",
            )
            .bind(realm)
            .bind(entity.cli_name())
            .bind(window.start())
            .bind(window.end())
            .bind(size.as_str())
            .fetch_one(&mut *tx)
            .await?;
            (id, false)
        }
    };
    sqlx::query(
        "UPDATE qbo_pipeline.backfill_jobs SET status = 'in_progress', last_run_id = $2, updated_at = now() WHERE job_id = $1",
    )
    .bind(job_id)
    .bind(run_id)
    .execute(&mut *tx)
    .await?;
    let planned: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM qbo_pipeline.checkpoints WHERE job_id = $1)",
    )
    .bind(job_id)
    .fetch_one(&mut *tx)
    .await?;
    if !planned {
        let chunks = plan();
        let starts: Vec<DateTime<Utc>> = chunks.iter().map(|c| c.start).collect();
        let ends: Vec<DateTime<Utc>> = chunks.iter().map(|c| c.end).collect();
        sqlx::query(
            "INSERT INTO qbo_pipeline.checkpoints (job_id, chunk_start, chunk_end)
             SELECT $1, s, e FROM UNNEST($2::timestamptz[], $3::timestamptz[]) AS u(s, e)",
        )
        .bind(job_id)
        .bind(&starts)
        .bind(&ends)
        .execute(&mut *tx)
        .await?;
    }
    let rows: Vec<CheckpointRow> = sqlx::query_as(
        "SELECT chunk_start, chunk_end, cursor_text, pages, records, done, completed_at
         FROM qbo_pipeline.checkpoints WHERE job_id = $1 ORDER BY chunk_start",
    )
    .bind(job_id)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Job {
        job_id,
        resumed,
        chunks: rows
            .into_iter()
            .map(|r| ChunkState {
                chunk: Chunk {
                    start: r.chunk_start,
                    end: r.chunk_end,
                },
                cursor: r.cursor_text,
                pages: r.pages,
                records: r.records,
                done: r.done,
                completed_at: r.completed_at,
            })
            .collect(),
    })
}

/// Records that a chunk was proved unchanged since it was last loaded: it counts as done
/// for this run, and as loaded as of now for the next one.
pub async fn mark_verified(
    pool: &PgPool,
    job_id: i64,
    chunk: &Chunk,
    records: i64,
    run_id: i64,
    entity: Entity,
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "UPDATE qbo_pipeline.checkpoints SET done = true, records = $3, run_id = $4,
             completed_at = now(), updated_at = now()
         WHERE job_id = $1 AND chunk_start = $2",
    )
    .bind(job_id)
    .bind(chunk.start)
    .bind(records)
    .bind(run_id)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE qbo_pipeline.run_entities SET chunks_done = chunks_done + 1,
             chunks_verified = chunks_verified + 1
         WHERE run_id = $1 AND entity = $2",
    )
    .bind(run_id)
    .bind(entity.cli_name())
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// Marks the job complete: the next run of the same window starts over.
pub async fn complete_job(pool: &PgPool, job_id: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE qbo_pipeline.backfill_jobs SET status = 'complete', updated_at = now() WHERE job_id = $1",
    )
    .bind(job_id)
    .execute(pool)
    .await?;
    Ok(())
}

/// One database session holding the session-level advisory locks of a run's entities, so
/// the connections a run needs do not grow with the number of entities it covers.
pub struct LockSession {
    conn: tokio::sync::Mutex<Option<sqlx::pool::PoolConnection<sqlx::Postgres>>>,
}

impl LockSession {
    pub async fn open(pool: &PgPool) -> Result<Arc<LockSession>, sqlx::Error> {
        Ok(Arc::new(LockSession {
            conn: tokio::sync::Mutex::new(Some(pool.acquire().await?)),
        }))
    }

    async fn try_lock(&self, key: &str) -> Result<bool, sqlx::Error> {
        let mut guard = self.conn.lock().await;
        let conn = guard.as_mut().ok_or(sqlx::Error::PoolClosed)?;
        sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
            .bind(key)
            .fetch_one(&mut **conn)
            .await
    }

    async fn unlock(&self, key: &str) {
        let mut guard = self.conn.lock().await;
        let Some(conn) = guard.as_mut() else { return };
        let unlocked = sqlx::query("SELECT pg_advisory_unlock(hashtextextended($1, 0))")
            .bind(key)
            .execute(&mut **conn)
            .await;
        if unlocked.is_err() {
            // Never keep (or pool) a session that may still hold a lock it could not free:
            // closing it frees every lock it holds.
            if let Some(conn) = guard.take() {
                drop(conn.detach());
            }
        }
    }

    /// The advisory-lock key of a realm: held by the one process working that company (a
    /// backfill, or a scheduler running one of its triggers), so QBO's per-company limits
    /// hold across processes and machines.
    pub fn realm_key(realm: &str) -> String {
        format!("qbo_pipeline.realm:{realm}")
    }

    /// Waits for the realm's lock, trying once a second; `Ok(false)` when `stop` comes
    /// first. Held until the session ends (the run's end).
    pub async fn acquire_realm(
        &self,
        realm: &str,
        stop: &crate::shutdown::StopSignal,
    ) -> Result<bool, sqlx::Error> {
        let key = Self::realm_key(realm);
        let mut warned = false;
        loop {
            if self.try_lock(&key).await? {
                return Ok(true);
            }
            if !warned {
                warned = true;
                tracing::warn!(
                    realm,
                    "another process is working on this company (a backfill or a scheduler's run); waiting for it to finish, as QBO's limits are per company"
                );
            }
            if !stop.sleep(std::time::Duration::from_secs(1)).await {
                return Ok(false);
            }
        }
    }

    /// Waits for the lock of one entity of one realm, trying once a second; `Ok(None)` when
    /// `stop` comes first. Another process back-filling the same entity holds it meanwhile.
    pub async fn acquire(
        self: &Arc<Self>,
        realm: &str,
        entity: Entity,
        stop: &crate::shutdown::StopSignal,
    ) -> Result<Option<EntityLock>, sqlx::Error> {
        let key = format!("qbo_pipeline.backfill:{realm}:{}", entity.cli_name());
        let mut warned = false;
        loop {
            if self.try_lock(&key).await? {
                return Ok(Some(EntityLock {
                    session: self.clone(),
                    key: Some(key),
                }));
            }
            if !warned {
                warned = true;
                tracing::warn!(realm, entity = %entity, "another process is back-filling this entity of this realm; waiting for it to finish");
            }
            if !stop.sleep(std::time::Duration::from_secs(1)).await {
                return Ok(None);
            }
        }
    }
}

impl Drop for LockSession {
    fn drop(&mut self) {
        // The session ends with the run: close it rather than pool it (its locks go with it).
        if let Some(conn) = self.conn.get_mut().take() {
            drop(conn.detach());
        }
    }
}

/// The lock one process holds while it back-fills one entity of one realm.
pub struct EntityLock {
    session: Arc<LockSession>,
    key: Option<String>,
}

impl EntityLock {
    pub async fn release(mut self) {
        if let Some(key) = self.key.take() {
            self.session.unlock(&key).await;
        }
    }
}

impl Drop for EntityLock {
    fn drop(&mut self) {
        // Not released explicitly (an error path): unlock in the background.
        if let Some(key) = self.key.take() {
            let session = self.session.clone();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move { session.unlock(&key).await });
            }
        }
    }
}
