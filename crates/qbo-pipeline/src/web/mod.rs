//! `qbo-pipeline serve`: the HTTP face of the runtime it shares with the scheduler (run in
//! the same process unless `--no-scheduler`).
//!
//! What is served today:
//! - `GET /healthz`: the database reachable and the scheduler alive, `200` or `503`, JSON;
//! - `GET /metrics`: Prometheus text, computed from the ledger at each scrape so it covers
//!   every process that shares the database ([`metrics`]);
//! - `GET /api/runs`: the runs, newest first, filterable (`realm`, `pipeline`, `status`,
//!   `limit`).
//!
//! With `QBO_WEB_TOKEN` set, `/api/...` and `/metrics` need `Authorization: Bearer <token>`
//! (401 without); a listen address that is not loopback is refused without it. Every answer
//! carries `no-store`, `nosniff`, `DENY` framing and a `default-src 'none'` policy. No
//! secret is ever in an answer: tokens and the client secret are not read by any handler.
//!
//! Not yet: the dashboard's pages, the login form and cookie, CSRF-protected actions,
//! `connect` (issue 12's remaining parts).

pub mod metrics;

use crate::ledger;
use crate::runtime::Runtime;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use secrecy::{ExposeSecret, SecretString};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// What the handlers share.
pub struct WebState {
    pub runtime: Arc<Runtime>,
    /// `QBO_WEB_TOKEN`; None: no authentication (loopback only).
    pub token: Option<SecretString>,
    /// Whether a scheduler runs in this process, and whether it is still running.
    pub scheduler: Option<Arc<AtomicBool>>,
}

type AppState = State<Arc<WebState>>;

/// The router: `/healthz`, `/metrics`, `/api/runs`.
pub fn router(state: Arc<WebState>) -> Router {
    let protected = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/api/runs", get(runs))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/healthz", get(healthz))
        .merge(protected)
        .fallback(not_found)
        .layer(middleware::from_fn(security_headers))
        .with_state(state)
}

/// Equal without leaking where they differ through timing.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn require_token(
    State(state): AppState,
    headers: HeaderMap,
    request: axum::extract::Request,
    next: Next,
) -> Response {
    if let Some(token) = &state.token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        if !given.is_some_and(|g| same(g.as_bytes(), token.expose_secret().as_bytes())) {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                axum::Json(serde_json::json!({
                    "error": "missing or wrong token: send Authorization: Bearer <QBO_WEB_TOKEN>"
                })),
            )
                .into_response();
        }
    }
    next.run(request).await
}

async fn security_headers(request: axum::extract::Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    for (name, value) in [
        (header::CACHE_CONTROL, "no-store"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; frame-ancestors 'none'",
        ),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    response
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        axum::Json(serde_json::json!({
            "error": "no such page: this server answers /healthz, /metrics and /api/runs"
        })),
    )
        .into_response()
}

async fn healthz(State(state): AppState) -> Response {
    let database = sqlx::query_scalar::<_, i32>("SELECT 1")
        .fetch_one(state.runtime.pool())
        .await
        .is_ok();
    let scheduler = match &state.scheduler {
        None => "off",
        Some(alive) if alive.load(Ordering::Relaxed) => "running",
        Some(_) => "stopped",
    };
    let ok = database && scheduler != "stopped";
    (
        if ok {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        axum::Json(serde_json::json!({
            "status": if ok { "ok" } else { "unhealthy" },
            "database": if database { "reachable" } else { "unreachable" },
            "scheduler": scheduler,
        })),
    )
        .into_response()
}

async fn metrics_handler(State(state): AppState) -> Response {
    match metrics::render(state.runtime.pool()).await {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "metrics: reading the ledger failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "metrics unavailable: the database could not be read\n",
            )
                .into_response()
        }
    }
}

#[derive(serde::Deserialize)]
struct RunsQuery {
    limit: Option<String>,
    realm: Option<String>,
    pipeline: Option<String>,
    status: Option<String>,
}

fn bad_request(message: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(serde_json::json!({ "error": message })),
    )
        .into_response()
}

async fn runs(
    State(state): AppState,
    query: Result<Query<RunsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = query else {
        return bad_request(
            "the query string cannot be read: use ?limit=N&realm=R&pipeline=P&status=S".into(),
        );
    };
    let limit = match q.limit.as_deref().map(str::parse::<i64>) {
        None => 100,
        Some(Ok(n)) if (1..=10_000).contains(&n) => n,
        Some(_) => return bad_request("limit must be a whole number from 1 to 10000".into()),
    };
    const STATUSES: [&str; 4] = ["running", "succeeded", "failed", "abandoned"];
    if let Some(s) = &q.status
        && !STATUSES.contains(&s.as_str())
    {
        return bad_request(format!("status must be one of {}", STATUSES.join(", ")));
    }
    let realms: Vec<String> = q.realm.into_iter().collect();
    match ledger::list_runs_filtered(
        state.runtime.pool(),
        limit,
        &realms,
        q.pipeline.as_deref(),
        q.status.as_deref(),
    )
    .await
    {
        Ok(rows) => axum::Json(
            rows.into_iter()
                .map(|r| {
                    serde_json::json!({
                        "id": r.run_id,
                        "pipeline": r.pipeline,
                        "trigger": r.trigger_name,
                        "realm_id": r.realm_id,
                        "status": r.status,
                        "started_at": r.started_at,
                        "finished_at": r.finished_at,
                        "seconds": r.finished_at.map(|f| (f - r.started_at).num_milliseconds() as f64 / 1000.0),
                        "records": r.records,
                        "requests": r.requests,
                        "error": r.error,
                    })
                })
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "api/runs: reading the ledger failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(serde_json::json!({"error": "the database could not be read"})),
            )
                .into_response()
        }
    }
}
