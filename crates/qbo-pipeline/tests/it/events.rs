//! The event bus: a run's events, read by a subscriber, add up to what the run reports and
//! what the database holds.

use crate::support::*;
use qbo_pipeline::app;
use qbo_pipeline::entity::Entity;
use qbo_pipeline::events::Event;
use qbo_pipeline::ledger::{EntityStatus, RunStatus};
use qbo_pipeline::shutdown::StopSignal;
use std::collections::HashMap;

fn drain(rx: &mut tokio::sync::broadcast::Receiver<std::sync::Arc<Event>>) -> Vec<Event> {
    let mut out = Vec::new();
    loop {
        match rx.try_recv() {
            Ok(e) => out.push((*e).clone()),
            Err(tokio::sync::broadcast::error::TryRecvError::Empty) => return out,
            Err(e) => panic!("the subscriber lost events: {e:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runs_events_add_up_to_its_report_and_its_rows() {
    let sb = sandbox(small_company()).await;
    let db = TestDb::create().await;
    let pool = app::open_database(&db.settings(), 8).await.unwrap();
    let engine = app::engine(pool.clone(), &qbo_settings(&sb), &fast_http()).unwrap();
    let mut rx = engine.events.subscribe();
    let opts = options(&Entity::ALL, full_window());
    let report = engine
        .backfill(&opts, &StopSignal::default())
        .await
        .unwrap();
    assert!(report.succeeded(), "{}", report.table());
    // The run's own events (requests are the client's, checked in their own test).
    let events: Vec<Event> = drain(&mut rx)
        .into_iter()
        .filter(|e| e.run().is_some())
        .collect();

    // One run: started first, finished last, everything in between belongs to it.
    match (events.first(), events.last()) {
        (Some(Event::RunStarted(s)), Some(Event::RunFinished(f))) => {
            assert_eq!(s.run.run_id, report.run_id);
            assert_eq!(&*s.run.realm, sb.realm_id());
            assert_eq!(s.entities.len(), Entity::ALL.len());
            assert_eq!(f.status, RunStatus::Succeeded);
            assert!(!f.interrupted && f.error.is_none());
        }
        other => panic!("a run starts and finishes: {other:?}"),
    }
    assert!(
        events
            .iter()
            .all(|e| e.run().is_some_and(|r| r.run_id == report.run_id))
    );

    let mut planned = HashMap::new();
    let mut finished = HashMap::new();
    let mut paged: HashMap<Entity, u64> = HashMap::new();
    for e in &events {
        match e {
            Event::EntityPlanned(p) => assert!(planned.insert(p.entity, p.clone()).is_none()),
            Event::EntityFinished(f) => assert!(finished.insert(f.entity, f.clone()).is_none()),
            Event::PageCommitted(p) => {
                assert!(
                    !finished.contains_key(&p.entity),
                    "a page after its entity finished"
                );
                *paged.entry(p.entity).or_default() += p.records;
            }
            _ => {}
        }
    }
    assert_eq!(finished.len(), Entity::ALL.len(), "one finish per entity");
    for r in &report.entities {
        let f = &finished[&r.entity];
        assert_eq!(f.status, r.status, "{}", r.entity);
        assert_eq!(f.records, r.records, "{}", r.entity);
        assert_eq!(f.requests, r.requests, "{}", r.entity);
        assert_eq!(paged.get(&r.entity).copied().unwrap_or(0), r.records);
        if r.status == EntityStatus::Skipped {
            assert!(f.note.is_some(), "{}: a skip says why", r.entity);
            assert!(!planned.contains_key(&r.entity), "{}", r.entity);
        } else {
            assert_eq!(planned[&r.entity].expected, r.expected, "{}", r.entity);
            let rows: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT count(*) FROM {} WHERE realm_id = $1",
                r.entity.table()
            )))
            .bind(sb.realm_id())
            .fetch_one(&pool)
            .await
            .unwrap();
            assert_eq!(paged[&r.entity], rows as u64, "{}", r.entity);
        }
    }
    assert!(
        finished.values().any(|f| f.status == EntityStatus::Skipped),
        "the default company lacks some entities"
    );

    // The same window again: unchanged chunks are proved by count and announced as such.
    let mut rx = engine.events.subscribe();
    let again = engine
        .backfill(&opts, &StopSignal::default())
        .await
        .unwrap();
    assert!(again.succeeded(), "{}", again.table());
    let events = drain(&mut rx);
    let verified = events
        .iter()
        .filter(|e| matches!(e, Event::ChunkVerified(_)))
        .count();
    let reported: usize = again.entities.iter().map(|e| e.chunks_verified).sum();
    assert!(reported > 0, "{}", again.table());
    assert_eq!(verified, reported);
    let written: u64 = events
        .iter()
        .filter_map(|e| match e {
            Event::PageCommitted(p) => Some(p.rows_written),
            _ => None,
        })
        .sum();
    assert_eq!(written, 0, "nothing changed, nothing rewritten");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_the_sandbox_served_is_a_request_event_and_a_429_is_retried() {
    let sb = sandbox(small_company()).await;
    let db = TestDb::create().await;
    let mut faults = sb.state().faults();
    faults.retry_after_secs = Some(0);
    faults.scripted = vec![qbo_sandbox::ScriptedFault {
        endpoint: qbo_sandbox::Endpoint::Query,
        count: 2,
        action: qbo_sandbox::FaultAction::Status(429),
    }];
    sb.state().set_faults(faults);
    let pool = app::open_database(&db.settings(), 8).await.unwrap();
    let engine = app::engine(pool.clone(), &qbo_settings(&sb), &fast_http()).unwrap();
    let mut rx = engine.events.subscribe();
    let report = engine
        .backfill(&options(&GENERATED, full_window()), &StopSignal::default())
        .await
        .unwrap();
    assert!(report.succeeded(), "{}", report.table());
    let requests: Vec<_> = drain(&mut rx)
        .into_iter()
        .filter_map(|e| match e {
            Event::RequestFinished(r) => Some(r),
            _ => None,
        })
        .collect();
    let stats = sb.state().stats();
    assert_eq!(
        requests.len() as u64,
        stats.requests_total,
        "one event per request the sandbox served: {stats:?}"
    );
    let throttled: Vec<_> = requests.iter().filter(|r| r.throttled()).collect();
    assert_eq!(throttled.len() as u64, stats.throttled_429, "{stats:?}");
    assert!(!throttled.is_empty(), "the injected 429s were seen");
    assert!(
        throttled
            .iter()
            .all(|r| r.retried && r.retry_after_ms.is_some())
    );
    assert!(
        requests
            .iter()
            .any(|r| r.endpoint == qbo_client::Endpoint::Token
                && r.outcome == qbo_client::Outcome::Ok),
        "the token refresh is a request too"
    );
}

/// Fails every QBO request from the moment the entity is planned (its count answered).
struct FailPagesAfterPlanning(std::sync::Arc<qbo_sandbox::SandboxState>);

impl qbo_pipeline::events::Sink for FailPagesAfterPlanning {
    fn on(&self, event: &Event) {
        if let Event::EntityPlanned(_) = event {
            let mut faults = self.0.faults();
            faults.error_rate = 1.0;
            self.0.set_faults(faults);
        }
    }
}

/// A page QBO keeps failing fails the entity with a message that names the entity and the
/// page, and the run says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_page_is_reported_with_its_entity_and_page() {
    let sb = sandbox(small_company()).await;
    let db = TestDb::create().await;
    let pool = app::open_database(&db.settings(), 8).await.unwrap();
    let http = qbo_pipeline::config::HttpSettings {
        max_retries: 1,
        ..fast_http()
    };
    let engine = app::engine(pool.clone(), &qbo_settings(&sb), &http).unwrap();
    let _fail = engine
        .events
        .attach(std::sync::Arc::new(FailPagesAfterPlanning(
            sb.state().clone(),
        )));
    let report = engine
        .backfill(
            &options(&[Entity::INVOICE], full_window()),
            &StopSignal::default(),
        )
        .await
        .unwrap();
    assert!(!report.succeeded());
    let entity = &report.entities[0];
    assert_eq!(entity.status, EntityStatus::Failed);
    let error = entity.error.as_deref().unwrap();
    assert!(error.starts_with("Invoice, page 1: "), "{error}");
    assert!(
        report.error().unwrap().contains("Invoice, page 1"),
        "{:?}",
        report.error()
    );
}
