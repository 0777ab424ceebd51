//! Validation: data checks on `raw.*` and reconciliation with QBO's own counts, with archived
//! evidence.
//!
//! Checks (each with figures and a verdict): volumetry per entity and per extraction window;
//! no duplicate `(realm_id, id)`; no null payload; payload `Id` = row `id`; metadata columns
//! complete; no ingestion time in the future; per entity and window, QBO's `COUNT(*)` (inactive
//! included) = rows whose `LastUpdatedTime` falls in the window, and with `--deep` the Id sets
//! compared; freshness. Every SQL statement and QBO query that produced a figure is recorded
//! in the report.

use crate::entity::{Entity, KeyShape};
use crate::extract;
use crate::shutdown::StopSignal;
use crate::window::{ChunkSize, Window, plan};
use chrono::{DateTime, NaiveDate, Utc};
use qbo_client::{QboClient, RequestStats};
use serde::Serialize;
use serde_json::json;
use sqlx::PgPool;
use std::collections::BTreeSet;

/// How many missing/extra Ids a deep reconciliation lists.
const ID_LIST_LIMIT: usize = 20;

#[derive(Debug, Clone)]
pub struct ValidateOptions {
    pub entities: Vec<Entity>,
    /// Reconcile this window; `None` = the span of extraction windows found in the tables.
    pub window: Option<Window>,
    pub deep: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entity: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    pub passed: bool,
    pub figures: serde_json::Value,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct WindowVolume {
    pub entity: String,
    pub window_start: String,
    pub window_end: String,
    pub rows: i64,
    pub first_ingested: Option<String>,
    pub last_ingested: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct QueryRecord {
    pub purpose: String,
    pub language: &'static str,
    pub text: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub generated_at: String,
    pub realm_id: Option<String>,
    pub passed: bool,
    pub checks_failed: usize,
    pub last_successful_run: Option<i64>,
    pub rows_per_entity: Vec<(String, i64)>,
    pub windows: Vec<WindowVolume>,
    pub checks: Vec<Check>,
    pub queries: Vec<QueryRecord>,
}

struct Ctx<'a> {
    pool: &'a PgPool,
    qbo: Option<&'a QboClient>,
    checks: Vec<Check>,
    queries: Vec<QueryRecord>,
    /// The SQL condition selecting the validated company's rows.
    scope: String,
}

impl Ctx<'_> {
    fn sql(&mut self, purpose: &str, text: &str) -> String {
        self.queries.push(QueryRecord {
            purpose: purpose.into(),
            language: "sql",
            text: text.split_whitespace().collect::<Vec<_>>().join(" "),
        });
        text.to_string()
    }
    fn check(
        &mut self,
        name: &str,
        entity: Option<Entity>,
        window: Option<String>,
        passed: bool,
        figures: serde_json::Value,
        detail: String,
    ) {
        self.checks.push(Check {
            name: name.into(),
            entity: entity.map(|e| e.cli_name().to_string()),
            window,
            passed,
            figures,
            detail,
        });
    }
}

/// SQL for the record inside `payload`: the payload itself, or for a wrapped entity
/// (RecurringTransaction: `{"Invoice": {...}}`) its one object member (`extract::parse_page`
/// refuses a wrapper without exactly one).
fn record_sql(entity: Entity) -> String {
    match entity.key() {
        KeyShape::Wrapped => "(SELECT w.v FROM jsonb_each(payload) AS w(k, v) \
             WHERE jsonb_typeof(w.v) = 'object' ORDER BY w.k LIMIT 1)"
            .to_string(),
        KeyShape::Id | KeyShape::Composite(_) => "payload".to_string(),
    }
}

