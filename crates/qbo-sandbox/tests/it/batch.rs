//! `POST /v3/company/{realm}/batch`: items answered in request order, each query exactly as
//! `/query` answers it, faults per item inside HTTP 200, the 30-item cap, the batch window,
//! scripted and random faults.

use qbo_sandbox::{Endpoint, FaultAction, Faults, SandboxConfig};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{Answer, World, is_envelope_time, small};

/// `{"BatchItemRequest":[{"bId":id,"Query":q}, ...]}`.
fn queries(items: &[(&str, &str)]) -> String {
    let items: Vec<Value> = items
        .iter()
        .map(|(id, q)| json!({"bId": id, "Query": q}))
        .collect();
    json!({ "BatchItemRequest": items }).to_string()
}

/// `n` items asking `q`, with bIds 1..=n.
fn many(n: usize, q: &str) -> String {
    let ids: Vec<String> = (1..=n).map(|i| i.to_string()).collect();
    let items: Vec<(&str, &str)> = ids.iter().map(|id| (id.as_str(), q)).collect();
    queries(&items)
}

fn keys(v: &Value) -> Vec<&str> {
    v.as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default()
}

fn items(a: &Answer) -> Vec<Value> {
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    a.json()["BatchItemResponse"]
        .as_array()
        .cloned()
        .expect("BatchItemResponse")
}

