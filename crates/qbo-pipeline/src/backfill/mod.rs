//! The backfill engine: plans chunks, pages each chunk with keyset queries, and loads every
//! page with its checkpoint, for several entities and chunks at once within the realm's
//! limits; records everything in the run ledger.
//!
//! Data flow: window → chunks → (job + checkpoints) → for each unfinished chunk: a page source
//! (`source`: keyset pages of a time range, or offset pages of a whole entity) fetches page
//! k+1 while page k is written (upsert + checkpoint in one transaction, [`crate::load`]) →
//! events → run ledger.
//! A stop request (signal, or another chunk's failure) lets the page in flight finish and
//! commit, then ends the run; the same command resumes it.
//!
//! **Re-runs of a completed window** do not read unchanged history again. Every write to a
//! QBO record sets its `LastUpdatedTime` to the time of the write, so records can leave a
//! time range that lies wholly in the past (edited or deleted) but never enter it. For a
//! chunk whose range ended more than [`VERIFY_MARGIN`] before it was last completely loaded,
//! the records QBO holds in that range are therefore a subset of the rows stored for it, and
//! QBO's `COUNT(*)` of the range equal to the number of stored rows proves the two sets
//! identical: the chunk is skipped as *unchanged* at the cost of one request. Any difference
//! (an edit, a deletion, a row removed from the database) and the chunk is read again in full.
//! `--restart` reads everything again.

use crate::checkpoint::{self, ChunkState, LockSession};
use crate::entity::Entity;
use crate::events::{self, EventBus, RunRef};
use crate::extract::{self, PageError, Record};
use crate::ledger::{self, EntityStatus};
use crate::load::{self, Advance, PageTarget, Policy, Written};
use crate::window::{Chunk, ChunkSize, Window, plan, plan_auto, qbo_literal};
use qbo_client::{LocatedError, Parsed, QboClient, QboError, QueryError, RequestStats, Site};

pub(crate) mod source;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use futures::future::join_all;
use source::{Keyset, Page, PageSource, Whole};
use sqlx::PgPool;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use tokio::sync::Semaphore;

/// What to back-fill and how.
#[derive(Debug, Clone)]
pub struct BackfillOptions {
    pub entities: Vec<Entity>,
    pub window: Window,
    pub chunk: ChunkSize,
    /// Records per page, 1..=1000 (QBO's maximum; the default).
    pub page_size: u32,
    /// Ignore checkpoints and start every chunk over.
    pub restart: bool,
    /// Chunks paged at once, across all entities.
    pub concurrency: usize,
    /// Run-ledger pipeline name; defaults to the entity's (`qb_invoices_backfill`).
    pub pipeline: Option<String>,
    pub trigger: Option<String>,
    /// Show progress bars (interactive terminals only).
    pub progress: bool,
    /// The caller already holds the realm's lock (a scheduler holds it from the claim of
    /// the trigger); otherwise the run waits for it before it starts.
    pub realm_lock_held: bool,
}

pub use crate::shutdown::StopSignal;

/// Figures of one entity of a run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EntityReport {
    pub entity: Entity,
    pub status: EntityStatus,
    pub chunks_total: usize,
    /// Chunks finished by an interrupted earlier run and skipped (resume).
    pub chunks_skipped: usize,
    /// Chunks proved unchanged since they were last loaded, and not read again.
    pub chunks_verified: usize,
    pub pages: u64,
    pub records: u64,
    pub rows_written: u64,
    /// Records stored with their exact text in `payload_text` (jsonb cannot hold them).
    pub records_sanitised: u64,
    pub requests: u64,
    pub retries: u64,
    pub throttled: u64,
    pub expected: Option<u64>,
    pub seconds: f64,
    pub error: Option<String>,
    /// Why the entity was skipped (the company's edition lacks it), when it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The outcome of a run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BackfillReport {
    pub run_id: i64,
    pub entities: Vec<EntityReport>,
    pub seconds: f64,
    pub interrupted: bool,
}

impl BackfillReport {
    pub fn error(&self) -> Option<String> {
        let errors: Vec<String> = self
            .entities
            .iter()
            .filter_map(|e| e.error.as_ref().map(|m| format!("{}: {m}", e.entity)))
            .collect();
        if errors.is_empty() {
            None
        } else {
            Some(errors.join("; "))
        }
    }

