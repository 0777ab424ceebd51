//! Read-one-entity and change data capture on generated books.

use chrono::{Duration, TimeZone, Utc};
use qbo_sandbox::SandboxConfig;
use reqwest::StatusCode;

use crate::support::{World, is_envelope_time, small};

#[tokio::test]
async fn read_by_id_and_its_errors() {
    let world = World::start(small()).await;
    let a = world.get("invoice/12?minorversion=75").await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.body.starts_with(r#"{"Invoice":{"AllowIPNPayment":false"#));
    let v = a.json();
    assert_eq!(v["Invoice"]["Id"], "12");
    assert!(is_envelope_time(v["time"].as_str().unwrap()));
    // Case-insensitive entity in the path.
    assert_eq!(world.get("Customer/2").await.json()["Customer"]["Id"], "2");
    let a = world.get("customer/1.5").await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        a.body,
        r#"{"Fault":{"Error":[{"Message":"Invalid ID","Detail":"Id should be a valid number. Supplied value:1.5","code":"2030","element":"Id"}],"type":"ValidationFault"}}"#
    );
    let a = world.get("customer/1/5").await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.json()["Fault"]["Error"][0]["code"], "500");
    let a = world.get("invoice/99999").await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.json()["Fault"]["Error"][0]["code"], "610");
    let post = crate::support::answer(
        world
            .http
            .post(world.api("customer/1"))
            .bearer_auth(&world.access)
            .body("{}")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(post.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        post.json()["Fault"]["Error"][0]["Message"],
        "Unsupported Operation"
    );
    let a = world.get("frobnicator/1").await;
    assert_eq!(
        a.json()["Fault"]["Error"][0]["Message"],
        "Unsupported Operation"
    );
}

#[tokio::test]
async fn cdc_horizon_edits_and_deletes() {
    let world = World::start(small()).await;
    let now = Utc.with_ymd_and_hms(2026, 3, 10, 12, 0, 0).unwrap();
    world.state().set_clock(Some(now));
    let too_old = (now - Duration::days(31)).to_rfc3339();
    let a = world
        .get(&format!(
            "cdc?entities=Invoice&changedSince={}",
            urlencode(&too_old)
        ))
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        a.json()["Fault"]["Error"][0]["Detail"],
        format!(
            "Operation cdc with changedSince date {too_old} which is older than fixed days is not supported."
        )
    );
    // Edit one invoice, delete another, deactivate a customer.
    world
        .state()
        .update(
            "Invoice",
            "5",
            serde_json::json!({"PrivateNote": "changed"}),
        )
        .unwrap();
    world.state().delete("Invoice", "6").unwrap();
    world.state().deactivate("Customer", "3").unwrap();
    let since = (now - Duration::days(1)).to_rfc3339();
    let a = world
        .get(&format!(
            "cdc?entities=invoice,Customer,Item&changedSince={}",
            urlencode(&since)
        ))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let v = a.json();
    let sections = v["CDCResponse"][0]["QueryResponse"].as_array().unwrap();
    assert_eq!(sections.len(), 3);
    let invoices = sections[0]["Invoice"].as_array().unwrap();
    assert_eq!(invoices.len(), 2);
    assert_eq!(invoices[0]["Id"], "5");
    assert_eq!(invoices[0]["PrivateNote"], "changed");
    assert_eq!(
        invoices[1].to_string(),
        format!(
            r#"{{"domain":"QBO","status":"Deleted","Id":"6","MetaData":{{"LastUpdatedTime":"{}"}}}}"#,
            qbo_sandbox::clock::pacific_secs(now.timestamp())
        )
    );
    assert_eq!(sections[0]["startPosition"], 1);
    assert_eq!(sections[0]["maxResults"], 2);
    assert_eq!(sections[1]["Customer"][0]["Active"], false);
    assert_eq!(sections[2], serde_json::json!({}));
    // The deleted invoice is gone from queries and reads.
    assert_eq!(world.get("invoice/6").await.status, StatusCode::BAD_REQUEST);
    assert_eq!(world.count("SELECT COUNT(*) FROM Invoice").await, 599);
}

#[tokio::test]
async fn cdc_caps_at_1000_objects_and_refuses_some_entities() {
    let world = World::start(SandboxConfig {
        cdc_horizon: None,
        invoices: 1500,
        ..small()
    })
    .await;
    let v = world
        .get("cdc?entities=Invoice,Customer&changedSince=2011-10-10T09:00:00-07:00")
        .await
        .json();
    let sections = v["CDCResponse"][0]["QueryResponse"].as_array().unwrap();
    assert_eq!(sections[0]["Invoice"].as_array().unwrap().len(), 1000);
    assert_eq!(sections[0]["maxResults"], 1000);
    assert_eq!(
        sections[1],
        serde_json::json!({}),
        "the cap is shared across entities"
    );
    for refused in [
        "TaxCode",
        "JournalCode",
        "TaxAgency",
        "TimeActivity",
        "TaxRate",
    ] {
        let a = world
            .get(&format!("cdc?entities={refused}&changedSince=2024-01-01"))
            .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{refused}");
    }
    let a = world.get("cdc?entities=Invoice").await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
}

