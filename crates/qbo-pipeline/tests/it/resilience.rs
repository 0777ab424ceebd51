//! Throttling, server errors, dropped connections, slow answers and OAuth token life.

use crate::support::*;
use qbo_pipeline::entity::Entity;
use qbo_pipeline::window::ChunkSize;
use qbo_sandbox::Rotation;
use std::time::Duration;

fn small_pages(entities: &[Entity]) -> qbo_pipeline::backfill::BackfillOptions {
    let mut o = options(entities, full_window());
    o.page_size = 100;
    o.chunk = ChunkSize::Year;
    o
}

#[tokio::test]
async fn survives_429_storms_5xx_dropped_connections_and_latency() {
    let sb = sandbox(small_company()).await;
    let db = TestDb::create().await;
    let mut faults = sb.state().faults();
    faults.error_rate = 0.15;
    faults.drop_rate = 0.1;
    faults.latency = Duration::from_millis(5);
    faults.throttle_rate = 0.1;
    faults.retry_after_secs = Some(0);
    // A storm: the first 12 queries are all throttled.
    faults.scripted = vec![qbo_sandbox::ScriptedFault {
        endpoint: qbo_sandbox::Endpoint::Query,
        count: 12,
        action: qbo_sandbox::FaultAction::Status(429),
    }];
    sb.state().set_faults(faults);
    let report = backfill(&sb, &db, &fast_http(), &small_pages(&GENERATED)).await;
    assert!(report.succeeded(), "{}", report.table());
    let stats = sb.state().stats();
    assert!(stats.throttled_429 > 0, "the sandbox throttled: {stats:?}");
    assert!(
        stats.server_errors_5xx > 0,
        "the sandbox failed requests: {stats:?}"
    );
    assert!(
        stats.dropped > 0,
        "the sandbox dropped connections: {stats:?}"
    );
    assert!(report.entities.iter().map(|e| e.retries).sum::<u64>() > 0);
    assert!(report.entities.iter().map(|e| e.throttled).sum::<u64>() > 0);
    let pool = db.pool().await;
    for entity in GENERATED {
        assert_table_equals_sandbox(&pool, &sb, entity, full_window()).await;
    }
}

#[tokio::test]
async fn client_limits_keep_the_sandbox_from_ever_answering_429() {
    let sb = sandbox(small_company()).await;
    let db = TestDb::create().await;
    let mut faults = sb.state().faults();
    faults.rpm_limit = Some(600);
    faults.max_in_flight = Some(2);
    sb.state().set_faults(faults);
    let mut http = fast_http();
    http.requests_per_minute = 590;
    http.max_in_flight = 2;
    let mut opts = small_pages(&GENERATED);
    opts.concurrency = 8;
    let report = backfill(&sb, &db, &http, &opts).await;
    assert!(report.succeeded(), "{}", report.table());
    assert_eq!(
        sb.state().stats().throttled_429,
        0,
        "{:?}",
        sb.state().stats()
    );
}

#[tokio::test]
async fn a_rejected_access_token_is_refreshed_mid_run() {
    let sb = sandbox(small_company()).await;
    let db = TestDb::create().await;
    let state = sb.state().clone();
    let mut faults = state.faults();
    faults.latency = Duration::from_millis(20);
    state.set_faults(faults);
    // Expire every access token once a few pages have been served.
    let expirer = tokio::spawn(async move {
        loop {
            if state.stats().query_pages >= 3 {
                state.expire_access_tokens();
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let mut opts = small_pages(&[Entity::INVOICE]);
    opts.page_size = 50;
    let report = backfill(&sb, &db, &fast_http(), &opts).await;
    expirer.await.unwrap();
    assert!(report.succeeded(), "{}", report.table());
    assert!(
        sb.state().stats().token_refreshes >= 2,
        "{:?}",
        sb.state().stats()
    );
    assert!(
        sb.state().stats().unauthorized_401 >= 1,
        "{:?}",
        sb.state().stats()
    );
    assert_table_equals_sandbox(&db.pool().await, &sb, Entity::INVOICE, full_window()).await;
}

#[tokio::test]
async fn rotated_refresh_tokens_survive_across_runs_started_with_the_same_seed() {
    let sb = sandbox(qbo_sandbox::SandboxConfig {
        rotation: Rotation::EveryRefresh,
        refresh_grace: Duration::ZERO,
        ..small_company()
    })
    .await;
    let db = TestDb::create().await;
    let opts = options(&[Entity::ITEM], full_window());
    for run in 0..3 {
        let report = backfill(&sb, &db, &fast_http(), &opts).await;
        assert!(report.succeeded(), "run {run}: {}", report.table());
    }
    let pool = db.pool().await;
    let (stored, rotations): (String, i32) = sqlx::query_as(
        "SELECT refresh_token, rotations FROM qbo_pipeline.oauth_tokens WHERE realm_id = $1",
    )
    .bind(sb.realm_id())
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_ne!(stored, sb.refresh_token(), "the rotated token was stored");
    assert!(rotations >= 3);
    // The seed itself is dead now (grace 0): only the stored chain works.
    let report = {
        let fresh_db = TestDb::create().await;
        backfill(&sb, &fresh_db, &fast_http(), &opts).await
    };
    assert!(!report.succeeded());
    let error = report.error().unwrap();
    assert!(
        error.contains("invalid_grant") && error.contains("QBO_REFRESH_TOKEN"),
        "{error}"
    );
}

#[tokio::test]
async fn invalid_grant_stops_the_run_with_advice_and_is_recorded() {
    let sb = sandbox(small_company()).await;
    let db = TestDb::create().await;
    sb.state().revoke_refresh_tokens();
    let report = backfill(
        &sb,
        &db,
        &fast_http(),
        &options(&[Entity::CUSTOMER], full_window()),
    )
    .await;
    assert!(!report.succeeded());
    let pool = db.pool().await;
    let (status, error): (String, Option<String>) =
        sqlx::query_as("SELECT status, error FROM qbo_pipeline.runs WHERE run_id = $1")
            .bind(report.run_id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(status, "failed");
    let error = error.unwrap();
    assert!(error.contains("Re-authorise"), "{error}");
    assert!(!error.contains(sb.refresh_token()));
    // The entity failed on its first request, before it was planned: the ledger still has it.
    let entities: Vec<(String, String)> =
        sqlx::query_as("SELECT entity, status FROM qbo_pipeline.run_entities WHERE run_id = $1")
            .bind(report.run_id)
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(entities, [("customers".to_string(), "failed".to_string())]);
}