    pub fn succeeded(&self) -> bool {
        !self.interrupted && self.entities.iter().all(|e| e.error.is_none())
    }

    /// The summary table printed at the end of a run.
    pub fn table(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<22} {:>9} {:>7} {:>9} {:>8} {:>10} {:>10} {:>9} {:>8} {:>6} {:>8} {:>10}",
            "entity",
            "status",
            "chunks",
            "unchanged",
            "pages",
            "records",
            "written",
            "requests",
            "retries",
            "429s",
            "seconds",
            "records/s"
        );
        for e in &self.entities {
            let rate = if e.seconds > 0.0 {
                e.records as f64 / e.seconds
            } else {
                0.0
            };
            let _ = writeln!(
                out,
                "{:<22} {:>9} {:>7} {:>9} {:>8} {:>10} {:>10} {:>9} {:>8} {:>6} {:>8.1} {:>10.0}",
                e.entity.cli_name(),
                e.status,
                format!(
                    "{}/{}",
                    e.chunks_total - e.chunks_skipped - e.chunks_verified,
                    e.chunks_total
                ),
                e.chunks_verified,
                e.pages,
                e.records,
                e.rows_written,
                e.requests,
                e.retries,
                e.throttled,
                e.seconds,
                rate
            );
        }
        for e in &self.entities {
            if let Some(note) = &e.note {
                let _ = writeln!(out, "{} skipped: {note}", e.entity.cli_name());
            }
        }
        let _ = write!(out, "run {} finished in {:.1} s", self.run_id, self.seconds);
        if self.interrupted {
            let _ = write!(out, " (interrupted: run the same command again to resume)");
        }
        out
    }
}

/// What a backfill needs: the database, an authorised client for the realm, and the bus its
/// events are published on.
pub struct Engine {
    pub pool: PgPool,
    pub client: Arc<QboClient>,
    pub realm: String,
    pub events: EventBus,
}

pub(crate) struct EntityRun {
    pub(crate) entity: Entity,
    /// The run, as events name it.
    run: RunRef,
    /// The run's stop request: ends every wait of this entity's requests.
    stop: StopSignal,
    stats: RequestStats,
    pages: AtomicU64,
    records: AtomicU64,
    verified: AtomicU64,
    rows_written: AtomicU64,
    sanitised: AtomicU64,
    /// QBO counts at most [`SMALL_ENTITY`] records: its pages share batch requests.
    small: std::sync::atomic::AtomicBool,
    /// When a page's records replace stored ones.
    policy: Policy,
}

impl EntityRun {
    pub(crate) fn new(entity: Entity, run: RunRef, stop: StopSignal, policy: Policy) -> EntityRun {
        EntityRun {
            entity,
            run,
            stop,
            stats: RequestStats::default(),
            pages: AtomicU64::new(0),
            records: AtomicU64::new(0),
            verified: AtomicU64::new(0),
            rows_written: AtomicU64::new(0),
            sanitised: AtomicU64::new(0),
            small: std::sync::atomic::AtomicBool::new(false),
            policy,
        }
    }

    /// Shares its page requests with other small queries (batch requests).
    pub(crate) fn set_small(&self, small: bool) {
        self.small.store(small, Ordering::Relaxed);
    }

    pub(crate) fn run_ref(&self) -> &RunRef {
        &self.run
    }

    pub(crate) fn stats(&self) -> &RequestStats {
        &self.stats
    }

    pub(crate) fn stop(&self) -> &StopSignal {
        &self.stop
    }
}

/// An entity with at most this many records in the window (one page of QBO's largest) is
/// read through batch requests shared with other small entities; the client keeps a batch
/// to [`qbo_client::client::MAX_BATCH_RECORDS`] records in all.
const SMALL_ENTITY: u64 = 1000;

