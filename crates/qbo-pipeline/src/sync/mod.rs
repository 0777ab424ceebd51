//! Incremental sync: keeps every `raw` table equal to QBO, deletions included.
//!
//! One sync run of a company, in order:
//! 1. **Full loads.** An entity without sync state is loaded in full (all of its history,
//!    through the backfill engine: chunks, checkpoints, resume), its mark set from QBO's
//!    clock taken before the load began. An interrupted load resumes the same job.
//! 2. **Changes since the mark** (minus [`SyncOptions::overlap`]):
//!    - QBO's CDC for every covered entity whose mark is within its horizon, in one request
//!      for all of them. An answer that reaches QBO's cap of 1000 objects may have been cut
//!      (deletions are the first lost), so it is never used as such: its entities are asked
//!      again in halves, and an entity that reaches the cap alone is read by query instead
//!      (CDC takes no end time, so a time range cannot be narrowed from above). Changed
//!      objects are upserted (newer wins); `status: "Deleted"` objects set `deleted_at_utc`,
//!      keeping the row's last payload.
//!    - `MetaData.LastUpdatedTime` keyset pages for the entities CDC does not cover, for
//!      marks past the horizon, and for the cap's overflow; entities read whole (no time
//!      filter) are read whole, and their rows QBO no longer holds are marked deleted.
//! 3. **Re-reads** that are due ([`SyncOptions::reread_every`], spread per entity): the
//!    entity read whole again, replacing rows whose payload differs even at the same
//!    version (QBO has changed records without bumping `LastUpdatedTime`).
//! 4. **Count proof** of every entity: QBO's `COUNT(*)` against the live rows (batched:
//!    two requests for forty entities). Where they differ, counts per time range narrow it
//!    down (a quarter at a time) to ranges of at most a page, which are read: their records
//!    upserted, and live rows missing from QBO's range looked up by Id, upserted if they
//!    moved, marked deleted if QBO no longer has them. This finds deletions CDC cannot
//!    report (uncovered entities, marks past the horizon, a cut answer).
//!
//! Every write is newer-wins, and a mark only moves in the transaction that applied what it
//! covers, so a sync killed at any point loses nothing: the next one resumes the full load or
//! reads the changes since the committed mark again.

pub mod state;

use crate::backfill::source::{Keyset, Page, PageSource, Whole};
use crate::backfill::{BackfillOptions, ChunkError, Engine, EntityRun, StopSignal};
use crate::checkpoint::LockSession;
use crate::entity::Entity;
use crate::events::{self, RunRef};
use crate::extract::{self, Record};
use crate::ledger::{self, EntityStatus};
use crate::load::{self, Policy, RowTarget};
use crate::window::{Chunk, ChunkSize, Window, qbo_literal};
use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use futures::future::join_all;
use qbo_client::{Parsed, QboError, QueryError, RequestStats};
use qbo_query::{Condition, Literal, Op, Query, Select};
use state::{Phase, SyncState};
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Instant;

/// The most objects one CDC answer holds (QBO: "a maximum of 1000 objects", across the
/// entities asked).
pub const CDC_CAP: usize = 1000;
/// How far back CDC is asked: QBO keeps 30 days; a day is left for clock differences.
pub const CDC_LOOKBACK: TimeDelta = TimeDelta::days(29);
/// Changes are read from the mark minus this: a change committed in QBO just before the
/// mark's answer may become visible just after it.
pub const DEFAULT_OVERLAP: TimeDelta = TimeDelta::minutes(5);
/// How often each entity is re-read whole by default.
pub const DEFAULT_REREAD: TimeDelta = TimeDelta::days(7);
/// The first day of an entity's history (QBO Online holds nothing older).
pub const HISTORY_START: NaiveDate = match NaiveDate::from_ymd_opt(2000, 1, 1) {
    Some(d) => d,
    None => panic!("valid date"),
};
/// QBO's clock more than this away from ours is not believed (a mark far in the future
/// would hide every later change).
pub const MAX_CLOCK_SKEW: TimeDelta = TimeDelta::days(400);
/// Most ranges one round of narrowing may split into; past it the ranges are read as they are.
const MAX_RANGES: usize = 64;
/// A range whose QBO count is at most this is read (one page) rather than split.
const LEAF_RECORDS: u64 = 1000;
/// Ids per `Id IN (...)` lookup.
const IDS_PER_LOOKUP: usize = 100;
/// Most rounds of range splitting before the ranges left are read as they are.
const MAX_SPLIT_ROUNDS: u32 = 40;

/// What to sync and how.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    pub entities: Vec<Entity>,
    /// Run-ledger pipeline name; default `qb_<entity>_sync` for one entity, else `qb_sync`.
    pub pipeline: Option<String>,
    pub trigger: Option<String>,
    pub progress: bool,
    /// The caller already holds the realm's lock (the scheduler).
    pub realm_lock_held: bool,
    /// Re-read each entity whole this often; zero or less: never.
    pub reread_every: TimeDelta,
    pub overlap: TimeDelta,
    /// Chunks paged at once in full loads and re-reads.
    pub concurrency: usize,
}

impl SyncOptions {
    pub fn new(entities: Vec<Entity>) -> SyncOptions {
        SyncOptions {
            entities,
            pipeline: None,
            trigger: None,
            progress: false,
            realm_lock_held: false,
            reread_every: DEFAULT_REREAD,
            overlap: DEFAULT_OVERLAP,
            concurrency: 4,
        }
    }
}

