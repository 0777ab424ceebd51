//! The query endpoint on generated books.

use std::collections::HashSet;

use qbo_sandbox::clock::pacific_secs;
use reqwest::StatusCode;

use crate::support::{World, answer, is_envelope_time, small};

#[tokio::test]
async fn page_shape_headers_and_key_order() {
    let world = World::start(small()).await;
    let a = world
        .query("SELECT * FROM Customer STARTPOSITION 3 MAXRESULTS 5")
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.headers["content-type"], "application/json;charset=utf-8");
    assert!(a.headers.contains_key("intuit_tid"));
    assert!(
        a.body.starts_with(r#"{"QueryResponse":{"Customer":[{"#),
        "{}",
        &a.body[..80]
    );
    let v = a.json();
    let qr: Vec<&str> = v["QueryResponse"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(qr, ["Customer", "startPosition", "maxResults"]);
    assert_eq!(v["QueryResponse"]["startPosition"], 3);
    assert_eq!(v["QueryResponse"]["maxResults"], 5);
    assert!(
        is_envelope_time(v["time"].as_str().unwrap()),
        "{}",
        v["time"]
    );
    // Past the end: the empty page.
    let a = world
        .query("SELECT * FROM Customer STARTPOSITION 900 MAXRESULTS 5")
        .await;
    let v = a.json();
    assert_eq!(v["QueryResponse"], serde_json::json!({}));
    assert_eq!(v.as_object().unwrap().len(), 2);
}

#[tokio::test]
async fn count_default_100_and_maxresults_limit() {
    let world = World::start(small()).await;
    assert_eq!(world.count("SELECT COUNT(*) FROM Invoice").await, 600);
    assert_eq!(world.count("select count(*) from invoice").await, 600);
    assert_eq!(
        world.ids("SELECT * FROM Invoice", "Invoice").await.len(),
        100
    );
    assert_eq!(
        world
            .ids("SELECT * FROM Invoice MAXRESULTS 1000", "Invoice")
            .await
            .len(),
        600
    );
    let a = world.query("SELECT * FROM Invoice MAXRESULTS 1500").await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.headers["content-type"], "application/json");
    let v = a.json();
    assert_eq!(v["Fault"]["Error"][0]["Message"], "Invalid query");
    assert_eq!(
        v["Fault"]["Error"][0]["Detail"],
        "QueryValidationError: value 1500 is too large. Max allowed value is 1000"
    );
    assert_eq!(v["Fault"]["Error"][0]["code"], "4001");
}

#[tokio::test]
async fn validation_and_parse_errors() {
    let world = World::start(small()).await;
    let v = world.query("SELECT * FROM Custmoer").await.json();
    assert_eq!(
        v["Fault"]["Error"][0]["Detail"],
        "QueryValidationError: invalid context declaration: Custmoer"
    );
    let v = world
        .query("SELECT * FROM Customer WHERE NoSuchField = 'x'")
        .await
        .json();
    assert_eq!(
        v["Fault"]["Error"][0]["Detail"],
        "QueryValidationError: Property NoSuchField not found for Entity Customer"
    );
    let a = world.query("SELECT * FROM Invoice WHERE TxnDate").await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let v = a.json();
    assert_eq!(v["Fault"]["Error"][0]["Message"], "Error parsing query");
    assert_eq!(v["Fault"]["Error"][0]["code"], "4000");
    assert!(
        v["Fault"]["Error"][0]["Detail"]
            .as_str()
            .unwrap()
            .starts_with("QueryParserError: "),
        "{v}"
    );
    assert_eq!(v["Fault"]["type"], "ValidationFault");
    // A known entity with no records is an empty page, not an error.
    let a = world
        .query("SELECT * FROM Vendor WHERE DisplayName = 'No such vendor'")
        .await;
    assert_eq!(a.json()["QueryResponse"], serde_json::json!({}));
}