#[derive(Debug, thiserror::Error)]
pub(crate) enum ChunkError {
    #[error(transparent)]
    Qbo(QboError),
    /// QBO's error for a page, said of the entity and page it happened at.
    #[error(transparent)]
    QboPage(LocatedError),
    #[error("{0}")]
    Page(#[from] PageError),
    /// A page that cannot be used, with where it came from.
    #[error("{entity}, page {page} of the chunk starting {chunk_start}: {source}")]
    BadPage {
        entity: Entity,
        page: i32,
        chunk_start: String,
        source: PageError,
    },
    /// A whole read that did not find every record QBO counted, after retries.
    #[error(
        "{entity}: reading it whole found {read} distinct records where QBO counts {expected} (tried {attempts} times)"
    )]
    Incomplete {
        entity: Entity,
        read: u64,
        expected: u64,
        attempts: u32,
    },
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("stopped")]
    Stopped,
}

impl From<QboError> for ChunkError {
    fn from(e: QboError) -> Self {
        match e {
            QboError::Stopped => ChunkError::Stopped,
            other => ChunkError::Qbo(other),
        }
    }
}

/// What proving a chunk unchanged found.
enum Verify {
    /// QBO's count equals the stored rows of a range closed before its last load.
    Unchanged,
    /// The chunk must be read; `count` is QBO's count of its (closed) range when one was taken.
    Read { count: Option<u64> },
}

/// A page's QBO error, naming the entity and page (a stop request stays a stop).
fn located(run: &EntityRun, page: i32, e: QboError) -> ChunkError {
    match e {
        QboError::Stopped => ChunkError::Stopped,
        other => ChunkError::QboPage(other.at(Site {
            entity: run.entity.qbo_name().to_string(),
            page: u32::try_from(page).ok(),
        })),
    }
}

/// How many times an entity read whole is read before a count it never matches fails it.
pub const WHOLE_READ_ATTEMPTS: u32 = 3;

/// Most records an entity read whole may hold before the paging gives up (a server that
/// pages forever; QBO's whole-read entities are small lists).
pub const MAX_WHOLE_RECORDS: u64 = 10_000_000;

/// How long after a chunk's end its complete load must have happened for the chunk to be
/// verifiable by count: covers clock differences between QBO and the database.
pub const VERIFY_MARGIN: chrono::TimeDelta = chrono::TimeDelta::hours(1);

/// Whether a chunk loaded completely at `completed_at` can be proved unchanged by a count:
/// its whole range must lie before the load (with a margin), so no record can enter it.
pub fn verifiable(chunk: &Chunk, completed_at: DateTime<Utc>) -> bool {
    chunk.end + VERIFY_MARGIN < completed_at
}

impl Engine {
    /// Starts a run of this engine's company: its lock (unless the caller holds it) in a lock
    /// session that will also hold the entity locks (one connection for all of them), then
    /// the run in the ledger. One process works a company at a time.
    pub(crate) async fn open_run(
        &self,
        pipeline: &str,
        trigger: Option<&str>,
        params: &serde_json::Value,
        realm_lock_held: bool,
        stop: &StopSignal,
    ) -> anyhow::Result<(Arc<LockSession>, ledger::RunGuard, RunRef)> {
        let locks = LockSession::open(&self.pool).await?;
        if !realm_lock_held && !locks.acquire_realm(&self.realm, stop).await? {
            anyhow::bail!(
                "stopped while waiting for another process to finish with realm {}",
                self.realm
            );
        }
        let guard = ledger::start_run(&self.pool, pipeline, trigger, &self.realm, params).await?;
        let run = RunRef {
            run_id: guard.run_id,
            realm: self.realm.as_str().into(),
        };
        Ok((locks, guard, run))
    }

