//! Every entity of the catalogue: loads equal to the source for every shape (Id, composite,
//! wrapped, singleton, another response key), entities read whole whatever the window,
//! re-runs that rewrite nothing.

use crate::hostile::{self, Mode};
use crate::support::*;
use qbo_pipeline::config::{QboSettings, RealmId};
use qbo_pipeline::entity::Entity;
use secrecy::SecretString;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// Record times: three inside the test window (2014..2025) and one before it.
const INSIDE: [&str; 3] = [
    "2015-03-01T10:00:00-08:00",
    "2019-07-04T12:30:00-07:00",
    "2024-11-30T23:59:59-08:00",
];
const BEFORE: &str = "2013-06-01T09:00:00-07:00";

/// Entities the `--data` sandbox of this branch's base serves as QBO would: all but the two
/// without a top-level Id (ExchangeRate, RecurringTransaction), which the hostile QBO's
/// Shapes world serves instead.
fn served_by_the_data_sandbox(e: Entity) -> bool {
    !matches!(e.qbo_name(), "ExchangeRate" | "RecurringTransaction")
}

/// One record of `entity` in the shapes of the recordings (common fields, then the kind's).
fn record(entity: Entity, id: u32, when: &str, active: bool) -> Value {
    let name = entity.qbo_name();
    let mut r = json!({
        "Id": id.to_string(),
        "SyncToken": (id % 3).to_string(),
        "domain": "QBO",
        "sparse": false,
        "MetaData": {"CreateTime": "2013-01-01T00:00:00-08:00", "LastUpdatedTime": when},
    });
    let o = r.as_object_mut().unwrap();
    match entity.kind() {
        qbo_pipeline::entity::Kind::NameList => {
            o.insert(
                "Name".into(),
                json!(format!("{name} {id} — Amy's \"Bird\" 鳥")),
            );
            o.insert("Active".into(), json!(active));
        }
        qbo_pipeline::entity::Kind::Transaction => {
            o.insert("DocNumber".into(), json!(format!("{id:04}")));
            o.insert("TxnDate".into(), json!(&when[..10]));
            o.insert("TotalAmt".into(), json!(337.5));
            o.insert(
                "Line".into(),
                json!([{"Id": "1", "Amount": 337.5, "DetailType": "SubTotalLineDetail", "SubTotalLineDetail": {}}]),
            );
        }
        qbo_pipeline::entity::Kind::Singleton => {
            o.insert(
                "CompanyName".into(),
                json!("Craig's Design and Landscaping Services"),
            );
            o.insert("Country".into(), json!("USA"));
        }
        qbo_pipeline::entity::Kind::Other => {
            o.insert("FileName".into(), json!(format!("receipt-{id}.pdf")));
        }
    }
    r
}

/// A data file with records of every entity the data sandbox serves: singletons one record,
/// others one record per time (inside the window and before it), name lists one inactive.
fn data_file() -> String {
    let mut root = serde_json::Map::new();
    for e in Entity::all().filter(|e| served_by_the_data_sandbox(*e)) {
        let records: Vec<Value> = if e.is_singleton() {
            vec![record(e, 1, INSIDE[1], true)]
        } else {
            INSIDE
                .iter()
                .chain([&BEFORE])
                .enumerate()
                .map(|(i, when)| record(e, 10 + i as u32, when, i != 1))
                .collect()
        };
        root.insert(e.qbo_name().to_string(), Value::Array(records));
    }
    Value::Object(root).to_string()
}

async fn data_sandbox() -> qbo_sandbox::RunningSandbox {
    // Every feature on: the company offers every entity the file holds (the default company
    // lacks journal codes and tax payments, which then answer 5020 and are skipped).
    let config = qbo_sandbox::SandboxConfig {
        features: qbo_entities::Feature::OPTIONAL.into_iter().collect(),
        ..qbo_sandbox::SandboxConfig::default()
    };
    let state = qbo_sandbox::SandboxState::from_data_text(config, &data_file()).unwrap();
    qbo_sandbox::spawn_with_state(std::sync::Arc::new(state), ([127, 0, 0, 1], 0).into())
        .await
        .expect("sandbox starts")
}

/// What the source holds for `entity` and a backfill of `window` must load: everything for
/// an entity read whole, else the records updated in the window. By `id`.
fn wanted(
    sb: &qbo_sandbox::RunningSandbox,
    entity: Entity,
    w: qbo_pipeline::window::Window,
) -> BTreeMap<String, Value> {
    sb.state()
        .all_records(entity.qbo_name())
        .into_iter()
        .filter(|r| {
            let t =
                qbo_query::eval::parse_datetime(r["MetaData"]["LastUpdatedTime"].as_str().unwrap())
                    .unwrap();
            entity.read_whole() || (t >= w.start() && t <= w.end())
        })
        .map(|r| (r["Id"].as_str().unwrap().to_string(), r))
        .collect()
}

