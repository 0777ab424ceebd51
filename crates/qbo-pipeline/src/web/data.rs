//! What the pages and the JSON API show, read from the database (so it covers every process
//! sharing it) without writing anything. The pages render these; `/api/...` serialises them.

use crate::entity::Entity;
use crate::ledger::{self, RunEntityRow, RunRow};
use crate::pipelines::{self, Resolved};
use crate::trigger::{self, TriggerRow};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Rows per company and entity are counted at most this often (counting a million-row table
/// on every page view would cost the runs writing to it)...
pub const COUNTS_TTL: Duration = Duration::from_secs(15);
/// ...and, while a run is in flight (the tables are being written, and a count scans what the
/// run wrote), at most this often: an open dashboard costs a backfill one count every two
/// minutes. The overview says how old the counts are.
pub const COUNTS_TTL_BUSY: Duration = Duration::from_secs(120);

/// One company × entity of the overview.
#[derive(Debug, Clone, Serialize)]
pub struct OverviewCell {
    pub realm_id: String,
    pub entity: &'static str,
    pub table: &'static str,
    /// Live rows (not marked deleted) and rows marked deleted, counted at `counted_at`.
    pub rows: i64,
    pub deleted: i64,
    pub last_sync_at: Option<DateTime<Utc>>,
    pub last_mode: Option<String>,
    pub age_secs: Option<i64>,
    /// `ok`, `late` (no successful sync within the late-after limit), `failed` (the last run
    /// that touched it failed it), `never`.
    pub state: &'static str,
    pub last_error: Option<String>,
    pub next_trigger: Option<NextTrigger>,
    /// The last count proof: QBO's count against the live rows then.
    pub qbo_count: Option<i64>,
    pub proven_rows: Option<i64>,
    pub proven_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NextTrigger {
    pub name: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Overview {
    pub generated_at: DateTime<Utc>,
    pub counted_at: DateTime<Utc>,
    pub realms: Vec<RealmSummary>,
    pub cells: Vec<OverviewCell>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RealmSummary {
    pub realm_id: String,
    pub has_token: bool,
    pub refresh_token_expires_at: Option<DateTime<Utc>>,
    pub last_run_id: Option<i64>,
    pub last_run_status: Option<String>,
    pub entities_ok: usize,
    pub entities_late: usize,
    pub entities_failed: usize,
    pub entities_never: usize,
}

type Counts = HashMap<(String, &'static str), (i64, i64)>;
/// When the counts were taken (monotonic, wall clock) and the counts.
type Counted = (Instant, DateTime<Utc>, std::sync::Arc<Counts>);

/// The cached row counts.
#[derive(Default)]
pub struct CountCache {
    inner: Mutex<Option<Counted>>,
}

impl CountCache {
    async fn get(
        &self,
        pool: &PgPool,
    ) -> Result<(DateTime<Utc>, std::sync::Arc<Counts>), sqlx::Error> {
        let fresh = |ttl: Duration| {
            self.inner
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .filter(|(at, ..)| at.elapsed() < ttl)
                .map(|(_, when, counts)| (*when, counts.clone()))
        };
        if let Some(hit) = fresh(COUNTS_TTL) {
            return Ok(hit);
        }
        let busy: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM qbo_pipeline.runs WHERE status = 'running')",
        )
        .fetch_one(pool)
        .await?;
        if busy && let Some(hit) = fresh(COUNTS_TTL_BUSY) {
            return Ok(hit);
        }
        let sql = Entity::all()
            .map(|e| {
                format!(
                    "SELECT realm_id, '{}' AS entity, count(*) FILTER (WHERE deleted_at_utc IS NULL) AS live,
                            count(*) FILTER (WHERE deleted_at_utc IS NOT NULL) AS deleted
                     FROM {} GROUP BY realm_id",
                    e.cli_name(),
                    e.table()
                )
            })
            .collect::<Vec<_>>()
            .join(" UNION ALL ");
        let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .fetch_all(pool)
            .await?;
        let mut counts = Counts::new();
        for (realm, entity, live, deleted) in rows {
            if let Some(e) = Entity::lookup(&entity) {
                counts.insert((realm, e.cli_name()), (live, deleted));
            }
        }
        let now = Utc::now();
        let counts = std::sync::Arc::new(counts);
        *self.inner.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((Instant::now(), now, counts.clone()));
        Ok((now, counts))
    }
}

/// The entities a stored trigger's pipeline runs (none for one that no longer resolves).
pub fn trigger_entities(t: &TriggerRow) -> Vec<Entity> {
    let vars = t.spec().map(|s| s.variables).unwrap_or_default();
    match pipelines::resolve_pipeline(&t.pipeline, &vars) {
        Ok(Resolved::Sync(r)) => r.entities,
        Ok(Resolved::Backfill(r)) => vec![r.entity],
        Err(_) => Vec::new(),
    }
}

pub async fn overview(
    pool: &PgPool,
    cache: &CountCache,
    late_after: chrono::Duration,
) -> Result<Overview, sqlx::Error> {
    let now = Utc::now();
    let realms = crate::realm::list(pool).await?;
    let (counted_at, counts) = cache.get(pool).await?;
    #[derive(sqlx::FromRow)]
    struct State {
        realm_id: String,
        entity: String,
        last_sync_at: Option<DateTime<Utc>>,
        last_mode: Option<String>,
        qbo_count: Option<i64>,
        live_rows: Option<i64>,
        last_proven_at: Option<DateTime<Utc>>,
    }
    let states: Vec<State> = sqlx::query_as(
        "SELECT realm_id, entity, last_sync_at, last_mode, qbo_count, live_rows, last_proven_at
         FROM qbo_pipeline.sync_state",
    )
    .fetch_all(pool)
    .await?;
    let states: HashMap<(String, String), State> = states
        .into_iter()
        .map(|s| ((s.realm_id.clone(), s.entity.clone()), s))
        .collect();
    // The newest finished run of each company, and how each entity fared in it.
    let last: Vec<(String, String, String, Option<String>)> = sqlx::query_as(
        "SELECT r.realm_id, e.entity, e.status, coalesce(e.note, r.error)
         FROM qbo_pipeline.realms g
         CROSS JOIN LATERAL (SELECT run_id, realm_id, error FROM qbo_pipeline.runs u
                             WHERE u.realm_id = g.realm_id AND u.finished_at IS NOT NULL
                             ORDER BY run_id DESC LIMIT 1) r
         JOIN qbo_pipeline.run_entities e ON e.run_id = r.run_id",
    )
    .fetch_all(pool)
    .await?;
    let last: HashMap<(String, String), (String, Option<String>)> = last
        .into_iter()
        .map(|(r, e, s, err)| ((r, e), (s, err)))
        .collect();
    // The next fire of an active trigger covering each company × entity.
    let mut next: HashMap<(String, &'static str), NextTrigger> = HashMap::new();
    for t in trigger::list(pool).await? {
        let (Some(realm), Some(at), "active") = (&t.realm_id, t.next_fire_at, t.status.as_str())
        else {
            continue;
        };
        for e in trigger_entities(&t) {
            let slot = next.entry((realm.clone(), e.cli_name()));
            match slot {
                std::collections::hash_map::Entry::Occupied(mut o) if o.get().at > at => {
                    o.insert(NextTrigger {
                        name: t.name.clone(),
                        at,
                    });
                }
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(NextTrigger {
                        name: t.name.clone(),
                        at,
                    });
                }
                _ => {}
            }
        }
    }
    let mut cells = Vec::new();
    let mut summaries = Vec::new();
    for realm in &realms {
        let mut summary = RealmSummary {
            realm_id: realm.realm_id.clone(),
            has_token: realm.has_token,
            refresh_token_expires_at: realm.refresh_token_expires_at,
            last_run_id: realm.last_run_id,
            last_run_status: realm.last_run_status.clone(),
            entities_ok: 0,
            entities_late: 0,
            entities_failed: 0,
            entities_never: 0,
        };
        for e in Entity::all() {
            let name = e.cli_name();
            let key = (realm.realm_id.clone(), name.to_string());
            let state = states.get(&key);
            let (rows, deleted) = counts
                .get(&(realm.realm_id.clone(), name))
                .copied()
                .unwrap_or((0, 0));
            let last_sync_at = state.and_then(|s| s.last_sync_at);
            let outcome = last.get(&key);
            let failed = outcome.is_some_and(|(s, _)| s == "failed");
            let kind = if failed {
                summary.entities_failed += 1;
                "failed"
            } else {
                match last_sync_at {
                    None if rows == 0 && deleted == 0 => {
                        summary.entities_never += 1;
                        "never"
                    }
                    Some(t) if now - t <= late_after => {
                        summary.entities_ok += 1;
                        "ok"
                    }
                    _ => {
                        summary.entities_late += 1;
                        "late"
                    }
                }
            };
            cells.push(OverviewCell {
                realm_id: realm.realm_id.clone(),
                entity: name,
                table: e.table(),
                rows,
                deleted,
                last_sync_at,
                last_mode: state.and_then(|s| s.last_mode.clone()),
                age_secs: last_sync_at.map(|t| (now - t).num_seconds().max(0)),
                state: kind,
                last_error: if failed {
                    outcome.and_then(|(_, e)| e.clone())
                } else {
                    None
                },
                next_trigger: next.get(&(realm.realm_id.clone(), name)).cloned(),
                qbo_count: state.and_then(|s| s.qbo_count),
                proven_rows: state.and_then(|s| s.live_rows),
                proven_at: state.and_then(|s| s.last_proven_at),
            });
        }
        summaries.push(summary);
    }
    Ok(Overview {
        generated_at: now,
        counted_at,
        realms: summaries,
        cells,
    })
}

/// A run in flight: its figures so far, from the ledger (every page commits them).
#[derive(Debug, Clone, Serialize)]
pub struct LiveRun {
    pub run_id: i64,
    pub pipeline: String,
    pub realm_id: String,
    pub started_at: DateTime<Utc>,
    pub seconds: f64,
    pub pages: i64,
    pub records: i64,
    /// Records QBO counted for the entities planned so far (None when no count is known).
    pub expected: Option<i64>,
    pub records_per_sec: f64,
    pub eta_secs: Option<f64>,
    pub entities_done: i64,
    pub entities: i64,
}

pub async fn live(pool: &PgPool) -> Result<Vec<LiveRun>, sqlx::Error> {
    let running = ledger::list_runs_filtered(
        pool,
        200,
        &ledger::RunFilter {
            status: Some("running"),
            ..Default::default()
        },
    )
    .await?;
    if running.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<i64> = running.iter().map(|r| r.run_id).collect();
    let figures: Vec<(i64, i64, i64, Option<i64>, i64, i64)> = sqlx::query_as(
        "SELECT run_id, coalesce(sum(pages), 0)::bigint, coalesce(sum(records), 0)::bigint,
                sum(expected)::bigint,
                count(*) FILTER (WHERE status <> 'running')::bigint, count(*)::bigint
         FROM qbo_pipeline.run_entities WHERE run_id = ANY($1) GROUP BY run_id",
    )
    .bind(&ids)
    .fetch_all(pool)
    .await?;
    let figures: HashMap<i64, (i64, i64, Option<i64>, i64, i64)> = figures
        .into_iter()
        .map(|(id, p, r, x, d, n)| (id, (p, r, x, d, n)))
        .collect();
    let now = Utc::now();
    Ok(running
        .into_iter()
        .map(|r| {
            let (pages, records, expected, done, n) = figures
                .get(&r.run_id)
                .copied()
                .unwrap_or((0, 0, None, 0, 0));
            let seconds = ((now - r.started_at).num_milliseconds() as f64 / 1000.0).max(0.001);
            let rate = records as f64 / seconds;
            let eta = expected
                .filter(|x| *x > records && rate > 0.0)
                .map(|x| (x - records) as f64 / rate);
            LiveRun {
                run_id: r.run_id,
                pipeline: r.pipeline,
                realm_id: r.realm_id,
                started_at: r.started_at,
                seconds,
                pages,
                records,
                expected,
                records_per_sec: rate,
                eta_secs: eta,
                entities_done: done,
                entities: n,
            }
        })
        .collect())
}

/// One run in full: its row, per-entity figures and log.
#[derive(Debug, Clone, Serialize)]
pub struct RunDetail {
    pub run: RunRow,
    pub seconds: Option<f64>,
    pub entities: Vec<RunEntityRow>,
    pub log: Vec<crate::run_log::LogLine>,
}

pub async fn run_detail(pool: &PgPool, run_id: i64) -> Result<Option<RunDetail>, sqlx::Error> {
    let Some((run, entities)) = ledger::show_run(pool, run_id).await? else {
        return Ok(None);
    };
    let log = crate::run_log::lines(pool, run_id, 2_000).await?;
    Ok(Some(RunDetail {
        seconds: run
            .finished_at
            .map(|f| (f - run.started_at).num_milliseconds() as f64 / 1000.0),
        run,
        entities,
        log,
    }))
}

/// One company's API usage and authorisation, as the usage page shows it.
#[derive(Debug, Clone, Serialize)]
pub struct UsageRow {
    pub realm_id: String,
    /// This process's requests in the last minute, against the per-minute limit.
    pub requests_last_minute: usize,
    pub requests_per_minute_limit: u32,
    pub throttled_last_minute: usize,
    /// This process's requests in flight now, against the cap.
    pub in_flight: usize,
    pub max_in_flight: usize,
    pub calls_today: u64,
    pub calls_this_month: u64,
    pub throttled_this_month: u64,
    pub monthly_budget: Option<u64>,
    pub budget_left: Option<u64>,
    pub has_token: bool,
    pub refresh_token_expires_at: Option<DateTime<Utc>>,
    pub refresh_token_expires_in_days: Option<i64>,
}

pub async fn usage(
    pool: &PgPool,
    runtime: &crate::runtime::Runtime,
    recent: &super::live::Recent,
) -> Result<Vec<UsageRow>, sqlx::Error> {
    let budget = runtime.app().monthly_budget;
    let report = crate::usage::report(pool, &[], budget).await?;
    let report: HashMap<String, crate::usage::RealmUsage> = report
        .into_iter()
        .map(|u| (u.realm_id.clone(), u))
        .collect();
    let clients: HashMap<String, (usize, usize)> = runtime
        .clients()
        .into_iter()
        .map(|(r, c)| (r.as_str().to_string(), c.in_flight()))
        .collect();
    let now = Utc::now();
    let limit = runtime.http().requests_per_minute;
    let max_in_flight = runtime.http().max_in_flight.max(1) as usize;
    Ok(crate::realm::list(pool)
        .await?
        .into_iter()
        .map(|realm| {
            let u = report.get(&realm.realm_id);
            let last = recent.last_minute(&realm.realm_id);
            let (in_flight, cap) = clients
                .get(&realm.realm_id)
                .copied()
                .unwrap_or((0, max_in_flight));
            UsageRow {
                requests_last_minute: last.requests,
                requests_per_minute_limit: limit,
                throttled_last_minute: last.throttled,
                in_flight,
                max_in_flight: cap,
                calls_today: u.map_or(0, |u| u.calls_today),
                calls_this_month: u.map_or(0, |u| u.calls_this_month),
                throttled_this_month: u.map_or(0, |u| u.throttled_this_month),
                monthly_budget: budget,
                budget_left: budget.map(|b| b.saturating_sub(u.map_or(0, |u| u.calls_this_month))),
                has_token: realm.has_token,
                refresh_token_expires_in_days: realm
                    .refresh_token_expires_at
                    .map(|t| (t - now).num_days()),
                refresh_token_expires_at: realm.refresh_token_expires_at,
                realm_id: realm.realm_id,
            }
        })
        .collect())
}

/// A stored validation, as listed.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ValidationRow {
    pub validation_id: i64,
    pub run_id: Option<i64>,
    pub realm_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub passed: bool,
    pub checks_failed: i32,
    pub evidence_dir: Option<String>,
}

pub async fn validations(pool: &PgPool, limit: i64) -> Result<Vec<ValidationRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT validation_id, run_id, realm_id, created_at, passed, checks_failed, evidence_dir
         FROM qbo_pipeline.validations ORDER BY validation_id DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await
}

pub async fn validation(
    pool: &PgPool,
    id: i64,
) -> Result<Option<(ValidationRow, serde_json::Value)>, sqlx::Error> {
    let row: Option<ValidationRow> = sqlx::query_as(
        "SELECT validation_id, run_id, realm_id, created_at, passed, checks_failed, evidence_dir
         FROM qbo_pipeline.validations WHERE validation_id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let report: serde_json::Value =
        sqlx::query_scalar("SELECT report FROM qbo_pipeline.validations WHERE validation_id = $1")
            .bind(id)
            .fetch_one(pool)
            .await?;
    Ok(Some((row, report)))
}
