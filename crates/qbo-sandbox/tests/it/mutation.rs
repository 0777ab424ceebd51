//! Edits while the server runs: the admin API, mutate-during-paging, and determinism.

use std::collections::HashSet;

use qbo_sandbox::{Faults, SandboxConfig};
use reqwest::StatusCode;

use crate::support::{World, small};

#[tokio::test]
async fn admin_api_creates_updates_deactivates_and_deletes() {
    let world = World::start(small()).await;
    let admin = |path: &str| format!("{}/admin/{path}", world.sandbox.base_url());
    let r = world
        .http
        .put(admin("clock"))
        .body(r#"{"now":"2026-02-01T08:00:00Z"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let created: serde_json::Value = world
        .http
        .post(admin("records/customer"))
        .body(r#"{"DisplayName":"Zoë's \"Quoted\" Café ☕","Active":true}"#)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(created["Id"], "41");
    assert_eq!(created["SyncToken"], "0");
    assert_eq!(
        created["MetaData"]["LastUpdatedTime"],
        "2026-02-01T00:00:00-08:00"
    );
    let found = world
        .rows(
            r#"SELECT * FROM Customer WHERE DisplayName = 'Zoë\'s "Quoted" Café ☕'"#,
            "Customer",
        )
        .await;
    assert_eq!(found.len(), 1);
    let patched: serde_json::Value = world
        .http
        .patch(admin("records/Customer/41"))
        .body(r#"{"Notes":"patched"}"#)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(patched["SyncToken"], "1");
    assert_eq!(patched["Notes"], "patched");
    let r = world
        .http
        .post(admin("records/Customer/41/deactivate"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        world
            .ids("SELECT * FROM Customer WHERE Id = '41'", "Customer")
            .await
            .is_empty()
    );
    assert_eq!(
        world
            .ids(
                "SELECT * FROM Customer WHERE Id = '41' AND Active = false",
                "Customer"
            )
            .await,
        [41]
    );
    let r = world
        .http
        .delete(admin("records/Invoice/10"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = world
        .http
        .delete(admin("records/Invoice/10"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = world
        .http
        .put(admin("records/Invoice/11/time"))
        .body(r#"{"last_updated":"2016-03-01T00:00:00Z"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let edge = world
        .rows(
            "SELECT * FROM Invoice WHERE MetaData.LastUpdatedTime >= '2016-03-01T00:00:00Z' AND MetaData.LastUpdatedTime <= '2016-02-29T16:00:00-08:00'",
            "Invoice",
        )
        .await;
    assert!(edge.iter().any(|r| r["Id"] == "11"));
    assert!(
        edge.iter()
            .all(|r| r["MetaData"]["LastUpdatedTime"] == "2016-02-29T16:00:00-08:00")
    );
    let count: serde_json::Value = world
        .http
        .get(admin(
            "count/Invoice?from=2016-03-01T00:00:00Z&to=2016-03-01T00:00:00Z",
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(count["count"].as_u64().unwrap(), edge.len() as u64);
    let bad = world
        .http
        .put(admin("faults"))
        .body(r#"{"error_rate":3}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn mutate_during_paging_makes_a_naive_offset_pager_lose_records() {
    let world = World::start(small()).await;
    world.state().set_faults(Faults {
        mutate_during_paging: 2,
        ..Faults::default()
    });
    let total = world.state().count("Invoice", None, None);
    let mut seen = HashSet::new();
    let mut served = 0;
    let mut start = 1;
    loop {
        let ids = world
            .ids(
                &format!("SELECT * FROM Invoice ORDERBY MetaData.LastUpdatedTime STARTPOSITION {start} MAXRESULTS 50"),
                "Invoice",
            )
            .await;
        served += ids.len();
        seen.extend(ids.iter().copied());
        if ids.len() < 50 {
            break;
        }
        start += 50;
    }
    assert_eq!(world.state().count("Invoice", None, None), total);
    assert!(
        (seen.len() as u64) < total,
        "the naive pager should miss records: saw {} of {total}",
        seen.len()
    );
    assert!(served > seen.len(), "and see some twice");
    // The edits are real: SyncToken bumped and LastUpdatedTime = now.
    let recent = world.state().count(
        "Invoice",
        Some(chrono::Utc::now() - chrono::Duration::minutes(5)),
        None,
    );
    assert!(recent >= 2);
}

#[tokio::test]
async fn same_seed_same_bytes_other_seed_other_bytes() {
    let a = World::start(small()).await;
    let b = World::start(small()).await;
    let c = World::start(SandboxConfig {
        seed: 99,
        ..small()
    })
    .await;
    let q = "SELECT * FROM Invoice ORDERBY MetaData.LastUpdatedTime MAXRESULTS 1000";
    let strip = |s: String| s[..s.rfind(",\"time\"").unwrap()].to_owned();
    let (ba, bb, bc) = (
        strip(a.query(q).await.body),
        strip(b.query(q).await.body),
        strip(c.query(q).await.body),
    );
    assert_eq!(ba, bb);
    assert_ne!(ba, bc);
    assert_eq!(
        a.state().all_records("Customer"),
        b.state().all_records("Customer")
    );
}

#[tokio::test]
async fn v3_writes_create_update_void_delete_and_refuse_stale_tokens() {
    let world = World::start(small()).await;
    let post = |path: &'static str, body: &'static str| {
        let request = world
            .http
            .post(world.api(path))
            .bearer_auth(&world.access)
            .header("Content-Type", "application/json")
            .body(body);
        async move { crate::support::answer(request.send().await.unwrap()).await }
    };
    let created = post(
        "customer",
        r#"{"DisplayName":"Nuevo Cliente Ñ","Notes":"x"}"#,
    )
    .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.body);
    let v = created.json();
    assert_eq!(v["Customer"]["Id"], "41");
    assert_eq!(v["Customer"]["FullyQualifiedName"], "Nuevo Cliente Ñ");
    assert_eq!(
        world
            .count("SELECT COUNT(*) FROM Customer WHERE DisplayName = 'Nuevo Cliente Ñ'")
            .await,
        1
    );
    let dup = post("customer", r#"{"DisplayName":"nuevo cliente ñ"}"#).await;
    assert_eq!(dup.status, StatusCode::BAD_REQUEST);
    assert_eq!(dup.json()["Fault"]["Error"][0]["code"], "6240");
    let stale = post(
        "customer",
        r#"{"Id":"41","SyncToken":"7","sparse":true,"Notes":"y"}"#,
    )
    .await;
    assert_eq!(stale.json()["Fault"]["Error"][0]["code"], "5010");
    let updated = post(
        "customer",
        r#"{"Id":"41","SyncToken":"0","sparse":true,"Notes":"y"}"#,
    )
    .await;
    assert_eq!(updated.json()["Customer"]["SyncToken"], "1");
    assert_eq!(updated.json()["Customer"]["Notes"], "y");
    // Void a generated invoice: amounts 0, PrivateNote "Voided", SyncToken + 1.
    let before = world.state().record("Invoice", "4").unwrap();
    let sync = before["SyncToken"].as_str().unwrap().to_owned();
    let body = format!(r#"{{"Id":"4","SyncToken":"{sync}"}}"#);
    let voided = crate::support::answer(
        world
            .http
            .post(world.api("invoice?operation=void"))
            .bearer_auth(&world.access)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    let v = voided.json();
    assert_eq!(v["Invoice"]["PrivateNote"], "Voided");
    assert_eq!(v["Invoice"]["TotalAmt"].to_string(), "0");
    assert!(
        v["Invoice"]["Line"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["Amount"] == serde_json::json!(0))
    );
    assert_ne!(v["Invoice"]["SyncToken"], sync.as_str());
    // Transactions delete; name lists do not.
    let sync = world.state().record("Invoice", "5").unwrap()["SyncToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let deleted = crate::support::answer(
        world
            .http
            .post(world.api("invoice?operation=delete"))
            .bearer_auth(&world.access)
            .body(format!(r#"{{"Id":"5","SyncToken":"{sync}"}}"#))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(
        deleted
            .body
            .starts_with(r#"{"Invoice":{"domain":"QBO","status":"Deleted","Id":"5"},"time":""#)
    );
    assert_eq!(world.get("invoice/5").await.status, StatusCode::BAD_REQUEST);
    let refused = post(
        "customer?operation=delete",
        r#"{"Id":"41","SyncToken":"1"}"#,
    )
    .await;
    assert_eq!(
        refused.json()["Fault"]["Error"][0]["Message"],
        "Unsupported Operation"
    );
    let bad = post("invoice", "{not json").await;
    assert_eq!(bad.json()["Fault"]["Error"][0]["code"], "2010");
    let missing = post("invoice", r#"{"Id":"99999","SyncToken":"0"}"#).await;
    assert_eq!(missing.json()["Fault"]["Error"][0]["code"], "610");
    assert_eq!(world.state().stats().requests_by_endpoint["write"], 9);
}