#[tokio::test]
async fn post_bodies_and_case_insensitive_names() {
    let world = World::start(small()).await;
    for content_type in ["application/text", "text/plain"] {
        let a = answer(
            world
                .http
                .post(world.api("query?minorversion=75&format=json"))
                .bearer_auth(&world.access)
                .header("Content-Type", content_type)
                .body("select * from customer where active = true maxresults 3")
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        let v = a.json();
        assert_eq!(v["QueryResponse"]["Customer"].as_array().unwrap().len(), 3);
    }
    let log = world.state().request_log();
    assert_eq!(
        log.last().unwrap().query.as_deref(),
        Some("select * from customer where active = true maxresults 3")
    );
}

#[tokio::test]
async fn name_lists_hide_inactive_unless_active_is_mentioned() {
    let world = World::start(small()).await;
    let all = world
        .count("SELECT COUNT(*) FROM Customer WHERE Active IN (true, false)")
        .await;
    let active = world.count("SELECT COUNT(*) FROM Customer").await;
    let inactive = world
        .count("SELECT COUNT(*) FROM Customer WHERE Active = false")
        .await;
    assert_eq!(all, 40);
    assert!(
        inactive > 0 && active + inactive == all,
        "{active} {inactive}"
    );
    let rows = world
        .rows("SELECT * FROM Customer MAXRESULTS 1000", "Customer")
        .await;
    assert!(rows.iter().all(|r| r["Active"] == true));
    let items_all = world
        .count("SELECT COUNT(*) FROM Item WHERE Active IN (true,false)")
        .await;
    let items = world.count("SELECT COUNT(*) FROM Item").await;
    assert_eq!(items_all, 20);
    assert!(items < items_all);
    // Default order of customers: FullyQualifiedName, so jobs follow their parents.
    let names: Vec<String> = rows
        .iter()
        .map(|r| r["FullyQualifiedName"].as_str().unwrap().to_owned())
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
}

fn lut(v: &serde_json::Value) -> i64 {
    qbo_query::parse_datetime(v["MetaData"]["LastUpdatedTime"].as_str().unwrap())
        .unwrap()
        .timestamp()
}

fn id(v: &serde_json::Value) -> u64 {
    v["Id"].as_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn keyset_paging_over_a_window_sees_every_invoice_once() {
    let world = World::start(small()).await;
    let state = world.state();
    let from = chrono::DateTime::parse_from_rfc3339("2016-01-01T00:00:00Z").unwrap();
    let to = chrono::DateTime::parse_from_rfc3339("2021-12-31T23:59:59Z").unwrap();
    let expected = state.count("Invoice", Some(from.to_utc()), Some(to.to_utc()));
    assert!(expected > 200);
    let mut seen = HashSet::new();
    let mut cursor = from.timestamp();
    let mut last_key = (i64::MIN, 0u64);
    loop {
        let q = format!(
            "SELECT * FROM Invoice WHERE MetaData.LastUpdatedTime >= '{}' AND MetaData.LastUpdatedTime <= '{}' ORDERBY MetaData.LastUpdatedTime STARTPOSITION 1 MAXRESULTS 50",
            pacific_secs(cursor),
            to.to_rfc3339()
        );
        let rows = world.rows(&q, "Invoice").await;
        let mut fresh = 0;
        for r in &rows {
            let key = (lut(r), id(r));
            assert!(key >= (last_key.0, 0), "order");
            if seen.insert(id(r)) {
                fresh += 1;
                assert!(key > last_key, "ties must come in Id order");
                last_key = key;
            }
        }
        if rows.len() < 50 {
            break;
        }
        // Next window starts at the last second seen (>=, dedupe by Id).
        let next = lut(rows.last().unwrap());
        if next == cursor && fresh == 0 {
            panic!("more than a page of ties at one second");
        }
        cursor = next;
    }
    assert_eq!(seen.len() as u64, expected);
}

#[tokio::test]
async fn offset_paging_and_ties_are_stable() {
    let world = World::start(small()).await;
    let q = "SELECT * FROM Invoice ORDERBY MetaData.LastUpdatedTime";
    let all = world.ids(&format!("{q} MAXRESULTS 1000"), "Invoice").await;
    assert_eq!(all.len(), 600);
    let mut paged: Vec<u64> = Vec::new();
    let mut start = 1;
    loop {
        let page = world
            .ids(
                &format!("{q} STARTPOSITION {start} MAXRESULTS 64"),
                "Invoice",
            )
            .await;
        paged.extend(&page);
        if page.len() < 64 {
            break;
        }
        start += 64;
    }
    assert_eq!(paged, all);
    assert_eq!(
        world.ids(&format!("{q} MAXRESULTS 1000"), "Invoice").await,
        all
    );
    // Same-second groups exist and come out in Id order.
    let rows = world.rows(&format!("{q} MAXRESULTS 1000"), "Invoice").await;
    let keys: Vec<(i64, u64)> = rows.iter().map(|r| (lut(r), id(r))).collect();
    assert!(
        keys.windows(2).any(|w| w[0].0 == w[1].0),
        "no ties generated"
    );
    assert!(keys.windows(2).all(|w| w[0] < w[1]));
    // DESC reverses the whole key.
    let desc = world
        .ids(
            "SELECT * FROM Invoice ORDERBY MetaData.LastUpdatedTime DESC MAXRESULTS 1000",
            "Invoice",
        )
        .await;
    let mut reversed = all.clone();
    reversed.reverse();
    assert_eq!(desc, reversed);
    // STARTPOSITION 0 behaves like 1.
    let zero = world
        .ids(&format!("{q} STARTPOSITION 0 MAXRESULTS 5"), "Invoice")
        .await;
    assert_eq!(zero, all[..5]);
}

#[tokio::test]
async fn conditions_on_payload_fields_and_other_orders() {
    let world = World::start(small()).await;
    let first = world
        .rows("SELECT * FROM Invoice WHERE Id = '42'", "Invoice")
        .await;
    assert_eq!(first.len(), 1);
    let customer = first[0]["CustomerRef"]["value"]
        .as_str()
        .unwrap()
        .to_owned();
    let rows = world
        .rows(
            &format!("SELECT * FROM Invoice WHERE CustomerRef = '{customer}' MAXRESULTS 1000"),
            "Invoice",
        )
        .await;
    assert!(rows.iter().any(|r| id(r) == 42));
    assert!(
        rows.iter()
            .all(|r| r["CustomerRef"]["value"] == customer.as_str())
    );
    let by_doc = world
        .rows(
            "SELECT * FROM Invoice ORDERBY DocNumber DESC MAXRESULTS 3",
            "Invoice",
        )
        .await;
    assert_eq!(by_doc[0]["DocNumber"], "1600");
    let ids = world
        .ids(
            "SELECT * FROM Invoice WHERE Id IN ('3', '1', '2') ORDERBY Id",
            "Invoice",
        )
        .await;
    assert_eq!(ids, [1, 2, 3]);
    let exact = world
        .rows("SELECT * FROM Invoice WHERE Id = '7'", "Invoice")
        .await;
    let t = exact[0]["MetaData"]["LastUpdatedTime"]
        .as_str()
        .unwrap()
        .to_owned();
    let same = world
        .ids(
            &format!(
                "SELECT * FROM Invoice WHERE MetaData.LastUpdatedTime = '{t}' MAXRESULTS 1000"
            ),
            "Invoice",
        )
        .await;
    assert!(same.contains(&7));
}

#[tokio::test]
async fn id_lists_and_half_open_time_windows() {
    let world = World::start(small()).await;
    let q = "SELECT * FROM Invoice WHERE Id IN ('3','5','999')";
    let mut ids = world.ids(q, "Invoice").await;
    ids.sort_unstable();
    assert_eq!(ids, [3, 5]);
    world.state().delete("Invoice", "5").unwrap();
    assert_eq!(world.ids(q, "Invoice").await, [3], "deleted ones are gone");

    // LastUpdatedTime in [lo, hi), by time then Id, bounds taken from records so both edges
    // are hit exactly.
    let mut keys: Vec<(i64, u64)> = world
        .state()
        .all_records("Invoice")
        .iter()
        .map(|r| {
            let lut = r["MetaData"]["LastUpdatedTime"].as_str().unwrap();
            (
                qbo_sandbox::clock::parse_epoch_secs(lut).unwrap(),
                r["Id"].as_str().unwrap().parse().unwrap(),
            )
        })
        .collect();
    keys.sort_unstable();
    let (lo, hi) = (keys[100].0, keys[300].0);
    let expected: Vec<u64> = keys
        .iter()
        .filter(|(t, _)| *t >= lo && *t < hi)
        .map(|(_, id)| *id)
        .collect();
    assert!(expected.len() >= 150);
    let q = format!(
        "SELECT * FROM Invoice WHERE MetaData.LastUpdatedTime >= '{}' AND MetaData.LastUpdatedTime < '{}' ORDER BY MetaData.LastUpdatedTime MAXRESULTS 1000",
        pacific_secs(lo),
        pacific_secs(hi)
    );
    assert_eq!(world.ids(&q, "Invoice").await, expected);
}
