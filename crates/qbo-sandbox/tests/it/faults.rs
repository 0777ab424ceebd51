//! Limits and injected failures.

use std::time::{Duration, Instant};

use qbo_sandbox::{Endpoint, FaultAction, Faults};
use reqwest::StatusCode;

use crate::support::{World, small};

const Q: &str = "SELECT * FROM Customer MAXRESULTS 1";

#[tokio::test]
async fn rpm_limit_answers_429_throttle_fault() {
    let world = World::start(small()).await;
    world.state().set_faults(Faults {
        rpm_limit: Some(3),
        ..Faults::default()
    });
    for _ in 0..3 {
        assert_eq!(world.query(Q).await.status, StatusCode::OK);
    }
    let a = world.query(Q).await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(a.headers.get("retry-after").is_none());
    let v = a.json();
    assert_eq!(
        v["Fault"]["Error"][0]["Message"],
        "message=ThrottleExceeded; errorCode=003001; statusCode=429"
    );
    assert_eq!(
        v["Fault"]["Error"][0]["Detail"],
        "The request limit was reached.  Try again later"
    );
    assert_eq!(v["Fault"]["Error"][0]["code"], "3001");
    assert_eq!(v["Fault"]["type"], "SERVICE");
    // With Retry-After configured.
    let mut faults = world.state().faults();
    faults.retry_after_secs = Some(60);
    world.state().set_faults(faults);
    let a = world.query(Q).await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(a.headers["retry-after"], "60");
    // The token endpoint is not throttled.
    let token =
        crate::support::refresh(&world.http, &world.sandbox, world.sandbox.refresh_token()).await;
    assert_ne!(token.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(world.state().stats().throttled_429, 2);
}

#[tokio::test]
async fn in_flight_limit_answers_429_to_concurrent_requests() {
    let world = World::start(small()).await;
    world.state().set_faults(Faults {
        max_in_flight: Some(2),
        latency: Duration::from_millis(1500),
        ..Faults::default()
    });
    let answers = futures::future::join_all((0..5).map(|_| world.query(Q))).await;
    let ok = answers
        .iter()
        .filter(|a| a.status == StatusCode::OK)
        .count();
    let throttled = answers
        .iter()
        .filter(|a| a.status == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!((ok, throttled), (2, 3));
    let stats = world.state().stats();
    assert_eq!(stats.in_flight_max, 2);
    assert_eq!(stats.in_flight_now, 0);
}

#[tokio::test]
async fn error_rate_one_gives_system_faults() {
    let world = World::start(small()).await;
    world.state().set_faults(Faults {
        error_rate: 1.0,
        ..Faults::default()
    });
    let mut statuses = std::collections::HashSet::new();
    for _ in 0..20 {
        let a = world.query(Q).await;
        statuses.insert(a.status);
        let v = a.json();
        assert_eq!(v["Fault"]["type"], "SystemFault");
        assert_eq!(v["Fault"]["Error"][0]["code"], "10000");
    }
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::INTERNAL_SERVER_ERROR
                || *s == StatusCode::SERVICE_UNAVAILABLE)
    );
    assert_eq!(statuses.len(), 2, "both 500 and 503 appear (p = 1 - 2^-19)");
    assert_eq!(world.state().stats().server_errors_5xx, 20);
}

#[tokio::test]
async fn dropped_connections_are_connection_errors() {
    let world = World::start(small()).await;
    world.state().set_faults(Faults {
        drop_rate: 1.0,
        ..Faults::default()
    });
    let err = world
        .http
        .get(world.api("query"))
        .query(&[("query", Q)])
        .bearer_auth(&world.access)
        .send()
        .await
        .expect_err("the connection must be dropped");
    assert!(err.status().is_none());
    assert!(err.is_request() || err.is_connect(), "{err:?}");
    assert_eq!(world.state().stats().dropped, 1);
    // Scripted: exactly the next read is dropped, then service resumes.
    world.state().set_faults(Faults::default());
    world
        .state()
        .script_fault(Endpoint::Read, 1, FaultAction::Drop);
    let fresh = crate::support::http();
    let dropped = fresh
        .get(world.api("customer/1"))
        .bearer_auth(&world.access)
        .send()
        .await;
    assert!(dropped.is_err());
    assert_eq!(world.get("customer/1").await.status, StatusCode::OK);
}

#[tokio::test]
async fn latency_delays_answers() {
    let world = World::start(small()).await;
    world.state().set_faults(Faults {
        latency: Duration::from_millis(250),
        ..Faults::default()
    });
    let started = Instant::now();
    assert_eq!(world.query(Q).await.status, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(250));
}

#[tokio::test]
async fn scripted_status_faults_hit_exactly_the_next_n_requests() {
    let world = World::start(small()).await;
    world
        .state()
        .script_fault(Endpoint::Query, 2, FaultAction::Status(503));
    world
        .state()
        .script_fault(Endpoint::Query, 1, FaultAction::Status(429));
    assert_eq!(
        world.get("customer/1").await.status,
        StatusCode::OK,
        "reads unaffected"
    );
    assert_eq!(world.query(Q).await.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(world.query(Q).await.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(world.query(Q).await.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(world.query(Q).await.status, StatusCode::OK);
    // Token endpoint faults, set over the admin API.
    let admin = format!("{}/admin/faults/script", world.sandbox.base_url());
    let r = world
        .http
        .post(admin)
        .body(r#"{"endpoint":"token","count":1,"action":{"status":500}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let token =
        crate::support::refresh(&world.http, &world.sandbox, world.sandbox.refresh_token()).await;
    assert_eq!(token.status, StatusCode::INTERNAL_SERVER_ERROR);
}

#[tokio::test]
async fn stats_count_requests_pages_and_records() {
    let world = World::start(small()).await;
    world.state().reset_stats();
    world.query("SELECT * FROM Invoice MAXRESULTS 7").await;
    world
        .query("SELECT * FROM Invoice STARTPOSITION 8 MAXRESULTS 7")
        .await;
    world.query("SELECT COUNT(*) FROM Invoice").await;
    world.get("invoice/3").await;
    let stats = world.state().stats();
    assert_eq!(stats.requests_total, 4);
    assert_eq!(stats.requests_by_endpoint["query"], 3);
    assert_eq!(stats.requests_by_endpoint["read"], 1);
    assert_eq!(stats.query_pages, 2);
    assert_eq!(stats.records_served, 15);
    let over_http: qbo_sandbox::Stats = world
        .http
        .get(format!("{}/admin/stats", world.sandbox.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(over_http.records_served, 15);
    let log = world.state().request_log();
    assert_eq!(log.len(), 5);
    assert!(log.iter().all(|e| e.intuit_tid.starts_with("1-")));
    assert_eq!(
        log[0].query.as_deref(),
        Some("SELECT * FROM Invoice MAXRESULTS 7")
    );
}
