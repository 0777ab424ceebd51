//! The pages that change something: triggers (create, enable, disable, run now, delete),
//! validation (run it, read its report and evidence) and connecting a company (Intuit's
//! consent flow). Every change is a POST carrying the page's CSRF token; a refused one
//! answers 403 and changes nothing. Bad input re-renders the form with a message (400).

use super::auth::Caller;
use super::pages::{self, Current, Opt, Page, message, render, when};
use super::{AppState, WebState, forbidden, internal};
use crate::config::RealmId;
use crate::trigger::{self, TriggerInput};
use askama::Template;
use axum::extract::{Extension, Path};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Utc;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Forms

type FormResult<T> = Result<axum::Form<T>, axum::extract::rejection::FormRejection>;

/// A POSTed form, read and CSRF-checked: the form, or the answer refusing it (400 when it
/// cannot be read, 403 without this page's token).
fn checked_form<T: HasCsrf>(
    state: &WebState,
    caller: &Caller,
    headers: &HeaderMap,
    form: FormResult<T>,
    what: &str,
    back: &str,
) -> Result<T, Box<Response>> {
    let Ok(axum::Form(form)) = form else {
        return Err(Box::new(message(
            state,
            caller,
            StatusCode::BAD_REQUEST,
            "Bad request",
            &format!("the {what} form could not be read"),
            back,
        )));
    };
    if !state.auth.post_allowed(caller, headers, form.csrf()) {
        return Err(Box::new(forbidden(state, caller)));
    }
    Ok(form)
}

/// Forms carrying the page's CSRF token.
pub trait HasCsrf {
    fn csrf(&self) -> Option<&str>;
}

impl HasCsrf for TriggerForm {
    fn csrf(&self) -> Option<&str> {
        self.csrf.as_deref()
    }
}

impl HasCsrf for ValidateForm {
    fn csrf(&self) -> Option<&str> {
        self.csrf.as_deref()
    }
}

/// A redirect to `path` showing `text` as the page's flash (`?done=`).
fn done(path: &str, text: &str) -> Response {
    Redirect::to(&format!(
        "{path}?done={}",
        url::form_urlencoded::byte_serialize(text.as_bytes()).collect::<String>()
    ))
    .into_response()
}

// ---------------------------------------------------------------------------------------------
// Triggers

struct TriggerView {
    name: String,
    pipeline: String,
    realm: String,
    schedule: String,
    status: String,
    dom_status: &'static str,
    active: bool,
    next_fire: String,
    last_run_id: Option<i64>,
    last_outcome: String,
    last_error: String,
}

/// The create form's values (kept when it is sent back with a problem).
#[derive(Debug, Default, serde::Deserialize)]
pub struct TriggerForm {
    pub csrf: Option<String>,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub pipeline: String,
    #[serde(default)]
    pub realm: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub cron: String,
    #[serde(default)]
    pub once_at: String,
    #[serde(default)]
    pub timezone: String,
    #[serde(default)]
    pub start: String,
    #[serde(default)]
    pub end: String,
}

#[derive(Template)]
#[template(path = "triggers.html")]
struct TriggersPage {
    page: Page,
    triggers: Vec<TriggerView>,
    form: TriggerForm,
    form_once: bool,
    realms: Vec<Opt>,
    pipelines: Vec<String>,
}

async fn triggers_page(
    state: &WebState,
    caller: &Caller,
    status: StatusCode,
    form: TriggerForm,
    flash: Option<String>,
    problem: Option<String>,
) -> Response {
    let pool = state.runtime.pool();
    let (rows, realms) = match tokio::try_join!(trigger::list(pool), crate::realm::list(pool)) {
        Ok(x) => x,
        Err(e) => return internal(state, caller, "triggers", &e),
    };
    let mut page = Page::new(&state.auth, caller, Current::Triggers);
    page.flash = flash;
    page.problem = problem;
    let mut pipelines = vec!["qb_sync".to_string()];
    for e in crate::entity::Entity::all() {
        pipelines.push(e.spec().sync_pipeline.to_string());
        pipelines.push(e.pipeline_name().to_string());
    }
    render(
        status,
        &TriggersPage {
            page,
            triggers: rows
                .iter()
                .map(|t| TriggerView {
                    name: t.name.clone(),
                    pipeline: t.pipeline.clone(),
                    realm: t.realm_id.clone().unwrap_or_else(|| "— (none)".into()),
                    schedule: t.schedule_text(),
                    status: t.status.clone(),
                    dom_status: if t.status == "active" {
                        "enabled"
                    } else {
                        "disabled"
                    },
                    active: t.status == "active",
                    next_fire: when(t.next_fire_at),
                    last_run_id: t.last_run_id,
                    last_outcome: t.last_outcome.clone().unwrap_or_default(),
                    last_error: t
                        .last_error
                        .as_deref()
                        .map(|e| qbo_client::printable(e, 200))
                        .unwrap_or_default(),
                })
                .collect(),
            form_once: form.kind == "once",
            realms: realms
                .iter()
                .map(|r| Opt {
                    value: r.realm_id.clone(),
                    label: r.realm_id.clone(),
                    selected: r.realm_id == form.realm,
                })
                .collect(),
            form,
            pipelines,
        },
    )
}

