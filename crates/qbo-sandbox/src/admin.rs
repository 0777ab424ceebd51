//! The admin HTTP API (`/admin/...`, JSON): the same operations as the [`crate::Realm`]
//! methods, for tests and demos that drive a sandbox in another process. No authentication:
//! the sandbox is a local test double. Never returns tokens or the client secret.
//!
//! Every route takes an optional `?realm=ID` naming the company it acts on (default: realm
//! 1); an unknown id answers 404 `{"error":"unknown realm ID"}`.
//!
//! | route | does |
//! |---|---|
//! | `GET /admin/realms` | `{"realms":["id1","id2",...]}`, realm 1 first |
//! | `GET /admin/stats`, `POST /admin/stats/reset` | counters ([`crate::Stats`]) |
//! | `GET /admin/log` | request log (method, path, query text, status, intuit_tid) |
//! | `GET`/`PUT /admin/faults` | current [`crate::Faults`] (PUT replaces them) |
//! | `POST /admin/faults/script` | append a [`crate::ScriptedFault`] |
//! | `POST /admin/tokens/expire`, `POST /admin/tokens/revoke` | expire access / revoke refresh tokens |
//! | `PUT /admin/clock` | `{"now":"2026-01-01T00:00:00Z"}` pins, `{"now":null}` unpins, `{"advance_secs":N}` pins at now + N s (N an integer, 0 to 315576000 = 10 years; a pinned clock moves from its pin); answers `{"now":...}` |
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
use crate::realm::Realm;
use crate::state::SandboxState;

type AppState = State<Arc<SandboxState>>;
type Params = Query<HashMap<String, String>>;

/// The company `?realm=` names, else realm 1; `Err` names an unknown one.
fn pick(s: &SandboxState, params: &HashMap<String, String>) -> Result<Arc<Realm>, String> {
    match params.get("realm") {
        None => Ok(s.default_realm().clone()),
        Some(id) => s
            .realm(id)
            .cloned()
            .ok_or_else(|| format!("unknown realm {}", id.chars().take(64).collect::<String>())),
    }
}

/// `let r = realm!(s, params);`: the company, or return the 404.
macro_rules! realm {
    ($s:expr, $params:expr) => {
        match pick(&$s, &$params) {
            Ok(r) => r,
            Err(unknown) => return error(StatusCode::NOT_FOUND, unknown),
        }
    };
}

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
        .route("/admin/realms", get(realms))
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

async fn realms(State(s): AppState, Query(q): Params) -> Response {
    let _ = realm!(s, q);
    Json(json!({ "realms": s.realm_ids() })).into_response()
}

async fn stats(State(s): AppState, Query(q): Params) -> Response {
    Json(realm!(s, q).stats()).into_response()
}

async fn reset_stats(State(s): AppState, Query(q): Params) -> Response {
    realm!(s, q).reset_stats();
    StatusCode::NO_CONTENT.into_response()
}

async fn log(State(s): AppState, Query(q): Params) -> Response {
    Json(realm!(s, q).request_log()).into_response()
}

async fn get_faults(State(s): AppState, Query(q): Params) -> Response {
    Json(realm!(s, q).faults()).into_response()
}

