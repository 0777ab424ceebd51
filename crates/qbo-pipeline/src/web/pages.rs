//! The dashboard's pages: server-rendered (askama templates compiled into the binary), read
//! from [`super::data`], with a little plain JavaScript (`/static/app.js`) for the live parts.
//! Every value is HTML-escaped by the templates; the only raw HTML is the charts' SVG, built
//! here from numbers.

use super::auth::{Auth, Caller, safe_next};
use super::data::{self, LiveRun};
use super::{AppState, WebState, internal};
use crate::ledger::{self, RunFilter};
use askama::Template;
use axum::extract::{Extension, Path, Query};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use std::fmt::Write as _;

/// Which navigation entry is current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Current {
    None,
    Overview,
    Runs,
    Triggers,
    Validation,
    Usage,
}

/// What every page's layout needs.
pub struct Page {
    pub nav: bool,
    pub current: Current,
    pub signed_in: bool,
    pub csrf: String,
    pub flash: Option<String>,
    pub problem: Option<String>,
}

impl Page {
    pub fn new(auth: &Auth, caller: &Caller, current: Current) -> Page {
        Page {
            nav: caller.allowed(),
            current,
            signed_in: matches!(caller, Caller::Session(_)),
            csrf: auth.csrf(caller),
            flash: None,
            problem: None,
        }
    }
}

/// A select's option.
pub struct Opt {
    pub value: String,
    pub label: String,
    pub selected: bool,
}

fn opts(values: &[(&str, &str)], chosen: &str) -> Vec<Opt> {
    values
        .iter()
        .map(|(v, l)| Opt {
            value: v.to_string(),
            label: l.to_string(),
            selected: *v == chosen,
        })
        .collect()
}

pub fn render<T: Template>(status: StatusCode, template: &T) -> Response {
    match template.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "rendering a page failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page could not be rendered; see the server's log\n",
            )
                .into_response()
        }
    }
}

#[derive(Template)]
#[template(path = "message.html")]
struct Message<'a> {
    page: Page,
    heading: &'a str,
    text: &'a str,
    back: &'a str,
}

/// A page with one message (errors a browser sees).
pub fn message(
    state: &WebState,
    caller: &Caller,
    status: StatusCode,
    heading: &str,
    text: &str,
    back: &str,
) -> Response {
    render(
        status,
        &Message {
            page: Page::new(&state.auth, caller, Current::None),
            heading,
            text,
            back,
        },
    )
}

pub fn when(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(
        || "—".to_string(),
        |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
    )
}

/// `42 s`, `12 min`, `3.5 h`, `4 d`.
pub fn span(secs: f64) -> String {
    if secs < 90.0 {
        format!("{} s", secs.round() as i64)
    } else if secs < 5400.0 {
        format!("{} min", (secs / 60.0).round() as i64)
    } else if secs < 172_800.0 {
        format!("{:.1} h", secs / 3600.0)
    } else {
        format!("{} d", (secs / 86_400.0).round() as i64)
    }
}

// ---------------------------------------------------------------------------------------------
// Login

#[derive(Template)]
#[template(path = "login.html")]
struct Login {
    page: Page,
    next: String,
    error: Option<String>,
}

#[derive(serde::Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

pub async fn login_form(state: AppState, Query(q): Query<NextQuery>) -> Response {
    if !state.auth.required() {
        return Redirect::to("/").into_response();
    }
    render(
        StatusCode::OK,
        &Login {
            page: Page::new(&state.auth, &Caller::Nobody, Current::None),
            next: safe_next(q.next.as_deref()),
            error: None,
        },
    )
}

#[derive(serde::Deserialize)]
pub struct LoginForm {
    token: Option<String>,
    next: Option<String>,
    csrf: Option<String>,
}