/// What a sync did to one entity.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EntitySync {
    pub entity: Entity,
    pub status: EntityStatus,
    /// `full`, `cdc`, `query` or `reread`, with `+verify` when the count proof repaired it.
    pub mode: String,
    /// Records QBO reported changed or deleted (read), overlap included.
    pub changes: u64,
    pub rows_written: u64,
    pub rows_deleted: u64,
    pub requests: u64,
    pub retries: u64,
    pub throttled: u64,
    /// The count proof: QBO's `COUNT(*)` and the live rows after the sync.
    pub qbo_count: Option<u64>,
    pub live_rows: Option<u64>,
    pub note: Option<String>,
    pub error: Option<String>,
}

/// A sync run's outcome.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SyncReport {
    pub run_id: i64,
    pub realm: String,
    pub entities: Vec<EntitySync>,
    pub seconds: f64,
    pub interrupted: bool,
}

impl SyncReport {
    pub fn error(&self) -> Option<String> {
        let failed: Vec<String> = self
            .entities
            .iter()
            .filter(|e| e.status == EntityStatus::Failed)
            .map(|e| format!("{}: {}", e.entity, e.error.as_deref().unwrap_or("failed")))
            .collect();
        (!failed.is_empty()).then(|| failed.join("; "))
    }

    pub fn succeeded(&self) -> bool {
        !self.interrupted && self.error().is_none()
    }

    /// Requests in all (QBO's budget is per company).
    pub fn requests(&self) -> u64 {
        self.entities.iter().map(|e| e.requests).sum()
    }

    /// A table for people.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{:<24} {:<10} {:<13} {:>8} {:>8} {:>8} {:>8} {:>10} {:>10}\n",
            "entity",
            "status",
            "mode",
            "changes",
            "written",
            "deleted",
            "requests",
            "qbo_count",
            "live_rows"
        );
        let n = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
        for e in &self.entities {
            out.push_str(&format!(
                "{:<24} {:<10} {:<13} {:>8} {:>8} {:>8} {:>8} {:>10} {:>10}\n",
                e.entity.cli_name(),
                e.status.as_str(),
                e.mode,
                e.changes,
                e.rows_written,
                e.rows_deleted,
                e.requests,
                n(e.qbo_count),
                n(e.live_rows)
            ));
            if let Some(note) = &e.note {
                out.push_str(&format!("    note: {note}\n"));
            }
            if let Some(error) = &e.error {
                out.push_str(&format!("    error: {error}\n"));
            }
        }
        out.push_str(&format!(
            "realm {}: {} requests in {:.1} s\n",
            self.realm,
            self.requests(),
            self.seconds
        ));
        out
    }
}

/// One entity's sync in progress.
struct Work {
    entity: Entity,
    run: EntityRun,
    state: Option<SyncState>,
    out: Mutex<Outcome>,
}

#[derive(Default)]
struct Outcome {
    status: Option<EntityStatus>,
    mode: String,
    changes: u64,
    rows_written: u64,
    rows_deleted: u64,
    /// Requests made for it by the full-load engine (which keeps its own counters).
    engine_requests: (u64, u64, u64),
    qbo_count: Option<u64>,
    live_rows: Option<u64>,
    proven: bool,
    reread_next: Option<DateTime<Utc>>,
    note: Option<String>,
    error: Option<String>,
}

impl Work {
    fn out(&self) -> std::sync::MutexGuard<'_, Outcome> {
        self.out.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn pending(&self) -> bool {
        self.out().status.is_none()
    }
    fn fail(&self, e: impl std::fmt::Display, stopped: bool) {
        let mut o = self.out();
        if o.status.is_none() {
            if stopped {
                o.status = Some(EntityStatus::Stopped);
            } else {
                o.status = Some(EntityStatus::Failed);
                o.error = Some(e.to_string());
            }
        }
    }
    fn fail_chunk(&self, e: ChunkError) {
        let stopped = matches!(e, ChunkError::Stopped);
        self.fail(e, stopped);
    }
    fn set_mode(&self, mode: &str) {
        let mut o = self.out();
        if o.mode.is_empty() {
            o.mode = mode.to_string();
        } else if !o.mode.split('+').any(|m| m == mode) {
            o.mode = format!("{}+{mode}", o.mode);
        }
    }
    /// Adds what a write did; `count`: what of it are changes QBO reported.
    fn add(&self, written: load::Written, deleted: u64, count: Count) {
        let mut o = self.out();
        match count {
            Count::Read => o.changes += written.received,
            Count::Written => o.changes += written.rows_written,
            Count::Nothing => {}
        }
        o.rows_written += written.rows_written;
        o.rows_deleted += deleted;
    }
    /// Where the changes are read from: the mark minus the overlap.
    fn since(&self, overlap: TimeDelta) -> DateTime<Utc> {
        let mark = self
            .state
            .as_ref()
            .map_or(day_start(HISTORY_START), |s| s.mark);
        (mark - overlap).max(day_start(HISTORY_START))
    }
}

fn day_start(d: NaiveDate) -> DateTime<Utc> {
    d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc()
}

/// What a write adds to an entity's `changes`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Count {
    /// Every record read: QBO reported it changed since the mark (CDC, keyset changes).
    Read,
    /// Only the rows written: a whole read, where QBO reports no change set.
    Written,
    /// Nothing: records read to prove or repair, not reported as changes.
    Nothing,
}

/// QBO's time of an answer, when it is plausible (see [`MAX_CLOCK_SKEW`]).
fn plausible(time: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    time.filter(|t| (*t - Utc::now()).abs() < MAX_CLOCK_SKEW)
}

/// The Ids of records, as a set.
fn ids_of(records: &[Record]) -> impl Iterator<Item = String> + '_ {
    records.iter().map(|r| r.id.clone())
}