    /// Runs a backfill and records it in the ledger. Errors of individual entities are in
    /// the report; `Err` means the ledger itself could not be written.
    pub async fn backfill(
        &self,
        opts: &BackfillOptions,
        stop: &StopSignal,
    ) -> anyhow::Result<BackfillReport> {
        let started = Instant::now();
        let pipeline = opts
            .pipeline
            .clone()
            .unwrap_or_else(|| match opts.entities.as_slice() {
                [one] => one.pipeline_name().to_string(),
                _ => "qb_backfill".to_string(),
            });
        let params = serde_json::json!({
            "entities": opts.entities.iter().map(|e| e.cli_name()).collect::<Vec<_>>(),
            "from": opts.window.from.to_string(),
            "to": opts.window.to.to_string(),
            "fecha_inicio": opts.window.from.to_string(),
            "fecha_fin": opts.window.to.to_string(),
            "chunk": opts.chunk.as_str(),
            "page_size": opts.page_size,
            "restart": opts.restart,
        });
        let (locks, guard, run_ref) = self
            .open_run(
                &pipeline,
                opts.trigger.as_deref(),
                &params,
                opts.realm_lock_held,
                stop,
            )
            .await?;
        let run_id = guard.run_id;
        // Bars for this run, drawn from its events, for as long as it runs.
        let _bars = opts
            .progress
            .then(|| crate::progress::ProgressSink::for_terminal(run_id))
            .flatten()
            .map(|sink| self.events.attach(Arc::new(sink)));
        self.events.emit(events::RunStarted {
            run: run_ref.clone(),
            pipeline: pipeline.clone(),
            trigger: opts.trigger.clone(),
            from: opts.window.from,
            to: opts.window.to,
            entities: opts.entities.clone(),
        });
        let reports = self
            .load_entities(opts, Policy::Newer, &run_ref, stop, &locks)
            .await;
        drop(locks);
        let report = BackfillReport {
            run_id,
            entities: reports,
            seconds: started.elapsed().as_secs_f64(),
            interrupted: stop.is_stopped(),
        };
        self.close_run(
            guard,
            run_ref,
            report.error(),
            report.interrupted,
            report.seconds,
            "run the same command again to resume",
        )
        .await?;
        Ok(report)
    }

    /// Records a run's outcome in the ledger and tells the bus: failed with `error`, or
    /// with a stop request when `interrupted` (`resume` says how to go on), else succeeded.
    pub(crate) async fn close_run(
        &self,
        guard: ledger::RunGuard,
        run: RunRef,
        error: Option<String>,
        interrupted: bool,
        seconds: f64,
        resume: &str,
    ) -> anyhow::Result<()> {
        let error = error
            .or_else(|| interrupted.then(|| format!("interrupted by a stop request; {resume}")));
        ledger::finish_run(&self.pool, guard, error.as_deref()).await?;
        self.events.emit(events::RunFinished {
            run,
            status: match error {
                None => ledger::RunStatus::Succeeded,
                Some(_) => ledger::RunStatus::Failed,
            },
            interrupted,
            seconds,
            error,
        });
        Ok(())
    }

    /// Loads `opts.entities` within the run `run` (already started): each entity's window
    /// planned (or its job resumed) and paged, its figures recorded. Used by
    /// [`Engine::backfill`] and by the sync's full loads and re-reads.
    pub(crate) async fn load_entities(
        &self,
        opts: &BackfillOptions,
        policy: Policy,
        run: &RunRef,
        stop: &StopSignal,
        locks: &Arc<LockSession>,
    ) -> Vec<EntityReport> {
        let slots = Arc::new(Semaphore::new(opts.concurrency.max(1)));
        let runs: Vec<Arc<EntityRun>> = opts
            .entities
            .iter()
            .map(|&entity| Arc::new(EntityRun::new(entity, run.clone(), stop.clone(), policy)))
            .collect();
        join_all(
            runs.iter()
                .map(|r| self.run_entity(r.clone(), opts, run.run_id, slots.clone(), stop, locks)),
        )
        .await
    }

