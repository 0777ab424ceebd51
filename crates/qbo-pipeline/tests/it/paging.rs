//! Window edges, ties at page boundaries and edits while paging.

use crate::support::*;
use chrono::{DateTime, FixedOffset, TimeZone, Utc};
use qbo_pipeline::entity::Entity;
use qbo_pipeline::window::ChunkSize;
use std::collections::BTreeSet;

fn pacific(utc: &str) -> DateTime<FixedOffset> {
    let t = DateTime::parse_from_rfc3339(utc)
        .unwrap()
        .with_timezone(&Utc);
    let la = t.with_timezone(&chrono_tz::America::Los_Angeles);
    la.fixed_offset()
}

async fn ids(pool: &sqlx::PgPool, entity: Entity) -> BTreeSet<String> {
    table_rows(pool, entity)
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect()
}

#[tokio::test]
async fn window_edges_are_whole_utc_days_both_ends_included() {
    let sb = sandbox(small_company()).await;
    let db = TestDb::create().await;
    let invoices = sb.state().all_records("Invoice");
    let pick = |i: usize| invoices[i]["Id"].as_str().unwrap().to_string();
    let cases = [
        (pick(0), "2020-03-01T00:00:00Z", true),
        (pick(1), "2020-03-31T23:59:59Z", true),
        (pick(2), "2020-02-29T23:59:59Z", false),
        (pick(3), "2020-04-01T00:00:00Z", false),
    ];
    for (id, at, _) in &cases {
        // Stored with QBO's Pacific offset (2020-02-29T16:00:00-08:00 for the first).
        sb.state()
            .set_record_time("Invoice", id, pacific(at))
            .unwrap();
    }
    let w = window("2020-03-01", "2020-03-31");
    let mut opts = options(&[Entity::INVOICE], w);
    opts.chunk = ChunkSize::Day;
    let report = backfill(&sb, &db, &fast_http(), &opts).await;
    assert!(report.succeeded(), "{}", report.table());
    let pool = db.pool().await;
    let loaded = ids(&pool, Entity::INVOICE).await;
    for (id, at, inside) in &cases {
        assert_eq!(loaded.contains(id), *inside, "invoice {id} at {at}");
    }
    assert_table_equals_sandbox(&pool, &sb, Entity::INVOICE, w).await;
    let (start, end): (String, String) = sqlx::query_as(
        "SELECT extract_window_start_utc, extract_window_end_utc FROM raw.qb_invoices WHERE id = $1",
    )
    .bind(&cases[0].0)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        (start.as_str(), end.as_str()),
        ("2020-03-01T00:00:00Z", "2020-03-01T23:59:59Z")
    );
}

#[tokio::test]
async fn ties_at_page_boundaries_are_neither_lost_nor_duplicated() {
    let sb = sandbox(small_company()).await;
    let db = TestDb::create().await;
    let customers = sb.state().all_records("Customer");
    // 13 customers share one second, 4 share the next: with pages of 5 the first group
    // fills whole pages (offset mode) and the second straddles a boundary.
    for (i, r) in customers.iter().take(17).enumerate() {
        let at = if i < 13 {
            "2019-07-04T18:30:00Z"
        } else {
            "2019-07-04T18:30:01Z"
        };
        sb.state()
            .set_record_time("Customer", r["Id"].as_str().unwrap(), pacific(at))
            .unwrap();
    }
    let w = window("2019-07-01", "2019-07-31");
    let mut opts = options(&[Entity::CUSTOMER], w);
    opts.page_size = 5;
    let report = backfill(&sb, &db, &fast_http(), &opts).await;
    assert!(report.succeeded(), "{}", report.table());
    let pool = db.pool().await;
    assert_table_equals_sandbox(&pool, &sb, Entity::CUSTOMER, w).await;
    assert!(ids(&pool, Entity::CUSTOMER).await.len() >= 17);
}

#[tokio::test]
async fn edits_while_paging_lose_no_record_that_stays_in_the_window() {
    let sb = sandbox(small_company()).await;
    let db = TestDb::create().await;
    let w = full_window();
    let before = sandbox_records(&sb, Entity::INVOICE, w);
    // Every page served moves 3 earlier records to "now" (2030: outside the window), which
    // shifts every later offset by 3 — an offset pager would skip records.
    sb.state()
        .set_clock(Some(Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap()));
    let mut faults = sb.state().faults();
    faults.mutate_during_paging = 3;
    sb.state().set_faults(faults);
    let mut opts = options(&[Entity::INVOICE], w);
    opts.page_size = 40;
    opts.chunk = ChunkSize::Whole;
    let report = backfill(&sb, &db, &fast_http(), &opts).await;
    assert!(report.succeeded(), "{}", report.table());
    let mut faults = sb.state().faults();
    faults.mutate_during_paging = 0;
    sb.state().set_faults(faults);

    let after = sandbox_records(&sb, Entity::INVOICE, w);
    let moved = before.len() - after.len();
    assert!(
        moved >= 30,
        "the sandbox moved records while paging ({moved})"
    );
    let pool = db.pool().await;
    let loaded = ids(&pool, Entity::INVOICE).await;
    let missing: Vec<&String> = after.keys().filter(|id| !loaded.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "records that stayed in the window were lost: {missing:?}"
    );
    for (id, record) in table_rows(&pool, Entity::INVOICE).await {
        if let Some(want) = after.get(&id) {
            assert_eq!(&record, want, "invoice {id}");
        }
    }
}