/// QBO refused a CDC because `changedSince` is past its horizon.
fn past_horizon(e: &QboError) -> bool {
    let e = match e {
        QboError::Exhausted { last, .. } => last,
        e => e,
    };
    matches!(e, QboError::Fault { status: 400, message, detail, .. }
        if format!("{message} {}", detail.as_deref().unwrap_or("")).contains("older than"))
}

impl Engine {
    /// Runs one sync of this engine's company and records it in the ledger. Errors of
    /// individual entities are in the report; `Err` means the ledger could not be written.
    pub async fn sync(&self, opts: &SyncOptions, stop: &StopSignal) -> anyhow::Result<SyncReport> {
        let started = Instant::now();
        let pipeline = opts
            .pipeline
            .clone()
            .unwrap_or_else(|| match opts.entities.as_slice() {
                [one] => one.spec().sync_pipeline.to_string(),
                _ => "qb_sync".to_string(),
            });
        let params = serde_json::json!({
            "entities": opts.entities.iter().map(|e| e.cli_name()).collect::<Vec<_>>(),
            "reread_every_hours": opts.reread_every.num_hours(),
            "overlap_seconds": opts.overlap.num_seconds(),
        });
        let (locks, guard, run) = self
            .open_run(
                &pipeline,
                opts.trigger.as_deref(),
                &params,
                opts.realm_lock_held,
                stop,
            )
            .await?;
        let run_id = guard.run_id;
        self.events.emit(events::SyncStarted {
            run: run.clone(),
            pipeline: pipeline.clone(),
            trigger: opts.trigger.clone(),
            entities: opts.entities.clone(),
        });
        let mut states = state::load(&self.pool, &self.realm).await?;
        let now = Utc::now();
        let works: Vec<Arc<Work>> = opts
            .entities
            .iter()
            .map(|&entity| {
                Arc::new(Work {
                    entity,
                    run: EntityRun::new(entity, run.clone(), stop.clone(), Policy::Newer),
                    state: states.remove(&entity),
                    out: Mutex::new(Outcome::default()),
                })
            })
            .collect();
        let mut full = Vec::new();
        let mut incremental = Vec::new();
        for w in &works {
            match &w.state {
                Some(s) if s.phase == Phase::Incremental => incremental.push(w.clone()),
                Some(s)
                    if s.phase == Phase::Unavailable
                        && s.updated_at + state::UNAVAILABLE_RECHECK > now =>
                {
                    let mut o = w.out();
                    o.status = Some(EntityStatus::Skipped);
                    o.note = Some(format!(
                        "the company does not offer it (last asked {}; asked again after a day)",
                        s.updated_at.format("%Y-%m-%d %H:%M UTC")
                    ));
                }
                _ => full.push(w.clone()),
            }
        }
        self.full_loads(&full, opts, &run, stop, &locks).await;
        let clock = self.changes(&incremental, opts, run_id).await;
        let due: Vec<Arc<Work>> = incremental
            .iter()
            .filter(|w| w.pending())
            .filter(|w| {
                opts.reread_every > TimeDelta::zero()
                    && w.state
                        .as_ref()
                        .and_then(|s| s.next_reread_at)
                        .is_some_and(|at| at <= now)
            })
            .cloned()
            .collect();
        self.rereads(&due, opts, &run, stop, &locks).await;
        let clock = match clock {
            Some(c) => Some(c),
            None if works.iter().any(|w| w.pending()) => self.clock(&works).await.ok(),
            None => None,
        };
        join_all(
            works
                .iter()
                .filter(|w| w.pending())
                .map(|w| self.prove(w, clock.unwrap_or_else(Utc::now), run_id)),
        )
        .await;
        let mut entities = Vec::with_capacity(works.len());
        for w in &works {
            entities.push(self.finish_entity(w, run_id, stop).await);
        }
        // The company's lock is held until every write of the run (repairs included) is done.
        drop(locks);
        let report = SyncReport {
            run_id,
            realm: self.realm.clone(),
            entities,
            seconds: started.elapsed().as_secs_f64(),
            interrupted: stop.is_stopped(),
        };
        self.close_run(
            guard,
            run,
            report.error(),
            report.interrupted,
            report.seconds,
            "run the sync again to resume",
        )
        .await?;
        Ok(report)
    }

    /// QBO's clock now: the `time` of a one-record answer (shared with other small queries).
    async fn clock(&self, works: &[Arc<Work>]) -> Result<DateTime<Utc>, String> {
        let w = works.first().ok_or("no entity to read QBO's clock for")?;
        let company =
            Entity::from_qbo_name("CompanyInfo").ok_or("CompanyInfo is not in the catalogue")?;
        let q = extract::whole_query(company, 1, 1).to_string();
        match self
            .client
            .query_small(&q, w.run.stats(), w.run.stop())
            .await
        {
            Ok(body) => plausible(extract::parse_time(&body))
                .ok_or_else(|| "QBO's answer carries no plausible time".to_string()),
            Err(e) => {
                tracing::warn!(error = %e, "could not read QBO's clock");
                // QBO's error as the client gives it (fault code, intuit_tid) for the run's page.
                Err(e.to_string())
            }
        }
    }