#[derive(serde::Deserialize)]
pub struct DoneQuery {
    done: Option<String>,
}

pub async fn triggers(
    state: AppState,
    Extension(caller): Extension<Caller>,
    axum::extract::Query(q): axum::extract::Query<DoneQuery>,
) -> Response {
    let form = TriggerForm {
        kind: "cron".into(),
        timezone: "UTC".into(),
        ..Default::default()
    };
    let flash = q.done.map(|d| qbo_client::printable(&d, 200));
    triggers_page(&state, &caller, StatusCode::OK, form, flash, None).await
}

pub async fn create_trigger(
    state: AppState,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    form: FormResult<TriggerForm>,
) -> Response {
    let form = match checked_form(&state, &caller, &headers, form, "trigger", "/triggers") {
        Ok(f) => f,
        Err(refused) => return *refused,
    };
    let trim = |s: &str| Some(s.trim().to_string()).filter(|s| !s.is_empty());
    let mut variables = crate::pipelines::Variables::new();
    if let Some(f) = trim(&form.start) {
        variables.insert("fecha_inicio".into(), f);
    }
    if let Some(t) = trim(&form.end) {
        variables.insert("fecha_fin".into(), t);
    }
    let once = form.kind == "once";
    let mut problems = Vec::new();
    if form.kind != "once" && form.kind != "cron" {
        problems.push("kind must be once or cron".to_string());
    }
    if trim(&form.realm).is_none() {
        problems.push("choose the company the trigger runs for (connect one first)".into());
    }
    let input = TriggerInput {
        name: form.name.trim().to_string(),
        pipeline: form.pipeline.trim().to_string(),
        realm: trim(&form.realm),
        once_at: if once { trim(&form.once_at) } else { None },
        cron: if once { None } else { trim(&form.cron) },
        timezone: trim(&form.timezone),
        variables,
        source: "dashboard".into(),
        ..Default::default()
    };
    if once && input.once_at.is_none() {
        problems.push("a one-time trigger needs 'Once at'".into());
    }
    if !once && input.cron.is_none() {
        problems.push(
            "a recurring trigger needs a cron expression (e.g. */15 * * * * or @daily)".into(),
        );
    }
    let spec = match input.validate() {
        Ok(spec) => Some(spec),
        Err(more) => {
            problems.extend(more);
            None
        }
    };
    let Some(spec) = spec.filter(|_| problems.is_empty()) else {
        return triggers_page(
            &state,
            &caller,
            StatusCode::BAD_REQUEST,
            form,
            None,
            Some(problems.join("; ")),
        )
        .await;
    };
    let pool = state.runtime.pool();
    match crate::realm::list(pool).await {
        Ok(realms)
            if realms
                .iter()
                .any(|r| Some(&r.realm_id) == spec.realm.as_ref()) => {}
        Ok(_) => {
            return triggers_page(
                &state,
                &caller,
                StatusCode::BAD_REQUEST,
                form,
                None,
                Some("that company is not registered".into()),
            )
            .await;
        }
        Err(e) => return internal(&state, &caller, "triggers", &e),
    }
    match trigger::create(pool, &spec, Utc::now()).await {
        Ok(row) => {
            state.wake_scheduler();
            done(
                "/triggers",
                &format!("Trigger {} created: {}", row.name, row.schedule_text()),
            )
        }
        Err(e) => {
            let text = format!("{e:#}");
            triggers_page(
                &state,
                &caller,
                StatusCode::BAD_REQUEST,
                form,
                None,
                Some(text),
            )
            .await
        }
    }
}

/// How long "run now" waits for the scheduler to start the run before answering.
const RUN_NOW_WAIT: Duration = Duration::from_secs(10);