pub async fn login(
    state: AppState,
    headers: HeaderMap,
    form: Result<axum::Form<LoginForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    if !state.auth.required() {
        return Redirect::to("/").into_response();
    }
    let Ok(axum::Form(form)) = form else {
        return message(
            &state,
            &Caller::Nobody,
            StatusCode::BAD_REQUEST,
            "Bad request",
            "the login form could not be read: send token, next and csrf as a form",
            "/login",
        );
    };
    let next = safe_next(form.next.as_deref());
    let again = |status: StatusCode, error: &str| {
        render(
            status,
            &Login {
                page: Page::new(&state.auth, &Caller::Nobody, Current::None),
                next: next.clone(),
                error: Some(error.to_string()),
            },
        )
    };
    if !state
        .auth
        .post_allowed(&Caller::Open, &headers, form.csrf.as_deref())
    {
        return again(
            StatusCode::FORBIDDEN,
            "This form is out of date or was sent from another site: sign in again from this page.",
        );
    }
    if !form
        .token
        .as_deref()
        .is_some_and(|t| state.auth.token_matches(t))
    {
        tracing::warn!("dashboard sign-in refused: wrong token");
        return again(
            StatusCode::UNAUTHORIZED,
            "Wrong token: enter QBO_WEB_TOKEN exactly.",
        );
    }
    (
        StatusCode::SEE_OTHER,
        [
            (
                header::SET_COOKIE,
                state.auth.session_cookie(Utc::now().timestamp()),
            ),
            (header::LOCATION, next),
        ],
    )
        .into_response()
}

#[derive(serde::Deserialize)]
pub struct CsrfForm {
    pub csrf: Option<String>,
}

pub async fn logout(
    state: AppState,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    form: Result<axum::Form<CsrfForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    if let Some(refused) = super::csrf_refusal(&state, &caller, &headers, &form) {
        return refused;
    }
    (
        StatusCode::SEE_OTHER,
        [
            (header::SET_COOKIE, Auth::logout_cookie()),
            (header::LOCATION, "/login".to_string()),
        ],
    )
        .into_response()
}

// ---------------------------------------------------------------------------------------------
// Overview

struct RealmView {
    realm_id: String,
    ok: usize,
    late: usize,
    failed: usize,
    never: usize,
    last_run_id: Option<i64>,
    last_run_status: String,
    token: String,
    token_class: &'static str,
}

struct CellView {
    realm_id: String,
    entity: &'static str,
    state: &'static str,
    first: bool,
    rows: i64,
    deleted: i64,
    last_sync: String,
    age: String,
    error: Option<String>,
    next_trigger: String,
    proof: String,
    proof_differs: bool,
}

pub struct LiveView {
    run_id: i64,
    pipeline: String,
    realm_id: String,
    entities_done: i64,
    entities: i64,
    pages: i64,
    records: i64,
    rate: String,
    eta: String,
}

pub fn live_view(r: &LiveRun) -> LiveView {
    LiveView {
        run_id: r.run_id,
        pipeline: r.pipeline.clone(),
        realm_id: r.realm_id.clone(),
        entities_done: r.entities_done,
        entities: r.entities,
        pages: r.pages,
        records: r.records,
        rate: format!("{:.1}/s", r.records_per_sec),
        eta: r.eta_secs.map_or_else(|| "—".to_string(), span),
    }
}

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewPage {
    page: Page,
    live: Vec<LiveView>,
    realms: Vec<RealmView>,
    cells: Vec<CellView>,
    counted_ago: String,
    late_after: String,
    /// What the entity list leaves out, when it does.
    filtered: Option<String>,
}

#[derive(serde::Deserialize)]
pub struct FlashQuery {
    connected: Option<String>,
    /// Show every entity of this company.
    realm: Option<String>,
    /// Show every entity of every company.
    all: Option<String>,
}

/// Companies up to which the overview lists every entity of every company; past it, only
/// the entities needing attention (late, failed) unless a company or `all` is asked for.
pub const LIST_ALL_UP_TO: usize = 5;