    /// Step 1: entities without state (or whose load was interrupted) loaded in full.
    async fn full_loads(
        &self,
        works: &[Arc<Work>],
        opts: &SyncOptions,
        run: &RunRef,
        stop: &StopSignal,
        locks: &Arc<LockSession>,
    ) {
        if works.is_empty() {
            return;
        }
        // The mark of entities starting now: QBO's clock before anything of them is read.
        let fresh: Vec<&Arc<Work>> = works
            .iter()
            .filter(|w| w.state.as_ref().is_none_or(|s| s.phase != Phase::Full))
            .collect();
        // Entities by the window of their full load (usually one window for all).
        type Group = ((NaiveDate, NaiveDate), Vec<Arc<Work>>);
        let mut groups: Vec<Group> = Vec::new();
        let mut add = |key: (NaiveDate, NaiveDate), w: Arc<Work>| match groups
            .iter_mut()
            .find(|(k, _)| *k == key)
        {
            Some((_, g)) => g.push(w),
            None => groups.push((key, vec![w])),
        };
        if !fresh.is_empty() {
            let owned: Vec<Arc<Work>> = fresh.iter().map(|w| (*w).clone()).collect();
            let t0 = match self.clock(&owned).await {
                Ok(t0) => t0,
                Err(e) => {
                    for w in &fresh {
                        w.fail(
                            format!("could not read QBO's clock to start the full load: {e}"),
                            stop.is_stopped(),
                        );
                    }
                    return;
                }
            };
            let to = t0.max(Utc::now()).date_naive() + TimeDelta::days(1);
            for w in fresh {
                if let Err(e) =
                    state::begin_full(&self.pool, &self.realm, w.entity, t0, HISTORY_START, to)
                        .await
                {
                    w.fail(format!("database: {e}"), false);
                    continue;
                }
                add((HISTORY_START, to), w.clone());
            }
        }
        for w in works {
            if let Some(s) = &w.state
                && s.phase == Phase::Full
            {
                add((s.full_from, s.full_to), w.clone());
            }
        }
        for ((from, to), group) in groups {
            let window = match Window::new_at(from, to, day_start(to)) {
                Ok(w) => w,
                Err(e) => {
                    for w in &group {
                        w.fail(
                            format!("the stored full-load window is unusable: {e}"),
                            false,
                        );
                    }
                    continue;
                }
            };
            let bo = BackfillOptions {
                entities: group.iter().map(|w| w.entity).collect(),
                window,
                chunk: ChunkSize::Auto,
                page_size: 1000,
                restart: false,
                concurrency: opts.concurrency,
                pipeline: None,
                trigger: None,
                progress: opts.progress,
                realm_lock_held: true,
            };
            let reports = self
                .load_entities(&bo, Policy::Newer, run, stop, locks)
                .await;
            for (w, r) in group.iter().zip(reports) {
                w.set_mode("full");
                {
                    let mut o = w.out();
                    o.changes += r.records;
                    o.rows_written += r.rows_written;
                    o.engine_requests = (r.requests, r.retries, r.throttled);
                }
                match r.status {
                    EntityStatus::Succeeded => {
                        let next = state::first_reread(
                            &self.realm,
                            w.entity,
                            Utc::now(),
                            opts.reread_every,
                        );
                        if let Err(e) =
                            state::complete_full(&self.pool, &self.realm, w.entity, next).await
                        {
                            w.fail(format!("database: {e}"), false);
                        }
                    }
                    EntityStatus::Skipped => {
                        if let Err(e) =
                            state::mark_unavailable(&self.pool, &self.realm, w.entity, Utc::now())
                                .await
                        {
                            tracing::warn!(entity = %w.entity, error = %e, "could not remember that the company does not offer the entity");
                        }
                        let mut o = w.out();
                        o.status = Some(EntityStatus::Skipped);
                        o.note = r.note;
                    }
                    status => {
                        let mut o = w.out();
                        o.status = Some(status);
                        o.error = r.error;
                    }
                }
            }
        }
    }

    /// Step 2: the changes since each entity's mark. Returns QBO's clock when a read gave it.
    async fn changes(
        &self,
        works: &[Arc<Work>],
        opts: &SyncOptions,
        run_id: i64,
    ) -> Option<DateTime<Utc>> {
        if works.is_empty() {
            return None;
        }
        let horizon = Utc::now() - CDC_LOOKBACK;
        let (cdc, mut by_query): (Vec<Arc<Work>>, Vec<Arc<Work>>) = works
            .iter()
            .cloned()
            .partition(|w| w.entity.spec().cdc && w.since(opts.overlap) > horizon);
        let mut clock = None;
        if !cdc.is_empty() {
            let (time, overflow) = self.cdc_changes(cdc, opts, run_id).await;
            clock = time;
            by_query.extend(overflow);
        }
        if by_query.is_empty() {
            return clock;
        }
        let clock = match clock {
            Some(c) => c,
            None => match self.clock(&by_query).await {
                Ok(c) => c,
                Err(e) => {
                    for w in &by_query {
                        w.fail(
                            format!("could not read QBO's clock: {e}"),
                            w.run.stop().is_stopped(),
                        );
                    }
                    return None;
                }
            },
        };
        join_all(
            by_query
                .iter()
                .map(|w| self.query_changes(w, opts, clock, run_id)),
        )
        .await;
        Some(clock)
    }