/// SQL for the `id` a row's payload gives, by the entity's key shape (`extract::record_id`).
fn id_sql(entity: Entity) -> String {
    match entity.key() {
        KeyShape::Composite(parts) => format!(
            "concat_ws(':', {})",
            parts
                .iter()
                .map(|p| format!("payload->>'{p}'"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        KeyShape::Id | KeyShape::Wrapped => format!("{}->>'Id'", record_sql(entity)),
    }
}

/// Runs every check. `qbo` = `None` skips reconciliation (reported as a failed check unless
/// the caller asked for offline validation, in which case it is listed as not run).
pub async fn validate(
    pool: &PgPool,
    qbo: Option<(&QboClient, &str)>,
    opts: &ValidateOptions,
) -> anyhow::Result<Report> {
    let realm = qbo.map(|(_, r)| r.to_string());
    // Checks cover the company being validated; offline, without one, every company.
    let scope = match &realm {
        Some(r) => format!("realm_id = '{}'", r.replace('\'', "''")),
        None => "true".to_string(),
    };
    let mut ctx = Ctx {
        pool,
        qbo: qbo.map(|(c, _)| c),
        checks: Vec::new(),
        queries: Vec::new(),
        scope: scope.clone(),
    };
    let mut rows_per_entity = Vec::new();
    let mut windows = Vec::new();
    for &entity in &opts.entities {
        let table = entity.table();
        // Volumetry.
        let q = ctx.sql(
            "rows per entity",
            &format!("SELECT count(*) FROM {table} WHERE {scope}"),
        );
        let rows: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(q))
            .fetch_one(ctx.pool)
            .await?;
        rows_per_entity.push((entity.cli_name().to_string(), rows));
        let q = ctx.sql(
            "rows per extraction window",
            &format!(
                "SELECT extract_window_start_utc, extract_window_end_utc, count(*),
                        to_char(min(ingested_at_utc), 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),
                        to_char(max(ingested_at_utc), 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')
                 FROM {table} WHERE {scope} GROUP BY 1, 2 ORDER BY 1, 2"
            ),
        );
        type WindowRow = (
            Option<String>,
            Option<String>,
            i64,
            Option<String>,
            Option<String>,
        );
        let per_window: Vec<WindowRow> = sqlx::query_as(sqlx::AssertSqlSafe(q))
            .fetch_all(ctx.pool)
            .await?;
        for (s, e, n, first, last) in per_window {
            windows.push(WindowVolume {
                entity: entity.cli_name().into(),
                window_start: s.unwrap_or_default(),
                window_end: e.unwrap_or_default(),
                rows: n,
                first_ingested: first,
                last_ingested: last,
            });
        }
        ctx.check(
            "volumetry",
            Some(entity),
            None,
            true,
            json!({"rows": rows}),
            format!("{rows} rows"),
        );

        // Integrity checks.
        let q = ctx.sql("duplicate keys", &format!(
            "SELECT count(*) FROM (SELECT realm_id, id FROM {table} WHERE {scope} GROUP BY 1, 2 HAVING count(*) > 1) d"));
        let dups: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(q))
            .fetch_one(ctx.pool)
            .await?;
        ctx.check(
            "no duplicate (realm_id, id)",
            Some(entity),
            None,
            dups == 0,
            json!({"duplicates": dups}),
            format!("{dups} duplicated keys"),
        );

        let q = ctx.sql(
            "null payloads",
            &format!(
                "SELECT count(*) FROM {table} WHERE {scope} AND (payload IS NULL OR payload = 'null'::jsonb)"
            ),
        );
        let nulls: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(q))
            .fetch_one(ctx.pool)
            .await?;
        ctx.check(
            "no null payload",
            Some(entity),
            None,
            nulls == 0,
            json!({"null_payloads": nulls}),
            format!("{nulls} null payloads"),
        );

        let payload_id = id_sql(entity);
        let q = ctx.sql("payload Id differs from id", &format!(
            "SELECT id FROM {table} WHERE {scope} AND {payload_id} IS DISTINCT FROM id ORDER BY id LIMIT {ID_LIST_LIMIT}"));
        let bad_ids: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(q))
            .fetch_all(ctx.pool)
            .await?;
        let q = ctx.sql(
            "payload Id differs from id (count)",
            &format!(
                "SELECT count(*) FROM {table} WHERE {scope} AND {payload_id} IS DISTINCT FROM id"
            ),
        );
        let bad_count: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(q))
            .fetch_one(ctx.pool)
            .await?;
        ctx.check(
            "payload Id equals id",
            Some(entity),
            None,
            bad_count == 0,
            json!({"mismatches": bad_count, "ids": bad_ids}),
            if bad_count == 0 {
                "every payload Id matches".into()
            } else {
                format!(
                    "{bad_count} rows whose payload Id differs, e.g. {}",
                    bad_ids.join(", ")
                )
            },
        );

        let record = record_sql(entity);
        let q = ctx.sql("metadata columns complete", &format!(
            "SELECT count(*) FILTER (WHERE ingested_at_utc IS NULL), count(*) FILTER (WHERE extract_window_start_utc IS NULL),
                    count(*) FILTER (WHERE extract_window_end_utc IS NULL), count(*) FILTER (WHERE page_number IS NULL),
                    count(*) FILTER (WHERE {record}->'MetaData'->>'LastUpdatedTime' IS NULL)
             FROM {table} WHERE {scope}"));
        let (a, b, c, d, e): (i64, i64, i64, i64, i64) = sqlx::query_as(sqlx::AssertSqlSafe(q))
            .fetch_one(ctx.pool)
            .await?;
        let incomplete = a + b + c + d + e;
        ctx.check("metadata columns complete", Some(entity), None, incomplete == 0,
            json!({"ingested_at_utc": a, "extract_window_start_utc": b, "extract_window_end_utc": c, "page_number": d, "payload_last_updated": e}),
            format!("{incomplete} missing values"));

        let q = ctx.sql("ingestion time in the future", &format!(
            "SELECT count(*) FROM {table} WHERE {scope} AND ingested_at_utc > (now() AT TIME ZONE 'UTC') + interval '5 minutes'"));
        let future: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(q))
            .fetch_one(ctx.pool)
            .await?;
        ctx.check(
            "no ingestion time in the future",
            Some(entity),
            None,
            future == 0,
            json!({"future_rows": future}),
            format!("{future} rows"),
        );

        // Freshness.
        let q = ctx.sql("freshness", &format!(
            "SELECT to_char(max(source_last_updated_utc) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') FROM {table} WHERE {scope}"));
        let newest: Option<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(q))
            .fetch_one(ctx.pool)
            .await?;
        ctx.check(
            "freshness",
            Some(entity),
            None,
            true,
            json!({"newest_last_updated": newest}),
            format!(
                "newest LastUpdatedTime loaded: {}",
                newest.as_deref().unwrap_or("none")
            ),
        );

        reconcile(&mut ctx, entity, opts).await?;
    }
    let q = ctx.sql(
        "last successful run",
        &format!(
            "SELECT max(run_id) FROM qbo_pipeline.runs WHERE {scope} AND status = 'succeeded'"
        ),
    );
    let last_run: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(q))
        .fetch_one(ctx.pool)
        .await?;
    let checks_failed = ctx.checks.iter().filter(|c| !c.passed).count();
    Ok(Report {
        generated_at: Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        realm_id: realm,
        passed: checks_failed == 0,
        checks_failed,
        last_successful_run: last_run,
        rows_per_entity,
        windows,
        checks: ctx.checks,
        queries: ctx.queries,
    })
}

