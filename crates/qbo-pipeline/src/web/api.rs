//! The JSON API under `/api/`: everything the pages show, for scripts and for the pages' live
//! parts. Reads only. Bad input is a 400 with `{"error": "..."}`; no answer holds a secret
//! (tokens and the client secret are never read by a handler).

use super::AppState;
use super::data;
use super::pages::{RunsQuery, fetch_runs, runs_filter};
use axum::Json;
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

pub fn bad_request(message: impl Into<String>) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(serde_json::json!({ "error": message.into() })),
    )
        .into_response()
}

fn not_found(message: String) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(serde_json::json!({ "error": message })),
    )
        .into_response()
}

fn unavailable(what: &str, e: &sqlx::Error) -> Response {
    tracing::error!(error = %e, "api/{what}: reading the database failed");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(serde_json::json!({"error": "the database could not be read"})),
    )
        .into_response()
}

fn ok<T: serde::Serialize>(what: &str, r: Result<T, sqlx::Error>) -> Response {
    match r {
        Ok(v) => Json(v).into_response(),
        Err(e) => unavailable(what, &e),
    }
}

pub async fn runs(
    state: AppState,
    query: Result<Query<RunsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = query else {
        return bad_request(
            "the query string cannot be read: use ?limit=N&realm=R&pipeline=P&status=S&window=24h",
        );
    };
    let filter = match runs_filter(&q) {
        Ok(f) => f,
        Err(e) => return bad_request(e),
    };
    match fetch_runs(state.runtime.pool(), &filter).await {
        Ok(rows) => Json(
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
        Err(e) => unavailable("runs", &e),
    }
}

pub async fn run(state: AppState, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<i64>() else {
        return bad_request("a run id is a whole number");
    };
    match data::run_detail(state.runtime.pool(), id).await {
        Ok(Some(d)) => Json(d).into_response(),
        Ok(None) => not_found(format!("there is no run {id}")),
        Err(e) => unavailable("runs/{id}", &e),
    }
}

pub async fn overview(state: AppState) -> Response {
    ok(
        "overview",
        data::overview(state.runtime.pool(), &state.counts, state.late_after).await,
    )
}

pub async fn live(state: AppState) -> Response {
    ok("live", data::live(state.runtime.pool()).await)
}

pub async fn triggers(state: AppState) -> Response {
    ok("triggers", crate::trigger::list(state.runtime.pool()).await)
}

pub async fn usage(state: AppState) -> Response {
    ok(
        "usage",
        data::usage(state.runtime.pool(), &state.runtime, &state.recent).await,
    )
}

pub async fn realms(state: AppState) -> Response {
    ok("realms", crate::realm::list(state.runtime.pool()).await)
}

pub async fn validations(state: AppState) -> Response {
    ok(
        "validations",
        data::validations(state.runtime.pool(), 100).await,
    )
}

pub async fn validation(state: AppState, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<i64>() else {
        return bad_request("a validation id is a whole number");
    };
    match data::validation(state.runtime.pool(), id).await {
        Ok(Some((row, report))) => {
            Json(serde_json::json!({ "validation": row, "report": report })).into_response()
        }
        Ok(None) => not_found(format!("there is no validation {id}")),
        Err(e) => unavailable("validations/{id}", &e),
    }
}
