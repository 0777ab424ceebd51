//! `qbo-pipeline serve`: the HTTP face of the runtime it shares with the scheduler (run in
//! the same process unless `--no-scheduler`).
//!
//! | module | serves |
//! |---|---|
//! | [`pages`] | the dashboard: overview, runs and run detail, API usage, login |
//! | [`actions`] | what changes something: triggers, validation, connecting a company |
//! | [`api`] | the JSON API under `/api/` (reads only) |
//! | [`metrics`] | `/metrics`: Prometheus text computed from the ledger |
//! | [`data`] | the reads behind pages and API (every process's work, from the database) |
//! | [`auth`] | `QBO_WEB_TOKEN`: login cookie, bearer, CSRF |
//! | [`live`] | this process's requests of the last minute (from the bus) |
//!
//! `/healthz` is always open. With `QBO_WEB_TOKEN` set, a page without a session answers a
//! redirect to `/login`, `/api/...` and `/metrics` without a session or bearer answer 401; a
//! listen address that is not loopback is refused without the token. Every POST needs the
//! page's CSRF token. Every answer carries `no-store`, `nosniff`, `DENY` framing and a
//! content security policy allowing only this server's own script and style. No secret is
//! ever in an answer: tokens and the client secret are not read by any handler.

pub mod actions;
pub mod api;
pub mod auth;
pub mod data;
pub mod live;
pub mod metrics;
pub mod pages;

use crate::runtime::Runtime;
use auth::{Auth, Caller};
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// What the handlers share.
pub struct WebState {
    pub runtime: Arc<Runtime>,
    pub auth: Auth,
    /// Whether a scheduler runs in this process, and whether it is still running.
    pub scheduler: Option<Arc<AtomicBool>>,
    /// Wakes this process's scheduler (a trigger was made due, created or enabled).
    pub wake: Arc<tokio::sync::Notify>,
    /// Where validations started from the dashboard archive their evidence.
    pub evidence_dir: std::path::PathBuf,
    /// Intuit's authorization (consent) endpoint.
    pub auth_url: url::Url,
    /// This server's address as browsers reach it (`--public-url`), for the consent
    /// redirect; by default the request's `Host`.
    pub public_url: Option<String>,
    /// An entity with no successful sync for this long is shown late.
    pub late_after: chrono::Duration,
    pub counts: data::CountCache,
    pub recent: Arc<live::Recent>,
    pub consents: actions::Consents,
    _recent: crate::events::Attached,
}

/// How a [`WebState`] is made.
pub struct WebOptions {
    pub token: Option<secrecy::SecretString>,
    pub scheduler: Option<Arc<AtomicBool>>,
    pub wake: Arc<tokio::sync::Notify>,
    pub evidence_dir: std::path::PathBuf,
    pub auth_url: url::Url,
    pub public_url: Option<String>,
    pub late_after: chrono::Duration,
}

impl WebOptions {
    /// No token, no scheduler, Intuit's consent page, evidence in `./evidence`, late after a
    /// day.
    pub fn new() -> WebOptions {
        WebOptions {
            token: None,
            scheduler: None,
            wake: Arc::new(tokio::sync::Notify::new()),
            evidence_dir: "evidence".into(),
            auth_url: url::Url::parse(crate::cli_connect::INTUIT_AUTH_URL)
                .unwrap_or_else(|_| unreachable!("a valid URL")),
            public_url: None,
            late_after: chrono::Duration::hours(24),
        }
    }
}

impl Default for WebOptions {
    fn default() -> Self {
        WebOptions::new()
    }
}

impl WebState {
    pub fn new(runtime: Arc<Runtime>, opts: WebOptions) -> WebState {
        let recent = Arc::new(live::Recent::default());
        let attached = runtime.events().attach(recent.clone());
        WebState {
            runtime,
            auth: Auth::new(opts.token),
            scheduler: opts.scheduler,
            wake: opts.wake,
            evidence_dir: opts.evidence_dir,
            auth_url: opts.auth_url,
            public_url: opts.public_url,
            late_after: opts.late_after,
            counts: data::CountCache::default(),
            recent,
            consents: actions::Consents::default(),
            _recent: attached,
        }
    }

    pub fn wake_scheduler(&self) {
        self.wake.notify_one();
    }
}

type AppState = State<Arc<WebState>>;

