//! Several companies in one sandbox (`realms`): own books, refresh tokens, token chains,
//! limits, faults, stats and logs; an access token works only on its own company.

use std::time::Duration;

use qbo_sandbox::{Faults, SandboxConfig};
use reqwest::StatusCode;
use serde_json::Value;

use crate::support::{World, answer, refresh};

const INVALID_GRANT: &str =
    r#"{"error_description":"Incorrect or invalid refresh token","error":"invalid_grant"}"#;

fn companies(realms: u32) -> SandboxConfig {
    SandboxConfig {
        customers: 20,
        items: 10,
        invoices: 100,
        realms,
        ..SandboxConfig::default()
    }
}

/// The ids of the world's companies, realm 1 first.
fn ids(world: &World) -> Vec<String> {
    world
        .sandbox
        .realm_ids()
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
}

fn rows(a: &crate::support::Answer, entity: &str) -> Vec<Value> {
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    a.json()["QueryResponse"][entity]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test]
async fn each_realm_has_its_own_books_and_refresh_token() {
    let world = World::start(companies(3)).await;
    let ids = ids(&world);
    assert_eq!(ids.len(), 3);
    assert_eq!(ids[0], world.sandbox.realm_id());
    assert_eq!(ids[0], qbo_sandbox::config::DEFAULT_REALM_ID);
    assert!(
        ids.iter()
            .all(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
    );
    let tokens: Vec<&str> = ids
        .iter()
        .map(|id| world.sandbox.refresh_token_of(id).unwrap())
        .collect();
    assert_eq!(tokens[0], world.sandbox.refresh_token());
    assert!(tokens[0] != tokens[1] && tokens[1] != tokens[2] && tokens[0] != tokens[2]);

    let mut names = Vec::new();
    for id in &ids {
        let access = world.access_for(id).await;
        let customers = rows(
            &world
                .query_in(
                    id,
                    &access,
                    "SELECT * FROM Customer WHERE Id IN ('1', '2') AND Active IN (true, false)",
                )
                .await,
            "Customer",
        );
        assert_eq!(customers.len(), 2, "{id}");
        names.push(customers[0]["DisplayName"].clone());
        let count = world
            .query_in(id, &access, "SELECT COUNT(*) FROM Invoice")
            .await;
        assert_eq!(count.json()["QueryResponse"]["totalCount"], 100, "{id}");
    }
    assert!(
        names[0] != names[1] && names[1] != names[2],
        "own data: {names:?}"
    );
    // Realm 1 holds exactly the books of a one-company sandbox.
    let single = World::start(companies(1)).await;
    assert_eq!(
        single.state().record("Customer", "1").unwrap(),
        world.state().record("Customer", "1").unwrap()
    );

    // An edit in realm 2 stays in realm 2, for queries, reads and CDC: deactivate a customer
    // active in both.
    let two = world.sandbox.realm(&ids[1]).unwrap();
    let id = (1..=20)
        .map(|n| n.to_string())
        .find(|n| {
            world.state().record("Customer", n).unwrap()["Active"] == true
                && two.record("Customer", n).unwrap()["Active"] == true
        })
        .expect("a customer active in both companies");
    two.deactivate("Customer", &id).unwrap();
    let access2 = world.access_for(&ids[1]).await;
    let by_id = format!("SELECT COUNT(*) FROM Customer WHERE Id = '{id}'");
    let active = world.query_in(&ids[1], &access2, &by_id).await;
    assert_eq!(active.json()["QueryResponse"]["totalCount"], 0);
    let active = world.query_in(&ids[0], &world.access, &by_id).await;
    assert_eq!(active.json()["QueryResponse"]["totalCount"], 1);
    let read = answer(
        world
            .http
            .get(world.api_in(&ids[1], &format!("customer/{id}")))
            .bearer_auth(&access2)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(read.json()["Customer"]["Active"], false);
    let read = world.get(&format!("customer/{id}")).await;
    assert_eq!(read.json()["Customer"]["Active"], true);
    let since = (two.now() - chrono::Duration::minutes(5))
        .format("%Y-%m-%dT%H:%M:%S+00:00")
        .to_string();
    let cdc = |realm: &str, token: &str| {
        world
            .http
            .get(world.api_in(realm, "cdc"))
            .query(&[("entities", "Customer"), ("changedSince", since.as_str())])
            .bearer_auth(token.to_owned())
            .send()
    };
    let changed = answer(cdc(&ids[1], &access2).await.unwrap()).await.json();
    assert_eq!(
        changed["CDCResponse"][0]["QueryResponse"][0]["Customer"][0]["Id"],
        id.as_str()
    );
    let unchanged = answer(cdc(&ids[0], &world.access).await.unwrap())
        .await
        .json();
    assert_eq!(
        unchanged["CDCResponse"][0]["QueryResponse"][0],
        serde_json::json!({})
    );

    // The printed lines name every company and its first refresh token.
    let lines = world.sandbox.env_lines();
    assert!(lines.starts_with(&format!("QBO_API_BASE_URL={}\n", world.sandbox.base_url())));
    assert!(lines.contains(&format!("\nQBO_REALM_ID={}\n", ids[0])));
    assert!(lines.contains(&format!("\nQBO_SANDBOX_REALMS={}\n", ids.join(","))));
    for (id, token) in ids.iter().zip(&tokens) {
        assert!(
            lines.contains(&format!("\nQBO_SANDBOX_REFRESH_TOKEN_{id}={token}\n")),
            "{lines}"
        );
    }
    assert_eq!(lines.lines().count(), 6 + 1 + 3);
    assert_eq!(single.sandbox.env_lines().lines().count(), 6);
}

#[tokio::test]
async fn a_token_is_refused_on_another_realm() {
    let world = World::start(companies(2)).await;
    let ids = ids(&world);
    let access2 = world.access_for(&ids[1]).await;
    // Realm 2's token on realm 1's path, and realm 1's on realm 2's: 403 / 3100.
    for (realm, token) in [(&ids[0], &access2), (&ids[1], &world.access)] {
        let a = world
            .query_in(realm, token, "SELECT * FROM Customer MAXRESULTS 1")
            .await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{realm}: {}", a.body);
        assert_eq!(a.headers["content-type"], "application/json");
        let v = a.json();
        assert_eq!(
            v["fault"]["error"][0]["message"],
            "message=ApplicationAuthorizationFailed; errorCode=003100; statusCode=403"
        );
        assert_eq!(v["fault"]["error"][0]["code"], "3100");
        assert_eq!(v["fault"]["error"][0]["detail"], Value::Null);
        assert_eq!(v["fault"]["type"], "SERVICE");
        assert!(v["time"].is_u64());
    }
    // Each on its own path: 200.
    for (realm, token) in [(&ids[0], &world.access), (&ids[1], &access2)] {
        let a = world
            .query_in(realm, token, "SELECT * FROM Customer MAXRESULTS 1")
            .await;
        assert_eq!(a.status, StatusCode::OK, "{realm}");
    }
    // Reads, writes and batches are refused the same way, and the write changes nothing.
    let read = answer(
        world
            .http
            .get(world.api_in(&ids[0], "customer/1"))
            .bearer_auth(&access2)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(read.status, StatusCode::FORBIDDEN);
    let before = world.state().all_records("Customer").len();
    let write = answer(
        world
            .http
            .post(world.api_in(&ids[0], "customer"))
            .bearer_auth(&access2)
            .header("Content-Type", "application/json")
            .body(r#"{"DisplayName":"Intruder"}"#)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(write.status, StatusCode::FORBIDDEN, "{}", write.body);
    assert_eq!(world.state().all_records("Customer").len(), before);
    let batch = world
        .batch_in(
            &ids[0],
            &access2,
            r#"{"BatchItemRequest":[{"bId":"1","Query":"select * from Customer"}]}"#,
        )
        .await;
    assert_eq!(batch.status, StatusCode::FORBIDDEN);
    // A realm no company has: 403 as before; an unknown token: 401.
    let a = world
        .query_in("123456", &access2, "SELECT * FROM Customer")
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    let a = world
        .query_in(&ids[0], "nope", "SELECT * FROM Customer")
        .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    // An expired token of realm 2 is a 401 anywhere (authentication comes first).
    world.sandbox.realm(&ids[1]).unwrap().expire_access_tokens();
    for realm in &ids {
        let a = world
            .query_in(realm, &access2, "SELECT * FROM Customer")
            .await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{realm}");
    }
    let a = world
        .query_in(
            &ids[0],
            &world.access,
            "SELECT * FROM Customer MAXRESULTS 1",
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "realm 1's token is still live");
    // Refusals are counted in the company the path names.
    let one = world.state().stats();
    assert!(one.unauthorized_401 >= 2, "{one:?}");
}

#[tokio::test]
async fn rotation_and_revocation_in_one_realm_leave_the_others_intact() {
    let world = World::start(SandboxConfig {
        refresh_grace: Duration::ZERO,
        ..companies(3)
    })
    .await;
    let ids = ids(&world);
    let sb = &world.sandbox;
    // Realm 2 rotates twice; its superseded tokens fail at once (grace zero).
    let first2 = sb.refresh_token_of(&ids[1]).unwrap().to_owned();
    let rotated = refresh(&world.http, sb, &first2).await;
    assert_eq!(rotated.status, StatusCode::OK);
    let newer = rotated.json()["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(newer, first2);
    let again = refresh(&world.http, sb, &newer).await;
    let newest = again.json()["refresh_token"].as_str().unwrap().to_owned();
    for stale in [&first2, &newer] {
        let a = refresh(&world.http, sb, stale).await;
        assert_eq!(
            (a.status, a.body.as_str()),
            (StatusCode::BAD_REQUEST, INVALID_GRANT)
        );
    }
    // The newest realm-2 token refreshes (and rotates again): its access token works.
    let a = refresh(&world.http, sb, &newest).await;
    let access2 = a.json()["access_token"].as_str().unwrap().to_owned();
    let current2 = a.json()["refresh_token"].as_str().unwrap().to_owned();
    let ok = world
        .query_in(&ids[1], &access2, "SELECT COUNT(*) FROM Item")
        .await;
    assert_eq!(ok.status, StatusCode::OK);
    // Realm 3's first token was never touched and still works.
    let three = refresh(&world.http, sb, sb.refresh_token_of(&ids[2]).unwrap()).await;
    assert_eq!(three.status, StatusCode::OK, "{}", three.body);
    let current3 = three.json()["refresh_token"].as_str().unwrap().to_owned();
    // Revoking realm 2 (admin API, ?realm=) kills its current token, not realm 3's.
    let r = world
        .http
        .post(world.admin(&format!("tokens/revoke?realm={}", ids[1])))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let revoked = refresh(&world.http, sb, &current2).await;
    assert_eq!(
        (revoked.status, revoked.body.as_str()),
        (StatusCode::BAD_REQUEST, INVALID_GRANT)
    );
    let still = refresh(&world.http, sb, &current3).await;
    assert_eq!(still.status, StatusCode::OK);
    // World::start rotated realm 1's first token; its access token still works.
    let one = world
        .query_in(&ids[0], &world.access, "SELECT COUNT(*) FROM Item")
        .await;
    assert_eq!(one.status, StatusCode::OK);
    // Token counters are per company.
    let stats2 = world.state().stats_of(&ids[1]).unwrap();
    assert_eq!(stats2.token_refreshes, 3, "{stats2:?}");
    assert_eq!(stats2.token_failures, 3, "{stats2:?}");
    let stats3 = world.state().stats_of(&ids[2]).unwrap();
    assert_eq!((stats3.token_refreshes, stats3.token_failures), (2, 0));
    assert_eq!(world.state().stats().token_failures, 0);
}

#[tokio::test]
async fn limits_are_per_realm() {
    let world = World::start(companies(2)).await;
    let ids = ids(&world);
    let access2 = world.access_for(&ids[1]).await;
    let two = world.sandbox.realm(&ids[1]).unwrap();
    let limited = Faults {
        rpm_limit: Some(3),
        ..Faults::default()
    };
    world.state().set_faults(limited.clone());
    two.set_faults(limited);
    const Q: &str = "SELECT * FROM Customer MAXRESULTS 1";
    for _ in 0..3 {
        assert_eq!(world.query(Q).await.status, StatusCode::OK);
    }
    let throttled = world.query(Q).await;
    assert_eq!(throttled.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(throttled.json()["Fault"]["Error"][0]["code"], "3001");
    // Realm 1 at its limit does not throttle realm 2.
    for _ in 0..3 {
        let a = world.query_in(&ids[1], &access2, Q).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    }
    assert_eq!(
        world.query_in(&ids[1], &access2, Q).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(world.state().stats().throttled_429, 1);
    assert_eq!(two.stats().throttled_429, 1);
    assert_eq!(two.stats().requests_by_endpoint["query"], 4);

    // In flight: one slot per company.
    let one_slot = Faults {
        max_in_flight: Some(1),
        latency: Duration::from_millis(800),
        ..Faults::default()
    };
    world.state().set_faults(one_slot.clone());
    two.set_faults(one_slot);
    let (a, b, c) = tokio::join!(
        world.query(Q),
        world.query(Q),
        world.query_in(&ids[1], &access2, Q)
    );
    let mut first_two = [a.status, b.status];
    first_two.sort();
    assert_eq!(
        first_two,
        [StatusCode::OK, StatusCode::TOO_MANY_REQUESTS],
        "two in realm 1: one waits its turn"
    );
    assert_eq!(c.status, StatusCode::OK, "realm 2 has its own slot");
    assert_eq!(world.state().stats().in_flight_max, 1);
    assert_eq!(two.stats().in_flight_max, 1);
}

#[tokio::test]
async fn admin_api_takes_a_realm() {
    let world = World::start(companies(3)).await;
    let ids = ids(&world);
    let http = &world.http;
    let get = |path: String| async move {
        let r = http.get(path).send().await.unwrap();
        (r.status(), r.json::<Value>().await.unwrap())
    };
    let (status, listed) = get(world.admin("realms")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed["realms"], serde_json::json!(ids));
    // Records per realm.
    let (_, one) = get(world.admin("records/Customer/1")).await;
    let (_, also_one) = get(world.admin(&format!("records/Customer/1?realm={}", ids[0]))).await;
    let (_, three) = get(world.admin(&format!("records/Customer/1?realm={}", ids[2]))).await;
    assert_eq!(one, also_one);
    assert_ne!(one["DisplayName"], three["DisplayName"]);
    assert_eq!(
        three,
        world
            .sandbox
            .realm(&ids[2])
            .unwrap()
            .record("Customer", "1")
            .unwrap()
    );
    // An edit over the admin API in realm 3 only.
    let patched = http
        .patch(world.admin(&format!("records/Customer/1?realm={}", ids[2])))
        .body(r#"{"Notes":"realm three"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), StatusCode::OK);
    assert_eq!(
        world
            .sandbox
            .realm(&ids[2])
            .unwrap()
            .record("Customer", "1")
            .unwrap()["Notes"],
        "realm three"
    );
    assert_ne!(
        world.state().record("Customer", "1").unwrap()["Notes"],
        "realm three"
    );
    let (_, counted) = get(world.admin(&format!("count/Invoice?realm={}", ids[1]))).await;
    assert_eq!(counted["count"], 100);
    // Faults per realm: a scripted 503 for realm 2's queries only.
    let r = http
        .post(world.admin(&format!("faults/script?realm={}", ids[1])))
        .body(r#"{"endpoint":"query","count":1,"action":{"status":503}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let (_, faults2) = get(world.admin(&format!("faults?realm={}", ids[1]))).await;
    assert_eq!(faults2["scripted"][0]["count"], 1);
    let (_, faults1) = get(world.admin("faults")).await;
    assert_eq!(faults1["scripted"], serde_json::json!([]));
    const Q: &str = "SELECT COUNT(*) FROM Item";
    assert_eq!(world.query(Q).await.status, StatusCode::OK);
    let access2 = world.access_for(&ids[1]).await;
    assert_eq!(
        world.query_in(&ids[1], &access2, Q).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        world.query_in(&ids[1], &access2, Q).await.status,
        StatusCode::OK
    );
    // A scripted token fault for realm 3 hits realm 3's refresh only.
    http.post(world.admin(&format!("faults/script?realm={}", ids[2])))
        .body(r#"{"endpoint":"token","count":1,"action":{"status":500}}"#)
        .send()
        .await
        .unwrap();
    let sb = &world.sandbox;
    let token1 = refresh(&world.http, sb, sb.refresh_token()).await;
    assert_eq!(token1.status, StatusCode::OK, "realm 1 unaffected");
    let token3 = refresh(&world.http, sb, sb.refresh_token_of(&ids[2]).unwrap()).await;
    assert_eq!(token3.status, StatusCode::INTERNAL_SERVER_ERROR);
    // Stats and logs per realm.
    let (_, stats2) = get(world.admin(&format!("stats?realm={}", ids[1]))).await;
    assert_eq!(stats2["requests_by_endpoint"]["query"], 2);
    assert_eq!(stats2["server_errors_5xx"], 1);
    let (_, log2) = get(world.admin(&format!("log?realm={}", ids[1]))).await;
    let paths: Vec<&str> = log2
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["path"].as_str())
        .filter(|p| p.starts_with("/v3/"))
        .collect();
    assert_eq!(paths.len(), 2);
    assert!(paths.iter().all(|p| p.contains(&ids[1])), "{paths:?}");
    assert!(
        world
            .state()
            .request_log()
            .iter()
            .all(|e| !e.path.contains(&ids[1])),
        "realm 2's requests are not in realm 1's log"
    );
    // Clocks per realm.
    let r = http
        .put(world.admin(&format!("clock?realm={}", ids[1])))
        .body(r#"{"now":"2026-01-01T00:00:00Z"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        world.sandbox.realm(&ids[1]).unwrap().now().to_rfc3339(),
        "2026-01-01T00:00:00+00:00"
    );
    assert_ne!(
        world.state().now().to_rfc3339(),
        "2026-01-01T00:00:00+00:00"
    );
    // Unknown realms: 404 with a JSON error, on every route shape.
    for (method, path) in [
        ("GET", "stats?realm=42"),
        ("POST", "stats/reset?realm=42"),
        ("GET", "log?realm=42"),
        ("PUT", "faults?realm=42"),
        ("POST", "tokens/revoke?realm=42"),
        ("PUT", "clock?realm=42"),
        ("GET", "records/Customer/1?realm=42"),
        ("GET", "count/Invoice?realm=42"),
        ("GET", "realms?realm=42"),
    ] {
        let r = http
            .request(method.parse().unwrap(), world.admin(path))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{method} {path}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"], "unknown realm 42", "{method} {path}");
    }
    // The refused requests changed nothing in realm 1.
    assert_eq!(world.state().faults(), Faults::default());
}
