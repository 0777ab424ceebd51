//! Incremental sync against the sandbox over real HTTP: the first sync equals the sandbox;
//! edits, creations, deletions and deactivations applied exactly; more changes than CDC's
//! cap; a mark past CDC's horizon; an entity CDC does not cover; a change QBO made without
//! bumping `LastUpdatedTime` repaired by the periodic re-read; two companies; `kill -9`
//! during a full load and during a CDC sync; a cron trigger running `qb_sync`. Every test
//! compares the tables with the sandbox record by record.

use crate::support::*;
use chrono::{TimeDelta, Utc};
use qbo_pipeline::app;
use qbo_pipeline::backfill::{Engine, StopSignal};
use qbo_pipeline::entity::{Entity, KeyShape};
use qbo_pipeline::ledger::EntityStatus;
use qbo_pipeline::sync::{SyncOptions, SyncReport};
use qbo_sandbox::{Realm, RunningSandbox, SandboxConfig};
use sqlx::PgPool;
use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

fn entity(name: &str) -> Entity {
    Entity::lookup(name).expect("known entity")
}

async fn engine(sb: &RunningSandbox, db: &TestDb) -> (Engine, PgPool) {
    engine_with(sb, db, &fast_http()).await
}

async fn engine_with(
    sb: &RunningSandbox,
    db: &TestDb,
    http: &qbo_pipeline::config::HttpSettings,
) -> (Engine, PgPool) {
    let pool = app::open_database(&db.settings(), 8).await.unwrap();
    let engine = app::engine(pool.clone(), &qbo_settings(sb), http).unwrap();
    (engine, pool)
}

/// HTTP settings whose batch budget no other test shares: a process keeps one limiter per
/// (realm, settings), and every test's sandbox has the same realm id.
fn own_batch_budget(batch_per_minute: u32) -> qbo_pipeline::config::HttpSettings {
    qbo_pipeline::config::HttpSettings {
        batch_per_minute,
        ..fast_http()
    }
}

async fn sync(engine: &Engine, entities: &[Entity]) -> SyncReport {
    let report = engine
        .sync(&SyncOptions::new(entities.to_vec()), &StopSignal::default())
        .await
        .expect("sync runs");
    assert!(report.succeeded(), "{}", report.table());
    report
}

fn of(report: &SyncReport, e: Entity) -> &qbo_pipeline::sync::EntitySync {
    report.entities.iter().find(|x| x.entity == e).unwrap()
}

/// The pipeline's key of a sandbox record.
fn key_of(e: Entity, record: &serde_json::Value) -> String {
    let inner = match e.key() {
        KeyShape::Wrapped => record.as_object().and_then(|o| o.values().next()).unwrap(),
        _ => record,
    };
    match e.key() {
        KeyShape::Composite(parts) => parts
            .iter()
            .map(|p| inner[*p].as_str().unwrap())
            .collect::<Vec<_>>()
            .join(":"),
        _ => inner["Id"].as_str().unwrap().to_string(),
    }
}

/// Live and deleted rows of a table for one realm: id → payload.
async fn rows(
    pool: &PgPool,
    realm: &str,
    e: Entity,
) -> (
    BTreeMap<String, serde_json::Value>,
    BTreeMap<String, serde_json::Value>,
) {
    let all: Vec<(String, String, bool)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT id, payload::text, deleted_at_utc IS NOT NULL FROM {} WHERE realm_id = $1",
        e.table()
    )))
    .bind(realm)
    .fetch_all(pool)
    .await
    .unwrap();
    let (mut live, mut deleted) = (BTreeMap::new(), BTreeMap::new());
    for (id, payload, gone) in all {
        let payload = serde_json::from_str(&payload).unwrap();
        if gone {
            deleted.insert(id, payload);
        } else {
            live.insert(id, payload);
        }
    }
    (live, deleted)
}