/// A refresh token's expiry as shown, and its colour.
pub fn token_text(has: bool, expires: Option<DateTime<Utc>>) -> (String, &'static str) {
    match (has, expires) {
        (false, _) => ("none: connect the company".into(), "failed"),
        (true, None) => ("stored (expiry unknown until its first refresh)".into(), ""),
        (true, Some(t)) => {
            let days = (t - Utc::now()).num_days();
            let text = if t < Utc::now() {
                format!("expired {}: re-connect", when(Some(t)))
            } else {
                format!("expires in {days} d ({})", t.format("%Y-%m-%d"))
            };
            (
                text,
                if days < 7 {
                    "failed"
                } else if days < 30 {
                    "late"
                } else {
                    "ok"
                },
            )
        }
    }
}

pub async fn overview(
    state: AppState,
    Extension(caller): Extension<Caller>,
    Query(q): Query<FlashQuery>,
) -> Response {
    let pool = state.runtime.pool();
    let (ov, live) = match tokio::try_join!(
        data::overview(pool, &state.counts, state.late_after),
        data::live(pool)
    ) {
        Ok(x) => x,
        Err(e) => return internal(&state, &caller, "overview", &e),
    };
    let mut page = Page::new(&state.auth, &caller, Current::Overview);
    page.flash = q.connected.map(|r| {
        format!(
            "Connected company {}: its refresh token is stored.",
            qbo_client::printable(&r, 40)
        )
    });
    let realms = ov
        .realms
        .iter()
        .map(|s| {
            let (token, token_class) = token_text(s.has_token, s.refresh_token_expires_at);
            RealmView {
                realm_id: s.realm_id.clone(),
                ok: s.entities_ok,
                late: s.entities_late,
                failed: s.entities_failed,
                never: s.entities_never,
                last_run_id: s.last_run_id,
                last_run_status: s.last_run_status.clone().unwrap_or_default(),
                token,
                token_class,
            }
        })
        .collect();
    let chosen = q.realm.as_deref().map(str::trim).filter(|r| !r.is_empty());
    let everything = q.all.is_some() || (chosen.is_none() && ov.realms.len() <= LIST_ALL_UP_TO);
    let shown = |c: &&data::OverviewCell| match chosen {
        Some(r) => c.realm_id == r,
        None => everything || matches!(c.state, "late" | "failed"),
    };
    let hidden = ov.cells.len() - ov.cells.iter().filter(shown).count();
    let mut last_realm = String::new();
    let cells = ov
        .cells
        .iter()
        .filter(shown)
        .map(|c| {
            let first = c.realm_id != last_realm;
            last_realm.clone_from(&c.realm_id);
            CellView {
                realm_id: c.realm_id.clone(),
                entity: c.entity,
                state: c.state,
                first,
                rows: c.rows,
                deleted: c.deleted,
                last_sync: match (&c.last_sync_at, &c.last_mode) {
                    (Some(t), Some(m)) => format!("{} ({m})", when(Some(*t))),
                    (t, _) => when(*t),
                },
                age: match (c.state, c.age_secs) {
                    ("never", _) => "never synced".into(),
                    ("ok", Some(a)) => span(a as f64),
                    (s, Some(a)) => format!("{} — {s}", span(a as f64)),
                    (s, None) => s.to_string(),
                },
                error: c
                    .last_error
                    .as_deref()
                    .map(|e| qbo_client::printable(e, 300)),
                next_trigger: c.next_trigger.as_ref().map_or_else(
                    || "—".into(),
                    |t| format!("{} ({})", when(Some(t.at)), t.name),
                ),
                proof: match (c.qbo_count, c.proven_rows) {
                    (Some(q), Some(r)) => format!("{q} / {r}"),
                    _ => "—".into(),
                },
                proof_differs: matches!((c.qbo_count, c.proven_rows), (Some(q), Some(r)) if q != r),
            }
        })
        .collect();
    render(
        StatusCode::OK,
        &OverviewPage {
            page,
            live: live.iter().map(live_view).collect(),
            realms,
            cells,
            counted_ago: format!(
                "{} ago",
                span((Utc::now() - ov.counted_at).num_milliseconds().max(0) as f64 / 1000.0)
            ),
            late_after: span(state.late_after.num_seconds() as f64),
            filtered: match chosen {
                Some(r) => Some(format!(
                    "Entities of company {}.",
                    qbo_client::printable(r, 50)
                )),
                None if hidden > 0 => Some(format!(
                    "{hidden} entities are current or never synced and not listed; pick a company above to see all of its entities."
                )),
                None => None,
            },
        },
    )
}