    async fn run_entity(
        &self,
        run: Arc<EntityRun>,
        opts: &BackfillOptions,
        run_id: i64,
        slots: Arc<Semaphore>,
        stop: &StopSignal,
        locks: &Arc<LockSession>,
    ) -> EntityReport {
        let started = Instant::now();
        let entity = run.entity;
        let mut report = EntityReport {
            entity,
            status: EntityStatus::Failed,
            chunks_total: 0,
            chunks_skipped: 0,
            chunks_verified: 0,
            pages: 0,
            records: 0,
            rows_written: 0,
            records_sanitised: 0,
            requests: 0,
            retries: 0,
            throttled: 0,
            expected: None,
            seconds: 0.0,
            error: None,
            note: None,
        };
        let outcome = self
            .page_entity(&run, opts, run_id, slots, stop, locks, &mut report)
            .await;
        report.pages = run.pages.load(Ordering::Relaxed);
        report.records = run.records.load(Ordering::Relaxed);
        report.rows_written = run.rows_written.load(Ordering::Relaxed);
        report.records_sanitised = run.sanitised.load(Ordering::Relaxed);
        report.chunks_verified = run.verified.load(Ordering::Relaxed) as usize;
        report.requests = RequestStats::get(&run.stats.requests);
        report.retries = RequestStats::get(&run.stats.retries);
        report.throttled = RequestStats::get(&run.stats.throttled);
        report.seconds = started.elapsed().as_secs_f64();
        let skipped = match &outcome {
            Err(ChunkError::Qbo(e) | ChunkError::QboPage(LocatedError { source: e, .. })) => {
                extract::unavailable(entity, e)
            }
            _ => None,
        };
        report.status = match &outcome {
            Ok(()) => EntityStatus::Succeeded,
            Err(_) if skipped.is_some() => EntityStatus::Skipped,
            Err(ChunkError::Stopped) => EntityStatus::Stopped,
            Err(_) => EntityStatus::Failed,
        };
        if let Some(u) = skipped {
            report.note = Some(u.reason);
        } else if let Err(e) = &outcome
            && !matches!(e, ChunkError::Stopped)
        {
            report.error = Some(e.to_string());
        }
        self.events.emit(events::EntityFinished {
            run: run.run.clone(),
            entity,
            status: report.status,
            records: report.records,
            rows_written: report.rows_written,
            requests: report.requests,
            retries: report.retries,
            throttled: report.throttled,
            seconds: report.seconds,
            note: report.note.clone(),
            error: report.error.clone(),
        });
        if let Err(e) = ledger::finish_entity(
            &self.pool,
            run_id,
            entity.cli_name(),
            report.status,
            report.requests as i64,
            report.retries as i64,
            report.throttled as i64,
            report
                .expected
                .map(|n| i64::try_from(n).unwrap_or(i64::MAX)),
            report.note.as_deref(),
        )
        .await
        {
            tracing::error!(entity = %entity, error = %e, "could not record the entity's figures in the run ledger");
        }
        report
    }

