//! Full loads, payload fidelity and idempotent re-runs.

use crate::support::*;
use qbo_pipeline::entity::Entity;
use qbo_pipeline::window::ChunkSize;
use qbo_sandbox::SandboxConfig;
use std::time::Duration;

#[tokio::test]
async fn full_load_equals_the_sandbox_inactive_included() {
    let sb = sandbox(small_company()).await;
    let db = TestDb::create().await;
    let opts = options(&GENERATED, full_window());
    let report = backfill(&sb, &db, &fast_http(), &opts).await;
    assert!(report.succeeded(), "{}", report.table());
    let pool = db.pool().await;
    for entity in GENERATED {
        assert_table_equals_sandbox(&pool, &sb, entity, full_window()).await;
    }
    let inactive: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM raw.qb_customers WHERE payload->>'Active' = 'false'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM raw.qb_customers")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(
        inactive > 0 && inactive < total,
        "inactive customers loaded: {inactive}/{total}"
    );
    // Audit columns are complete and consistent with the payload.
    let bad: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM raw.qb_invoices WHERE payload->>'Id' <> id OR realm_id <> $1
           OR extract_window_start_utc IS NULL OR extract_window_end_utc IS NULL
           OR page_number IS NULL OR page_number < 1 OR run_id <> $2",
    )
    .bind(sb.realm_id())
    .bind(report.run_id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(bad, 0);
    // Expected counts came from QBO's own COUNT(*).
    for e in &report.entities {
        assert_eq!(e.expected, Some(e.rows_written), "{}", e.entity);
    }
}

