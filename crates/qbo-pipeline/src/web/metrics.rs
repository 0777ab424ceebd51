//! `/metrics`: Prometheus text built from the ledger at each scrape, so it covers the work of
//! every process that shares the database, not only this one's. Families (labels):
//!
//! | family | labels | from |
//! |---|---|---|
//! | `qbo_records_written_total` | realm, entity | `run_entities.rows_written`, summed in `entity_totals` |
//! | `qbo_records_deleted_total` | realm, entity | `run_entities.rows_deleted` (syncs), summed in `entity_totals` |
//! | `qbo_api_requests_total` | realm, endpoint, status | `api_usage` (status `ok`, the HTTP status, `fault`, `transport`) |
//! | `qbo_api_throttled_total` | realm | `api_usage` answers 429 |
//! | `qbo_runs_total` | realm, pipeline, outcome | `runs.status` |
//! | `qbo_sync_lag_seconds` | realm, entity | now − `sync_state.last_sync_at` |
//! | `qbo_refresh_token_expiry_seconds` | realm | `oauth_tokens.refresh_token_expires_at` − now |

use chrono::{DateTime, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use sqlx::PgPool;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RealmEntity {
    realm: String,
    entity: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Request {
    realm: String,
    endpoint: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Realm {
    realm: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunOutcome {
    realm: String,
    pipeline: String,
    outcome: String,
}

type Counters<L> = Family<L, Counter<u64, AtomicU64>>;
type Gauges<L> = Family<L, Gauge<f64, AtomicU64>>;

fn count(v: i64) -> u64 {
    v.max(0) as u64
}

/// The status label of an `api_usage` outcome: `ok`, the HTTP status (`429`), `fault`,
/// `transport`.
fn status_label(outcome: &str) -> String {
    outcome.strip_prefix("http_").unwrap_or(outcome).to_string()
}

/// Every family, read from the database now.
pub async fn render(pool: &PgPool) -> Result<String, sqlx::Error> {
    let mut registry = Registry::default();
    let written = Counters::<RealmEntity>::default();
    let deleted = Counters::<RealmEntity>::default();
    let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(
        // The sums over every run's entities, kept by a trigger (migration 0012): reading
        // them is 40 rows a company, however long the ledger.
        "SELECT realm_id, entity, rows_written, rows_deleted FROM qbo_pipeline.entity_totals",
    )
    .fetch_all(pool)
    .await?;
    for (realm, entity, w, d) in rows {
        let labels = RealmEntity { realm, entity };
        written.get_or_create(&labels).inc_by(count(w));
        deleted.get_or_create(&labels).inc_by(count(d));
    }
    let requests = Counters::<Request>::default();
    let throttled = Counters::<Realm>::default();
    let rows: Vec<(String, String, String, i64)> = sqlx::query_as(
        "SELECT realm_id, endpoint, outcome, sum(requests)::bigint FROM qbo_pipeline.api_usage
         GROUP BY 1, 2, 3",
    )
    .fetch_all(pool)
    .await?;
    for (realm, endpoint, outcome, n) in rows {
        if outcome == "http_429" {
            throttled
                .get_or_create(&Realm {
                    realm: realm.clone(),
                })
                .inc_by(count(n));
        }
        requests
            .get_or_create(&Request {
                realm,
                endpoint,
                status: status_label(&outcome),
            })
            .inc_by(count(n));
    }
    let runs = Counters::<RunOutcome>::default();
    let rows: Vec<(String, String, String, i64)> = sqlx::query_as(
        "SELECT realm_id, pipeline, status, count(*) FROM qbo_pipeline.runs GROUP BY 1, 2, 3",
    )
    .fetch_all(pool)
    .await?;
    for (realm, pipeline, outcome, n) in rows {
        runs.get_or_create(&RunOutcome {
            realm,
            pipeline,
            outcome,
        })
        .inc_by(count(n));
    }
    let now = Utc::now();
    let lag = Gauges::<RealmEntity>::default();
    let rows: Vec<(String, String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT realm_id, entity, last_sync_at FROM qbo_pipeline.sync_state
         WHERE last_sync_at IS NOT NULL",
    )
    .fetch_all(pool)
    .await?;
    for (realm, entity, at) in rows {
        lag.get_or_create(&RealmEntity { realm, entity })
            .set((now - at).num_milliseconds() as f64 / 1000.0);
    }
    let expiry = Gauges::<Realm>::default();
    let rows: Vec<(String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT realm_id, refresh_token_expires_at FROM qbo_pipeline.oauth_tokens
         WHERE refresh_token_expires_at IS NOT NULL",
    )
    .fetch_all(pool)
    .await?;
    for (realm, at) in rows {
        expiry
            .get_or_create(&Realm { realm })
            .set((at - now).num_milliseconds() as f64 / 1000.0);
    }
    registry.register(
        "qbo_records_written",
        "Rows written to raw tables (new or newer versions)",
        written,
    );
    registry.register(
        "qbo_records_deleted",
        "Rows a sync marked deleted (deleted_at_utc set)",
        deleted,
    );
    registry.register(
        "qbo_api_requests",
        "Requests to QBO by endpoint and answer status",
        requests,
    );
    registry.register(
        "qbo_api_throttled",
        "Requests QBO answered 429 (throttled)",
        throttled,
    );
    registry.register("qbo_runs", "Runs by pipeline and outcome", runs);
    registry.register(
        "qbo_sync_lag_seconds",
        "Age of each entity's last successful sync",
        lag,
    );
    registry.register(
        "qbo_refresh_token_expiry_seconds",
        "Seconds until the company's stored refresh token expires",
        expiry,
    );
    let mut out = String::new();
    encode(&mut out, &registry).map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn statuses_are_labelled_by_number() {
        assert_eq!(super::status_label("http_429"), "429");
        assert_eq!(super::status_label("ok"), "ok");
        assert_eq!(super::status_label("transport"), "transport");
    }
}
