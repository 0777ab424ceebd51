//! Using QBO's budget well across 40 entities: small queries (counts) share batch requests;
//! turning batching off gives the same rows for more requests.

use crate::support::*;
use qbo_pipeline::entity::Entity;

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