async fn put_faults(State(s): AppState, Query(q): Params, body: String) -> Response {
    let r = realm!(s, q);
    let faults: Faults = match serde_json::from_str(&body) {
        Ok(f) => f,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    if let Err(e) = faults.validate() {
        return error(StatusCode::BAD_REQUEST, e);
    }
    r.set_faults(faults);
    Json(r.faults()).into_response()
}

async fn script(State(s): AppState, Query(q): Params, body: String) -> Response {
    let r = realm!(s, q);
    match serde_json::from_str::<ScriptedFault>(&body) {
        Ok(f) => {
            r.script_fault(f.endpoint, f.count, f.action);
            Json(r.faults()).into_response()
        }
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

async fn expire(State(s): AppState, Query(q): Params) -> Response {
    realm!(s, q).expire_access_tokens();
    StatusCode::NO_CONTENT.into_response()
}

async fn revoke(State(s): AppState, Query(q): Params) -> Response {
    realm!(s, q).revoke_refresh_tokens();
    StatusCode::NO_CONTENT.into_response()
}

#[derive(Deserialize)]
struct ClockBody {
    now: Option<DateTime<Utc>>,
}

/// The largest `advance_secs`: ten years of 365.25 days.
const MAX_ADVANCE_SECS: u64 = 315_576_000;

/// `{"advance_secs": N}`'s N, `None` when the body has no `advance_secs`.
fn advance_secs(body: &str) -> Result<Option<u64>, String> {
    let Ok(Value::Object(object)) = serde_json::from_str::<Value>(body) else {
        return Ok(None);
    };
    let Some(value) = object.get("advance_secs") else {
        return Ok(None);
    };
    if object.contains_key("now") {
        return Err("give either now or advance_secs, not both".into());
    }
    match value.as_u64() {
        Some(n) if n <= MAX_ADVANCE_SECS => Ok(Some(n)),
        _ => Err(format!(
            "advance_secs must be a non-negative integer of at most {MAX_ADVANCE_SECS} (10 years), got {value}"
        )),
    }
}

async fn clock(State(s): AppState, Query(q): Params, body: String) -> Response {
    let r = realm!(s, q);
    match advance_secs(&body) {
        Ok(Some(n)) => {
            r.advance_clock(chrono::Duration::seconds(n as i64));
            return Json(json!({ "now": r.now().to_rfc3339() })).into_response();
        }
        Ok(None) => {}
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    }
    match serde_json::from_str::<ClockBody>(&body) {
        Ok(b) => {
            r.set_clock(b.now);
            Json(json!({ "now": r.now().to_rfc3339() })).into_response()
        }
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

async fn all(State(s): AppState, Query(q): Params, Path(entity): Path<String>) -> Response {
    Json(Value::Array(realm!(s, q).all_records(&entity))).into_response()
}

async fn create(
    State(s): AppState,
    Query(q): Params,
    Path(entity): Path<String>,
    body: String,
) -> Response {
    let r = realm!(s, q);
    match serde_json::from_str::<Value>(&body) {
        Ok(v) => result(r.create(&entity, v)),
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

async fn one(
    State(s): AppState,
    Query(q): Params,
    Path((entity, id)): Path<(String, String)>,
) -> Response {
    result(realm!(s, q).record(&entity, &id))
}

async fn update(
    State(s): AppState,
    Query(q): Params,
    Path((entity, id)): Path<(String, String)>,
    body: String,
) -> Response {
    let r = realm!(s, q);
    match serde_json::from_str::<Value>(&body) {
        Ok(v) => result(r.update(&entity, &id, v)),
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

async fn delete(
    State(s): AppState,
    Query(q): Params,
    Path((entity, id)): Path<(String, String)>,
) -> Response {
    match realm!(s, q).delete(&entity, &id) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => result(Err(e)),
    }
}

async fn deactivate(
    State(s): AppState,
    Query(q): Params,
    Path((entity, id)): Path<(String, String)>,
) -> Response {
    result(realm!(s, q).deactivate(&entity, &id))
}

#[derive(Deserialize)]
struct TimeBody {
    last_updated: DateTime<chrono::FixedOffset>,
}

async fn set_time(
    State(s): AppState,
    Query(q): Params,
    Path((entity, id)): Path<(String, String)>,
    body: String,
) -> Response {
    let r = realm!(s, q);
    match serde_json::from_str::<TimeBody>(&body) {
        Ok(b) => match r.set_record_time(&entity, &id, b.last_updated) {
            Ok(()) => result(r.record(&entity, &id)),
            Err(e) => result(Err(e)),
        },
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

async fn count(State(s): AppState, Path(entity): Path<String>, Query(params): Params) -> Response {
    let r = realm!(s, params);
    let parse = |key: &str| -> Result<Option<DateTime<Utc>>, String> {
        match params.get(key) {
            None => Ok(None),
            Some(text) => qbo_query::parse_datetime(text)
                .map(|t| Some(t.with_timezone(&Utc)))
                .ok_or_else(|| format!("{key}: not a datetime: {text}")),
        }
    };
    match (parse("from"), parse("to")) {
        (Ok(from), Ok(to)) => Json(json!({ "count": r.count(&entity, from, to) })).into_response(),
        (Err(e), _) | (_, Err(e)) => error(StatusCode::BAD_REQUEST, e),
    }
}