    #[allow(clippy::too_many_arguments)]
    async fn page_entity(
        &self,
        run: &Arc<EntityRun>,
        opts: &BackfillOptions,
        run_id: i64,
        slots: Arc<Semaphore>,
        stop: &StopSignal,
        locks: &Arc<LockSession>,
        report: &mut EntityReport,
    ) -> Result<(), ChunkError> {
        let entity = run.entity;
        let Some(lock) = locks.acquire(&self.realm, entity, stop).await? else {
            return Err(ChunkError::Stopped);
        };
        // QBO's own count of the window (of everything, for an entity read whole): sizes an
        // `auto` plan, proves a whole read complete, and gives the progress bar its total.
        // A singleton is not counted: it is one record by definition.
        let whole = entity.read_whole();
        let counted_at = Utc::now();
        let expected = if entity.is_singleton() {
            None
        } else {
            self.count(run, opts.window).await?
        };
        report.expected = expected;
        // A singleton is one record: its one page shares a batch request too.
        run.small.store(
            entity.is_singleton() || expected.is_some_and(|n| n <= SMALL_ENTITY),
            Ordering::Relaxed,
        );
        // An entity read whole is one chunk whatever the chunking asked for.
        let size = if whole { ChunkSize::Whole } else { opts.chunk };
        let job = checkpoint::open_job(
            &self.pool,
            checkpoint::JobKey {
                realm: &self.realm,
                entity,
                window: opts.window,
                size,
            },
            || match (size, expected) {
                (ChunkSize::Auto, Some(n)) => {
                    plan_auto(opts.window, n, opts.page_size, opts.concurrency, Utc::now())
                }
                (size, _) => plan(opts.window, size),
            },
            opts.restart,
            run_id,
        )
        .await?;
        let skipped = job.chunks.iter().filter(|c| c.done).count();
        report.chunks_total = job.chunks.len();
        report.chunks_skipped = skipped;
        let records_done: i64 = job
            .chunks
            .iter()
            .filter(|c| c.done)
            .map(|c| c.records)
            .sum();
        self.events.emit(events::EntityPlanned {
            run: run.run.clone(),
            entity,
            expected,
            chunks: job.chunks.len(),
            chunks_done: skipped,
            records_done: records_done.max(0) as u64,
            resumed: job.resumed,
            whole,
            chunking: size.to_string(),
        });
        ledger::start_entity(
            &self.pool,
            run_id,
            entity.cli_name(),
            job.chunks.len() as i32,
            skipped as i32,
        )
        .await?;

        let pending: Vec<ChunkState> = job.chunks.into_iter().filter(|c| !c.done).collect();
        let job_id = job.job_id;
        let failed = StopSignal::default();
        // At most `concurrency` chunk tasks exist at a time (a plan may have thousands).
        let results: Vec<Result<(), ChunkError>> =
            futures::stream::iter(pending.into_iter().map(|state| {
                let slots = slots.clone();
                let failed = failed.clone();
                async move {
                    // A small entity's one page does not wait behind the large entities'
                    // chunks: sent as soon as it is counted, it shares a batch request with
                    // the other small entities' pages (the client's own in-flight limit
                    // still holds every request).
                    let _slot = match run.small.load(Ordering::Relaxed) {
                        true => None,
                        false => Some(
                            slots
                                .acquire_owned()
                                .await
                                .expect("semaphore is never closed"),
                        ),
                    };
                    if failed.is_stopped() || stop.is_stopped() {
                        return Err(ChunkError::Stopped);
                    }
                    let chunk = state.chunk;
                    let result = if whole {
                        // An interrupted whole read starts over (its pages re-write as no-ops).
                        let source =
                            Whole::new(self, run, chunk, opts.window, opts.page_size, expected);
                        self.drive(run, source, run_id, job_id, chunk, 0, stop, &failed)
                            .await
                    } else {
                        match self.verify_chunk(run, run_id, job_id, &state).await {
                            Ok(Verify::Unchanged) => Ok(()),
                            Ok(Verify::Read { count }) => {
                                // QBO's count of this very range, taken once it had closed:
                                // the one of the window for a chunk that is the window, or
                                // the one a failed verification just took.
                                let count = count.or_else(|| {
                                    (state.cursor.is_none()
                                        && chunk.start == opts.window.start()
                                        && chunk.end == opts.window.end()
                                        && verifiable(&chunk, counted_at))
                                    .then_some(expected)
                                    .flatten()
                                });
                                let source = match (&state.cursor, count) {
                                    (None, Some(count)) => Keyset::from_start_counted(
                                        self,
                                        run,
                                        chunk,
                                        opts.page_size,
                                        count,
                                    ),
                                    (cursor, _) => Keyset::new(
                                        self,
                                        run,
                                        chunk,
                                        opts.page_size,
                                        cursor.clone().unwrap_or_else(|| qbo_literal(chunk.start)),
                                    ),
                                };
                                self.drive(
                                    run,
                                    source,
                                    run_id,
                                    job_id,
                                    chunk,
                                    state.pages,
                                    stop,
                                    &failed,
                                )
                                .await
                            }
                            Err(e) => Err(e),
                        }
                    };
                    if result.is_err() {
                        failed.stop();
                    }
                    result
                }
            }))
            .buffer_unordered(opts.concurrency.max(1))
            .collect()
            .await;
        let mut first_error = None;
        for r in results {
            match r {
                Ok(()) => {}
                Err(ChunkError::Stopped) => {
                    if first_error.is_none() {
                        first_error = Some(ChunkError::Stopped);
                    }
                }
                Err(e) => {
                    if matches!(first_error, None | Some(ChunkError::Stopped)) {
                        first_error = Some(e);
                    }
                }
            }
        }
        match first_error {
            None => {
                checkpoint::complete_job(&self.pool, job_id).await?;
                lock.release().await;
                Ok(())
            }
            Some(e) => {
                lock.release().await;
                Err(e)
            }
        }
    }