async fn stored(pool: &sqlx::PgPool, entity: Entity) -> BTreeMap<String, Value> {
    table_rows(pool, entity).await.into_iter().collect()
}

#[tokio::test]
async fn every_entity_loads_exactly_from_a_data_file_whole_reads_whatever_the_window() {
    let sb = data_sandbox().await;
    let db = TestDb::create().await;
    let w = full_window();
    let report = backfill(&sb, &db, &fast_http(), &options(&Entity::ALL, w)).await;
    assert!(report.succeeded(), "{}", report.table());
    assert_eq!(report.entities.len(), 40);
    let pool = db.pool().await;
    let mut whole_outside = 0;
    for r in &report.entities {
        let e = r.entity;
        let want = wanted(&sb, e, w);
        let got = stored(&pool, e).await;
        assert_eq!(got, want, "{e}: the table equals the source");
        assert_eq!(r.records, want.len() as u64, "{e}: {}", report.table());
        assert_eq!(r.rows_written, want.len() as u64, "{e}");
        if served_by_the_data_sandbox(e) {
            assert!(!want.is_empty(), "{e} has records");
            if !e.is_singleton() {
                // Proved by QBO's own count (of the window, or of everything).
                assert_eq!(r.expected, Some(want.len() as u64), "{e}");
            }
        }
        if e.read_whole() && !e.is_singleton() && served_by_the_data_sandbox(e) {
            assert_eq!(want.len(), 4, "{e}: the record from before the window too");
            assert_eq!(r.chunks_total, 1, "{e}: read whole in one chunk");
            whole_outside += 1;
        } else if served_by_the_data_sandbox(e) && !e.is_singleton() {
            assert_eq!(
                want.len(),
                3,
                "{e}: the record before the window is not read"
            );
        }
    }
    assert_eq!(whole_outside, 3, "TaxAgency, TaxCode, CompanyCurrency");
    // Singletons: one row per company.
    for name in ["CompanyInfo", "Preferences"] {
        let e = Entity::from_qbo_name(name).unwrap();
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM {} WHERE realm_id = $1",
            e.table()
        )))
        .bind(sb.realm_id())
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(n, 1, "{name}");
    }
    // Inactive name-list records are loaded.
    let inactive: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM raw.qb_tax_codes WHERE payload->>'Active' = 'false'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(inactive, 1);
    // Every table has the audit columns filled, as the first three do.
    for e in Entity::all() {
        let bad: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM {} WHERE realm_id <> $1 OR run_id <> $2 OR page_number < 1
               OR extract_window_start_utc IS NULL OR source_last_updated_utc IS NULL
               OR deleted_at_utc IS NOT NULL",
            e.table()
        )))
        .bind(sb.realm_id())
        .bind(report.run_id)
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(bad, 0, "{e}");
    }
    // A window that holds none of the filterable records: the whole-read ones still load.
    let db2 = TestDb::create().await;
    let early = window("2014-01-01", "2014-01-31");
    let report = backfill(&sb, &db2, &fast_http(), &options(&Entity::ALL, early)).await;
    assert!(report.succeeded(), "{}", report.table());
    let pool2 = db2.pool().await;
    for e in Entity::all().filter(|e| served_by_the_data_sandbox(*e)) {
        let n = stored(&pool2, e).await.len();
        let want = if e.is_singleton() {
            1
        } else if e.read_whole() {
            4
        } else {
            0
        };
        assert_eq!(n, want, "{e}");
    }
}

#[tokio::test]
async fn every_table_has_the_columns_of_the_first_three() {
    let db = TestDb::create().await;
    let pool = qbo_pipeline::app::open_database(&db.settings(), 2)
        .await
        .unwrap();
    let columns = |table: &'static str| {
        let pool = pool.clone();
        async move {
            let (schema, name) = table.split_once('.').unwrap();
            let cols: Vec<(String, String, String)> = sqlx::query_as(
                "SELECT column_name::text, data_type::text, is_nullable::text FROM information_schema.columns
                 WHERE table_schema = $1 AND table_name = $2 ORDER BY column_name",
            )
            .bind(schema)
            .bind(name)
            .fetch_all(&pool)
            .await
            .unwrap();
            let indexes: Vec<String> = sqlx::query_scalar(
                "SELECT regexp_replace(indexdef, '\\S+_(pkey|last_updated_idx) ON raw\\.\\S+', '\\1') FROM pg_indexes
                 WHERE schemaname = $1 AND tablename = $2 ORDER BY 1",
            )
            .bind(schema)
            .bind(name)
            .fetch_all(&pool)
            .await
            .unwrap();
            (cols, indexes)
        }
    };
    let reference = columns(Entity::CUSTOMER.table()).await;
    assert!(
        reference
            .0
            .iter()
            .any(|c| c.0 == "deleted_at_utc" && c.2 == "YES")
    );
    assert!(reference.0.iter().any(|c| c.0 == "payload_text"));
    assert_eq!(reference.1.len(), 2, "{:?}", reference.1);
    for e in Entity::all() {
        assert_eq!(columns(e.table()).await, reference, "{e}");
    }
}