    /// CDC for `works`: one request for all, split where an answer reaches the cap or names
    /// an entity the company does not offer. Returns QBO's clock and the entities to read by
    /// query instead (alone at the cap, or past the horizon).
    async fn cdc_changes(
        &self,
        works: Vec<Arc<Work>>,
        opts: &SyncOptions,
        run_id: i64,
    ) -> (Option<DateTime<Utc>>, Vec<Arc<Work>>) {
        let mut groups = vec![works];
        let mut overflow = Vec::new();
        let mut clock: Option<DateTime<Utc>> = None;
        while let Some(group) = groups.pop() {
            let Some(lead) = group.first() else { continue };
            let entities: Vec<Entity> = group.iter().map(|w| w.entity).collect();
            let names = entities
                .iter()
                .map(|e| e.qbo_name())
                .collect::<Vec<_>>()
                .join(",");
            let since = group
                .iter()
                .map(|w| w.since(opts.overlap))
                .min()
                .unwrap_or_else(Utc::now);
            let since_text = qbo_literal(since);
            let parse = |body: &bytes::Bytes| {
                extract::parse_cdc(body, &entities).map_err(|e| match e {
                    extract::PageError::Syntax(reason) => Parsed::Truncated(reason),
                    other => Parsed::Invalid(other),
                })
            };
            let answer = self
                .client
                .cdc_parsed(
                    &names,
                    &since_text,
                    lead.run.stats(),
                    lead.run.stop(),
                    parse,
                )
                .await;
            let split = |groups: &mut Vec<Vec<Arc<Work>>>, group: Vec<Arc<Work>>| {
                let mut a = group;
                let b = a.split_off(a.len() / 2);
                groups.push(b);
                groups.push(a);
            };
            match answer {
                Ok(answer) if answer.objects >= CDC_CAP => {
                    // Cut by the cap. An entity holding half of it or more alone is read by
                    // query (its changes are many); the rest are asked again together, or
                    // in halves when no entity stands out.
                    let sizes: Vec<usize> = answer
                        .sections
                        .iter()
                        .map(|s| s.changed.len() + s.deleted.len())
                        .collect();
                    let biggest =
                        (0..group.len()).max_by_key(|&i| sizes.get(i).copied().unwrap_or(0));
                    match biggest {
                        _ if group.len() == 1 => {
                            tracing::info!(entity = %lead.entity, objects = answer.objects,
                                "CDC answer reached QBO's cap: reading the changes by query");
                            overflow.extend(group);
                        }
                        Some(i) if sizes.get(i).copied().unwrap_or(0) >= CDC_CAP / 2 => {
                            let mut rest = group;
                            let big = rest.remove(i);
                            tracing::info!(entity = %big.entity, objects = sizes[i],
                                "most of a CDC answer cut by QBO's cap: reading the entity's changes by query");
                            overflow.push(big);
                            groups.push(rest);
                        }
                        _ => split(&mut groups, group),
                    }
                }
                Ok(answer) => {
                    let Some(time) = plausible(answer.time) else {
                        for w in &group {
                            w.fail(
                                "QBO's CDC answer has no plausible time: cannot set the mark",
                                false,
                            );
                        }
                        continue;
                    };
                    clock = Some(clock.map_or(time, |c| c.min(time)));
                    let chunk = Chunk {
                        start: since,
                        end: time,
                    };
                    for (w, section) in group.iter().zip(answer.sections) {
                        w.set_mode("cdc");
                        if let Err(e) = self.apply_cdc(w, section, &chunk, time, run_id).await {
                            w.fail(format!("database: {e}"), false);
                        }
                    }
                }
                Err(QueryError::Qbo(e)) if past_horizon(&e) => {
                    tracing::info!(entities = %names, "QBO refused CDC since {since_text} (past its horizon): reading the changes by query");
                    overflow.extend(group);
                }
                Err(QueryError::Qbo(e))
                    if group.len() > 1
                        && group
                            .iter()
                            .any(|w| extract::unavailable(w.entity, &e).is_some()) =>
                {
                    split(&mut groups, group);
                }
                Err(QueryError::Qbo(e)) => {
                    let unavailable = extract::unavailable(lead.entity, &e);
                    for w in &group {
                        match &unavailable {
                            Some(u) => {
                                let _ = state::mark_unavailable(
                                    &self.pool,
                                    &self.realm,
                                    w.entity,
                                    Utc::now(),
                                )
                                .await;
                                let mut o = w.out();
                                o.status = Some(EntityStatus::Skipped);
                                o.note = Some(u.reason.clone());
                            }
                            None => w.fail(
                                format!("CDC since {since_text}: {e}"),
                                matches!(e, QboError::Stopped),
                            ),
                        }
                    }
                }
                Err(QueryError::Parse(e)) => {
                    for w in &group {
                        w.fail(format!("CDC since {since_text}: {e}"), false);
                    }
                }
            }
        }
        (clock, overflow)
    }

    /// One entity's CDC section: changes upserted, deletions marked, the mark moved to the
    /// answer's time, in one transaction.
    async fn apply_cdc(
        &self,
        w: &Work,
        section: extract::CdcSection,
        chunk: &Chunk,
        time: DateTime<Utc>,
        run_id: i64,
    ) -> Result<(), sqlx::Error> {
        let seen_deleted = section.deleted.len() as u64;
        let mut tx = self.pool.begin().await?;
        let written = load::upsert(
            &mut tx,
            &self.rows(w.entity, run_id, chunk, Policy::Newer),
            section.changed,
        )
        .await?;
        let deleted =
            load::mark_deleted(&mut tx, &self.realm, w.entity, run_id, &section.deleted).await?;
        state::advance(&mut tx, &self.realm, w.entity, time).await?;
        tx.commit().await?;
        w.add(
            load::Written {
                received: written.received + seen_deleted,
                ..written
            },
            deleted,
            Count::Read,
        );
        Ok(())
    }