/// The table of `e` equals the company: every record QBO holds is a live row with its exact
/// payload, nothing else is live, and every deleted record that was loaded keeps a row
/// marked deleted.
async fn assert_synced(pool: &PgPool, realm: &Realm, e: Entity) {
    let want: BTreeMap<String, serde_json::Value> = realm
        .all_records(e.qbo_name())
        .into_iter()
        .map(|r| (key_of(e, &r), r))
        .collect();
    let (live, deleted) = rows(pool, realm.id(), e).await;
    let missing: Vec<&String> = want.keys().filter(|k| !live.contains_key(*k)).collect();
    let extra: Vec<&String> = live.keys().filter(|k| !want.contains_key(*k)).collect();
    assert!(missing.is_empty(), "{e}: missing live rows {missing:?}");
    assert!(
        extra.is_empty(),
        "{e}: live rows QBO does not hold {extra:?}"
    );
    for (id, record) in &want {
        assert_eq!(&live[id], record, "{e} {id}: payload differs");
    }
    for id in deleted.keys() {
        assert!(
            !want.contains_key(id),
            "{e} {id}: marked deleted but exists"
        );
    }
}

async fn assert_all_synced(pool: &PgPool, realm: &Realm) {
    for e in Entity::all() {
        assert_synced(pool, realm, e).await;
    }
}

