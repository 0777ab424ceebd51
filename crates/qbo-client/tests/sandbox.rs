//! The client over real HTTP against the sandbox (`127.0.0.1:0`), with the in-memory token
//! store: queries, token rotation kept in the store, the previous token tried on
//! `invalid_grant`, a 429 retried, and a stop request ending a throttle wait. (Counts are of
//! invoices: a name list's `COUNT(*)` leaves its inactive records out, as QBO's does.)

use qbo_client::auth::MemoryChain;
use qbo_client::auth::PREVIOUS_TOKEN_GRACE;
use qbo_client::{
    AuthSettings, Authorizer, HttpSettings, MemoryTokenStore, QboClient, QboError, RequestStats,
    StopSignal, http_client, token_http_client,
};
use qbo_sandbox::{FaultAction, RunningSandbox, SandboxConfig, ScriptedFault};
use secrecy::SecretString;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

fn fast() -> HttpSettings {
    HttpSettings {
        requests_per_minute: 10_000,
        throttle_wait: Duration::from_millis(20),
        min_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(50),
        max_retries: 10,
        request_timeout: Duration::from_secs(10),
        ..HttpSettings::default()
    }
}

async fn sandbox() -> RunningSandbox {
    let config = SandboxConfig {
        seed: 3,
        customers: 25,
        invoices: 40,
        items: 10,
        ..SandboxConfig::default()
    };
    qbo_sandbox::spawn(config, ([127, 0, 0, 1], 0).into())
        .await
        .expect("sandbox starts")
}

fn client(sb: &RunningSandbox, store: &MemoryTokenStore, http: HttpSettings) -> QboClient {
    client_seeded(sb, store, http, sb.refresh_token())
}

/// A client whose seed refresh token is `seed`.
fn client_seeded(
    sb: &RunningSandbox,
    store: &MemoryTokenStore,
    http: HttpSettings,
    seed: &str,
) -> QboClient {
    let auth = Authorizer::new(
        token_http_client(&http).unwrap(),
        AuthSettings {
            client_id: sb.client_id().to_string(),
            client_secret: SecretString::from(sb.client_secret().to_string()),
            realm_id: sb.realm_id().to_string(),
            seed: Some(SecretString::from(seed.to_string())),
            token_url: sb.token_url().parse().unwrap(),
        },
        Arc::new(store.clone()),
    );
    QboClient::new(
        http_client(&http).unwrap(),
        &sb.base_url().parse().unwrap(),
        sb.realm_id(),
        Arc::new(auth),
        http,
    )
    .unwrap()
}

fn count_of(body: &[u8]) -> u64 {
    let v: serde_json::Value = serde_json::from_slice(body).expect("json");
    v["QueryResponse"]["totalCount"].as_u64().expect("a count")
}

#[tokio::test]
async fn a_query_is_answered_and_the_rotated_token_is_kept_in_the_store() {
    let sb = sandbox().await;
    let store = MemoryTokenStore::new();
    let c = client(&sb, &store, fast());
    let stats = RequestStats::default();
    let body = c
        .query(
            "SELECT COUNT(*) FROM Invoice",
            &stats,
            &StopSignal::default(),
        )
        .await
        .expect("query");
    assert_eq!(count_of(&body), 40);
    assert_eq!(stats.requests.load(Ordering::Relaxed), 1);
    // The sandbox rotates the refresh token on every refresh: the store holds the new one,
    // and the seed it replaced as the previous token.
    let chain = store.chain(sb.realm_id()).expect("a chain was stored");
    assert_eq!(chain.rotations, 1);
    assert_ne!(
        store.refresh_token(sb.realm_id()).unwrap(),
        sb.refresh_token(),
        "rotated"
    );
    assert!(chain.previous.is_some(), "the replaced token is kept");
    assert_accepted(&sb, &store.refresh_token(sb.realm_id()).unwrap()).await;
}