    fn rows<'a>(
        &'a self,
        entity: Entity,
        run_id: i64,
        chunk: &'a Chunk,
        policy: Policy,
    ) -> RowTarget<'a> {
        RowTarget {
            realm: &self.realm,
            entity,
            run_id,
            chunk,
            page_number: 0,
            policy,
        }
    }

    /// The changes of one entity by `LastUpdatedTime` since its mark (or all of it, for an
    /// entity read whole, whose rows QBO no longer holds are then marked deleted); the mark
    /// moves to `clock` (QBO's time before the read) once every page is written.
    async fn query_changes(
        &self,
        w: &Arc<Work>,
        opts: &SyncOptions,
        clock: DateTime<Utc>,
        run_id: i64,
    ) {
        w.set_mode("query");
        // A page of changes holds at most 1000 records whatever the entity's size: it shares
        // batch requests (at most six pages each) with the other entities' pages and counts.
        w.run.set_small(true);
        let result = if w.entity.read_whole() {
            self.read_whole_and_mark(w, clock, run_id, Count::Written)
                .await
        } else {
            let chunk = Chunk {
                start: w.since(opts.overlap),
                end: clock + TimeDelta::days(1),
            };
            let source = Keyset::new(self, &w.run, chunk, 1000, qbo_literal(chunk.start));
            self.write_pages(w, source, &chunk, run_id, Count::Read)
                .await
                .map(|_| ())
        };
        let result = match result {
            Ok(()) => async {
                let mut tx = self.pool.begin().await?;
                state::advance(&mut tx, &self.realm, w.entity, clock).await?;
                tx.commit().await
            }
            .await
            .map_err(ChunkError::from),
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            w.fail_chunk(e);
        }
    }

    /// Reads an entity whole (proved complete by its count), and marks deleted its live rows
    /// QBO no longer holds.
    async fn read_whole_and_mark(
        &self,
        w: &Work,
        clock: DateTime<Utc>,
        run_id: i64,
        changes: Count,
    ) -> Result<(), ChunkError> {
        let window = Window::new_at(HISTORY_START, clock.date_naive(), clock)
            .map_err(|e| ChunkError::Page(extract::PageError::Shape(e.to_string())))?;
        let chunk = Chunk {
            start: window.start(),
            end: window.end(),
        };
        let expected = if w.entity.is_singleton() {
            None
        } else {
            self.count(&w.run, window).await?
        };
        let source = Whole::new(self, &w.run, chunk, window, 1000, expected);
        let (ids, complete) = self.write_pages(w, source, &chunk, run_id, changes).await?;
        if complete && !w.entity.is_singleton() {
            let live = self.live_ids(w.entity, None).await?;
            let gone: Vec<(String, DateTime<Utc>)> = live
                .into_iter()
                .filter(|id| !ids.contains(id))
                .map(|id| (id, clock))
                .collect();
            let mut tx = self.pool.begin().await?;
            let deleted = load::mark_deleted(&mut tx, &self.realm, w.entity, run_id, &gone).await?;
            tx.commit().await?;
            w.add(load::Written::default(), deleted, Count::Nothing);
        }
        Ok(())
    }

    /// Writes every page of `source` (each in its own transaction); returns the Ids read and
    /// whether the source said it completed.
    async fn write_pages(
        &self,
        w: &Work,
        mut source: impl PageSource,
        chunk: &Chunk,
        run_id: i64,
        changes: Count,
    ) -> Result<(HashSet<String>, bool), ChunkError> {
        let mut ids = HashSet::new();
        let mut page_number = 0;
        let mut complete = false;
        while let Some(Page { records, done, .. }) = source.next_page(page_number + 1).await? {
            page_number += 1;
            complete = done;
            // A keyset page starts at the previous page's last second again: a record read
            // twice is one change.
            let repeated = records.iter().filter(|r| ids.contains(&r.id)).count() as u64;
            ids.extend(ids_of(&records));
            let mut tx = self.pool.begin().await?;
            let target = RowTarget {
                page_number,
                ..self.rows(w.entity, run_id, chunk, Policy::Newer)
            };
            let written = load::upsert(&mut tx, &target, records).await?;
            tx.commit().await?;
            let fresh = load::Written {
                received: written.received.saturating_sub(repeated),
                ..written
            };
            w.add(fresh, 0, changes);
        }
        Ok((ids, complete))
    }

    /// Step 3: entities due for their periodic re-read, read whole again by the backfill
    /// engine (every chunk read, none proved by count), replacing rows whose payload differs.
    async fn rereads(
        &self,
        works: &[Arc<Work>],
        opts: &SyncOptions,
        run: &RunRef,
        stop: &StopSignal,
        locks: &Arc<LockSession>,
    ) {
        for w in works {
            let Some(s) = &w.state else { continue };
            let today = Utc::now().date_naive() + TimeDelta::days(1);
            let to = s.full_to.max(today);
            let window = match Window::new_at(s.full_from, to, day_start(to)) {
                Ok(win) => win,
                Err(e) => {
                    w.fail(format!("re-read window: {e}"), false);
                    continue;
                }
            };
            let bo = BackfillOptions {
                entities: vec![w.entity],
                window,
                chunk: ChunkSize::Auto,
                page_size: 1000,
                restart: true,
                concurrency: opts.concurrency,
                pipeline: None,
                trigger: None,
                progress: opts.progress,
                realm_lock_held: true,
            };
            let Some(r) = self
                .load_entities(&bo, Policy::NewerOrDifferent, run, stop, locks)
                .await
                .pop()
            else {
                continue;
            };
            w.set_mode("reread");
            let mut o = w.out();
            o.changes += r.records;
            o.rows_written += r.rows_written;
            let (a, b, c) = o.engine_requests;
            o.engine_requests = (a + r.requests, b + r.retries, c + r.throttled);
            match r.status {
                EntityStatus::Succeeded => {
                    o.reread_next = Utc::now().checked_add_signed(opts.reread_every);
                }
                status => {
                    o.status = Some(status);
                    o.error = r.error;
                    o.note = r.note;
                }
            }
        }
    }

    /// Step 4: QBO's count against the live rows; where they differ, narrowed down by time
    /// ranges and repaired.
    async fn prove(&self, w: &Arc<Work>, clock: DateTime<Utc>, run_id: i64) {
        let result = async {
            let qbo = self.count_of(w, None).await?;
            let live = self.live_count(w.entity, None).await?;
            if qbo == live {
                return Ok((qbo, live));
            }
            tracing::info!(entity = %w.entity, qbo, live, "QBO's count differs from the live rows: finding the difference");
            w.set_mode("verify");
            if w.entity.read_whole() {
                self.read_whole_and_mark(w, clock, run_id, Count::Nothing).await?;
            } else {
                self.narrow(w, clock, run_id).await?;
            }
            let qbo = self.count_of(w, None).await?;
            let live = self.live_count(w.entity, None).await?;
            Ok::<_, ChunkError>((qbo, live))
        }
        .await;
        match result {
            Ok((qbo, live)) => {
                let mut o = w.out();
                o.qbo_count = Some(qbo);
                o.live_rows = Some(live);
                o.proven = qbo == live;
                if qbo != live {
                    o.note = Some(format!(
                        "QBO counts {qbo} and the table holds {live} live rows after the repair (QBO changed meanwhile?); the next sync proves it again"
                    ));
                }
            }
            Err(e) => w.fail_chunk(e),
        }
    }

    /// Splits the entity's history into ranges until each range whose counts differ holds at
    /// most a page in QBO, then repairs those ranges. Counts of a round go out together, so
    /// they share batch requests.
    async fn narrow(&self, w: &Work, clock: DateTime<Utc>, run_id: i64) -> Result<(), ChunkError> {
        let mut ranges = vec![Chunk {
            start: day_start(HISTORY_START),
            end: clock + TimeDelta::days(1),
        }];
        let mut leaves = Vec::new();
        for round in 0..=MAX_SPLIT_ROUNDS {
            if ranges.is_empty() {
                break;
            }
            let counted = join_all(ranges.iter().map(|r| async move {
                let qbo = self.count_of(w, Some(r)).await?;
                let live = self.live_count(w.entity, Some(r)).await?;
                Ok::<_, ChunkError>((*r, qbo, live))
            }))
            .await;
            let mut next = Vec::new();
            for c in counted {
                let (range, qbo, live) = c?;
                if qbo == live {
                    continue;
                }
                let seconds = (range.end - range.start).num_seconds();
                if qbo <= LEAF_RECORDS || seconds < 4 || round == MAX_SPLIT_ROUNDS {
                    leaves.push(range);
                } else {
                    // Four parts of whole seconds: [start, a-1], [a, b-1], ...
                    let step = (seconds + 1) / 4;
                    for i in 0..4 {
                        let start = range.start + TimeDelta::seconds(i * step);
                        let end = if i == 3 {
                            range.end
                        } else {
                            range.start + TimeDelta::seconds((i + 1) * step - 1)
                        };
                        next.push(Chunk { start, end });
                    }
                }
            }
            if next.len() > MAX_RANGES {
                // Differences everywhere: reading the ranges is cheaper than counting on.
                leaves.append(&mut next);
            }
            ranges = next;
        }
        // Each leaf is a page at most (or a range given up on): read together, their pages
        // and Id lookups share batch requests.
        w.run.set_small(true);
        for r in join_all(
            leaves
                .into_iter()
                .map(|leaf| self.repair_range(w, leaf, clock, run_id)),
        )
        .await
        {
            r?;
        }
        Ok(())
    }

    /// Reads a range, upserting what QBO holds, and looks up by Id the live rows of the range
    /// QBO did not answer: upserted where found (they moved to another time), marked deleted
    /// at `clock` where QBO no longer has them.
    async fn repair_range(
        &self,
        w: &Work,
        range: Chunk,
        clock: DateTime<Utc>,
        run_id: i64,
    ) -> Result<(), ChunkError> {
        let source = Keyset::new(self, &w.run, range, 1000, qbo_literal(range.start));
        let (in_qbo, _) = self
            .write_pages(w, source, &range, run_id, Count::Nothing)
            .await?;
        let missing: Vec<String> = self
            .live_ids(w.entity, Some(&range))
            .await?
            .into_iter()
            .filter(|id| !in_qbo.contains(id))
            .collect();
        for ids in missing.chunks(IDS_PER_LOOKUP) {
            let records = self
                .fetch_query(&w.run, id_lookup(w.entity, ids), &range, 0)
                .await?;
            let found: HashSet<String> = ids_of(&records).collect();
            let gone: Vec<(String, DateTime<Utc>)> = ids
                .iter()
                .filter(|id| !found.contains(*id))
                .map(|id| (id.clone(), clock))
                .collect();
            let mut tx = self.pool.begin().await?;
            let written = load::upsert(
                &mut tx,
                &self.rows(w.entity, run_id, &range, Policy::Newer),
                records,
            )
            .await?;
            let deleted = load::mark_deleted(&mut tx, &self.realm, w.entity, run_id, &gone).await?;
            tx.commit().await?;
            w.add(written, deleted, Count::Nothing);
        }
        Ok(())
    }

    /// QBO's count of the entity (inactive included), in `range` when given.
    async fn count_of(&self, w: &Work, range: Option<&Chunk>) -> Result<u64, ChunkError> {
        let query = match range {
            Some(r) => extract::count_query(w.entity, r.start, r.end),
            None => extract::whole_count_query(w.entity),
        }
        .to_string();
        let body = self
            .client
            .query_small(&query, w.run.stats(), w.run.stop())
            .await?;
        extract::parse_count(&body).map_err(ChunkError::Page)
    }

    /// Live rows (not marked deleted) of the entity, in `range` (by `LastUpdatedTime`, both
    /// ends' seconds included) when given.
    async fn live_count(&self, entity: Entity, range: Option<&Chunk>) -> Result<u64, ChunkError> {
        let n: i64 = self
            .live_query("count(*)", entity, range)
            .fetch_one(&self.pool)
            .await?;
        Ok(n.max(0) as u64)
    }

    async fn live_ids(
        &self,
        entity: Entity,
        range: Option<&Chunk>,
    ) -> Result<Vec<String>, ChunkError> {
        Ok(self
            .live_query("id", entity, range)
            .fetch_all(&self.pool)
            .await?)
    }

    /// `SELECT {what}` over the entity's live rows of this realm, in `range` when given.
    fn live_query<'a, T>(
        &'a self,
        what: &str,
        entity: Entity,
        range: Option<&Chunk>,
    ) -> sqlx::query::QueryScalar<'a, sqlx::Postgres, T, sqlx::postgres::PgArguments>
    where
        (T,): for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>,
    {
        let (start, end) = bounds(range);
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT {what} FROM {} WHERE realm_id = $1 AND deleted_at_utc IS NULL
               AND ($2::timestamptz IS NULL OR source_last_updated_utc >= $2)
               AND ($3::timestamptz IS NULL OR source_last_updated_utc < $3)",
            entity.table()
        )))
        .bind(&self.realm)
        .bind(start)
        .bind(end)
    }

    /// Records the entity's outcome: its sync state, the run ledger, an event.
    async fn finish_entity(&self, w: &Work, run_id: i64, stop: &StopSignal) -> EntitySync {
        let o = {
            let mut o = w.out();
            if o.status.is_none() {
                o.status = Some(if stop.is_stopped() {
                    EntityStatus::Stopped
                } else {
                    EntityStatus::Succeeded
                });
            }
            std::mem::take(&mut *o)
        };
        let status = o.status.unwrap_or(EntityStatus::Failed);
        let stats = w.run.stats();
        let (er, et, eh) = o.engine_requests;
        let report = EntitySync {
            entity: w.entity,
            status,
            mode: if o.mode.is_empty() {
                "-".into()
            } else {
                o.mode.clone()
            },
            changes: o.changes,
            rows_written: o.rows_written,
            rows_deleted: o.rows_deleted,
            requests: RequestStats::get(&stats.requests) + er,
            retries: RequestStats::get(&stats.retries) + et,
            throttled: RequestStats::get(&stats.throttled) + eh,
            qbo_count: o.qbo_count,
            live_rows: o.live_rows,
            note: o.note.clone(),
            error: o.error.clone(),
        };
        if status == EntityStatus::Succeeded {
            let finished = state::Finished {
                mode: &report.mode,
                run_id,
                qbo_count: o.qbo_count,
                live_rows: o.live_rows,
                proven: o.proven,
                reread_next: o.reread_next,
            };
            if let Err(e) = state::finish(&self.pool, &self.realm, w.entity, &finished).await {
                tracing::error!(entity = %w.entity, error = %e, "could not record the entity's sync state");
            }
        }
        if let Err(e) = ledger::record_sync_entity(&self.pool, run_id, &report).await {
            tracing::error!(entity = %w.entity, error = %e, "could not record the entity's figures in the run ledger");
        }
        self.events.emit(events::SyncEntityFinished {
            run: w.run.run_ref().clone(),
            entity: report.clone(),
        });
        report
    }
}