// ---------------------------------------------------------------------------------------------
// Runs

struct RunView {
    id: i64,
    pipeline: String,
    trigger: String,
    realm: String,
    status: String,
    started: String,
    duration: String,
    records: i64,
    requests: i64,
    error: String,
}

#[derive(Template)]
#[template(path = "runs.html")]
struct RunsPage {
    page: Page,
    f_pipeline: String,
    f_realm: String,
    statuses: Vec<Opt>,
    windows: Vec<Opt>,
    chart_duration: String,
    chart_rows: String,
    runs: Vec<RunView>,
}

#[derive(serde::Deserialize, Default)]
pub struct RunsQuery {
    pub pipeline: Option<String>,
    pub realm: Option<String>,
    pub status: Option<String>,
    pub window: Option<String>,
    pub limit: Option<String>,
}

pub const STATUSES: [&str; 4] = ["running", "succeeded", "failed", "abandoned"];
const WINDOWS: [(&str, &str); 5] = [
    ("", "any time"),
    ("1h", "last hour"),
    ("24h", "last 24 hours"),
    ("7d", "last 7 days"),
    ("30d", "last 30 days"),
];

/// A validated runs filter, or what is wrong with it.
#[derive(Debug)]
pub struct RunsFilter {
    pub pipeline: Option<String>,
    pub realms: Vec<String>,
    pub status: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub window: String,
    pub limit: i64,
}

