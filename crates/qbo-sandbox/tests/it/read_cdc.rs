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

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}