async fn reconcile(
    ctx: &mut Ctx<'_>,
    entity: Entity,
    opts: &ValidateOptions,
) -> anyhow::Result<()> {
    let table = entity.table();
    let scope = ctx.scope.clone();
    if entity.read_whole() {
        return reconcile_whole(ctx, entity, opts).await;
    }
    let window = match opts.window {
        Some(w) => Some(w),
        None => {
            let q = ctx.sql("span of extraction windows", &format!(
                "SELECT min(extract_window_start_utc), max(extract_window_end_utc) FROM {table} WHERE {scope}"));
            let (s, e): (Option<String>, Option<String>) = sqlx::query_as(sqlx::AssertSqlSafe(q))
                .fetch_one(ctx.pool)
                .await?;
            let day = |t: Option<String>| {
                t.and_then(|t| NaiveDate::parse_from_str(t.get(..10)?, "%Y-%m-%d").ok())
            };
            match (day(s), day(e)) {
                // Windows stored by older versions may end after tomorrow: nothing
                // can be updated later, so reconcile up to tomorrow.
                (Some(s), Some(e)) => {
                    Window::new(s, e.min(Utc::now().date_naive() + chrono::Days::new(1))).ok()
                }
                _ => None,
            }
        }
    };
    let Some(window) = window else {
        ctx.check(
            "reconciliation with QBO",
            Some(entity),
            None,
            true,
            json!({"windows": 0}),
            "nothing loaded and no --from/--to: nothing to reconcile".into(),
        );
        return Ok(());
    };
    let Some(qbo) = ctx.qbo else {
        ctx.check("reconciliation with QBO", Some(entity), Some(format!("{}..{}", window.from, window.to)), false, json!(null),
            "not run: QBO credentials are not configured (set QBO_* or pass --offline to validate the database alone)".into());
        return Ok(());
    };
    let stats = RequestStats::default();
    // `validate` installs no signal handler: Ctrl-C ends the process, waits included.
    let never = StopSignal::default();
    for chunk in plan(window, ChunkSize::Year) {
        let label = format!("{}..{}", chunk.start_rfc3339(), chunk.end_rfc3339());
        let query = extract::count_query(entity, chunk.start, chunk.end).to_string();
        ctx.queries.push(QueryRecord {
            purpose: format!("QBO count {entity} {label}"),
            language: "qbo",
            text: query.clone(),
        });
        let qbo_count = extract::parse_count(&qbo.query(&query, &stats, &never).await?)? as i64;
        let q = ctx.sql(
            "rows in the database for a window",
            &format!(
                "SELECT count(*) FROM {table} WHERE {scope} AND deleted_at_utc IS NULL AND source_last_updated_utc BETWEEN $1 AND $2"
            ),
        );
        let db_count: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(q))
            .bind(chunk.start)
            .bind(chunk.end)
            .fetch_one(ctx.pool)
            .await?;
        let mut figures = json!({"qbo_count": qbo_count, "db_rows": db_count});
        let mut passed = qbo_count == db_count;
        let mut detail = format!("QBO {qbo_count}, database {db_count}");
        if opts.deep {
            let qbo_ids = qbo_ids(
                qbo,
                &stats,
                entity,
                chunk.start,
                chunk.end,
                &mut ctx.queries,
            )
            .await?;
            let q = ctx.sql(
                "ids in the database for a window",
                &format!("SELECT id FROM {table} WHERE {scope} AND deleted_at_utc IS NULL AND source_last_updated_utc BETWEEN $1 AND $2"),
            );
            let db_ids: BTreeSet<String> = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(q))
                .bind(chunk.start)
                .bind(chunk.end)
                .fetch_all(ctx.pool)
                .await?
                .into_iter()
                .collect();
            let missing: Vec<&String> = qbo_ids.difference(&db_ids).collect();
            let extra: Vec<&String> = db_ids.difference(&qbo_ids).collect();
            passed = passed && missing.is_empty() && extra.is_empty();
            figures["missing_count"] = json!(missing.len());
            figures["extra_count"] = json!(extra.len());
            figures["missing_ids"] = json!(missing.iter().take(ID_LIST_LIMIT).collect::<Vec<_>>());
            figures["extra_ids"] = json!(extra.iter().take(ID_LIST_LIMIT).collect::<Vec<_>>());
            if !missing.is_empty() || !extra.is_empty() {
                detail.push_str(&format!(
                    "; missing in the database: {} ({}), not in QBO: {} ({})",
                    missing.len(),
                    missing
                        .iter()
                        .take(ID_LIST_LIMIT)
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    extra.len(),
                    extra
                        .iter()
                        .take(ID_LIST_LIMIT)
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
        ctx.check(
            "reconciliation with QBO",
            Some(entity),
            Some(label),
            passed,
            figures,
            detail,
        );
    }
    Ok(())
}

/// Reconciles an entity read whole (whatever the window): QBO's count of all its records
/// against the rows stored for the company (a singleton: at most one row, nothing to ask).
async fn reconcile_whole(
    ctx: &mut Ctx<'_>,
    entity: Entity,
    opts: &ValidateOptions,
) -> anyhow::Result<()> {
    const NAME: &str = "reconciliation with QBO";
    let table = entity.table();
    let scope = ctx.scope.clone();
    let q = ctx.sql(
        "rows in the database (entity read whole)",
        &format!("SELECT count(*) FROM {table} WHERE {scope} AND deleted_at_utc IS NULL"),
    );
    let db_count: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(q))
        .fetch_one(ctx.pool)
        .await?;
    let label = Some("whole".to_string());
    if db_count == 0 && opts.window.is_none() {
        ctx.check(
            NAME,
            Some(entity),
            label,
            true,
            json!({"db_rows": 0}),
            "nothing loaded and no --from/--to: nothing to reconcile".into(),
        );
        return Ok(());
    }
    if entity.is_singleton() {
        ctx.check(
            NAME,
            Some(entity),
            label,
            db_count <= 1,
            json!({"db_rows": db_count}),
            format!("one record per company; database {db_count}"),
        );
        return Ok(());
    }
    let Some(qbo) = ctx.qbo else {
        ctx.check(NAME, Some(entity), label, false, json!(null),
            "not run: QBO credentials are not configured (set QBO_* or pass --offline to validate the database alone)".into());
        return Ok(());
    };
    let stats = RequestStats::default();
    let never = StopSignal::default();
    let query = extract::whole_count_query(entity).to_string();
    ctx.queries.push(QueryRecord {
        purpose: format!("QBO count {entity} whole"),
        language: "qbo",
        text: query.clone(),
    });
    let body = match qbo.query(&query, &stats, &never).await {
        Ok(body) => body,
        Err(e) => match extract::unavailable(entity, &e) {
            Some(u) => {
                ctx.check(
                    NAME,
                    Some(entity),
                    label,
                    db_count == 0,
                    json!({"db_rows": db_count}),
                    format!("not offered by the company: {}", u.reason),
                );
                return Ok(());
            }
            None => return Err(e.into()),
        },
    };
    let qbo_count = extract::parse_count(&body)? as i64;
    let mut figures = json!({"qbo_count": qbo_count, "db_rows": db_count});
    let mut passed = qbo_count == db_count;
    let mut detail = format!("QBO {qbo_count}, database {db_count}");
    if opts.deep {
        let mut qbo_ids = BTreeSet::new();
        let mut position = 1;
        loop {
            let query = extract::whole_query(entity, position, 1000).to_string();
            let records = extract::parse_page(&qbo.query(&query, &stats, &never).await?, entity)?;
            let before = qbo_ids.len();
            qbo_ids.extend(records.iter().map(|r| r.id.clone()));
            if records.len() < 1000 || qbo_ids.len() == before {
                break;
            }
            position += 1000;
        }
        let q = ctx.sql(
            "ids in the database (entity read whole)",
            &format!("SELECT id FROM {table} WHERE {scope} AND deleted_at_utc IS NULL"),
        );
        let db_ids: BTreeSet<String> = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(q))
            .fetch_all(ctx.pool)
            .await?
            .into_iter()
            .collect();
        let missing: Vec<&String> = qbo_ids.difference(&db_ids).take(ID_LIST_LIMIT).collect();
        let extra: Vec<&String> = db_ids.difference(&qbo_ids).take(ID_LIST_LIMIT).collect();
        passed = passed && missing.is_empty() && extra.is_empty();
        figures["missing_count"] = json!(qbo_ids.difference(&db_ids).count());
        figures["extra_count"] = json!(db_ids.difference(&qbo_ids).count());
        figures["missing_ids"] = json!(missing);
        figures["extra_ids"] = json!(extra);
        if !missing.is_empty() || !extra.is_empty() {
            detail.push_str(&format!(
                "; missing in the database: {missing:?}, not in QBO: {extra:?}"
            ));
        }
    }
    ctx.check(NAME, Some(entity), label, passed, figures, detail);
    Ok(())
}