#[tokio::test]
async fn rerunning_every_entity_rewrites_nothing() {
    let sb = data_sandbox().await;
    let db = TestDb::create().await;
    let opts = options(&Entity::ALL, full_window());
    let first = backfill(&sb, &db, &fast_http(), &opts).await;
    assert!(first.succeeded(), "{}", first.table());
    let pool = db.pool().await;
    let versions = || async {
        let mut all = Vec::new();
        for e in Entity::all() {
            let v: Vec<(String, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT id, xmin::text FROM {} ORDER BY id",
                e.table()
            )))
            .fetch_all(&pool)
            .await
            .unwrap();
            all.push((e, v));
        }
        all
    };
    let before = versions().await;
    let second = backfill(&sb, &db, &fast_http(), &opts).await;
    assert!(second.succeeded(), "{}", second.table());
    for e in &second.entities {
        assert_eq!(e.rows_written, 0, "{}", second.table());
    }
    assert_eq!(before, versions().await, "no row got a new version");
}

fn hostile_settings(h: &hostile::RunningHostile) -> QboSettings {
    QboSettings {
        client_id: hostile::CLIENT_ID.into(),
        client_secret: SecretString::from(hostile::CLIENT_SECRET),
        realm_id: RealmId::parse(hostile::REALM).unwrap(),
        seed: Some(SecretString::from(hostile::SEED_TOKEN)),
        api_base: url::Url::parse(&h.base_url()).unwrap(),
        token_url: url::Url::parse(&h.token_url()).unwrap(),
        token_key: None,
    }
}

#[tokio::test]
async fn composite_wrapped_and_renamed_shapes_load_exactly_and_rerun_as_no_ops() {
    let h = hostile::spawn(Mode::Shapes).await;
    let db = TestDb::create().await;
    let entities: Vec<Entity> = ["ExchangeRate", "RecurringTransaction", "CreditCardPayment"]
        .iter()
        .map(|n| Entity::from_qbo_name(n).unwrap())
        .collect();
    let opts = options(&entities, window("2020-01-01", "2020-12-31"));
    let (qbo, dbs, http) = (hostile_settings(&h), db.settings(), fast_http());
    let stop = qbo_pipeline::backfill::StopSignal::default();
    let run = || qbo_pipeline::app::backfill(&qbo, &dbs, &http, &opts, &stop);
    let report = run().await.unwrap();
    assert!(report.succeeded(), "{}", report.table());
    let pool = db.pool().await;
    for (name, _, records) in hostile::shapes() {
        let e = Entity::from_qbo_name(name).unwrap();
        let got = stored(&pool, e).await;
        let want: Vec<Value> = records
            .iter()
            .map(|r| serde_json::from_str(r).unwrap())
            .collect();
        assert_eq!(
            got.values().cloned().collect::<Vec<_>>().len(),
            want.len(),
            "{name}"
        );
        for w in &want {
            assert!(got.values().any(|g| g == w), "{name}: {w} loaded as sent");
        }
        let ids: Vec<&str> = got.keys().map(String::as_str).collect();
        match name {
            "ExchangeRate" => assert_eq!(ids, ["EUR:USD:2020-01-02", "GBP:USD:2020-01-02"]),
            "RecurringTransaction" => {
                assert_eq!(ids, ["7", "8"]);
                // The payload keeps the wrapper; newer-wins reads the inner SyncToken.
                assert!(got["7"]["Invoice"].is_object() && got["8"]["Bill"].is_object());
                let token: i64 = sqlx::query_scalar(
                    "SELECT sync_token FROM raw.qb_recurring_transactions WHERE id = '7'",
                )
                .fetch_one(&pool)
                .await
                .unwrap();
                assert_eq!(token, 3);
            }
            _ => assert_eq!(ids, ["3"]),
        }
    }
    let again = run().await.unwrap();
    assert!(again.succeeded(), "{}", again.table());
    assert_eq!(
        again.entities.iter().map(|e| e.rows_written).sum::<u64>(),
        0
    );
}