/// Per section of a CDC answer: the Ids, deletions as `-Id`; `{}` sections are empty.
fn cdc_shape(v: &serde_json::Value) -> Vec<Vec<String>> {
    v["CDCResponse"][0]["QueryResponse"]
        .as_array()
        .unwrap()
        .iter()
        .map(|section| {
            let rows = section
                .as_object()
                .unwrap()
                .iter()
                .find_map(|(_, rows)| rows.as_array())
                .cloned()
                .unwrap_or_default();
            rows.iter()
                .map(|r| {
                    let id = r["Id"].as_str().unwrap();
                    if r["status"] == "Deleted" {
                        format!("-{id}")
                    } else {
                        id.to_owned()
                    }
                })
                .collect()
        })
        .collect()
}

/// Deletes Invoice 6, then edits Invoice 5, deletes Invoice 8, edits Customer 3 and Invoice 7,
/// a minute apart, from a pinned `now`.
fn edit_and_delete_a_minute_apart(world: &World, now: chrono::DateTime<Utc>) {
    let state = world.state();
    state.set_clock(Some(now));
    let note = serde_json::json!({"PrivateNote": "changed"});
    state.delete("Invoice", "6").unwrap();
    state.advance_clock(Duration::minutes(1));
    state.update("Invoice", "5", note.clone()).unwrap();
    state.advance_clock(Duration::minutes(1));
    state.delete("Invoice", "8").unwrap();
    state.advance_clock(Duration::minutes(1));
    state
        .update("Customer", "3", serde_json::json!({"Notes": "changed"}))
        .unwrap();
    state.advance_clock(Duration::minutes(1));
    state.update("Invoice", "7", note).unwrap();
}

#[tokio::test]
async fn cdc_lists_deletions_after_active_objects_and_drops_them_first_at_the_cap() {
    let now = Utc.with_ymd_and_hms(2026, 3, 10, 12, 0, 0).unwrap();
    let since = urlencode(&(now - Duration::hours(1)).to_rfc3339());
    let world = World::start(small()).await;
    edit_and_delete_a_minute_apart(&world, now);
    let a = world
        .get(&format!(
            "cdc?entities=Invoice,Customer&changedSince={since}"
        ))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let v = a.json();
    // Invoice 6 was deleted before Invoice 5 was edited, yet comes after it.
    assert_eq!(cdc_shape(&v), [vec!["5", "7", "-6", "-8"], vec!["3"]]);
    let sections = v["CDCResponse"][0]["QueryResponse"].as_array().unwrap();
    assert_eq!(sections[0]["maxResults"], 4);
    assert_eq!(sections[1]["maxResults"], 1);

    // A cap of 3 is spent on the three active objects: no deletion is left.
    let world = World::start(SandboxConfig {
        cdc_max_objects: 3,
        ..small()
    })
    .await;
    edit_and_delete_a_minute_apart(&world, now);
    let v = world
        .get(&format!(
            "cdc?entities=Invoice,Customer&changedSince={since}"
        ))
        .await
        .json();
    assert_eq!(cdc_shape(&v), [vec!["5", "7"], vec!["3"]]);
    assert_eq!(v["CDCResponse"][0]["QueryResponse"][0]["maxResults"], 2);
    // Invoice alone: two active objects, then what is left goes to the oldest deletion.
    let v = world
        .get(&format!("cdc?entities=Invoice&changedSince={since}"))
        .await
        .json();
    assert_eq!(cdc_shape(&v), [vec!["5", "7", "-6"]]);
    // Customer first: the order of the request decides which active objects fit.
    let v = world
        .get(&format!(
            "cdc?entities=Customer,Invoice&changedSince={since}"
        ))
        .await
        .json();
    assert_eq!(cdc_shape(&v), [vec!["3"], vec!["5", "7"]]);
}