pub async fn trigger_action(
    state: AppState,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Path((name, action)): Path<(String, String)>,
    form: FormResult<pages::CsrfForm>,
) -> Response {
    if let Some(refused) = super::csrf_refusal(&state, &caller, &headers, &form) {
        return refused;
    }
    if let Err(e) = trigger::validate_name(&name) {
        return message(
            &state,
            &caller,
            StatusCode::BAD_REQUEST,
            "Bad trigger name",
            &e,
            "/triggers",
        );
    }
    let pool = state.runtime.pool();
    let done = |text: String| done("/triggers", &text);
    let failed = |e: anyhow::Error| {
        let usage = e.downcast_ref::<crate::app::UsageError>().is_some();
        message(
            &state,
            &caller,
            if usage {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::INTERNAL_SERVER_ERROR
            },
            "The trigger was not changed",
            &format!("{e:#}"),
            "/triggers",
        )
    };
    match action.as_str() {
        "enable" => match trigger::enable(pool, &name, None, None, Utc::now()).await {
            Ok(row) => {
                state.wake_scheduler();
                done(format!(
                    "Trigger {name} enabled; next fire {}",
                    when(row.next_fire_at)
                ))
            }
            Err(e) => failed(e),
        },
        "disable" => match trigger::disable(pool, &name).await {
            Ok(_) => done(format!("Trigger {name} disabled")),
            Err(e) => failed(e),
        },
        "delete" => match trigger::delete(pool, &name).await {
            Ok(()) => done(format!("Trigger {name} deleted")),
            Err(e) => failed(e),
        },
        "run" => run_now(&state, &caller, &name).await,
        other => message(
            &state,
            &caller,
            StatusCode::NOT_FOUND,
            "No such action",
            &format!(
                "'{}' is not a trigger action: use enable, disable, run or delete",
                qbo_client::printable(other, 40)
            ),
            "/triggers",
        ),
    }
}