/// `[start, end + 1 s)` of a closed range of whole seconds, for the table's timestamps.
fn bounds(range: Option<&Chunk>) -> (Option<DateTime<Utc>>, Option<DateTime<Utc>>) {
    match range {
        Some(r) => (Some(r.start), Some(r.end + TimeDelta::seconds(1))),
        None => (None, None),
    }
}

/// `SELECT * FROM E WHERE Id IN ('1', '2', ...)` (inactive name-list records included).
fn id_lookup(entity: Entity, ids: &[String]) -> Query {
    let mut q = extract::whole_query(entity, 1, 1000);
    q.select = Select::All { extra: Vec::new() };
    q.order_by = None;
    q.conditions.push(Condition {
        field: "Id".into(),
        op: Op::In,
        value: Literal::List(ids.iter().map(|id| Literal::String(id.clone())).collect()),
    });
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_lookup_names_every_id_and_keeps_inactive_records() {
        let q = id_lookup(Entity::CUSTOMER, &["1".into(), "2".into()]).to_string();
        assert!(q.contains("Id IN ('1', '2')"), "{q}");
        assert!(q.contains("Active IN (true, false)"), "{q}");
        let q = id_lookup(Entity::INVOICE, &["7".into()]).to_string();
        assert!(
            q.starts_with("SELECT * FROM Invoice WHERE Id IN ('7')"),
            "{q}"
        );
    }

    #[test]
    fn only_a_horizon_refusal_sends_cdc_to_queries() {
        let fault = |status, detail: &str| QboError::Fault {
            status,
            code: Some("500".into()),
            message: "Unsupported Operation".into(),
            detail: Some(detail.into()),
            intuit_tid: None,
            retry_after: None,
        };
        assert!(past_horizon(&fault(
            400,
            "Operation cdc with changedSince date 2020-01-01 which is older than fixed days is not supported."
        )));
        assert!(!past_horizon(&fault(
            400,
            "Operation cdc for entity TaxCode is not supported."
        )));
        assert!(!past_horizon(&fault(500, "older than")));
    }
}