/// Every Id QBO holds for the entity in `[start, end]`, read with the backfill's keyset pages.
async fn qbo_ids(
    qbo: &QboClient,
    stats: &RequestStats,
    entity: Entity,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    log: &mut Vec<QueryRecord>,
) -> anyhow::Result<BTreeSet<String>> {
    let chunk = crate::window::Chunk { start, end };
    let mut ids = BTreeSet::new();
    let mut cursor = crate::window::qbo_literal(start);
    let mut tie: Option<(String, String, u64)> = None;
    let mut seen = std::collections::HashSet::new();
    loop {
        let query = match &tie {
            Some((second, _, pos)) => extract::tie_query(entity, second, *pos, 1000),
            None => extract::keyset_query(entity, &chunk, &cursor, 1000),
        }
        .to_string();
        if log.iter().filter(|q| q.language == "qbo").count() < 200 {
            log.push(QueryRecord {
                purpose: format!("QBO Ids {entity}"),
                language: "qbo",
                text: query.clone(),
            });
        }
        let records = extract::parse_page(
            &qbo.query(&query, stats, &StopSignal::default()).await?,
            entity,
        )?;
        match tie.take() {
            Some((second, after, pos)) => {
                let full = extract::tie_page_full(
                    &records,
                    1000,
                    extract::cursor_time(&second)?,
                    pos,
                    &mut seen,
                )?;
                ids.extend(records.iter().map(|r| r.id.clone()));
                if full {
                    tie = Some((second, after, pos + 1000));
                } else {
                    seen.clear();
                    cursor = after;
                }
            }
            None => {
                ids.extend(records.iter().map(|r| r.id.clone()));
                match extract::next_step(&records, 1000, extract::cursor_time(&cursor)?)? {
                    extract::PageStep::Done => return Ok(ids),
                    extract::PageStep::Next(c) => cursor = c,
                    extract::PageStep::TieSecond { second, after } => {
                        tie = Some((second, after, 1))
                    }
                }
            }
        }
    }
}