#[tokio::test]
async fn admin_clock_advances_past_the_cdc_horizon() {
    let world = World::start(small()).await;
    let put = |body: &'static str| {
        let request = world.http.put(world.admin("clock")).body(body);
        async move { crate::support::answer(request.send().await.unwrap()).await }
    };
    let a = put(r#"{"now":"2026-03-10T12:00:00Z"}"#).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let since = "cdc?entities=Invoice&changedSince=2026-03-10T12:00:00Z";
    assert_eq!(world.get(since).await.status, StatusCode::OK);
    let a = put(r#"{"advance_secs":0}"#).await;
    assert_eq!(a.json()["now"], "2026-03-10T12:00:00+00:00");
    // 31 days on, the same changedSince is older than the 30-day horizon.
    let a = put(r#"{"advance_secs":2678400}"#).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.json()["now"], "2026-04-10T12:00:00+00:00");
    assert_eq!(
        world.state().now(),
        Utc.with_ymd_and_hms(2026, 4, 10, 12, 0, 0).unwrap()
    );
    let a = world.get(since).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        a.json()["Fault"]["Error"][0]["Detail"],
        "Operation cdc with changedSince date 2026-03-10T12:00:00Z which is older than fixed days is not supported."
    );
    for bad in [
        r#"{"advance_secs":-1}"#,
        r#"{"advance_secs":1.5}"#,
        r#"{"advance_secs":"60"}"#,
        r#"{"advance_secs":null}"#,
        r#"{"advance_secs":315576001}"#,
        r#"{"advance_secs":60,"now":"2026-01-01T00:00:00Z"}"#,
    ] {
        let a = put(bad).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{bad}");
        let message = a.json()["error"].as_str().unwrap().to_owned();
        assert!(message.contains("advance_secs"), "{bad}: {message}");
    }
    assert_eq!(
        world.state().now(),
        Utc.with_ymd_and_hms(2026, 4, 10, 12, 0, 0).unwrap(),
        "refused bodies leave the clock alone"
    );
    // A clock on real time moves from real time, and stays pinned.
    world.state().set_clock(None);
    world.state().advance_clock(Duration::days(1));
    let ahead = world.state().now() - Utc::now();
    assert!(
        ahead > Duration::hours(23) && ahead <= Duration::days(1),
        "{ahead}"
    );
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert_eq!(world.state().now(), world.state().now());
}

#[tokio::test]
async fn silent_updates_escape_cdc_and_time_windows_but_show_in_the_record() {
    let world = World::start(small()).await;
    let now = Utc.with_ymd_and_hms(2026, 3, 10, 12, 0, 0).unwrap();
    world.state().set_clock(Some(now));
    let before = world.state().record("Invoice", "9").unwrap();
    let after = world
        .state()
        .update_silently("Invoice", "9", serde_json::json!({"PrivateNote": "silent"}))
        .unwrap();
    assert_eq!(after["PrivateNote"], "silent");
    let since = (now - Duration::days(1)).to_rfc3339();
    let v = world
        .get(&format!(
            "cdc?entities=Invoice&changedSince={}",
            urlencode(&since)
        ))
        .await
        .json();
    assert_eq!(
        v["CDCResponse"][0]["QueryResponse"][0],
        serde_json::json!({})
    );
    let recent = world
        .count(&format!(
            "SELECT COUNT(*) FROM Invoice WHERE MetaData.LastUpdatedTime >= '{since}'"
        ))
        .await;
    assert_eq!(recent, 0);
    let rows = world
        .rows("SELECT * FROM Invoice WHERE Id = '9'", "Invoice")
        .await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["PrivateNote"], "silent");
    assert_eq!(rows[0]["SyncToken"], before["SyncToken"]);
    assert_eq!(
        rows[0]["MetaData"]["LastUpdatedTime"],
        before["MetaData"]["LastUpdatedTime"]
    );
    let read = world.get("invoice/9").await.json();
    assert_eq!(read["Invoice"]["PrivateNote"], "silent");
    assert_eq!(read["Invoice"]["SyncToken"], before["SyncToken"]);
    // An ordinary update afterwards bumps from the unchanged SyncToken.
    let bumped = world
        .state()
        .update("Invoice", "9", serde_json::json!({"Memo": "x"}))
        .unwrap();
    let sync = |v: &serde_json::Value| v["SyncToken"].as_str().unwrap().parse::<u64>().unwrap();
    assert_eq!(sync(&bumped), sync(&before) + 1);
    assert!(
        world
            .state()
            .update_silently("Invoice", "99999", serde_json::json!({}))
            .is_err()
    );
}

#[tokio::test]
async fn deleted_ids_lists_tombstones_in_numeric_order() {
    let world = World::start(small()).await;
    assert!(world.state().deleted_ids("Invoice").is_empty());
    for id in ["100", "9", "25"] {
        world.state().delete("Invoice", id).unwrap();
    }
    world.state().delete("Customer", "3").unwrap();
    assert_eq!(world.state().deleted_ids("Invoice"), ["9", "25", "100"]);
    assert_eq!(world.state().deleted_ids("invoice"), ["9", "25", "100"]);
    assert!(
        world.state().deleted_ids("Customer").is_empty(),
        "a name list's delete is a deactivation"
    );
    assert!(world.state().deleted_ids("Frobnicator").is_empty());
    let realm = world.state().default_realm();
    assert_eq!(realm.deleted_ids("Invoice"), ["9", "25", "100"]);
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}