pub fn runs_filter(q: &RunsQuery) -> Result<RunsFilter, String> {
    let nonempty = |v: &Option<String>| {
        v.as_deref()
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    let limit = match q.limit.as_deref().map(str::trim).filter(|v| !v.is_empty()) {
        None => 100,
        Some(n) => match n.parse::<i64>() {
            Ok(n) if (1..=10_000).contains(&n) => n,
            _ => return Err("limit must be a whole number from 1 to 10000".into()),
        },
    };
    let status = nonempty(&q.status);
    if let Some(s) = &status
        && !STATUSES.contains(&s.as_str())
    {
        return Err(format!("status must be one of {}", STATUSES.join(", ")));
    }
    let window = nonempty(&q.window).unwrap_or_default();
    let since = match window.as_str() {
        "" => None,
        "1h" => Some(Utc::now() - chrono::Duration::hours(1)),
        "24h" => Some(Utc::now() - chrono::Duration::hours(24)),
        "7d" => Some(Utc::now() - chrono::Duration::days(7)),
        "30d" => Some(Utc::now() - chrono::Duration::days(30)),
        _ => return Err("window must be one of 1h, 24h, 7d, 30d (or empty for any time)".into()),
    };
    let pipeline = nonempty(&q.pipeline);
    if pipeline.as_ref().is_some_and(|p| p.len() > 100) {
        return Err("pipeline is too long".into());
    }
    let realm = nonempty(&q.realm);
    if let Some(r) = &realm
        && let Err(e) = crate::config::RealmId::parse(r)
    {
        return Err(e);
    }
    Ok(RunsFilter {
        pipeline,
        realms: realm.into_iter().collect(),
        status,
        since,
        window,
        limit,
    })
}

pub async fn fetch_runs(
    pool: &sqlx::PgPool,
    f: &RunsFilter,
) -> Result<Vec<ledger::RunRow>, sqlx::Error> {
    ledger::list_runs_filtered(
        pool,
        f.limit,
        &RunFilter {
            realms: &f.realms,
            pipeline: f.pipeline.as_deref(),
            status: f.status.as_deref(),
            since: f.since,
        },
    )
    .await
}

/// A bar chart (SVG) of `values`, oldest first, coloured by status.
fn chart(id: &str, values: &[(f64, &str)]) -> String {
    let (w, h) = (600.0, 120.0);
    let max = values.iter().map(|v| v.0).fold(0.0_f64, f64::max);
    let mut svg = format!(
        r#"<svg id="{id}" class="chart" viewBox="0 0 {w} {h}" preserveAspectRatio="none" role="img" aria-label="{id}">"#
    );
    if values.is_empty() || max <= 0.0 {
        svg.push_str(r#"<text x="8" y="20" font-size="12">no data</text>"#);
    } else {
        // Few runs make narrow bars, not a wall of colour.
        let bw = w / values.len().max(40) as f64;
        for (i, (v, status)) in values.iter().enumerate() {
            let bh = (v / max * (h - 14.0)).max(1.0);
            let class = match *status {
                "succeeded" | "failed" | "running" | "abandoned" => *status,
                _ => "other",
            };
            let _ = write!(
                svg,
                r#"<rect class="{class}" x="{:.2}" y="{:.2}" width="{:.2}" height="{:.2}"><title>{v}</title></rect>"#,
                i as f64 * bw,
                h - bh,
                (bw - 1.0).max(0.5),
                bh
            );
        }
        let _ = write!(
            svg,
            r#"<text x="4" y="11" font-size="10">max {max:.0}</text>"#
        );
    }
    svg.push_str("</svg>");
    svg
}

pub async fn runs(
    state: AppState,
    Extension(caller): Extension<Caller>,
    query: Result<Query<RunsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let q = query.map(|Query(q)| q).unwrap_or_default();
    let mut page = Page::new(&state.auth, &caller, Current::Runs);
    let (filter, status) = match runs_filter(&q) {
        Ok(f) => (f, StatusCode::OK),
        Err(e) => {
            page.problem = Some(format!("{e}; showing every run"));
            (
                runs_filter(&RunsQuery::default()).unwrap_or_else(|_| unreachable!()),
                StatusCode::BAD_REQUEST,
            )
        }
    };
    let rows = match fetch_runs(state.runtime.pool(), &filter).await {
        Ok(r) => r,
        Err(e) => return internal(&state, &caller, "runs", &e),
    };
    let seconds = |r: &ledger::RunRow| {
        r.finished_at
            .map(|f| (f - r.started_at).num_milliseconds() as f64 / 1000.0)
    };
    let oldest_first: Vec<&ledger::RunRow> = rows.iter().rev().collect();
    let durations: Vec<(f64, &str)> = oldest_first
        .iter()
        .map(|r| (seconds(r).unwrap_or(0.0), r.status.as_str()))
        .collect();
    let records: Vec<(f64, &str)> = oldest_first
        .iter()
        .map(|r| (r.records as f64, r.status.as_str()))
        .collect();
    let mut statuses = vec![("", "any")];
    statuses.extend(STATUSES.iter().map(|s| (*s, *s)));
    render(
        status,
        &RunsPage {
            page,
            f_pipeline: filter.pipeline.clone().unwrap_or_default(),
            f_realm: filter.realms.first().cloned().unwrap_or_default(),
            statuses: opts(&statuses, filter.status.as_deref().unwrap_or("")),
            windows: opts(&WINDOWS, &filter.window),
            chart_duration: chart("chart-duration", &durations),
            chart_rows: chart("chart-rows", &records),
            runs: rows
                .iter()
                .map(|r| RunView {
                    id: r.run_id,
                    pipeline: r.pipeline.clone(),
                    trigger: r.trigger_name.clone().unwrap_or_default(),
                    realm: r.realm_id.clone(),
                    status: r.status.clone(),
                    started: when(Some(r.started_at)),
                    duration: seconds(r).map_or_else(|| "—".into(), |s| format!("{s:.1} s")),
                    records: r.records,
                    requests: r.requests,
                    error: r
                        .error
                        .as_deref()
                        .map(|e| qbo_client::printable(e, 160))
                        .unwrap_or_default(),
                })
                .collect(),
        },
    )
}

struct EntityView {
    entity: String,
    status: String,
    mode: String,
    pages: i32,
    records: i64,
    expected: String,
    rows_written: i64,
    deleted: String,
    changes: String,
    requests: i32,
    retries: i32,
    throttled: i32,
    throttled_any: bool,
    chunks: String,
    note: String,
}

struct LogView {
    at: String,
    level: String,
    message: String,
}

#[derive(Template)]
#[template(path = "run.html")]
struct RunPage {
    page: Page,
    id: i64,
    status: String,
    pipeline: String,
    realm: String,
    trigger: String,
    started: String,
    finished: String,
    duration: String,
    params: String,
    validation: String,
    errors: Vec<String>,
    entities: Vec<EntityView>,
    log: Vec<LogView>,
}

pub async fn run(
    state: AppState,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    let Ok(id) = id.parse::<i64>() else {
        return message(
            &state,
            &caller,
            StatusCode::BAD_REQUEST,
            "Bad run id",
            "a run id is a whole number, as the runs list shows it",
            "/runs",
        );
    };
    let detail = match data::run_detail(state.runtime.pool(), id).await {
        Ok(Some(d)) => d,
        Ok(None) => {
            return message(
                &state,
                &caller,
                StatusCode::NOT_FOUND,
                "No such run",
                &format!("there is no run #{id}"),
                "/runs",
            );
        }
        Err(e) => return internal(&state, &caller, "run", &e),
    };
    let r = &detail.run;
    // The run's error, each failed entity's, then error lines of the log that say more.
    let mut errors: Vec<String> = r.error.iter().cloned().collect();
    let mut notes: Vec<&str> = Vec::new();
    for e in &detail.entities {
        if e.status == "failed"
            && let Some(n) = &e.note
        {
            notes.push(n);
            let line = format!("{}: {n}", e.entity);
            if !errors.iter().any(|x| x.contains(n.as_str())) {
                errors.push(line);
            }
        }
    }
    for l in &detail.log {
        if l.level == "error"
            && !errors.iter().any(|e| l.message.contains(e.as_str()))
            && !notes.iter().any(|n| l.message.contains(n))
        {
            errors.push(l.message.clone());
        }
    }
    let opt = |v: Option<i64>| v.map_or_else(String::new, |v| v.to_string());
    render(
        StatusCode::OK,
        &RunPage {
            page: Page::new(&state.auth, &caller, Current::Runs),
            id,
            status: r.status.clone(),
            pipeline: r.pipeline.clone(),
            realm: r.realm_id.clone(),
            trigger: r
                .trigger_name
                .clone()
                .unwrap_or_else(|| "— (started by hand)".into()),
            started: when(Some(r.started_at)),
            finished: when(r.finished_at),
            duration: detail
                .seconds
                .map_or_else(|| "—".into(), |s| format!("{s:.1} s")),
            params: r.params.to_string(),
            validation: match (r.validation_passed, &r.validation_evidence) {
                (None, _) => "not validated".into(),
                (Some(p), ev) => format!(
                    "{}{}",
                    if p { "passed" } else { "FAILED" },
                    ev.as_deref()
                        .map(|e| format!(", evidence in {e}"))
                        .unwrap_or_default()
                ),
            },
            errors: errors
                .iter()
                .map(|e| qbo_client::printable(e, 2000))
                .collect(),
            entities: detail
                .entities
                .iter()
                .map(|e| EntityView {
                    entity: e.entity.clone(),
                    status: e.status.clone(),
                    mode: e.mode.clone().unwrap_or_else(|| "backfill".into()),
                    pages: e.pages,
                    records: e.records,
                    expected: opt(e.expected),
                    rows_written: e.rows_written,
                    deleted: opt(e.rows_deleted),
                    changes: opt(e.changes),
                    requests: e.requests,
                    retries: e.retries,
                    throttled: e.throttled,
                    throttled_any: e.throttled > 0,
                    chunks: if e.chunks_total > 0 {
                        format!(
                            "{}/{} ({} proved unchanged)",
                            e.chunks_done, e.chunks_total, e.chunks_verified
                        )
                    } else {
                        String::new()
                    },
                    note: e
                        .note
                        .as_deref()
                        .map(|n| qbo_client::printable(n, 300))
                        .unwrap_or_default(),
                })
                .collect(),
            log: detail
                .log
                .iter()
                .map(|l| LogView {
                    at: l.at.format("%H:%M:%S%.3f").to_string(),
                    level: l.level.clone(),
                    message: qbo_client::printable(&l.message, 2000),
                })
                .collect(),
        },
    )
}

// ---------------------------------------------------------------------------------------------
// Usage

struct UsageView {
    realm: String,
    rpm: String,
    in_flight: String,
    throttled: String,
    throttled_any: bool,
    today: u64,
    month: u64,
    budget: String,
    budget_low: bool,
    expiry: String,
    expiry_class: &'static str,
}

#[derive(Template)]
#[template(path = "usage.html")]
struct UsagePage {
    page: Page,
    limit: u32,
    budget_note: String,
    rows: Vec<UsageView>,
}

pub async fn usage(state: AppState, Extension(caller): Extension<Caller>) -> Response {
    let rows = match data::usage(state.runtime.pool(), &state.runtime, &state.recent).await {
        Ok(r) => r,
        Err(e) => return internal(&state, &caller, "usage", &e),
    };
    let budget = state.runtime.app().monthly_budget;
    render(
        StatusCode::OK,
        &UsagePage {
            page: Page::new(&state.auth, &caller, Current::Usage),
            limit: state.runtime.http().requests_per_minute,
            budget_note: match budget {
                Some(b) => format!(
                    "Monthly budget: {b} calls per company (QBO_MONTHLY_CALL_BUDGET); a run stops cleanly before exceeding it."
                ),
                None => "No monthly budget is set (QBO_MONTHLY_CALL_BUDGET).".into(),
            },
            rows: rows
                .iter()
                .map(|u| {
                    let (expiry, expiry_class) =
                        token_text(u.has_token, u.refresh_token_expires_at);
                    UsageView {
                        realm: u.realm_id.clone(),
                        rpm: format!("{} / {}", u.requests_last_minute, u.requests_per_minute_limit),
                        in_flight: format!("{} / {}", u.in_flight, u.max_in_flight),
                        throttled: format!(
                            "{} / {}",
                            u.throttled_last_minute, u.throttled_this_month
                        ),
                        throttled_any: u.throttled_last_minute > 0,
                        today: u.calls_today,
                        month: u.calls_this_month,
                        budget: match (u.budget_left, u.monthly_budget) {
                            (Some(left), Some(b)) => format!("{left} of {b}"),
                            _ => "no budget".into(),
                        },
                        budget_low: matches!((u.budget_left, u.monthly_budget), (Some(l), Some(b)) if l * 10 < b),
                        expiry,
                        expiry_class,
                    }
                })
                .collect(),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_read_naturally() {
        assert_eq!(span(5.0), "5 s");
        assert_eq!(span(600.0), "10 min");
        assert_eq!(span(7200.0), "2.0 h");
        assert_eq!(span(3.0 * 86_400.0), "3 d");
    }

    #[test]
    fn charts_are_numbers_only() {
        let svg = chart("chart-x", &[(1.0, "succeeded"), (3.0, "<script>")]);
        assert!(svg.contains(r#"class="other""#), "{svg}");
        assert!(!svg.contains("<script>"));
        assert!(chart("c", &[]).contains("no data"));
    }

    #[test]
    fn runs_filters_are_checked() {
        let q = |status: &str, window: &str, limit: &str| RunsQuery {
            status: Some(status.into()),
            window: Some(window.into()),
            limit: Some(limit.into()),
            ..Default::default()
        };
        assert!(runs_filter(&q("failed", "7d", "50")).is_ok());
        assert!(runs_filter(&q("", "", "")).is_ok());
        assert!(
            runs_filter(&q("boom", "", ""))
                .unwrap_err()
                .contains("status")
        );
        assert!(
            runs_filter(&q("", "2y", ""))
                .unwrap_err()
                .contains("window")
        );
        assert!(runs_filter(&q("", "", "0")).unwrap_err().contains("limit"));
    }
}
