//! The admin HTTP API (`/admin/...`, JSON): the same operations as the `SandboxState`
//! methods, for tests and demos that drive a sandbox in another process. No authentication:
//! the sandbox is a local test double. Never returns tokens or the client secret.
//!
//! | route | does |
//! |---|---|
//! | `GET /admin/stats`, `POST /admin/stats/reset` | counters ([`crate::Stats`]) |
//! | `GET /admin/log` | request log (method, path, query text, status, intuit_tid) |
//! | `GET`/`PUT /admin/faults` | current [`crate::Faults`] (PUT replaces them) |
//! | `POST /admin/faults/script` | append a [`crate::ScriptedFault`] |
//! | `POST /admin/tokens/expire`, `POST /admin/tokens/revoke` | expire access / revoke refresh tokens |
//! | `PUT /admin/clock` | `{"now":"2026-01-01T00:00:00Z"}` or `{"now":null}` |
//! | `GET`/`POST /admin/records/{entity}` | all records / create one |
//! | `GET`/`PATCH`/`DELETE /admin/records/{entity}/{id}` | read / merge-patch / delete |
//! | `POST /admin/records/{entity}/{id}/deactivate` | `Active = false` |
//! | `PUT /admin/records/{entity}/{id}/time` | `{"last_updated":"2016-03-01T00:00:00Z"}` |
//! | `GET /admin/count/{entity}?from=..&to=..` | `{"count":n}` |

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::config::{Faults, ScriptedFault};
use crate::state::SandboxState;

type AppState = State<Arc<SandboxState>>;

fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (status, Json(json!({ "error": format!("{message:#}") }))).into_response()
}

fn result(r: anyhow::Result<Value>) -> Response {
    match r {
        Ok(v) => Json(v).into_response(),
        Err(e) => {
            let status = if e.to_string().contains("not found") {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::BAD_REQUEST
            };
            error(status, e)
        }
    }
}

/// The `/admin` routes.
pub fn routes() -> Router<Arc<SandboxState>> {
    Router::new()
        .route("/admin/stats", get(stats))
        .route("/admin/stats/reset", post(reset_stats))
        .route("/admin/log", get(log))
        .route("/admin/faults", get(get_faults).put(put_faults))
        .route("/admin/faults/script", post(script))
        .route("/admin/tokens/expire", post(expire))
        .route("/admin/tokens/revoke", post(revoke))
        .route("/admin/clock", put(clock))
        .route("/admin/records/{entity}", get(all).post(create))
        .route(
            "/admin/records/{entity}/{id}",
            get(one).patch(update).delete(delete),
        )
        .route("/admin/records/{entity}/{id}/deactivate", post(deactivate))
        .route("/admin/records/{entity}/{id}/time", put(set_time))
        .route("/admin/count/{entity}", get(count))
}

async fn stats(State(s): AppState) -> Response {
    Json(s.stats()).into_response()
}

async fn reset_stats(State(s): AppState) -> Response {
    s.reset_stats();
    StatusCode::NO_CONTENT.into_response()
}

async fn log(State(s): AppState) -> Response {
    Json(s.request_log()).into_response()
}

async fn get_faults(State(s): AppState) -> Response {
    Json(s.faults()).into_response()
}

async fn put_faults(State(s): AppState, body: String) -> Response {
    let faults: Faults = match serde_json::from_str(&body) {
        Ok(f) => f,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    if let Err(e) = faults.validate() {
        return error(StatusCode::BAD_REQUEST, e);
    }
    s.set_faults(faults);
    Json(s.faults()).into_response()
}

async fn script(State(s): AppState, body: String) -> Response {
    match serde_json::from_str::<ScriptedFault>(&body) {
        Ok(f) => {
            s.script_fault(f.endpoint, f.count, f.action);
            Json(s.faults()).into_response()
        }
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

async fn expire(State(s): AppState) -> Response {
    s.expire_access_tokens();
    StatusCode::NO_CONTENT.into_response()
}

async fn revoke(State(s): AppState) -> Response {
    s.revoke_refresh_tokens();
    StatusCode::NO_CONTENT.into_response()
}

#[derive(Deserialize)]
struct ClockBody {
    now: Option<DateTime<Utc>>,
}

async fn clock(State(s): AppState, body: String) -> Response {
    match serde_json::from_str::<ClockBody>(&body) {
        Ok(b) => {
            s.set_clock(b.now);
            Json(json!({ "now": s.now().to_rfc3339() })).into_response()
        }
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

async fn all(State(s): AppState, Path(entity): Path<String>) -> Response {
    Json(Value::Array(s.all_records(&entity))).into_response()
}

async fn create(State(s): AppState, Path(entity): Path<String>, body: String) -> Response {
    match serde_json::from_str::<Value>(&body) {
        Ok(v) => result(s.create(&entity, v)),
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

async fn one(State(s): AppState, Path((entity, id)): Path<(String, String)>) -> Response {
    result(s.record(&entity, &id))
}

async fn update(
    State(s): AppState,
    Path((entity, id)): Path<(String, String)>,
    body: String,
) -> Response {
    match serde_json::from_str::<Value>(&body) {
        Ok(v) => result(s.update(&entity, &id, v)),
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

async fn delete(State(s): AppState, Path((entity, id)): Path<(String, String)>) -> Response {
    match s.delete(&entity, &id) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => result(Err(e)),
    }
}

async fn deactivate(State(s): AppState, Path((entity, id)): Path<(String, String)>) -> Response {
    result(s.deactivate(&entity, &id))
}

#[derive(Deserialize)]
struct TimeBody {
    last_updated: DateTime<chrono::FixedOffset>,
}

async fn set_time(
    State(s): AppState,
    Path((entity, id)): Path<(String, String)>,
    body: String,
) -> Response {
    match serde_json::from_str::<TimeBody>(&body) {
        Ok(b) => match s.set_record_time(&entity, &id, b.last_updated) {
            Ok(()) => result(s.record(&entity, &id)),
            Err(e) => result(Err(e)),
        },
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

async fn count(
    State(s): AppState,
    Path(entity): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let parse = |key: &str| -> Result<Option<DateTime<Utc>>, String> {
        match params.get(key) {
            None => Ok(None),
            Some(text) => qbo_query::parse_datetime(text)
                .map(|t| Some(t.with_timezone(&Utc)))
                .ok_or_else(|| format!("{key}: not a datetime: {text}")),
        }
    };
    match (parse("from"), parse("to")) {
        (Ok(from), Ok(to)) => Json(json!({ "count": s.count(&entity, from, to) })).into_response(),
        (Err(e), _) | (_, Err(e)) => error(StatusCode::BAD_REQUEST, e),
    }
}