/// Makes an active trigger due now and wakes the scheduler; answers with the run it starts
/// (or, when no scheduler takes it within [`RUN_NOW_WAIT`], with the triggers page saying
/// it is due).
async fn run_now(state: &WebState, caller: &Caller, name: &str) -> Response {
    let pool = state.runtime.pool();
    let before: Option<Option<i64>> = match sqlx::query_scalar(
        "UPDATE qbo_pipeline.triggers SET next_fire_at = now(), attempts = 0, updated_at = now()
         WHERE name = $1 AND status = 'active' AND claimed_at IS NULL RETURNING last_run_id",
    )
    .bind(name)
    .fetch_optional(pool)
    .await
    {
        Ok(r) => r,
        Err(e) => return internal(state, caller, "run now", &e),
    };
    let Some(before) = before else {
        let row = trigger::get(pool, name).await.ok().flatten();
        let why = match row {
            None => format!("there is no trigger named {name}"),
            Some(r) if r.claimed_at.is_some() => format!("trigger {name} is running now"),
            Some(_) => format!("trigger {name} is disabled: enable it first"),
        };
        return message(
            state,
            caller,
            StatusCode::CONFLICT,
            "Not started",
            &why,
            "/triggers",
        );
    };
    tracing::info!(trigger = name, "run now (dashboard)");
    state.wake_scheduler();
    let deadline = Instant::now() + RUN_NOW_WAIT;
    while Instant::now() < deadline && state.scheduler.is_some() {
        let started: Option<i64> = sqlx::query_scalar(
            "SELECT run_id FROM qbo_pipeline.runs WHERE trigger_name = $1 AND run_id > coalesce($2, 0)
             ORDER BY run_id DESC LIMIT 1",
        )
        .bind(name)
        .bind(before)
        .fetch_optional(pool)
        .await
        .ok()
        .flatten();
        if let Some(id) = started {
            return Redirect::to(&format!("/runs/{id}")).into_response();
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    done(
        "/triggers",
        &format!(
            "Trigger {name} is due now: {}",
            if state.scheduler.is_some() {
                "the scheduler starts it as soon as it is free"
            } else {
                "this server runs no scheduler (--no-scheduler); a scheduler sharing the database will fire it"
            }
        ),
    )
}

// ---------------------------------------------------------------------------------------------
// Validation

struct CheckView {
    name: String,
    entity: String,
    window: String,
    status: &'static str,
    detail: String,
}

struct ReportView {
    id: i64,
    realm: String,
    outcome: &'static str,
    passed: bool,
    created: String,
    run: String,
    failed: i32,
    evidence: Vec<(String, String)>,
    checks: Vec<CheckView>,
}

struct HistoryView {
    id: i64,
    realm: String,
    created: String,
    run: String,
    outcome: &'static str,
    failed: i32,
}

#[derive(Template)]
#[template(path = "validation.html")]
struct ValidationPage {
    page: Page,
    realms: Vec<String>,
    report: Option<ReportView>,
    history: Vec<HistoryView>,
}

/// The files a validation's evidence folder holds (see `validate::Report::archive`).
pub const EVIDENCE_FILES: [&str; 4] = ["report.md", "report.json", "report.html", "queries.sql"];

async fn validation_page(
    state: &WebState,
    caller: &Caller,
    status: StatusCode,
    id: Option<i64>,
    problem: Option<String>,
) -> Response {
    let pool = state.runtime.pool();
    let (realms, history) =
        match tokio::try_join!(crate::realm::list(pool), super::data::validations(pool, 50)) {
            Ok(x) => x,
            Err(e) => return internal(state, caller, "validation", &e),
        };
    let report = match id {
        None => None,
        Some(id) => match super::data::validation(pool, id).await {
            Ok(Some((row, report))) => Some(ReportView {
                id: row.validation_id,
                realm: row
                    .realm_id
                    .clone()
                    .unwrap_or_else(|| "every company".into()),
                outcome: if row.passed { "pass" } else { "fail" },
                passed: row.passed,
                created: when(Some(row.created_at)),
                run: row.run_id.map_or_else(|| "—".into(), |r| format!("#{r}")),
                failed: row.checks_failed,
                evidence: if row.evidence_dir.is_some() {
                    EVIDENCE_FILES
                        .iter()
                        .map(|f| (f.to_string(), format!("/validation/{id}/evidence/{f}")))
                        .collect()
                } else {
                    Vec::new()
                },
                checks: report["checks"]
                    .as_array()
                    .map(|checks| {
                        checks
                            .iter()
                            .map(|c| CheckView {
                                name: c["name"].as_str().unwrap_or("").to_string(),
                                entity: c["entity"].as_str().unwrap_or("").to_string(),
                                window: c["window"].as_str().unwrap_or("").to_string(),
                                status: if c["passed"].as_bool() == Some(true) {
                                    "pass"
                                } else {
                                    "fail"
                                },
                                detail: qbo_client::printable(
                                    c["detail"].as_str().unwrap_or(""),
                                    500,
                                ),
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            }),
            Ok(None) => {
                return message(
                    state,
                    caller,
                    StatusCode::NOT_FOUND,
                    "No such validation",
                    &format!("there is no validation #{id}"),
                    "/validation",
                );
            }
            Err(e) => return internal(state, caller, "validation", &e),
        },
    };
    let mut page = Page::new(&state.auth, caller, Current::Validation);
    page.problem = problem;
    render(
        status,
        &ValidationPage {
            page,
            realms: realms.into_iter().map(|r| r.realm_id).collect(),
            report,
            history: history
                .iter()
                .map(|v| HistoryView {
                    id: v.validation_id,
                    realm: v.realm_id.clone().unwrap_or_else(|| "every company".into()),
                    created: when(Some(v.created_at)),
                    run: v.run_id.map_or_else(|| "—".into(), |r| format!("#{r}")),
                    outcome: if v.passed { "pass" } else { "fail" },
                    failed: v.checks_failed,
                })
                .collect(),
        },
    )
}

pub async fn validation(state: AppState, Extension(caller): Extension<Caller>) -> Response {
    let latest = super::data::validations(state.runtime.pool(), 1)
        .await
        .ok()
        .and_then(|v| v.first().map(|v| v.validation_id));
    validation_page(&state, &caller, StatusCode::OK, latest, None).await
}

pub async fn validation_one(
    state: AppState,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    match id.parse::<i64>() {
        Ok(id) => validation_page(&state, &caller, StatusCode::OK, Some(id), None).await,
        Err(_) => message(
            &state,
            &caller,
            StatusCode::BAD_REQUEST,
            "Bad validation id",
            "a validation id is a whole number",
            "/validation",
        ),
    }
}

#[derive(serde::Deserialize)]
pub struct ValidateForm {
    csrf: Option<String>,
    realm: Option<String>,
    deep: Option<String>,
}

pub async fn validate(
    state: AppState,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    form: FormResult<ValidateForm>,
) -> Response {
    let form = match checked_form(&state, &caller, &headers, form, "validation", "/validation") {
        Ok(f) => f,
        Err(refused) => return *refused,
    };
    let realm = match form.realm.as_deref().map(RealmId::parse) {
        Some(Ok(r)) => r,
        Some(Err(e)) => {
            return validation_page(&state, &caller, StatusCode::BAD_REQUEST, None, Some(e)).await;
        }
        None => {
            return validation_page(
                &state,
                &caller,
                StatusCode::BAD_REQUEST,
                None,
                Some("choose a company".into()),
            )
            .await;
        }
    };
    let runtime = &state.runtime;
    if let Err(e) = runtime
        .realms(&crate::realm::Selection::Realms(vec![realm.clone()]))
        .await
    {
        return validation_page(
            &state,
            &caller,
            StatusCode::BAD_REQUEST,
            None,
            Some(format!("{e:#}")),
        )
        .await;
    }
    let outcome = async {
        let engine = runtime.engine(&realm)?;
        let opts = crate::validate::ValidateOptions {
            entities: crate::entity::Entity::ALL.to_vec(),
            window: None,
            deep: form.deep.is_some(),
        };
        let report = crate::validate::validate(
            runtime.pool(),
            Some((engine.client.as_ref(), realm.as_str())),
            &opts,
        )
        .await?;
        let evidence = report.archive(&state.evidence_dir)?;
        report.record(runtime.pool(), Some(&evidence)).await?;
        let id: i64 = sqlx::query_scalar(
            "SELECT max(validation_id) FROM qbo_pipeline.validations WHERE realm_id = $1",
        )
        .bind(realm.as_str())
        .fetch_one(runtime.pool())
        .await?;
        anyhow::Ok(id)
    }
    .await;
    match outcome {
        Ok(id) => Redirect::to(&format!("/validation/{id}")).into_response(),
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), realm = %realm, "validation from the dashboard failed");
            validation_page(
                &state,
                &caller,
                StatusCode::BAD_GATEWAY,
                None,
                Some(format!("the validation could not run: {e:#}")),
            )
            .await
        }
    }
}

pub async fn evidence(
    state: AppState,
    Extension(caller): Extension<Caller>,
    Path((id, file)): Path<(String, String)>,
) -> Response {
    let (Ok(id), Some(file)) = (
        id.parse::<i64>(),
        EVIDENCE_FILES.iter().find(|f| **f == file),
    ) else {
        return message(
            &state,
            &caller,
            StatusCode::NOT_FOUND,
            "No such evidence",
            &format!("evidence files are {}", EVIDENCE_FILES.join(", ")),
            "/validation",
        );
    };
    let dir = match super::data::validation(state.runtime.pool(), id).await {
        Ok(Some((row, _))) => row.evidence_dir,
        Ok(None) => None,
        Err(e) => return internal(&state, &caller, "evidence", &e),
    };
    let Some(dir) = dir else {
        return message(
            &state,
            &caller,
            StatusCode::NOT_FOUND,
            "No evidence",
            &format!("validation #{id} archived no evidence"),
            "/validation",
        );
    };
    match tokio::fs::read(std::path::Path::new(&dir).join(file)).await {
        Ok(body) => (
            [(
                header::CONTENT_TYPE,
                match file.rsplit('.').next() {
                    Some("html") => "text/html; charset=utf-8",
                    Some("json") => "application/json",
                    _ => "text/plain; charset=utf-8",
                },
            )],
            body,
        )
            .into_response(),
        Err(e) => message(
            &state,
            &caller,
            StatusCode::NOT_FOUND,
            "Evidence not readable",
            &format!(
                "{file} of validation #{id} cannot be read on this machine ({}): it was archived in {dir}",
                e.kind()
            ),
            "/validation",
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// Connecting a company

/// Consent flows started from this server, by `state`, until used or expired.
#[derive(Default)]
pub struct Consents {
    pending: Mutex<HashMap<String, (Instant, String)>>,
}

const CONSENT_TTL: Duration = Duration::from_secs(15 * 60);
const MAX_CONSENTS: usize = 64;

impl Consents {
    fn start(&self, redirect: String) -> String {
        let state: String = (0..32)
            .map(|_| format!("{:x}", rand::random::<u8>() & 0x0f))
            .collect();
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.retain(|_, (at, _)| at.elapsed() < CONSENT_TTL);
        if pending.len() >= MAX_CONSENTS
            && let Some(oldest) = pending
                .iter()
                .min_by_key(|(_, (at, _))| *at)
                .map(|(k, _)| k.clone())
        {
            pending.remove(&oldest);
        }
        pending.insert(state.clone(), (Instant::now(), redirect));
        state
    }

    /// The redirect URI of a pending flow; each `state` is used once.
    fn take(&self, state: &str) -> Option<String> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let (at, redirect) = pending.remove(state)?;
        (at.elapsed() < CONSENT_TTL).then_some(redirect)
    }
}

/// This server's URL as the browser reaches it.
fn base_url(state: &WebState, headers: &HeaderMap) -> Option<String> {
    if let Some(base) = &state.public_url {
        return Some(base.trim_end_matches('/').to_string());
    }
    let host = headers.get(header::HOST)?.to_str().ok()?;
    host.chars()
        .all(|c| c.is_ascii_alphanumeric() || ".:-[]".contains(c))
        .then(|| format!("http://{host}"))
}

pub async fn connect(
    state: AppState,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    form: FormResult<pages::CsrfForm>,
) -> Response {
    if let Some(refused) = super::csrf_refusal(&state, &caller, &headers, &form) {
        return refused;
    }
    let Some(base) = base_url(&state, &headers) else {
        return message(
            &state,
            &caller,
            StatusCode::BAD_REQUEST,
            "Cannot connect",
            "the request has no usable Host header: start serve with --public-url",
            "/",
        );
    };
    let redirect = format!("{base}/connect/callback");
    let flow = state.consents.start(redirect.clone());
    let mut url = state.auth_url.clone();
    url.query_pairs_mut()
        .append_pair("client_id", &state.runtime.app().client_id)
        .append_pair("response_type", "code")
        .append_pair("scope", crate::cli_connect::SCOPE)
        .append_pair("redirect_uri", &redirect)
        .append_pair("state", &flow);
    tracing::info!("connect a company: sending the browser to Intuit's consent page");
    Redirect::to(url.as_str()).into_response()
}

#[derive(serde::Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    #[serde(rename = "realmId")]
    realm_id: Option<String>,
    error: Option<String>,
}

pub async fn callback(
    state: AppState,
    Extension(caller): Extension<Caller>,
    query: Result<axum::extract::Query<CallbackQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let bad = |text: &str| {
        message(
            &state,
            &caller,
            StatusCode::BAD_REQUEST,
            "Company not connected",
            text,
            "/",
        )
    };
    let Ok(axum::extract::Query(q)) = query else {
        return bad("Intuit's answer could not be read; nothing was stored");
    };
    let Some(redirect) = q.state.as_deref().and_then(|s| state.consents.take(s)) else {
        tracing::warn!("connect callback refused: unknown, used or expired state");
        return bad(
            "this answer does not belong to a connection started here (wrong, used or expired state); nothing was stored. Start again with \"Connect a company\".",
        );
    };
    if let Some(e) = q.error {
        return bad(&format!(
            "Intuit answered {}: the consent was refused or failed; nothing was stored",
            qbo_client::printable(&e, 60)
        ));
    }
    let (Some(code), Some(realm)) = (q.code, q.realm_id) else {
        return bad("Intuit's answer has no code or realmId; nothing was stored");
    };
    let realm = match RealmId::parse(&realm) {
        Ok(r) => r,
        Err(e) => return bad(&format!("Intuit's answer names a bad realmId: {e}")),
    };
    let runtime = &state.runtime;
    let token =
        match crate::cli_connect::exchange(runtime.app(), runtime.http(), &code, &redirect).await {
            Ok(t) => t,
            Err(e) => {
                return message(
                    &state,
                    &caller,
                    StatusCode::BAD_GATEWAY,
                    "Company not connected",
                    &format!("{e}; nothing was stored"),
                    "/",
                );
            }
        };
    match crate::cli_realm::prove_and_store_quiet(
        runtime.app(),
        runtime.http(),
        runtime.db(),
        &realm,
        token,
        runtime.stop(),
    )
    .await
    {
        Ok(stored) => {
            tracing::info!(realm = %realm, new = stored.registered, "company connected from the dashboard");
            Redirect::to(&format!("/?connected={}", realm.as_str())).into_response()
        }
        Err(e) => message(
            &state,
            &caller,
            StatusCode::BAD_GATEWAY,
            "Company not connected",
            &format!("{e:#}"),
            "/",
        ),
    }
}