/// A client seeded with `token` alone (a fresh store) can refresh it and query.
async fn assert_accepted(sb: &RunningSandbox, token: &str) {
    let c = client_seeded(sb, &MemoryTokenStore::new(), fast(), token);
    c.query(
        "SELECT COUNT(*) FROM Invoice",
        &RequestStats::default(),
        &StopSignal::default(),
    )
    .await
    .expect("the sandbox accepts the stored token");
}

#[tokio::test]
async fn a_refused_newest_token_falls_back_to_the_previous_one() {
    let sb = sandbox().await;
    let store = MemoryTokenStore::new();
    // The newest stored token is one the sandbox never issued (as if Intuit had lost it);
    // the token it replaced, within Intuit's grace, is still good.
    store.put(
        sb.realm_id(),
        MemoryChain {
            refresh_token: SecretString::from("never-issued-token".to_string()),
            seed: qbo_client::auth::seed_digest(sb.refresh_token()),
            rotations: 1,
            previous: Some(SecretString::from(sb.refresh_token().to_string())),
            rotated_at: Some(Instant::now()),
            refresh_expires_in: None,
            writes: 1,
        },
    );
    assert!(PREVIOUS_TOKEN_GRACE > Duration::from_secs(60));
    let c = client(&sb, &store, fast());
    let body = c
        .query(
            "SELECT COUNT(*) FROM Invoice",
            &RequestStats::default(),
            &StopSignal::default(),
        )
        .await
        .expect("the previous token is used");
    assert_eq!(count_of(&body), 40);
    let newest = store.refresh_token(sb.realm_id()).unwrap();
    assert_ne!(newest, "never-issued-token", "the chain moved on");
    assert_ne!(
        newest,
        sb.refresh_token(),
        "from the previous token, rotated"
    );
    assert_accepted(&sb, &newest).await;
}

#[tokio::test]
async fn a_429_is_waited_out_and_retried() {
    let sb = sandbox().await;
    let mut faults = sb.state().faults();
    faults.retry_after_secs = Some(0);
    faults.scripted = vec![ScriptedFault {
        endpoint: qbo_sandbox::Endpoint::Query,
        count: 2,
        action: FaultAction::Status(429),
    }];
    sb.state().set_faults(faults);
    let store = MemoryTokenStore::new();
    let c = client(&sb, &store, fast());
    let stats = RequestStats::default();
    let body = c
        .query(
            "SELECT COUNT(*) FROM Invoice",
            &stats,
            &StopSignal::default(),
        )
        .await
        .expect("answered after the 429s");
    assert_eq!(count_of(&body), 40);
    assert_eq!(stats.throttled.load(Ordering::Relaxed), 2);
    assert_eq!(stats.requests.load(Ordering::Relaxed), 3);
    assert_eq!(sb.state().stats().throttled_429, 2);
}

#[tokio::test]
async fn a_stop_request_ends_a_throttle_wait_at_once() {
    let sb = sandbox().await;
    let mut faults = sb.state().faults();
    // QBO asks for a minute; the stop comes after a fraction of a second.
    faults.retry_after_secs = Some(60);
    faults.scripted = vec![ScriptedFault {
        endpoint: qbo_sandbox::Endpoint::Query,
        count: 1,
        action: FaultAction::Status(429),
    }];
    sb.state().set_faults(faults);
    let store = MemoryTokenStore::new();
    let c = client(&sb, &store, fast());
    let stop = StopSignal::default();
    let stopper = {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            stop.stop();
        })
    };
    let started = Instant::now();
    let result = c
        .query(
            "SELECT COUNT(*) FROM Invoice",
            &RequestStats::default(),
            &stop,
        )
        .await;
    stopper.await.unwrap();
    assert!(matches!(result, Err(QboError::Stopped)), "{result:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "ended by the stop, not by the 60 s wait: {:?}",
        started.elapsed()
    );
}