impl Report {
    pub fn text(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "validation {} — {} of {} checks failed",
            if self.passed { "PASSED" } else { "FAILED" },
            self.checks_failed,
            self.checks.len()
        );
        for (e, n) in &self.rows_per_entity {
            let _ = writeln!(out, "  {e:<22} {n:>10} rows");
        }
        for c in &self.checks {
            let scope = [c.entity.clone(), c.window.clone()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" ");
            let _ = writeln!(
                out,
                "  [{}] {:<32} {:<50} {}",
                if c.passed { " ok " } else { "FAIL" },
                c.name,
                scope,
                c.detail
            );
        }
        if let Some(r) = self.last_successful_run {
            let _ = writeln!(out, "  last successful run: {r}");
        }
        out
    }

    pub fn markdown(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(out, "# qbo-pipeline validation\n");
        let _ = writeln!(
            out,
            "- generated: {}\n- realm: {}\n- verdict: **{}** ({} of {} checks failed)\n- last successful run: {}\n",
            self.generated_at,
            self.realm_id.as_deref().unwrap_or("-"),
            if self.passed { "PASSED" } else { "FAILED" },
            self.checks_failed,
            self.checks.len(),
            self.last_successful_run
                .map(|r| r.to_string())
                .unwrap_or_else(|| "-".into())
        );
        let _ = writeln!(out, "## Rows per entity\n\n| entity | rows |\n|---|---:|");
        for (e, n) in &self.rows_per_entity {
            let _ = writeln!(out, "| {e} | {n} |");
        }
        let _ = writeln!(
            out,
            "\n## Rows per extraction window\n\n| entity | window start | window end | rows | first ingested | last ingested |\n|---|---|---|---:|---|---|"
        );
        for w in &self.windows {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} |",
                w.entity,
                w.window_start,
                w.window_end,
                w.rows,
                w.first_ingested.as_deref().unwrap_or("-"),
                w.last_ingested.as_deref().unwrap_or("-")
            );
        }
        let _ = writeln!(
            out,
            "\n## Checks\n\n| verdict | check | entity | window | detail |\n|---|---|---|---|---|"
        );
        for c in &self.checks {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} |",
                if c.passed { "pass" } else { "**FAIL**" },
                c.name,
                c.entity.as_deref().unwrap_or("-"),
                c.window.as_deref().unwrap_or("-"),
                c.detail.replace('|', "\\|")
            );
        }
        let _ = writeln!(out, "\n## Queries that produced these figures\n");
        for q in &self.queries {
            let _ = writeln!(
                out,
                "- {} ({}): `{}`",
                q.purpose,
                q.language,
                q.text.replace('`', "'")
            );
        }
        out
    }
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A horizontal bar chart as inline SVG (no scripts, no network).
fn svg_bars(title: &str, bars: &[(String, i64)]) -> String {
    let max = bars.iter().map(|b| b.1).max().unwrap_or(0).max(1) as f64;
    let row = 22;
    let height = 30 + row * bars.len().max(1);
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{t}" width="760" height="{height}" font-family="sans-serif" font-size="12"><text x="0" y="16" font-weight="bold">{t}</text>"#,
        t = html_escape(title)
    );
    for (i, (label, value)) in bars.iter().enumerate() {
        let y = 26 + i * row;
        let w = (*value as f64 / max * 400.0).round();
        svg.push_str(&format!(
            r##"<text x="0" y="{ty}">{l}</text><rect x="300" y="{y}" width="{w}" height="16" fill="#3b73b9"><title>{l}: {value}</title></rect><text x="{vx}" y="{ty}">{value}</text>"##,
            ty = y + 12,
            l = html_escape(label),
            vx = 305.0 + w,
        ));
    }
    svg.push_str("</svg>");
    svg
}