/// Requests the sandbox served (the token endpoint excluded).
fn api_requests(sb: &RunningSandbox) -> u64 {
    let s = sb.state().stats();
    s.requests_by_endpoint
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "token" | "admin"))
        .map(|(_, v)| *v)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_sync_loads_everything_and_an_idle_sync_costs_a_few_requests() {
    let sb = sandbox(small_company()).await;
    let db = TestDb::create().await;
    let (engine, pool) = engine_with(&sb, &db, &own_batch_budget(39)).await;
    let first = sync(&engine, &Entity::ALL).await;
    assert!(
        first
            .entities
            .iter()
            .all(|e| e.mode == "full" || e.status == EntityStatus::Skipped)
    );
    assert_all_synced(&pool, sb.state().default_realm()).await;
    let state: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM qbo_pipeline.sync_state WHERE phase = 'incremental'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(state >= 35, "{state}");

    // A sync a quarter of an hour later, with that budget refilled.
    let (engine, _) = engine_with(&sb, &db, &own_batch_budget(38)).await;
    sb.state().reset_stats();
    let idle = sync(&engine, &Entity::ALL).await;
    let requests = api_requests(&sb);
    assert!(
        requests <= 6,
        "an idle sync took {requests} requests\n{}",
        idle.table()
    );
    assert_eq!(sb.state().stats().requests_by_endpoint.get("cdc"), Some(&1));
    for e in &idle.entities {
        assert_eq!(e.rows_written + e.rows_deleted, 0, "{}", idle.table());
        if e.status == EntityStatus::Succeeded {
            assert_eq!(e.qbo_count, e.live_rows, "{}", idle.table());
            assert!(!e.mode.contains("verify"), "{}", idle.table());
        }
    }
    // The ledger records the mode per entity.
    let modes: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT entity, mode FROM qbo_pipeline.run_entities WHERE run_id = $1 ORDER BY entity",
    )
    .bind(idle.run_id)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(
        modes
            .iter()
            .any(|(e, m)| e == "invoices" && m.as_deref() == Some("cdc")),
        "{modes:?}"
    );
    assert!(
        modes
            .iter()
            .any(|(e, m)| e == "time_activities" && m.as_deref() == Some("query")),
        "{modes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_creations_deletions_and_deactivations_are_applied_exactly() {
    let sb = sandbox(small_company()).await;
    let db = TestDb::create().await;
    let (engine, pool) = engine(&sb, &db).await;
    let entities = [
        Entity::CUSTOMER,
        Entity::INVOICE,
        Entity::ITEM,
        entity("payments"),
    ];
    sync(&engine, &entities).await;
    let state = sb.state();
    let before_delete = state.record("Invoice", "6").unwrap();
    state
        .update("Invoice", "5", serde_json::json!({"PrivateNote": "edited"}))
        .unwrap();
    state.delete("Invoice", "6").unwrap();
    let payment = state.all_records("Payment")[2]["Id"]
        .as_str()
        .unwrap()
        .to_string();
    state.delete("Payment", &payment).unwrap();
    state.deactivate("Customer", "3").unwrap();
    state.delete("Customer", "4").unwrap(); // a name list: made inactive, never deleted
    let created = state
        .create(
            "Invoice",
            serde_json::json!({"CustomerRef": {"value": "1"}, "Line": [], "PrivateNote": "new"}),
        )
        .unwrap();
    let report = sync(&engine, &entities).await;
    let r = sb.state().default_realm();
    for e in entities {
        assert_synced(&pool, r, e).await;
    }
    let invoices = of(&report, Entity::INVOICE);
    assert_eq!(invoices.mode, "cdc", "{}", report.table());
    assert_eq!(
        invoices.rows_written,
        2,
        "one edit, one creation\n{}",
        report.table()
    );
    assert_eq!(invoices.rows_deleted, 1, "{}", report.table());
    assert_eq!(
        of(&report, Entity::CUSTOMER).rows_written,
        2,
        "{}",
        report.table()
    );
    assert_eq!(of(&report, Entity::CUSTOMER).rows_deleted, 0);
    // The deleted invoice keeps its last payload, marked.
    let (live, deleted) = rows(&pool, r.id(), Entity::INVOICE).await;
    assert_eq!(deleted.get("6"), Some(&before_delete));
    assert!(live.contains_key(created["Id"].as_str().unwrap()));
    let (_, deleted) = rows(&pool, r.id(), entity("payments")).await;
    assert!(deleted.contains_key(&payment));
    let (live, _) = rows(&pool, r.id(), Entity::CUSTOMER).await;
    assert_eq!(live["3"]["Active"], false);
    assert!(
        live["4"]["DisplayName"]
            .as_str()
            .unwrap()
            .ends_with("(deleted)")
    );
    // Ledger: rows deleted per entity.
    let deleted: i64 = sqlx::query_scalar(
        "SELECT rows_deleted FROM qbo_pipeline.run_entities WHERE run_id = $1 AND entity = 'invoices'",
    )
    .bind(report.run_id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(deleted, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_changes_than_cdc_answers_at_once_are_all_applied() {
    let sb = sandbox(SandboxConfig {
        invoices: 1600,
        ..small_company()
    })
    .await;
    let db = TestDb::create().await;
    let (engine, pool) = engine(&sb, &db).await;
    let entities = [Entity::CUSTOMER, Entity::INVOICE];
    sync(&engine, &entities).await;
    let ids: Vec<u64> = (1..=1200).collect();
    sb.state().touch("Invoice", &ids).unwrap();
    for id in ["20", "700", "1500"] {
        sb.state().delete("Invoice", id).unwrap();
    }
    sb.state()
        .update("Customer", "7", serde_json::json!({"Notes": "edited"}))
        .unwrap();
    sb.state().reset_stats();
    let report = sync(&engine, &entities).await;
    // One CDC answer cut by the cap, mostly invoices: the invoices go to queries, the
    // customers are asked again alone.
    assert_eq!(
        sb.state().stats().requests_by_endpoint.get("cdc"),
        Some(&2),
        "{}",
        report.table()
    );
    let r = sb.state().default_realm();
    for e in entities {
        assert_synced(&pool, r, e).await;
    }
    let invoices = of(&report, Entity::INVOICE);
    // 1200 touched, two of them deleted since.
    assert_eq!(invoices.rows_written, 1198, "{}", report.table());
    assert_eq!(invoices.rows_deleted, 3, "{}", report.table());
    // Past the cap the invoices were read by query; the deletions CDC cut off were found by
    // the count proof.
    assert!(invoices.mode.starts_with("query"), "{}", report.table());
    assert_eq!(of(&report, Entity::CUSTOMER).mode, "cdc");
    assert_eq!(of(&report, Entity::CUSTOMER).rows_written, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mark_past_the_cdc_horizon_is_read_by_query_with_its_deletions_found() {
    let sb = sandbox(small_company()).await;
    let db = TestDb::create().await;
    let (engine, pool) = engine(&sb, &db).await;
    let entities = [Entity::CUSTOMER, Entity::INVOICE, Entity::ITEM];
    sync(&engine, &entities).await;
    // Changes, then 31 days pass without a sync (QBO's clock moves; ours does not).
    let state = sb.state();
    state
        .update("Invoice", "9", serde_json::json!({"PrivateNote": "before"}))
        .unwrap();
    state.delete("Invoice", "10").unwrap();
    state.advance_clock(TimeDelta::days(31));
    state.delete("Invoice", "11").unwrap();
    state
        .update("Item", "2", serde_json::json!({"Description": "after"}))
        .unwrap();
    let report = sync(&engine, &entities).await;
    for e in entities {
        assert_synced(&pool, state.default_realm(), e).await;
    }
    let invoices = of(&report, Entity::INVOICE);
    assert!(invoices.mode.starts_with("query"), "{}", report.table());
    assert!(invoices.mode.ends_with("verify"), "{}", report.table());
    assert_eq!(invoices.rows_deleted, 2, "{}", report.table());
    // The next sync is within the horizon of QBO's clock again: CDC.
    let again = sync(&engine, &entities).await;
    assert_eq!(of(&again, Entity::INVOICE).mode, "cdc", "{}", again.table());
    for e in entities {
        assert_synced(&pool, state.default_realm(), e).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entity_cdc_does_not_cover_has_its_deletion_found_by_counts() {
    let sb = sandbox(small_company()).await;
    let db = TestDb::create().await;
    let (engine, pool) = engine(&sb, &db).await;
    let time = entity("time_activities");
    let tax = entity("tax_agencies");
    sync(&engine, &[time, tax]).await;
    sb.state().delete("TimeActivity", "7").unwrap();
    sb.state()
        .update(
            "TimeActivity",
            "8",
            serde_json::json!({"Description": "edited"}),
        )
        .unwrap();
    let report = sync(&engine, &[time, tax]).await;
    let t = of(&report, time);
    assert_eq!(t.mode, "query+verify", "{}", report.table());
    assert_eq!(
        (t.rows_written, t.rows_deleted),
        (1, 1),
        "{}",
        report.table()
    );
    assert_synced(&pool, sb.state().default_realm(), time).await;
    assert_synced(&pool, sb.state().default_realm(), tax).await;
    assert_eq!(sb.state().stats().requests_by_endpoint.get("cdc"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_without_a_last_updated_bump_is_repaired_by_the_periodic_reread() {
    let sb = sandbox(small_company()).await;
    let db = TestDb::create().await;
    let (engine, pool) = engine(&sb, &db).await;
    let entities = [Entity::INVOICE, Entity::CUSTOMER];
    sync(&engine, &entities).await;
    sb.state()
        .update_silently(
            "Invoice",
            "12",
            serde_json::json!({"PrivateNote": "silent"}),
        )
        .unwrap();
    // Invisible to CDC and to the counts.
    let report = sync(&engine, &entities).await;
    assert_eq!(of(&report, Entity::INVOICE).rows_written, 0);
    let (live, _) = rows(&pool, sb.realm_id(), Entity::INVOICE).await;
    assert_ne!(live["12"]["PrivateNote"], "silent");
    // Each entity has its first re-read spread over 0.5-1.5 periods.
    let due: Vec<chrono::DateTime<Utc>> =
        sqlx::query_scalar("SELECT next_reread_at FROM qbo_pipeline.sync_state ORDER BY entity")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(due.len(), 2);
    for at in &due {
        assert!(*at > Utc::now() + TimeDelta::days(3), "{at}");
    }
    assert_ne!(due[0], due[1]);
    // The invoices' re-read falls due.
    sqlx::query(
        "UPDATE qbo_pipeline.sync_state SET next_reread_at = now() - interval '1 minute'
         WHERE entity = 'invoices'",
    )
    .execute(&pool)
    .await
    .unwrap();
    let report = sync(&engine, &entities).await;
    let inv = of(&report, Entity::INVOICE);
    assert!(inv.mode.contains("reread"), "{}", report.table());
    assert_eq!(inv.rows_written, 1, "{}", report.table());
    assert!(!of(&report, Entity::CUSTOMER).mode.contains("reread"));
    for e in entities {
        assert_synced(&pool, sb.state().default_realm(), e).await;
    }
    let next: chrono::DateTime<Utc> = sqlx::query_scalar(
        "SELECT next_reread_at FROM qbo_pipeline.sync_state WHERE entity = 'invoices'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(next > Utc::now() + TimeDelta::days(6), "{next}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_companies_sync_from_one_command() {
    let sb = sandbox(SandboxConfig {
        realms: 2,
        ..small_company()
    })
    .await;
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    crate::realms::add_all(&sb, &db, dir.path());
    let run = |args: &[&str]| {
        let mut c = command(dir.path());
        crate::realms::app_only(&mut c, &sb, &db);
        c.args(args).output().unwrap()
    };
    let args = [
        "sync",
        "--entity",
        "customers,invoices,time_activities",
        "--all-realms",
        "--no-progress",
        "--json",
    ];
    let out = run(&args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let ids: Vec<String> = sb.realm_ids().iter().map(|s| s.to_string()).collect();
    let second = sb.realm(&ids[1]).unwrap();
    second.delete("Invoice", "3").unwrap();
    second
        .update(
            "Customer",
            "2",
            serde_json::json!({"Notes": "second company"}),
        )
        .unwrap();
    let out = run(&args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let reports: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reports.as_array().map(Vec::len), Some(2), "{reports}");
    let pool = db.pool().await;
    for id in &ids {
        let realm = sb.realm(id).unwrap();
        for e in [Entity::CUSTOMER, Entity::INVOICE, entity("time_activities")] {
            assert_synced(&pool, realm, e).await;
        }
    }
    let (_, deleted) = rows(&pool, &ids[0], Entity::INVOICE).await;
    assert!(deleted.is_empty(), "the first company deleted nothing");
}

/// Waits until `sql` (a count) reaches `n` in the database, or the child exits.
async fn wait_for(db: &TestDb, sql: &str, n: i64, child: &mut std::process::Child) {
    let started = Instant::now();
    loop {
        if let Ok(pool) = PgPool::connect(&db.url).await {
            let got: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
                .fetch_one(&pool)
                .await
                .ok();
            pool.close().await;
            if got.unwrap_or(0) >= n {
                return;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no progress: {sql}"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the sync ended before it could be killed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_the_full_load_and_during_a_cdc_sync_loses_nothing() {
    let sb = sandbox(SandboxConfig {
        invoices: 3000,
        ..small_company()
    })
    .await;
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let slow = |ms| {
        let mut f = sb.state().faults();
        f.latency = Duration::from_millis(ms);
        sb.state().set_faults(f);
    };
    let args = [
        "sync",
        "--entity",
        "customers,invoices",
        "--no-progress",
        "--concurrency",
        "1",
    ];
    let spawn = || {
        let mut c = command(dir.path());
        with_sandbox(&mut c, &sb, &db);
        c.args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    // 1. Killed during the first full load, after some pages are committed.
    slow(150);
    let mut child = spawn();
    wait_for(
        &db,
        "SELECT count(*) FROM raw.qb_invoices",
        1000,
        &mut child,
    )
    .await;
    child.kill().unwrap();
    child.wait().unwrap();
    slow(0);
    let mut c = command(dir.path());
    with_sandbox(&mut c, &sb, &db);
    let out = c.args(args).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let pool = db.pool().await;
    let r = sb.state().default_realm();
    assert_synced(&pool, r, Entity::INVOICE).await;
    assert_synced(&pool, r, Entity::CUSTOMER).await;
    let resumed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM qbo_pipeline.backfill_jobs WHERE entity = 'invoices'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        resumed, 1,
        "the full load resumed its job rather than starting another"
    );

    // 2. Killed during a CDC sync: changes, then a kill once the run has started.
    sb.state().delete("Invoice", "40").unwrap();
    sb.state()
        .update(
            "Invoice",
            "41",
            serde_json::json!({"PrivateNote": "after kill"}),
        )
        .unwrap();
    slow(300);
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM qbo_pipeline.runs")
        .fetch_one(&pool)
        .await
        .unwrap();
    let mut child = spawn();
    wait_for(
        &db,
        "SELECT count(*) FROM qbo_pipeline.runs",
        runs + 1,
        &mut child,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    child.kill().unwrap();
    child.wait().unwrap();
    slow(0);
    let mut c = command(dir.path());
    with_sandbox(&mut c, &sb, &db);
    let out = c.args(args).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_synced(&pool, r, Entity::INVOICE).await;
    assert_synced(&pool, r, Entity::CUSTOMER).await;
    let (_, deleted) = rows(&pool, r.id(), Entity::INVOICE).await;
    assert!(deleted.contains_key("40"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cron_trigger_running_qb_sync_keeps_the_company_current() {
    use qbo_pipeline::scheduler::{Outcome, Scheduler};
    use qbo_pipeline::trigger::{self, FireResult, TriggerInput};
    let sb = sandbox(small_company()).await;
    let db = TestDb::create().await;
    let s = Scheduler::new(
        qbo_settings(&sb),
        db.settings(),
        fast_http(),
        StopSignal::default(),
    )
    .await
    .unwrap();
    let spec = TriggerInput {
        name: "keep_current".into(),
        pipeline: "qb_sync".into(),
        cron: Some("*/15 * * * *".into()),
        realm: Some(sb.realm_id().into()),
        ..TriggerInput::default()
    }
    .validate()
    .expect("valid trigger");
    let now = Utc::now();
    trigger::create(s.pool(), &spec, now).await.unwrap();
    let s = &s;
    let fire = move |at| async move {
        match s.try_run_next(at).await.unwrap() {
            Outcome::Fired(f) => f,
            other => panic!("expected a fire, got {other:?}"),
        }
    };
    let f = fire(now + TimeDelta::minutes(16)).await;
    assert!(matches!(f.result, FireResult::Succeeded { .. }), "{f:?}");
    let pool = db.pool().await;
    assert_all_synced(&pool, sb.state().default_realm()).await;
    sb.state().delete("Invoice", "2").unwrap();
    sb.state()
        .update("Vendor", "3", serde_json::json!({"CompanyName": "renamed"}))
        .unwrap();
    let f = fire(now + TimeDelta::minutes(31)).await;
    assert!(matches!(f.result, FireResult::Succeeded { .. }), "{f:?}");
    assert_all_synced(&pool, sb.state().default_realm()).await;
    let pipelines: Vec<(String, Option<String>, String)> = sqlx::query_as(
        "SELECT pipeline, trigger_name, status FROM qbo_pipeline.runs ORDER BY run_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(pipelines.len(), 2);
    for p in pipelines {
        assert_eq!(
            p,
            (
                "qb_sync".into(),
                Some("keep_current".into()),
                "succeeded".into()
            )
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_rejects_bad_input_with_exit_2_and_writes_nothing() {
    let sb = sandbox(small_company()).await;
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = command(dir.path());
    with_sandbox(&mut c, &sb, &db);
    let out = c
        .args(["sync", "--entity", "invoicez", "--no-progress"])
        .env("QBO_SYNC_REREAD_DAYS", "weekly")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invoicez"), "{err}");
    assert!(err.contains("QBO_SYNC_REREAD_DAYS"), "{err}");
    assert!(
        schemas(&db).await.iter().all(|s| s != "qbo_pipeline"),
        "nothing written"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_count_proof_repairs_missing_extra_and_wrongly_deleted_rows() {
    let sb = sandbox(small_company()).await;
    let db = TestDb::create().await;
    let (engine, pool) = engine(&sb, &db).await;
    let entities = [Entity::INVOICE, Entity::CUSTOMER];
    sync(&engine, &entities).await;
    let realm = sb.realm_id().to_string();
    // Rows lost from the table, a row QBO never had, a row wrongly marked deleted. (A loss
    // and an addition that cancel out in an entity's total count are not seen by the proof;
    // two losses and one addition are.)
    sqlx::query("DELETE FROM raw.qb_invoices WHERE realm_id = $1 AND id IN ('30', '32')")
        .bind(&realm)
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO raw.qb_invoices (realm_id, id, payload, ingested_at_utc, source_last_updated_utc, sync_token)
         SELECT realm_id, '999999', payload, ingested_at_utc, source_last_updated_utc, sync_token
         FROM raw.qb_invoices WHERE realm_id = $1 AND id = '31'",
    )
    .bind(&realm)
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "UPDATE raw.qb_customers SET deleted_at_utc = now() WHERE realm_id = $1 AND id = '5'",
    )
    .bind(&realm)
    .execute(&pool)
    .await
    .unwrap();
    let report = sync(&engine, &entities).await;
    let inv = of(&report, Entity::INVOICE);
    assert_eq!(inv.mode, "cdc+verify", "{}", report.table());
    assert_eq!(
        (inv.rows_written, inv.rows_deleted),
        (2, 1),
        "{}",
        report.table()
    );
    assert_eq!(
        of(&report, Entity::CUSTOMER).rows_written,
        1,
        "{}",
        report.table()
    );
    for e in entities {
        assert_synced(&pool, sb.state().default_realm(), e).await;
    }
    let (_, deleted) = rows(&pool, &realm, Entity::INVOICE).await;
    assert!(deleted.contains_key("999999"));
    let proven: Option<chrono::DateTime<Utc>> = sqlx::query_scalar(
        "SELECT last_proven_at FROM qbo_pipeline.sync_state WHERE entity = 'invoices'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(proven.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_cdc_is_retried_and_a_cdc_that_never_answers_fails_without_moving_marks() {
    use qbo_sandbox::config::{Endpoint, FaultAction};
    let sb = sandbox(small_company()).await;
    let db = TestDb::create().await;
    let (engine, pool) = engine(&sb, &db).await;
    let entities = [Entity::INVOICE, Entity::CUSTOMER];
    sync(&engine, &entities).await;
    sb.state().delete("Invoice", "15").unwrap();
    // A 503, a 429 and a dropped connection on CDC: retried, then applied.
    sb.state()
        .script_fault(Endpoint::Cdc, 1, FaultAction::Status(503));
    sb.state()
        .script_fault(Endpoint::Cdc, 1, FaultAction::Status(429));
    sb.state().script_fault(Endpoint::Cdc, 1, FaultAction::Drop);
    let report = sync(&engine, &entities).await;
    assert_eq!(
        of(&report, Entity::INVOICE).rows_deleted,
        1,
        "{}",
        report.table()
    );
    assert!(
        of(&report, Entity::INVOICE).retries >= 3,
        "{}",
        report.table()
    );
    for e in entities {
        assert_synced(&pool, sb.state().default_realm(), e).await;
    }
    // A CDC failing every time: the run fails, the marks stay, nothing is lost for later.
    let marks = || async {
        sqlx::query_as::<_, (String, chrono::DateTime<Utc>)>(
            "SELECT entity, mark FROM qbo_pipeline.sync_state ORDER BY entity",
        )
        .fetch_all(&pool)
        .await
        .unwrap()
    };
    let before = marks().await;
    sb.state().delete("Invoice", "16").unwrap();
    sb.state()
        .script_fault(Endpoint::Cdc, 1000, FaultAction::Status(500));
    let failed = engine
        .sync(&SyncOptions::new(entities.to_vec()), &StopSignal::default())
        .await
        .unwrap();
    assert!(!failed.succeeded(), "{}", failed.table());
    assert!(
        failed.error().unwrap().contains("CDC since"),
        "{}",
        failed.table()
    );
    assert_eq!(marks().await, before, "no mark moved");
    let mut f = sb.state().faults();
    f.scripted.clear();
    sb.state().set_faults(f);
    let report = sync(&engine, &entities).await;
    assert_eq!(
        of(&report, Entity::INVOICE).rows_deleted,
        1,
        "{}",
        report.table()
    );
    for e in entities {
        assert_synced(&pool, sb.state().default_realm(), e).await;
    }
}