    /// Proves a chunk unchanged since it was last completely loaded (see the module docs);
    /// otherwise it must be read ([`Verify::Read`], with QBO's count of the range when one
    /// was taken).
    async fn verify_chunk(
        &self,
        run: &EntityRun,
        run_id: i64,
        job_id: i64,
        state: &ChunkState,
    ) -> Result<Verify, ChunkError> {
        let chunk = state.chunk;
        let unproved = Ok(Verify::Read { count: None });
        let Some(completed_at) = state.completed_at else {
            return unproved;
        };
        if state.cursor.is_some() || !verifiable(&chunk, completed_at) {
            return unproved;
        }
        let entity = run.entity;
        let query = extract::count_query(entity, chunk.start, chunk.end).to_string();
        let body = self
            .client
            .query_small(&query, &run.stats, &run.stop)
            .await?;
        let in_qbo = match extract::parse_count(&body) {
            Ok(n) => n,
            Err(e) => {
                // A count that cannot be read proves nothing: read the chunk instead.
                self.events.emit(events::CountUnreadable {
                    run: run.run.clone(),
                    entity,
                    chunk_start: Some(chunk.start),
                    error: e.to_string(),
                });
                return unproved;
            }
        };
        let stored: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM {} WHERE realm_id = $1
             AND source_last_updated_utc >= $2 AND source_last_updated_utc <= $3",
            entity.table()
        )))
        .bind(&self.realm)
        .bind(chunk.start)
        .bind(chunk.end)
        .fetch_one(&self.pool)
        .await?;
        if in_qbo != stored as u64 {
            self.events.emit(events::ChunkChanged {
                run: run.run.clone(),
                entity,
                chunk_start: chunk.start,
                in_qbo,
                stored: stored.max(0) as u64,
            });
            // The range closed before its last load, so this count bounds the read.
            return Ok(Verify::Read {
                count: Some(in_qbo),
            });
        }
        checkpoint::mark_verified(&self.pool, job_id, &chunk, stored, run_id, entity).await?;
        run.verified.fetch_add(1, Ordering::Relaxed);
        self.events.emit(events::ChunkVerified {
            run: run.run.clone(),
            entity,
            chunk_start: chunk.start,
            records: in_qbo,
        });
        Ok(Verify::Unchanged)
    }

    /// QBO's count for an entity: of the window, or of everything for one read whole.
    /// `None` when the answer has no readable count (it then proves nothing).
    pub(crate) async fn count(
        &self,
        run: &EntityRun,
        window: Window,
    ) -> Result<Option<u64>, ChunkError> {
        let entity = run.entity;
        let query = if entity.read_whole() {
            extract::whole_count_query(entity)
        } else {
            extract::count_query(entity, window.start(), window.end())
        }
        .to_string();
        let body = self
            .client
            .query_small(&query, &run.stats, &run.stop)
            .await?;
        Ok(match extract::parse_count(&body) {
            Ok(n) => Some(n),
            Err(e) => {
                self.events.emit(events::CountUnreadable {
                    run: run.run.clone(),
                    entity,
                    chunk_start: None,
                    error: e.to_string(),
                });
                None
            }
        })
    }

    pub(crate) async fn fetch_query(
        &self,
        run: &EntityRun,
        query: qbo_query::Query,
        chunk: &Chunk,
        page: i32,
    ) -> Result<Vec<Record>, ChunkError> {
        // The most records the answer can hold (a singleton's: one).
        let page_records = u32::try_from(query.max_results.unwrap_or(1)).unwrap_or(u32::MAX);
        let query = query.to_string();
        if run.small.load(Ordering::Relaxed) {
            // Shared with other small entities' pages and counts; an answer that does not
            // parse is read again on its own below, with the retry loop's rules.
            let body = self
                .client
                .query_small_sized(&query, page_records, &run.stats, &run.stop)
                .await
                .map_err(|e| located(run, page, e))?;
            if let Ok(records) = extract::parse_page(&body, run.entity) {
                return Ok(records);
            }
        }
        // A body cut short by a dropped connection is not valid JSON: the client's one retry
        // loop reads it again, like any other transient failure.
        let parse = |body: &bytes::Bytes| {
            extract::parse_page(body, run.entity).map_err(|e| match e {
                PageError::Syntax(reason) => Parsed::Truncated(reason),
                other => Parsed::Invalid(other),
            })
        };
        match self
            .client
            .query_parsed(&query, &run.stats, &run.stop, parse)
            .await
        {
            Ok(records) => Ok(records),
            Err(QueryError::Qbo(e)) => Err(located(run, page, e)),
            Err(QueryError::Parse(source)) => Err(ChunkError::BadPage {
                entity: run.entity,
                page,
                chunk_start: chunk.start_rfc3339(),
                source,
            }),
        }
    }

    /// Pulls a chunk's pages from `source` and writes each with its checkpoint (one
    /// transaction), fetching page k+1 while page k is written. A stop request lets the page
    /// being written commit, then ends the chunk (`Stopped`); the same command resumes it.
    #[allow(clippy::too_many_arguments)]
    async fn drive(
        &self,
        run: &EntityRun,
        mut source: impl PageSource,
        run_id: i64,
        job_id: i64,
        chunk: Chunk,
        pages_before: i32,
        stop: &StopSignal,
        failed: &StopSignal,
    ) -> Result<(), ChunkError> {
        let mut page_number = pages_before;
        let mut to_write: Option<Page> = None;
        let mut exhausted = false;
        let mut stopped = false;
        loop {
            if stop.is_stopped() || failed.is_stopped() {
                stopped = true;
                exhausted = true;
            }
            if exhausted && to_write.is_none() {
                break;
            }
            let write = to_write.take();
            if write.is_some() {
                page_number += 1;
            }
            let target = PageTarget {
                realm: &self.realm,
                entity: run.entity,
                run_id,
                job_id,
                chunk: &chunk,
                page_number,
                policy: run.policy,
            };
            // The page being fetched is the one after the page being written (if any).
            let fetch_page = page_number + 1;
            let fetching = async {
                match exhausted {
                    true => Ok(None),
                    false => source.next_page(fetch_page).await,
                }
            };
            let writing = async {
                match write {
                    Some(p) => load::write_page(
                        &self.pool,
                        &target,
                        p.records,
                        Advance {
                            cursor: p.cursor.as_deref(),
                            done: p.done,
                        },
                    )
                    .await
                    .map(Some),
                    None => Ok(None),
                }
            };
            let (fetched, written) = tokio::join!(fetching, writing);
            if let Some(w) = written? {
                self.account(run, &chunk, page_number, w);
            }
            match fetched? {
                Some(page) => to_write = Some(page),
                None => exhausted = true,
            }
        }
        if stopped {
            return Err(ChunkError::Stopped);
        }
        self.events.emit(events::ChunkFinished {
            run: run.run.clone(),
            entity: run.entity,
            chunk_start: chunk.start,
            pages: page_number,
        });
        Ok(())
    }

    /// Counts a committed page and publishes it.
    fn account(&self, run: &EntityRun, chunk: &Chunk, page: i32, w: Written) {
        run.pages.fetch_add(1, Ordering::Relaxed);
        run.records.fetch_add(w.received, Ordering::Relaxed);
        run.rows_written
            .fetch_add(w.rows_written, Ordering::Relaxed);
        run.sanitised.fetch_add(w.sanitised, Ordering::Relaxed);
        self.events.emit(events::PageCommitted {
            run: run.run.clone(),
            entity: run.entity,
            chunk_start: chunk.start,
            page,
            records: w.received,
            rows_written: w.rows_written,
            sanitised: w.sanitised,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn only_chunks_wholly_before_their_load_are_verifiable() {
        let chunk = Chunk {
            start: Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap(),
            end: Utc.with_ymd_and_hms(2024, 1, 31, 23, 59, 59).unwrap(),
        };
        let at = |y, m, d, h| Utc.with_ymd_and_hms(y, m, d, h, 0, 0).unwrap();
        assert!(verifiable(&chunk, at(2024, 6, 1, 0)));
        assert!(verifiable(
            &chunk,
            at(2024, 2, 1, 1) + chrono::TimeDelta::seconds(1)
        ));
        // Loaded while the chunk's range was still open, or within the margin of its end:
        // records may have entered it after the load, so it must be read.
        assert!(!verifiable(&chunk, at(2024, 1, 20, 0)));
        assert!(!verifiable(&chunk, at(2024, 2, 1, 0)));
        assert!(!verifiable(
            &chunk,
            at(2024, 2, 1, 0) + chrono::TimeDelta::minutes(59)
        ));
    }
}