#[tokio::test]
async fn payload_numbers_and_text_are_kept_exactly() {
    let sb = sandbox(small_company()).await;
    let db = TestDb::create().await;
    let created = sb
        .state()
        .create(
            "Invoice",
            serde_json::from_str(
                r#"{"Line":[{"Amount":0.5,"DetailType":"SubTotalLineDetail","SubTotalLineDetail":{}}],"TotalAmt":100.00,"Balance":1e2,"PrivateNote":"quote ' backslash \\ emoji 🦀 CJK 漢字 accent é","CustomerRef":{"value":"1"}}"#,
            )
            .unwrap(),
        )
        .unwrap();
    let id = created["Id"].as_str().unwrap().to_string();
    let when = created["MetaData"]["LastUpdatedTime"]
        .as_str()
        .unwrap()
        .to_string();
    let day = qbo_query::eval::parse_datetime(&when)
        .unwrap()
        .with_timezone(&chrono::Utc)
        .date_naive()
        .to_string();
    let w = window(&day, &day);
    let report = backfill(&sb, &db, &fast_http(), &options(&[Entity::INVOICE], w)).await;
    assert!(report.succeeded(), "{}", report.table());
    let pool = db.pool().await;
    let (total, half, note): (String, String, String) = sqlx::query_as(
        "SELECT payload->>'TotalAmt', payload#>>'{Line,0,Amount}', payload->>'PrivateNote' FROM raw.qb_invoices WHERE id = $1",
    )
    .bind(&id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(total, "100.00");
    assert_eq!(half, "0.5");
    assert_eq!(note, "quote ' backslash \\ emoji 🦀 CJK 漢字 accent é");
}

#[tokio::test]
async fn rerunning_an_unchanged_window_rewrites_no_row() {
    let sb = sandbox(small_company()).await;
    let db = TestDb::create().await;
    let mut opts = options(&GENERATED, full_window());
    opts.chunk = ChunkSize::Month;
    let first = backfill(&sb, &db, &fast_http(), &opts).await;
    assert!(first.succeeded());
    let pool = db.pool().await;
    let versions = |pool: sqlx::PgPool| async move {
        let v: Vec<(String, String)> = sqlx::query_as(
            "SELECT id, xmin::text FROM raw.qb_invoices UNION ALL SELECT id, xmin::text FROM raw.qb_customers
             UNION ALL SELECT id, xmin::text FROM raw.qb_items ORDER BY 1, 2",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        v
    };
    let before = versions(pool.clone()).await;
    let second = backfill(&sb, &db, &fast_http(), &opts).await;
    assert!(second.succeeded(), "{}", second.table());
    assert_eq!(
        second.entities.iter().map(|e| e.rows_written).sum::<u64>(),
        0
    );
    // The whole window lies in the past: every chunk is proved unchanged by one COUNT and
    // not read again.
    for e in &second.entities {
        assert_eq!(e.chunks_skipped, 0, "{}", second.table());
        assert_eq!(e.chunks_verified, e.chunks_total, "{}", second.table());
        assert_eq!((e.pages, e.records), (0, 0), "{}", second.table());
    }
    assert_eq!(
        before,
        versions(pool.clone()).await,
        "no row got a new version"
    );

    // A change in QBO is picked up by the next run, and only that row is rewritten. The
    // sandbox's clock is set back into the window, so the edit lands in a past chunk (real
    // QBO cannot do that: its edits land at the present); the count still catches it.
    let some_id = sb
        .state()
        .all_records("Customer")
        .iter()
        .find(|r| {
            !r["MetaData"]["LastUpdatedTime"]
                .as_str()
                .unwrap()
                .starts_with("2025-06")
        })
        .unwrap()["Id"]
        .as_str()
        .unwrap()
        .to_string();
    sb.state().set_clock(Some(
        chrono::DateTime::parse_from_rfc3339("2025-06-01T12:00:00Z")
            .unwrap()
            .to_utc(),
    ));
    sb.state()
        .update(
            "Customer",
            &some_id,
            serde_json::json!({"Notes": "changed"}),
        )
        .unwrap();
    let third = backfill(&sb, &db, &fast_http(), &opts).await;
    assert!(third.succeeded());
    assert_eq!(
        third.entities.iter().map(|e| e.rows_written).sum::<u64>(),
        1
    );
    let customers = third
        .entities
        .iter()
        .find(|e| e.entity == Entity::CUSTOMER)
        .unwrap();
    assert_eq!(
        customers.chunks_verified,
        customers.chunks_total - 2,
        "the month the customer left and the month it entered are read again: {}",
        third.table()
    );
    let notes: String =
        sqlx::query_scalar("SELECT payload->>'Notes' FROM raw.qb_customers WHERE id = $1")
            .bind(&some_id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(notes, "changed");
}

#[tokio::test]
async fn a_rerun_repairs_rows_removed_from_the_database_and_restart_reads_everything() {
    let sb = sandbox(small_company()).await;
    let db = TestDb::create().await;
    let opts = options(&[Entity::INVOICE], full_window());
    let first = backfill(&sb, &db, &fast_http(), &opts).await;
    assert!(first.succeeded(), "{}", first.table());
    let pool = db.pool().await;
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM raw.qb_invoices")
        .fetch_one(&pool)
        .await
        .unwrap();
    let gone: String = sqlx::query_scalar(
        "DELETE FROM raw.qb_invoices WHERE id = (SELECT min(id) FROM raw.qb_invoices) RETURNING id",
    )
    .fetch_one(&pool)
    .await
    .unwrap();

    // The chunk that lost a row no longer counts equal to QBO: it alone is read again.
    let second = backfill(&sb, &db, &fast_http(), &opts).await;
    assert!(second.succeeded(), "{}", second.table());
    let e = &second.entities[0];
    assert_eq!(e.chunks_verified, e.chunks_total - 1, "{}", second.table());
    assert_eq!(e.rows_written, 1, "{}", second.table());
    let back: i64 = sqlx::query_scalar("SELECT count(*) FROM raw.qb_invoices WHERE id = $1")
        .bind(&gone)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(back, 1, "invoice {gone} was loaded again");

    // --restart trusts nothing: every chunk is read, nothing is rewritten.
    let mut restart = opts.clone();
    restart.restart = true;
    let third = backfill(&sb, &db, &fast_http(), &restart).await;
    assert!(third.succeeded(), "{}", third.table());
    let e = &third.entities[0];
    assert_eq!(e.chunks_verified, 0, "{}", third.table());
    assert_eq!(e.records as i64, total, "{}", third.table());
    assert_eq!(e.rows_written, 0, "{}", third.table());
}

#[tokio::test]
async fn an_older_version_never_overwrites_a_newer_one() {
    use qbo_pipeline::extract::parse_page;
    use qbo_pipeline::load::{Advance, PageTarget, write_page};
    let db = TestDb::create().await;
    let pool = qbo_pipeline::app::open_database(&db.settings(), 2)
        .await
        .unwrap();
    let guard = qbo_pipeline::ledger::start_run(&pool, "t", None, "r1", &serde_json::json!({}))
        .await
        .unwrap();
    let w = window("2015-01-01", "2015-12-31");
    let chunks = qbo_pipeline::window::plan(w, ChunkSize::Year);
    let job = qbo_pipeline::checkpoint::open_job(
        &pool,
        qbo_pipeline::checkpoint::JobKey {
            realm: "r1",
            entity: Entity::ITEM,
            window: w,
            size: ChunkSize::Year,
        },
        || chunks.clone(),
        false,
        guard.run_id,
    )
    .await
    .unwrap();
    let page = |token: &str, time: &str, name: &str| {
        format!(
            r#"{{"QueryResponse":{{"Item":[{{"Id":"9","SyncToken":"{token}","Name":"{name}","MetaData":{{"LastUpdatedTime":"{time}"}}}}]}}}}"#
        )
    };
    let target = PageTarget {
        realm: "r1",
        entity: Entity::ITEM,
        run_id: guard.run_id,
        job_id: job.job_id,
        chunk: &chunks[0],
        page_number: 1,
        policy: qbo_pipeline::load::Policy::Newer,
    };
    let write = |body: String| {
        let pool = pool.clone();
        let target = PageTarget { ..target };
        async move {
            write_page(
                &pool,
                &target,
                parse_page(body.as_bytes(), Entity::ITEM).unwrap(),
                Advance {
                    cursor: None,
                    done: false,
                },
            )
            .await
            .unwrap()
        }
    };
    assert_eq!(
        write(page("2", "2015-05-01T10:00:00-07:00", "new"))
            .await
            .rows_written,
        1
    );
    assert_eq!(
        write(page("1", "2015-04-01T10:00:00-07:00", "old"))
            .await
            .rows_written,
        0,
        "older time loses"
    );
    assert_eq!(
        write(page(
            "1",
            "2015-05-01T10:00:00-07:00",
            "same time, older token"
        ))
        .await
        .rows_written,
        0
    );
    assert_eq!(
        write(page(
            "3",
            "2015-05-01T10:00:00-07:00",
            "same time, newer token"
        ))
        .await
        .rows_written,
        1
    );
    let name: String =
        sqlx::query_scalar("SELECT payload->>'Name' FROM raw.qb_items WHERE id = '9'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(name, "same time, newer token");
}

#[tokio::test]
async fn auto_chunking_is_planned_from_the_count_once_and_kept_until_restart() {
    let sb = sandbox(small_company()).await;
    let db = TestDb::create().await;
    let mut opts = options(&[Entity::INVOICE], full_window());
    opts.chunk = ChunkSize::Auto;
    // 900 invoices in pages of 3 = 300 pages: four chunks keep `concurrency` = 4 busy.
    opts.page_size = 3;
    let first = backfill(&sb, &db, &fast_http(), &opts).await;
    assert!(first.succeeded(), "{}", first.table());
    let e = &first.entities[0];
    assert_eq!(e.expected, Some(900));
    assert_eq!(e.chunks_total, 4, "{}", first.table());
    let pool = db.pool().await;
    assert_table_equals_sandbox(&pool, &sb, Entity::INVOICE, full_window()).await;
    let spans = |pool: sqlx::PgPool| async move {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT to_char(c.chunk_start AT TIME ZONE 'UTC', 'YYYY-MM-DD'),
                    to_char(c.chunk_end AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')
             FROM qbo_pipeline.checkpoints c JOIN qbo_pipeline.backfill_jobs j USING (job_id)
             WHERE j.chunk = 'auto' ORDER BY c.chunk_start",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        rows
    };
    // 4383 days in four day-aligned spans of 1095 or 1096 days, tiling the window.
    assert_eq!(
        spans(pool.clone()).await,
        [
            ("2014-01-01", "2016-12-30 23:59:59"),
            ("2016-12-31", "2019-12-31 23:59:59"),
            ("2020-01-01", "2022-12-31 23:59:59"),
            ("2023-01-01", "2025-12-31 23:59:59"),
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    // The same stored plan keeps its chunks (a plan made now would differ: concurrency 1
    // and 100-record pages give one chunk), so every chunk is proved unchanged.
    let mut changed = opts.clone();
    changed.concurrency = 1;
    changed.page_size = 100;
    let second = backfill(&sb, &db, &fast_http(), &changed).await;
    assert!(second.succeeded(), "{}", second.table());
    let e = &second.entities[0];
    assert_eq!(
        (e.chunks_total, e.chunks_verified),
        (4, 4),
        "{}",
        second.table()
    );
    assert_eq!((e.pages, e.rows_written), (0, 0), "{}", second.table());
    // --restart plans again from the count: one chunk now, every record read once more.
    changed.restart = true;
    let third = backfill(&sb, &db, &fast_http(), &changed).await;
    assert!(third.succeeded(), "{}", third.table());
    let e = &third.entities[0];
    assert_eq!(
        (e.chunks_total, e.chunks_verified),
        (1, 0),
        "{}",
        third.table()
    );
    // (`records` counts what QBO sent, including the few ties `>=` re-reads at page edges.)
    assert!(e.records >= 900 && e.rows_written == 0, "{}", third.table());
    assert_eq!(spans(pool.clone()).await.len(), 1);
}

#[tokio::test]
async fn auto_chunking_rereads_only_the_open_days_of_a_window_reaching_today() {
    let sb = sandbox(small_company()).await;
    let db = TestDb::create().await;
    let today = chrono::Utc::now().date_naive().to_string();
    let mut opts = options(&[Entity::INVOICE], window("2014-01-01", &today));
    opts.chunk = ChunkSize::Auto;
    opts.page_size = 3;
    let first = backfill(&sb, &db, &fast_http(), &opts).await;
    assert!(first.succeeded(), "{}", first.table());
    let e = &first.entities[0];
    assert_eq!(
        e.chunks_total, 5,
        "four sized by the count, one for the open days"
    );
    // An invoice written now lands in the open chunk; the re-run proves the four closed
    // chunks unchanged and reads the open one, which holds the new invoice.
    sb.state().set_clock(None);
    let created = sb
        .state()
        .create(
            "Invoice",
            serde_json::json!({"Line": [], "CustomerRef": {"value": "1"}}),
        )
        .unwrap();
    let second = backfill(&sb, &db, &fast_http(), &opts).await;
    assert!(second.succeeded(), "{}", second.table());
    let e = &second.entities[0];
    assert_eq!(
        (e.chunks_total, e.chunks_verified),
        (5, 4),
        "{}",
        second.table()
    );
    assert_eq!(e.rows_written, 1, "{}", second.table());
    let pool = db.pool().await;
    let found: i64 = sqlx::query_scalar("SELECT count(*) FROM raw.qb_invoices WHERE id = $1")
        .bind(created["Id"].as_str().unwrap())
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(found, 1);
}

/// A company's first big load refreshes the planner's statistics of the table it fills:
/// with statistics that say the company has no rows, each page's key lookup would filter
/// every stored row of it through the other index (seconds a page, and growing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_first_load_analyzes_the_table_it_fills() {
    let sb = sandbox(SandboxConfig {
        invoices: 26_000,
        customers: 50,
        items: 10,
        ..small_company()
    })
    .await;
    let db = TestDb::create().await;
    let pool = db.pool().await;
    let report = backfill(
        &sb,
        &db,
        &fast_http(),
        &options(&[Entity::INVOICE], full_window()),
    )
    .await;
    assert_eq!(report.entities[0].rows_written, 26_000);
    // Only a manual ANALYZE sets last_analyze (autovacuum sets last_autoanalyze); statistics
    // reach the view asynchronously.
    let started = std::time::Instant::now();
    loop {
        let analyzed: bool = sqlx::query_scalar(
            "SELECT last_analyze IS NOT NULL FROM pg_stat_user_tables
             WHERE schemaname = 'raw' AND relname = 'qb_invoices'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        if analyzed {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "raw.qb_invoices was never analyzed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let customers: bool = sqlx::query_scalar(
        "SELECT last_analyze IS NOT NULL FROM pg_stat_user_tables
         WHERE schemaname = 'raw' AND relname = 'qb_customers'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(!customers, "a small table is left to autovacuum");
}