/// The whole server.
pub fn router(state: Arc<WebState>) -> Router {
    let pages = Router::new()
        .route("/", get(pages::overview))
        .route("/runs", get(pages::runs))
        .route("/runs/{id}", get(pages::run))
        .route("/usage", get(pages::usage))
        .route(
            "/triggers",
            get(actions::triggers).post(actions::create_trigger),
        )
        .route("/triggers/{name}/{action}", post(actions::trigger_action))
        .route(
            "/validation",
            get(actions::validation).post(actions::validate),
        )
        .route("/validation/{id}", get(actions::validation_one))
        .route("/validation/{id}/evidence/{file}", get(actions::evidence))
        .route("/connect", post(actions::connect))
        .route("/connect/callback", get(actions::callback))
        .route("/logout", post(pages::logout))
        .route_layer(middleware::from_fn_with_state(state.clone(), page_gate));
    let api = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/api/runs", get(api::runs))
        .route("/api/runs/{id}", get(api::run))
        .route("/api/overview", get(api::overview))
        .route("/api/live", get(api::live))
        .route("/api/triggers", get(api::triggers))
        .route("/api/usage", get(api::usage))
        .route("/api/realms", get(api::realms))
        .route("/api/validations", get(api::validations))
        .route("/api/validations/{id}", get(api::validation))
        .route_layer(middleware::from_fn_with_state(state.clone(), api_gate));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/login", get(pages::login_form).post(pages::login))
        .route("/static/{file}", get(static_file))
        .merge(pages)
        .merge(api)
        .fallback(not_found)
        .layer(middleware::from_fn(security_headers))
        .with_state(state)
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Pages: without a valid session (when a token is set), a redirect to the login form.
async fn page_gate(
    State(state): AppState,
    mut request: axum::extract::Request,
    next: Next,
) -> Response {
    let caller = state.auth.caller(request.headers(), now());
    if !caller.allowed() {
        let target = request
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        let next = url::form_urlencoded::byte_serialize(target.as_bytes()).collect::<String>();
        return Redirect::to(&format!("/login?next={next}")).into_response();
    }
    request.extensions_mut().insert(caller);
    next.run(request).await
}

/// The API and metrics: without a valid session or bearer (when a token is set), 401.
async fn api_gate(State(state): AppState, request: axum::extract::Request, next: Next) -> Response {
    if !state.auth.caller(request.headers(), now()).allowed() {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            axum::Json(serde_json::json!({
                "error": "missing or wrong token: send Authorization: Bearer <QBO_WEB_TOKEN>, or sign in at /login"
            })),
        )
            .into_response();
    }
    next.run(request).await
}

/// A POST without this page's CSRF token, or from another site.
fn forbidden(state: &WebState, caller: &Caller) -> Response {
    tracing::warn!(
        "a dashboard POST was refused: missing or wrong CSRF token, or sent from another site"
    );
    pages::message(
        state,
        caller,
        StatusCode::FORBIDDEN,
        "Refused",
        "This form is out of date or was sent from another site (missing or wrong CSRF token); nothing was changed. Reload the page and try again.",
        "/",
    )
}

/// A database failure, as a page.
fn internal(state: &WebState, caller: &Caller, what: &str, e: &dyn std::fmt::Display) -> Response {
    tracing::error!(error = %e, page = what, "a dashboard page could not read the database");
    pages::message(
        state,
        caller,
        StatusCode::SERVICE_UNAVAILABLE,
        "Database unavailable",
        "The database could not be read; see the server's log. Try again in a moment.",
        "/",
    )
}

const APP_JS: &str = include_str!("../../static/app.js");
const STYLE_CSS: &str = include_str!("../../static/style.css");

async fn static_file(Path(file): Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "style.css" => (STYLE_CSS, "text/css; charset=utf-8"),
        _ => return not_found().await,
    };
    let mut response = ([(header::CONTENT_TYPE, kind)], body).into_response();
    response
        .headers_mut()
        .insert("x-static", HeaderValue::from_static("1"));
    response
}

async fn security_headers(request: axum::extract::Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    let cacheable = h.remove("x-static").is_some();
    for (name, value) in [
        (
            header::CACHE_CONTROL,
            if cacheable {
                "private, max-age=300"
            } else {
                "no-store"
            },
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; frame-ancestors 'none'",
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
            "error": "no such page: see / (the dashboard), /api/runs, /metrics and /healthz"
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
