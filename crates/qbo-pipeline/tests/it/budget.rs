//! Using QBO's budget well across 40 entities: small queries (counts) share batch requests;
//! turning batching off gives the same rows for more requests.

use crate::support::*;
use qbo_pipeline::entity::Entity;
use qbo_sandbox::SandboxConfig;

/// Backfills every entity with `batch_per_minute` and returns (query requests, batch
/// requests) the sandbox answered, checking the load is exact.
async fn load_all(batch_per_minute: u32) -> (u64, u64) {
    let sb = sandbox(small_company()).await;
    let db = TestDb::create().await;
    let http = qbo_pipeline::config::HttpSettings {
        batch_per_minute,
        ..fast_http()
    };
    let w = window("2014-01-01", "2025-12-31");
    // As the CLI runs it: `auto` chunks sized from QBO's counts.
    let opts = qbo_pipeline::backfill::BackfillOptions {
        chunk: qbo_pipeline::window::ChunkSize::Auto,
        ..options(&Entity::ALL, w)
    };
    let report = backfill(&sb, &db, &http, &opts).await;
    assert!(report.succeeded(), "{:?}", report.error());
    let pool = db.pool().await;
    for e in [Entity::CUSTOMER, Entity::INVOICE, Entity::ITEM] {
        assert_table_equals_sandbox(&pool, &sb, e, w).await;
    }
    let stats = sb.state().stats();
    let get = |k: &str| stats.requests_by_endpoint.get(k).copied().unwrap_or(0);
    (get("query"), get("batch"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_of_every_entity_share_batch_requests() {
    let (queries_alone, batches_alone) = load_all(0).await;
    assert_eq!(batches_alone, 0, "batching off sends no batch");
    let (queries, batches) = load_all(36).await;
    assert!(batches >= 1, "counts went in batches");
    // 40 entities: each is counted once; in batches of up to 30 that is at least 40 - 2
    // fewer query requests (a few may still go alone when they miss a batch).
    eprintln!(
        "every entity: {queries_alone} requests alone; {queries} queries + {batches} batches with batching"
    );
    let saved = (queries_alone + batches_alone) as i64 - (queries + batches) as i64;
    assert!(
        saved >= 30,
        "batching saved {saved} requests ({queries_alone} alone vs {queries} + {batches} batches)"
    );
}

/// Backfills customers alone (300 of them, in pages of 300, one chunk) over `w` and returns
/// the pages read, checking the load is exact.
async fn customer_pages(w: qbo_pipeline::window::Window) -> u64 {
    let sb = sandbox(SandboxConfig {
        customers: 300,
        ..small_company()
    })
    .await;
    let db = TestDb::create().await;
    let opts = qbo_pipeline::backfill::BackfillOptions {
        chunk: qbo_pipeline::window::ChunkSize::Whole,
        page_size: 300,
        ..options(&[Entity::CUSTOMER], w)
    };
    let report = backfill(&sb, &db, &fast_http(), &opts).await;
    assert!(report.succeeded(), "{:?}", report.error());
    assert_table_equals_sandbox(&db.pool().await, &sb, Entity::CUSTOMER, w).await;
    let stats = sb.state().stats();
    let pages = report.entities[0].pages;
    // One count, then the pages: alone in the run, no query finds another to share a batch.
    assert_eq!(
        stats
            .requests_by_endpoint
            .get("query")
            .copied()
            .unwrap_or(0),
        pages + 1,
        "requests: a count and one per page"
    );
    pages
}

/// A closed range counted by QBO ends its read once that many distinct records are read: 300
/// records in a page of 300 take one page, not a second that would only re-read the last
/// second (a keyset page starts at the previous page's last second). A window still open
/// (records may enter it during the read) is read to its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_counted_closed_range_is_read_without_the_page_after() {
    assert_eq!(customer_pages(full_window()).await, 1);
    let today = chrono::Utc::now().date_naive();
    let open = qbo_pipeline::window::Window::new(
        chrono::NaiveDate::from_ymd_opt(2014, 1, 1).unwrap(),
        today + chrono::Days::new(1),
    )
    .unwrap();
    assert_eq!(customer_pages(open).await, 2);
}
