//! The token endpoint and the bearer/realm checks of the API.

use std::time::Duration;

use qbo_sandbox::{Rotation, SandboxConfig};
use reqwest::StatusCode;

use crate::support::{World, answer, http, refresh, refresh_as, small};

const INVALID_GRANT: &str =
    r#"{"error_description":"Incorrect or invalid refresh token","error":"invalid_grant"}"#;

#[tokio::test]
async fn refresh_answers_qbo_token_shape_in_order() {
    let world = World::start(small()).await;
    let sb = &world.sandbox;
    let a = answer(
        world
            .http
            .post(sb.token_url())
            .basic_auth(sb.client_id(), Some(sb.client_secret()))
            .header("x-include-refresh-token-hard-expires-in", "true")
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", sb.refresh_token()),
            ])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.headers.contains_key("intuit_tid"));
    let v = a.json();
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "access_token",
            "refresh_token",
            "token_type",
            "expires_in",
            "x_refresh_token_expires_in",
            "x_refresh_token_hard_expires_in"
        ]
    );
    assert_eq!(v["token_type"], "bearer");
    assert_eq!(v["expires_in"], 3600);
    assert_eq!(v["x_refresh_token_expires_in"], 8_726_400);
    // Without the opt-in header there is no hard expiry.
    let plain = refresh(&world.http, sb, v["refresh_token"].as_str().unwrap()).await;
    assert!(
        plain
            .json()
            .get("x_refresh_token_hard_expires_in")
            .is_none()
    );
}

#[tokio::test]
async fn wrong_client_credentials_are_invalid_client() {
    let world = World::start(small()).await;
    let sb = &world.sandbox;
    let a = refresh_as(&world.http, sb, sb.client_id(), "wrong", sb.refresh_token()).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_eq!(a.body, r#"{"error":"invalid_client"}"#);
    // No credentials at all.
    let a = answer(
        world
            .http
            .post(sb.token_url())
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", sb.refresh_token()),
            ])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    // client_secret_post is accepted too.
    let a = answer(
        world
            .http
            .post(sb.token_url())
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", sb.refresh_token()),
                ("client_id", sb.client_id()),
                ("client_secret", sb.client_secret()),
            ])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
}

#[tokio::test]
async fn unknown_and_revoked_refresh_tokens_are_invalid_grant() {
    let world = World::start(small()).await;
    let sb = &world.sandbox;
    let a = refresh(&world.http, sb, "AB11nope").await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.body, INVALID_GRANT);
    let current = refresh(&world.http, sb, sb.refresh_token()).await.json()["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    world.state().revoke_refresh_tokens();
    let a = refresh(&world.http, sb, &current).await;
    assert_eq!(
        (a.status, a.body.as_str()),
        (StatusCode::BAD_REQUEST, INVALID_GRANT)
    );
    assert!(world.state().stats().token_failures >= 2);
}

#[tokio::test]
async fn rotation_supersedes_tokens_that_then_fail_after_the_grace() {
    // Grace zero: a superseded token fails at once.
    let world = World::start(SandboxConfig {
        refresh_grace: Duration::ZERO,
        ..small()
    })
    .await;
    let sb = &world.sandbox;
    // World::start already rotated the first token away.
    let a = refresh(&world.http, sb, sb.refresh_token()).await;
    assert_eq!(
        (a.status, a.body.as_str()),
        (StatusCode::BAD_REQUEST, INVALID_GRANT)
    );

    // A long grace: the superseded token keeps working and yields the newest token.
    let world = World::start(SandboxConfig {
        refresh_grace: Duration::from_secs(3600),
        ..small()
    })
    .await;
    let sb = &world.sandbox;
    let first = refresh(&world.http, sb, sb.refresh_token()).await;
    assert_eq!(first.status, StatusCode::OK);
    let newest = first.json()["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(newest, sb.refresh_token());
    let next = refresh(&world.http, sb, &newest).await.json()["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(next, newest, "every refresh rotates");
    let old = refresh(&world.http, sb, sb.refresh_token()).await;
    assert_eq!(old.status, StatusCode::OK);
    assert_eq!(old.json()["refresh_token"], next.as_str());
}

#[tokio::test]
async fn never_rotation_keeps_the_refresh_token() {
    let world = World::start(SandboxConfig {
        rotation: Rotation::Never,
        access_token_ttl: Duration::from_secs(120),
        ..small()
    })
    .await;
    let sb = &world.sandbox;
    let a = refresh(&world.http, sb, sb.refresh_token()).await.json();
    assert_eq!(a["refresh_token"], sb.refresh_token());
    assert_eq!(a["expires_in"], 120);
}

#[tokio::test]
async fn expired_missing_and_unknown_access_tokens_get_the_401_form() {
    let world = World::start(small()).await;
    assert_eq!(world.get("customer/1").await.status, StatusCode::OK);
    world.state().expire_access_tokens();
    let a = world.get("customer/1").await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        a.headers["www-authenticate"],
        r#"Bearer realm="Intuit", error="invalid_token""#
    );
    assert_eq!(a.headers["content-type"], "application/json");
    assert!(a.headers.contains_key("intuit_tid"));
    let v = a.json();
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "warnings",
            "intuitObject",
            "fault",
            "report",
            "queryResponse",
            "batchItemResponse",
            "attachableResponse",
            "syncErrorResponse",
            "requestId",
            "time",
            "status",
            "cdcresponse"
        ]
    );
    assert_eq!(v["fault"]["error"][0]["code"], "3200");
    assert_eq!(
        v["fault"]["error"][0]["detail"],
        "Token expired: {redacted}"
    );
    assert!(v["time"].as_u64().unwrap() > 1_600_000_000_000);
    // No token and an unknown token.
    let url = world.api("query?query=select%20*%20from%20Customer");
    let none = answer(world.http.get(&url).send().await.unwrap()).await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    let bogus = answer(
        world
            .http
            .get(&url)
            .bearer_auth("nope")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(bogus.status, StatusCode::UNAUTHORIZED);
    assert_eq!(world.state().stats().unauthorized_401, 3);
}

#[tokio::test]
async fn another_realm_is_forbidden_3100() {
    let world = World::start(small()).await;
    let url = format!(
        "{}/v3/company/123456/query?query=select%20*%20from%20Customer",
        world.sandbox.base_url()
    );
    let a = answer(
        world
            .http
            .get(&url)
            .bearer_auth(&world.access)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    let v = a.json();
    assert_eq!(v["fault"]["error"][0]["code"], "3100");
    assert_eq!(
        v["fault"]["error"][0]["message"],
        "message=ApplicationAuthorizationFailed; errorCode=003100; statusCode=403"
    );
    assert_eq!(v["fault"]["type"], "SERVICE");
}

#[tokio::test]
async fn tokens_and_secret_never_reach_the_log_or_stats() {
    let world = World::start(small()).await;
    world.query("SELECT * FROM Customer MAXRESULTS 5").await;
    let sb = &world.sandbox;
    let newest = refresh(&world.http, sb, sb.refresh_token()).await;
    let newest = newest.json()["refresh_token"].as_str().unwrap().to_owned();
    let dump = format!(
        "{:?} {:?} {:?} {}",
        world.state().request_log(),
        world.state().stats(),
        world.state(),
        http()
            .get(format!("{}/admin/log", sb.base_url()))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    );
    for secret in [
        sb.client_secret(),
        sb.refresh_token(),
        &world.access,
        &newest,
    ] {
        assert!(!dump.contains(secret), "a secret leaked into the log");
    }
    assert!(dump.contains("SELECT * FROM Customer MAXRESULTS 5"));
}