impl Report {
    /// A self-contained HTML page: figures, charts as inline SVG, checks and queries.
    pub fn html(&self) -> String {
        let mut checks = String::new();
        for c in &self.checks {
            checks.push_str(&format!(
                "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
                if c.passed { "pass" } else { "fail" },
                if c.passed { "pass" } else { "FAIL" },
                html_escape(&c.name),
                html_escape(c.entity.as_deref().unwrap_or("-")),
                html_escape(c.window.as_deref().unwrap_or("-")),
                html_escape(&c.detail)
            ));
        }
        let mut windows = String::new();
        for w in &self.windows {
            windows.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td>{}</td><td>{}</td></tr>\n",
                html_escape(&w.entity),
                html_escape(&w.window_start),
                html_escape(&w.window_end),
                w.rows,
                html_escape(w.first_ingested.as_deref().unwrap_or("-")),
                html_escape(w.last_ingested.as_deref().unwrap_or("-"))
            ));
        }
        let mut queries = String::new();
        for q in &self.queries {
            queries.push_str(&format!(
                "<li><b>{}</b> ({})<pre>{}</pre></li>\n",
                html_escape(&q.purpose),
                q.language,
                html_escape(&q.text)
            ));
        }
        let entity_chart = svg_bars("Rows per entity", &self.rows_per_entity);
        let window_bars: Vec<(String, i64)> = self
            .windows
            .iter()
            .map(|w| {
                (
                    format!(
                        "{} {}",
                        w.entity,
                        w.window_start.get(..10).unwrap_or(&w.window_start)
                    ),
                    w.rows,
                )
            })
            .collect();
        let window_chart = svg_bars("Rows per extraction window", &window_bars);
        format!(
            r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>qbo-pipeline validation {generated}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}}table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:3px 8px;font-size:13px}}tr.fail td{{background:#fbe3e3}}tr.pass td:first-child{{color:#1a7f37}}td.n{{text-align:right}}pre{{white-space:pre-wrap;margin:2px 0}}</style>
</head><body>
<h1>qbo-pipeline validation</h1>
<p id="verdict">Verdict: <strong>{verdict}</strong> — {failed} of {total} checks failed. Generated {generated}; realm {realm}; last successful run {run}.</p>
<h2>Rows</h2>
{entity_chart}
{window_chart}
<table><tr><th>entity</th><th>window start</th><th>window end</th><th>rows</th><th>first ingested</th><th>last ingested</th></tr>
{windows}</table>
<h2>Checks</h2>
<table><tr><th>verdict</th><th>check</th><th>entity</th><th>window</th><th>detail</th></tr>
{checks}</table>
<h2>Queries that produced these figures</h2>
<ul>{queries}</ul>
</body></html>
"#,
            generated = html_escape(&self.generated_at),
            verdict = if self.passed { "PASSED" } else { "FAILED" },
            failed = self.checks_failed,
            total = self.checks.len(),
            realm = html_escape(self.realm_id.as_deref().unwrap_or("-")),
            run = self
                .last_successful_run
                .map(|r| r.to_string())
                .unwrap_or_else(|| "-".into()),
        )
    }

    /// Writes `DIR/validation-<timestamp>/{report.md,report.json,report.html,queries.sql}`.
    /// Returns the folder.
    pub fn archive(&self, dir: &std::path::Path) -> anyhow::Result<std::path::PathBuf> {
        use anyhow::Context;
        let stamp = Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
        let mut folder = dir.join(format!("validation-{stamp}"));
        let mut n = 1;
        while folder.exists() {
            n += 1;
            folder = dir.join(format!("validation-{stamp}-{n}"));
        }
        // Evidence names record Ids and amounts: readable by the owner only.
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&folder)
                .with_context(|| format!("creating {}", folder.display()))?;
        }
        let json = serde_json::to_string_pretty(self)?;
        let mut sql = String::from(
            "-- The exact SQL (and, as comments, QBO queries) behind the figures of this validation.\n",
        );
        for q in &self.queries {
            match q.language {
                "sql" => sql.push_str(&format!("-- {}\n{};\n\n", q.purpose, q.text)),
                _ => sql.push_str(&format!("-- QBO: {}\n--   {}\n\n", q.purpose, q.text)),
            }
        }
        for (name, body) in [
            ("report.md", self.markdown()),
            ("report.json", json.clone()),
            ("report.html", self.html()),
            ("queries.sql", sql),
        ] {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(folder.join(name))
                .and_then(|mut f| f.write_all(body.as_bytes()))
                .with_context(|| format!("writing {name}"))?;
        }
        Ok(folder)
    }

    /// Records the validation in `qbo_pipeline.validations`, next to the run it checked.
    pub async fn record(
        &self,
        pool: &PgPool,
        evidence: Option<&std::path::Path>,
    ) -> anyhow::Result<()> {
        let json = serde_json::to_string(self)?;
        sqlx::query(
            "INSERT INTO qbo_pipeline.validations (run_id, realm_id, passed, checks_failed, evidence_dir, report)
             VALUES ($1, $2, $3, $4, $5, $6::jsonb)",
        )
        .bind(self.last_successful_run)
        .bind(&self.realm_id)
        .bind(self.passed)
        .bind(self.checks_failed as i32)
        .bind(evidence.map(|p| p.display().to_string()))
        .bind(&json)
        .execute(pool)
        .await?;
        Ok(())
    }
}
