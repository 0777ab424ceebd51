//! Full loads, payload fidelity and idempotent re-runs.

use crate::support::*;
use qbo_pipeline::entity::Entity;
use qbo_pipeline::window::ChunkSize;

#[tokio::test]
async fn full_load_equals_the_sandbox_inactive_included() {
    let sb = sandbox(small_company()).await;
    let db = TestDb::create().await;
    let opts = options(&Entity::ALL, full_window());
    let report = backfill(&sb, &db, &fast_http(), &opts).await;
    assert!(report.succeeded(), "{}", report.table());
    let pool = db.pool().await;
    for entity in Entity::ALL {
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
    let report = backfill(&sb, &db, &fast_http(), &options(&[Entity::Invoice], w)).await;
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
    let mut opts = options(&Entity::ALL, full_window());
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
    assert!(
        second.entities.iter().all(|e| e.chunks_skipped == 0),
        "a completed window is re-read, not skipped"
    );
    assert_eq!(
        before,
        versions(pool.clone()).await,
        "no row got a new version"
    );

    // A change in QBO is picked up by the next run, and only that row is rewritten.
    let some_id = sb.state().all_records("Customer")[0]["Id"]
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
    let notes: String =
        sqlx::query_scalar("SELECT payload->>'Notes' FROM raw.qb_customers WHERE id = $1")
            .bind(&some_id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(notes, "changed");
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
            entity: Entity::Item,
            window: w,
            size: ChunkSize::Year,
        },
        &chunks,
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
        entity: Entity::Item,
        run_id: guard.run_id,
        job_id: job.job_id,
        chunk: &chunks[0],
        page_number: 1,
    };
    let write = |body: String| {
        let pool = pool.clone();
        let target = PageTarget { ..target };
        async move {
            write_page(
                &pool,
                &target,
                parse_page(body.as_bytes(), Entity::Item).unwrap(),
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