#[tokio::test]
async fn batch_answers_queries_and_counts_in_request_order() {
    let world = World::start(small()).await;
    let asked = [
        ("b1", "SELECT * FROM Customer MAXRESULTS 2"),
        ("count", "select count(*) from Invoice"),
        (
            "b3",
            "SELECT * FROM Invoice WHERE Id IN ('3', '5') ORDERBY Id",
        ),
        (
            "z",
            "SELECT COUNT(*) FROM Customer WHERE Active IN (true, false)",
        ),
        ("empty", "SELECT * FROM Invoice STARTPOSITION 100000"),
    ];
    world.state().reset_stats();
    let a = world.batch(&queries(&asked)).await;
    assert_eq!(a.headers["content-type"], "application/json;charset=utf-8");
    assert!(a.headers.contains_key("intuit_tid"));
    let v = a.json();
    assert_eq!(keys(&v), ["BatchItemResponse", "time"]);
    assert!(is_envelope_time(v["time"].as_str().unwrap()));
    let answered = items(&a);
    assert_eq!(answered.len(), asked.len());
    let stats = world.state().stats();
    assert_eq!(stats.requests_total, 1, "a batch is one request");
    assert_eq!(stats.requests_by_endpoint["batch"], 1);
    assert_eq!(stats.query_pages, 3);
    assert_eq!(stats.records_served, 4);
    for (item, (id, q)) in answered.iter().zip(asked) {
        assert_eq!(keys(item), ["QueryResponse", "bId"], "{id}");
        assert_eq!(item["bId"], id);
        let alone = world.query(q).await.json();
        assert_eq!(item["QueryResponse"], alone["QueryResponse"], "{id}: {q}");
    }
    assert_eq!(answered[1]["QueryResponse"], json!({"totalCount": 600}));
    let ids: Vec<&str> = answered[2]["QueryResponse"]["Invoice"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["Id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["3", "5"]);
    assert_eq!(answered[4]["QueryResponse"], json!({}));
    // The log keeps the batch's queries, one per line.
    let logged = world.state().request_log();
    let batch = logged
        .iter()
        .find(|e| e.endpoint == Endpoint::Batch)
        .unwrap();
    assert_eq!(batch.query.as_deref().unwrap().lines().count(), 5);
}

#[tokio::test]
async fn a_bad_item_faults_next_to_good_items() {
    let world = World::start(small()).await;
    let asked = [
        ("ok", "SELECT * FROM Item MAXRESULTS 1"),
        ("parse", "SELEC * FROM Customer"),
        ("entity", "select * from Custmoer"),
        ("big", "SELECT * FROM Customer MAXRESULTS 1500"),
        ("count", "SELECT COUNT(*) FROM Item"),
    ];
    let a = world.batch(&queries(&asked)).await;
    assert_eq!(a.status, StatusCode::OK, "per-item faults keep HTTP 200");
    let answered = items(&a);
    assert_eq!(keys(&answered[0]), ["QueryResponse", "bId"]);
    assert_eq!(keys(&answered[4]), ["QueryResponse", "bId"]);
    for (item, (id, q)) in answered.iter().zip(asked).skip(1).take(3) {
        assert_eq!(keys(item), ["Fault", "bId"], "{id}");
        let alone = world.query(q).await;
        assert_eq!(alone.status, StatusCode::BAD_REQUEST, "{q}");
        assert_eq!(
            item["Fault"],
            alone.json()["Fault"],
            "{id}: same fault as /query"
        );
    }
    assert_eq!(answered[1]["Fault"]["Error"][0]["code"], "4000");
    assert_eq!(answered[2]["Fault"]["Error"][0]["code"], "4001");
    assert_eq!(
        answered[3]["Fault"]["Error"][0]["Detail"],
        "QueryValidationError: value 1500 is too large. Max allowed value is 1000"
    );
    assert!(answered[1].get("time").is_none(), "items carry no time");
    // Items the sandbox does not model get an Unsupported Operation fault in place.
    let a = world
        .batch(
            &json!({"BatchItemRequest": [
                {"bId": "1", "operation": "merge", "Customer": {"Id": "1"}},
                {"bId": "2", "CDCQuery": {"entities": "Customer"}},
                {"bId": "3", "Query": 42},
                {"bId": "4", "Query": "SELECT COUNT(*) FROM Customer"},
            ]})
            .to_string(),
        )
        .await;
    let answered = items(&a);
    assert_eq!(answered[0]["Fault"]["Error"][0]["code"], "500");
    assert_eq!(
        answered[0]["Fault"]["Error"][0]["Message"],
        "Unsupported Operation"
    );
    assert_eq!(answered[1]["Fault"]["Error"][0]["code"], "500");
    assert_eq!(answered[2]["Fault"]["Error"][0]["code"], "2010");
    assert!(answered[3]["QueryResponse"]["totalCount"].is_u64());
    let bids: Vec<&str> = answered
        .iter()
        .map(|i| i["bId"].as_str().unwrap())
        .collect();
    assert_eq!(bids, ["1", "2", "3", "4"]);
}

#[tokio::test]
async fn batch_writes_use_the_write_rules() {
    let world = World::start(small()).await;
    let invoice = world.state().record("Invoice", "7").unwrap();
    let sync = invoice["SyncToken"].as_str().unwrap().to_owned();
    let a = world
        .batch(
            &json!({"BatchItemRequest": [
                {"bId": "c", "operation": "create", "Customer": {"DisplayName": "Batch Co"}},
                {"bId": "d", "operation": "delete", "Invoice": {"Id": "7", "SyncToken": sync}},
                {"bId": "s", "operation": "update",
                 "Invoice": {"Id": "8", "SyncToken": "999", "sparse": true, "PrivateNote": "x"}},
                {"bId": "n", "operation": "delete", "Invoice": {"Id": "99999", "SyncToken": "0"}},
                {"bId": "q", "Query": "SELECT * FROM Customer WHERE DisplayName = 'Batch Co'"},
            ]})
            .to_string(),
        )
        .await;
    let answered = items(&a);
    assert_eq!(keys(&answered[0]), ["Customer", "bId"]);
    assert_eq!(answered[0]["Customer"]["DisplayName"], "Batch Co");
    assert_eq!(
        answered[1]["Invoice"],
        json!({"domain": "QBO", "status": "Deleted", "Id": "7"})
    );
    assert_eq!(answered[2]["Fault"]["Error"][0]["code"], "5010");
    assert_eq!(answered[3]["Fault"]["Error"][0]["code"], "610");
    assert_eq!(answered[3]["Fault"]["Error"][0]["element"], "");
    // Items run in order: the query sees the customer created before it.
    assert_eq!(
        answered[4]["QueryResponse"]["Customer"][0]["Id"],
        answered[0]["Customer"]["Id"]
    );
    assert!(world.state().record("Invoice", "7").is_err(), "deleted");
}

#[tokio::test]
async fn malformed_and_oversized_batches_are_refused_whole() {
    let world = World::start(small()).await;
    let q = "SELECT COUNT(*) FROM Item";
    let page = "SELECT * FROM Item MAXRESULTS 1";
    let a = world.batch(&many(30, page)).await;
    assert_eq!(items(&a).len(), 30, "30 items are allowed");
    let before = world.state().stats().query_pages;
    assert_eq!(before, 30);
    let a = world.batch(&many(31, page)).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
    assert_eq!(a.headers["content-type"], "application/json");
    let v = a.json();
    assert_eq!(keys(&v), ["Fault", "time"]);
    assert_eq!(v["Fault"]["type"], "ValidationFault");
    assert_eq!(v["Fault"]["Error"][0]["code"], "2010");
    let detail = v["Fault"]["Error"][0]["Detail"].as_str().unwrap();
    assert!(
        detail.contains("31") && detail.contains("at most 30"),
        "{detail}"
    );
    assert_eq!(
        world.state().stats().query_pages,
        before,
        "nothing evaluated"
    );

    let code = |a: &Answer| {
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
        a.json()["Fault"]["Error"][0]["code"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(code(&world.batch("{not json").await), "2010");
    assert_eq!(code(&world.batch(r#"{"Items":[]}"#).await), "2010");
    assert_eq!(code(&world.batch(r#"[1,2]"#).await), "2010");
    assert_eq!(
        code(
            &world
                .batch(r#"{"BatchItemRequest":[{"Query":"select * from Item"}]}"#)
                .await
        ),
        "2020"
    );
    assert_eq!(
        code(
            &world
                .batch(r#"{"BatchItemRequest":[{"bId":"","Query":"x"}]}"#)
                .await
        ),
        "2020"
    );
    let duplicate = world.batch(&queries(&[("a", q), ("b", q), ("a", q)])).await;
    assert_eq!(code(&duplicate), "2010");
    assert!(duplicate.body.contains("bId a"), "{}", duplicate.body);
    let empty = world.batch(r#"{"BatchItemRequest":[]}"#).await;
    assert_eq!(items(&empty).len(), 0);
    // Hostile bodies: deep nesting, a body over the size limit, bytes that are not UTF-8.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert_eq!(code(&world.batch(&deep).await), "2010");
    let huge = format!(
        r#"{{"BatchItemRequest":[{{"bId":"1","Query":"{}"}}]}}"#,
        "x".repeat(3 * 1024 * 1024)
    );
    let a = world.batch(&huge).await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
    let a = crate::support::answer(
        world
            .http
            .post(world.api("batch"))
            .bearer_auth(&world.access)
            .body(vec![0xff, 0xfe, b'{'])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    // Still serving.
    assert_eq!(items(&world.batch(&queries(&[("1", q)])).await).len(), 1);
}

#[tokio::test]
async fn the_batch_limit_is_per_realm_and_a_batch_counts_once() {
    let world = World::start(SandboxConfig {
        realms: 2,
        ..small()
    })
    .await;
    let other = world.sandbox.realm_ids()[1].to_owned();
    let access2 = world.access_for(&other).await;
    let limit = Faults {
        batch_rpm_limit: Some(2),
        ..Faults::default()
    };
    world.state().set_faults(limit.clone());
    world.sandbox.realm(&other).unwrap().set_faults(limit);
    let body = queries(&[
        ("1", "SELECT COUNT(*) FROM Item"),
        ("2", "SELECT COUNT(*) FROM Customer"),
    ]);
    for _ in 0..2 {
        assert_eq!(world.batch(&body).await.status, StatusCode::OK);
    }
    let throttled = world.batch(&body).await;
    assert_eq!(throttled.status, StatusCode::TOO_MANY_REQUESTS);
    let v = throttled.json();
    assert_eq!(v["Fault"]["Error"][0]["code"], "3001");
    assert_eq!(v["Fault"]["type"], "SERVICE");
    // Ordinary requests are not batch-limited; the other company has its own window.
    assert_eq!(
        world.query("SELECT COUNT(*) FROM Item").await.status,
        StatusCode::OK
    );
    for _ in 0..2 {
        let a = world.batch_in(&other, &access2, &body).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    }
    assert_eq!(world.state().stats().throttled_429, 1);

    // A batch of five queries is one request against rpm_limit.
    world.state().set_faults(Faults {
        rpm_limit: Some(3),
        ..Faults::default()
    });
    assert_eq!(
        items(&world.batch(&many(5, "SELECT COUNT(*) FROM Item")).await).len(),
        5
    );
    assert_eq!(
        world.query("SELECT COUNT(*) FROM Item").await.status,
        StatusCode::OK
    );
    assert_eq!(
        world.query("SELECT COUNT(*) FROM Item").await.status,
        StatusCode::OK
    );
    assert_eq!(
        world.query("SELECT COUNT(*) FROM Item").await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn scripted_and_random_faults_apply_to_batches() {
    let world = World::start(small()).await;
    let body = queries(&[("1", "SELECT COUNT(*) FROM Item")]);
    world
        .state()
        .script_fault(Endpoint::Batch, 1, FaultAction::Status(503));
    assert_eq!(
        world.query("SELECT COUNT(*) FROM Item").await.status,
        StatusCode::OK,
        "queries unaffected"
    );
    let a = world.batch(&body).await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(a.json()["Fault"]["Error"][0]["code"], "10000");
    assert_eq!(world.batch(&body).await.status, StatusCode::OK);
    // `any` covers batches; a dropped batch is a connection error.
    world
        .state()
        .script_fault(Endpoint::Any, 1, FaultAction::Drop);
    let dropped = crate::support::http()
        .post(world.api("batch"))
        .bearer_auth(&world.access)
        .body(body.clone())
        .send()
        .await;
    assert!(dropped.is_err());
    assert_eq!(world.state().stats().dropped, 1);
    world.state().set_faults(Faults {
        error_rate: 1.0,
        ..Faults::default()
    });
    let a = world.batch(&body).await;
    assert!(a.status.is_server_error(), "{}", a.status);
    world.state().set_faults(Faults::default());
    // Without a live token: the 401 form.
    world.state().expire_access_tokens();
    let a = world.batch(&body).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_eq!(a.json()["fault"]["error"][0]["code"], "3200");
}
