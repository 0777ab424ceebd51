//! The QBO v3 handlers: `/query` (GET `?query=` and POST `application/text`/`text/plain`),
//! read-one-entity, writes, change data capture, `/batch`, and QBO's answer for paths it does
//! not know. Each acts on the company (realm) its path names.
//!
//! In: requests that passed [`crate::faults::pipeline`] (authenticated, right realm, admitted).
//! Out: QBO's envelopes, built as text (payloads are already JSON text). Query pages are
//! rendered on a blocking thread after the store lock is released; `--mutate-during-paging`
//! edits happen after a page is rendered. A batch evaluates its items in request order, each
//! query exactly as `/query` would ([`evaluate_query`]), and answers HTTP 200 with one
//! `BatchItemResponse` entry per item, faults included (`docs/qbo-behaviour.md` §16).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use axum::extract::{OriginalUri, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::clock::{pacific_millis, pacific_secs, push_json_str};
use crate::faults::LoggedQuery;
use crate::generate::GenKind;
use crate::oauth::url_form;
use crate::realm::Realm;
use crate::respond::{self, FaultError, JSON_FAULT, JSON_OK, push_fault_member};
use crate::state::SandboxState;
use crate::store::{CdcRow, Page, QueryError, QueryOutcome, Store, WriteError, WriteOutcome};

type Params = Query<HashMap<String, String>>;

/// `let realm = company!(state, id);`: the company a path names. The pipeline has refused
/// unknown realms already (403); this answers the same should a handler be reached without it.
macro_rules! company {
    ($state:expr, $id:expr) => {
        match $state.realm(&$id) {
            Some(realm) => realm.clone(),
            None => return respond::forbidden($state.now()),
        }
    };
}

/// `GET /v3/company/{realm}/query?query=...`.
pub async fn query_get(
    State(state): State<Arc<SandboxState>>,
    Path(realm): Path<String>,
    Query(params): Params,
) -> Response {
    let realm = company!(state, realm);
    run_query(realm, params.get("query").cloned()).await
}

/// `POST /v3/company/{realm}/query` with the query as the body.
pub async fn query_post(
    State(state): State<Arc<SandboxState>>,
    Path(realm): Path<String>,
    Query(params): Params,
    headers: HeaderMap,
    body: String,
) -> Response {
    let realm = company!(state, realm);
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let text = if content_type.starts_with("application/x-www-form-urlencoded") {
        url_form(&body).remove("query")
    } else if body.trim().is_empty() {
        params.get("query").cloned()
    } else {
        Some(body)
    };
    run_query(realm, text).await
}

/// A query's answer as the member of an envelope: `"QueryResponse":{...}` or
/// `"Fault":{...}` (with the HTTP status `/query` gives it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Evaluated {
    Ok(String),
    Fault(StatusCode, String),
}

impl Evaluated {
    /// The `/query` answer: the member with the envelope's `time`.
    fn into_response(self, time: DateTime<Utc>) -> Response {
        let (status, content_type, member) = match self {
            Evaluated::Ok(member) => (StatusCode::OK, JSON_OK, member),
            Evaluated::Fault(status, member) => (status, JSON_FAULT, member),
        };
        let mut body = String::with_capacity(member.len() + 48);
        body.push('{');
        body.push_str(&member);
        body.push_str(",\"time\":");
        push_json_str(&mut body, &pacific_millis(time));
        body.push('}');
        respond::json(status, content_type, body)
    }
}

fn fault_member(status: StatusCode, errors: &[FaultError<'_>], kind: &str) -> Evaluated {
    let mut member = String::with_capacity(256);
    push_fault_member(&mut member, errors, kind);
    Evaluated::Fault(status, member)
}

fn one_error(message: &str, detail: &str, code: &str, element: Option<&str>) -> String {
    let mut member = String::with_capacity(256);
    push_fault_member(
        &mut member,
        &[FaultError {
            message,
            detail,
            code,
            element,
        }],
        "ValidationFault",
    );
    member
}

fn parse_fault(detail: &str) -> Evaluated {
    fault_member(
        StatusCode::BAD_REQUEST,
        &[FaultError {
            message: "Error parsing query",
            detail,
            code: "4000",
            element: None,
        }],
        "ValidationFault",
    )
}

fn system_fault_member() -> Evaluated {
    fault_member(
        StatusCode::INTERNAL_SERVER_ERROR,
        &[FaultError {
            message: "An application error has occurred while processing your request",
            detail: "System Failure Error: An unexpected error occurred while accessing or saving your data. Please wait a few minutes and try again. If the problem persists, contact customer support.",
            code: "10000",
            element: None,
        }],
        "SystemFault",
    )
}

async fn run_query(realm: Arc<Realm>, text: Option<String>) -> Response {
    let time = realm.now();
    let Some(text) = text else {
        return parse_fault("QueryParserError: Encountered \"<EOF>\" at line 1, column 0.")
            .into_response(time);
    };
    let mut response = evaluate_query(&realm, &text).await.into_response(time);
    response.extensions_mut().insert(LoggedQuery(text));
    response
}

/// One query against `realm`'s books, as `/query` and every batch item run it: parse (4000),
/// validate (4001), count or select a page, count the page in the stats, apply
/// `mutate_during_paging`.
pub async fn evaluate_query(realm: &Arc<Realm>, text: &str) -> Evaluated {
    let query = match qbo_query::parse(text) {
        Ok(q) => q,
        Err(e) => return parse_fault(&e.qbo_detail()),
    };
    // Payload conditions can scan a million records: keep that off the async workers.
    let worker = realm.clone();
    let joined = tokio::task::spawn_blocking(move || {
        let store = worker.store();
        (store.query(&query), store.generator().clone())
    })
    .await;
    let Ok((outcome, generator)) = joined else {
        return system_fault_member();
    };
    let page = match outcome {
        Err(QueryError::Validation(detail)) => {
            return fault_member(
                StatusCode::BAD_REQUEST,
                &[FaultError {
                    message: "Invalid query",
                    detail: &format!("QueryValidationError: {detail}"),
                    code: "4001",
                    element: None,
                }],
                "ValidationFault",
            );
        }
        Err(QueryError::Unavailable(_)) => {
            let mut member = String::with_capacity(256);
            respond::push_permission_denied_member(&mut member);
            return Evaluated::Fault(StatusCode::BAD_REQUEST, member);
        }
        Ok(QueryOutcome::Count(n)) => {
            return Evaluated::Ok(format!("\"QueryResponse\":{{\"totalCount\":{n}}}"));
        }
        Ok(QueryOutcome::Page(page)) => page,
    };
    let rows = page.rows.len();
    realm.note_page(rows);
    let touched: Vec<u64> = page
        .rows
        .iter()
        .take(realm.faults().mutate_during_paging as usize)
        .map(|r| r.id)
        .collect();
    let entity = page.entity.clone();
    let member = tokio::task::spawn_blocking(move || {
        let mut out = String::with_capacity(page.rows.len() * 2700 + 128);
        push_page_member(&mut out, &generator, &page);
        out
    })
    .await;
    let Ok(member) = member else {
        return system_fault_member();
    };
    if !touched.is_empty()
        && let Err(e) = realm.touch(&entity, &touched)
    {
        tracing::warn!(entity, error = %e, "mutate-during-paging edit failed");
    }
    Evaluated::Ok(member)
}

/// `"QueryResponse":{"<E>":[...],"startPosition":S,"maxResults":n}`, or `"QueryResponse":{}`
/// for the empty page.
fn push_page_member(out: &mut String, generator: &crate::generate::Generator, page: &Page) {
    out.push_str("\"QueryResponse\":{");
    if page.rows.is_empty() {
        out.push('}');
        return;
    }
    push_json_str(out, crate::catalog::response_key(&page.entity));
    out.push_str(":[");
    for (i, row) in page.rows.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        Store::render_into(generator, page.generated, row, out);
    }
    out.push_str("],\"startPosition\":");
    out.push_str(&page.start.to_string());
    out.push_str(",\"maxResults\":");
    out.push_str(&page.rows.len().to_string());
    out.push('}');
}

/// `{"QueryResponse":{"<E>":[...],"startPosition":S,"maxResults":n},"time":...}` or the empty
/// page `{"QueryResponse":{},"time":...}`.
pub fn page_body(
    generator: &crate::generate::Generator,
    page: &Page,
    time: DateTime<Utc>,
) -> String {
    let mut out = String::with_capacity(page.rows.len() * 2700 + 128);
    out.push('{');
    push_page_member(&mut out, generator, page);
    out.push_str(",\"time\":\"");
    out.push_str(&pacific_millis(time));
    out.push_str("\"}");
    out
}

/// QBO's answer for a resource it does not have (HTTP 400, code "500").
pub fn unsupported_operation(path: &str, time: DateTime<Utc>) -> Response {
    respond::fault(
        StatusCode::BAD_REQUEST,
        "Unsupported Operation",
        &format!(
            "Operation Could not find resource for relative : {path} of full path: https://c50.sandbox.qbo.intuit.com/qbo50{path} is not supported."
        ),
        "500",
        "ValidationFault",
        Some(time),
    )
}

const OBJECT_NOT_FOUND: &str = "Object Not Found : Something you're trying to use has been made inactive. Check the fields with accounts, customers, items, vendors or employees.";

/// `GET /v3/company/{realm}/{entity}/{id}`.
pub async fn read(
    State(state): State<Arc<SandboxState>>,
    Path((realm, entity, id)): Path<(String, String, String)>,
    OriginalUri(uri): OriginalUri,
) -> Response {
    let realm = company!(state, realm);
    let time = realm.now();
    let found = {
        let store = realm.store();
        let Some(canonical) = store.resolve(&entity) else {
            return unsupported_operation(uri.path(), time);
        };
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
            let body = respond::fault_body(
                &[FaultError {
                    message: "Invalid ID",
                    detail: &format!("Id should be a valid number. Supplied value:{id}"),
                    code: "2030",
                    element: Some("Id"),
                }],
                "ValidationFault",
                None,
            );
            return respond::json(StatusCode::BAD_REQUEST, JSON_FAULT, body);
        }
        if store.unavailable(&canonical).is_some() {
            return respond::permission_denied(time);
        }
        // Singletons are read at `/{entity}/{realm}` (their Id is "1").
        let numeric = if crate::catalog::is_singleton(&canonical) && id == realm.id() {
            Some(1)
        } else {
            id.parse::<u64>().ok()
        };
        numeric
            .and_then(|n| store.read(&canonical, n))
            .map(|(generated, row)| (canonical, generated, row, store.generator().clone()))
    };
    let Some((canonical, generated, row, generator)) = found else {
        return respond::fault(
            StatusCode::BAD_REQUEST,
            "Object Not Found",
            OBJECT_NOT_FOUND,
            "610",
            "ValidationFault",
            Some(time),
        );
    };
    realm.note_records(1);
    let mut out = String::with_capacity(4096);
    out.push('{');
    push_json_str(&mut out, crate::catalog::response_key(&canonical));
    out.push(':');
    Store::render_into(&generator, generated, &row, &mut out);
    out.push_str(",\"time\":\"");
    out.push_str(&pacific_millis(time));
    out.push_str("\"}");
    respond::json(StatusCode::OK, JSON_OK, out)
}

/// The fault (message, detail, code, element) QBO gives for a refused write; `None` for
/// [`WriteError::Unsupported`], whose answer depends on where the write came from.
fn write_fault(
    error: &WriteError,
) -> Option<(&'static str, String, &'static str, Option<&'static str>)> {
    Some(match error {
        WriteError::NotFound => ("Object Not Found", OBJECT_NOT_FOUND.to_owned(), "610", Some("")),
        WriteError::Stale => (
            "Stale Object Error",
            "Stale Object Error : You and another user were working on this at the same time. The other user finished before you did, so your work was not saved.".to_owned(),
            "5010",
            Some(""),
        ),
        WriteError::Duplicate => (
            "Duplicate Name Exists Error",
            "The name supplied already exists. : null".to_owned(),
            "6240",
            None,
        ),
        WriteError::Invalid(detail) => (
            "Request has invalid or unsupported property",
            format!("Property Name:{detail}"),
            "2010",
            None,
        ),
        WriteError::Unavailable => (
            "Permission Denied Error",
            "Permission Denied Error : You do not have the access rights to use this feature."
                .to_owned(),
            "5020",
            Some(""),
        ),
        WriteError::Unsupported => return None,
    })
}

/// `"<Entity>":{...}` for a write's outcome.
fn push_write_member(out: &mut String, canonical: &str, outcome: &WriteOutcome) {
    push_json_str(out, crate::catalog::response_key(canonical));
    out.push(':');
    match outcome {
        WriteOutcome::Record(value) => out.push_str(&value.to_string()),
        WriteOutcome::Deleted(id) => {
            out.push_str("{\"domain\":\"QBO\",\"status\":\"Deleted\",\"Id\":\"");
            out.push_str(&id.to_string());
            out.push_str("\"}");
        }
    }
}

/// `POST /v3/company/{realm}/{entity}[?operation=delete|void]`: create, update (sparse or
/// full; both merge the sent top-level properties), delete or void.
pub async fn write(
    State(state): State<Arc<SandboxState>>,
    Path((realm, entity)): Path<(String, String)>,
    Query(params): Params,
    OriginalUri(uri): OriginalUri,
    body: String,
) -> Response {
    let realm = company!(state, realm);
    let time = realm.now();
    let refuse = |error: WriteError| {
        let Some((message, detail, code, element)) = write_fault(&error) else {
            return unsupported_operation(uri.path(), time);
        };
        let body = respond::fault_body(
            &[FaultError {
                message,
                detail: &detail,
                code,
                element,
            }],
            "ValidationFault",
            Some(time),
        );
        respond::json(StatusCode::BAD_REQUEST, JSON_FAULT, body)
    };
    let body: Value = match serde_json::from_str(&body) {
        Ok(v) => v,
        Err(e) => return refuse(WriteError::Invalid(e.to_string())),
    };
    let operation = params.get("operation").map(|o| o.to_ascii_lowercase());
    let result = realm
        .store_mut()
        .write(&entity, body, operation.as_deref(), time.timestamp());
    let (canonical, outcome) = match result {
        Ok(done) => done,
        Err(error) => return refuse(error),
    };
    let mut out = String::with_capacity(2048);
    out.push('{');
    push_write_member(&mut out, &canonical, &outcome);
    out.push_str(",\"time\":\"");
    out.push_str(&pacific_millis(time));
    out.push_str("\"}");
    respond::json(StatusCode::OK, JSON_OK, out)
}

/// `GET /v3/company/{realm}/{entity}`: the singletons (`/preferences`; `/companyinfo`) are
/// read this way; any other entity is QBO's Unsupported Operation.
pub async fn read_singleton(
    State(state): State<Arc<SandboxState>>,
    Path((realm, entity)): Path<(String, String)>,
    OriginalUri(uri): OriginalUri,
) -> Response {
    let company = company!(state, realm);
    let singleton = company
        .store()
        .resolve(&entity)
        .filter(|c| crate::catalog::is_singleton(c));
    match singleton {
        Some(canonical) => {
            let uri = OriginalUri(uri);
            read(State(state), Path((realm, canonical, "1".to_owned())), uri).await
        }
        None => unsupported_operation(uri.path(), company.now()),
    }
}

/// Any other `/v3/company/{realm}/...` path.
pub async fn unsupported(
    State(state): State<Arc<SandboxState>>,
    OriginalUri(uri): OriginalUri,
) -> Response {
    let time = crate::faults::classify(uri.path())
        .1
        .and_then(|id| state.realm(id))
        .map_or_else(|| state.now(), |r| r.now());
    unsupported_operation(uri.path(), time)
}

fn cdc_refused(detail: &str, time: DateTime<Utc>) -> Response {
    respond::fault(
        StatusCode::BAD_REQUEST,
        "Unsupported Operation",
        detail,
        "500",
        "ValidationFault",
        Some(time),
    )
}

/// `GET /v3/company/{realm}/cdc?entities=A,B&changedSince=...`.
pub async fn cdc(
    State(state): State<Arc<SandboxState>>,
    Path(realm): Path<String>,
    Query(params): Params,
) -> Response {
    let realm = company!(state, realm);
    let time = realm.now();
    let (Some(entities), Some(since_text)) = (params.get("entities"), params.get("changedSince"))
    else {
        return cdc_refused(
            "Operation cdc requires the parameters entities and changedSince.",
            time,
        );
    };
    let Some(since) = qbo_query::parse_datetime(since_text.trim()) else {
        return cdc_refused(
            &format!("Operation cdc with changedSince date {since_text} is not a valid date."),
            time,
        );
    };
    if let Some(horizon) = state.config.cdc_horizon {
        let oldest = time - chrono::Duration::from_std(horizon).unwrap_or(chrono::Duration::MAX);
        if since.with_timezone(&Utc) < oldest {
            return cdc_refused(
                &format!(
                    "Operation cdc with changedSince date {since_text} which is older than fixed days is not supported."
                ),
                time,
            );
        }
    }
    let (sections, generator) = {
        let store = realm.store();
        let mut names = Vec::new();
        for raw in entities.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let Some(canonical) = store.resolve(raw) else {
                return cdc_refused(
                    &format!("Operation cdc for entity {raw} is not supported."),
                    time,
                );
            };
            if !crate::catalog::EntityKind::new(&canonical).cdc_supported() {
                return cdc_refused(
                    &format!("Operation cdc for entity {canonical} is not supported."),
                    time,
                );
            }
            if store.unavailable(&canonical).is_some() {
                return respond::permission_denied(time);
            }
            names.push(canonical);
        }
        if names.is_empty() {
            return cdc_refused("Operation cdc requires at least one entity.", time);
        }
        (
            store.changed_since(
                &names,
                since.timestamp_millis(),
                state.config.cdc_max_objects,
            ),
            store.generator().clone(),
        )
    };
    let served: usize = sections.iter().map(|s| s.2.len()).sum();
    realm.note_records(served);
    let body = tokio::task::spawn_blocking(move || cdc_body(&generator, &sections, time))
        .await
        .unwrap_or_default();
    respond::json(StatusCode::OK, JSON_OK, body)
}

fn cdc_body(
    generator: &crate::generate::Generator,
    sections: &[(String, Option<GenKind>, Vec<CdcRow>)],
    time: DateTime<Utc>,
) -> String {
    let mut out = String::from("{\"CDCResponse\":[{\"QueryResponse\":[");
    for (i, (entity, generated, rows)) in sections.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        if rows.is_empty() {
            out.push_str("{}");
            continue;
        }
        out.push('{');
        push_json_str(&mut out, crate::catalog::response_key(entity));
        out.push_str(":[");
        for (j, row) in rows.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            match row {
                CdcRow::Changed(row) => Store::render_into(generator, *generated, row, &mut out),
                CdcRow::Deleted { id, lut } => {
                    out.push_str("{\"domain\":\"QBO\",\"status\":\"Deleted\",\"Id\":\"");
                    out.push_str(&id.to_string());
                    out.push_str("\",\"MetaData\":{\"LastUpdatedTime\":\"");
                    out.push_str(&pacific_secs(*lut));
                    out.push_str("\"}}");
                }
            }
        }
        out.push_str("],\"startPosition\":1,\"maxResults\":");
        out.push_str(&rows.len().to_string());
        out.push('}');
    }
    out.push_str("]}],\"time\":\"");
    out.push_str(&pacific_millis(time));
    out.push_str("\"}");
    out
}

// ----- batch -----

/// A whole batch refused (HTTP 400, no item evaluated). QBO's exact answers for these are
/// unrecorded: the codes are inferred (`docs/qbo-behaviour.md` §16).
fn batch_refused(message: &str, detail: &str, code: &str, time: DateTime<Utc>) -> Response {
    respond::fault(
        StatusCode::BAD_REQUEST,
        message,
        detail,
        code,
        "ValidationFault",
        Some(time),
    )
}

const INVALID_PROPERTY: &str = "Request has invalid or unsupported property";

/// A batch item's `bId`: a non-empty string (or a number, read as its text).
fn batch_id(item: &Value) -> Option<String> {
    match item.get("bId")? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// `POST /v3/company/{realm}/batch` with `{"BatchItemRequest":[{"bId":..,"Query":..}, ...]}`:
/// HTTP 200 `{"BatchItemResponse":[{<answer>,"bId":..}, ...],"time":..}`, items in request
/// order. A query item answers `QueryResponse` or the `Fault` `/query` would give; a create,
/// update (`optionsData: "void"` voids) or delete item answers the record (or the deleted
/// stub) or the write's `Fault`; any other item answers an Unsupported Operation `Fault`.
pub async fn batch(
    State(state): State<Arc<SandboxState>>,
    Path(realm): Path<String>,
    body: String,
) -> Response {
    let realm = company!(state, realm);
    let time = realm.now();
    let root: Value = match serde_json::from_str(&body) {
        Ok(v) => v,
        Err(e) => {
            return batch_refused(
                INVALID_PROPERTY,
                &format!("Property Name:{e}"),
                "2010",
                time,
            );
        }
    };
    let Some(items) = root.get("BatchItemRequest").and_then(Value::as_array) else {
        return batch_refused(
            INVALID_PROPERTY,
            "Property Name:BatchItemRequest must be an array of batch items",
            "2010",
            time,
        );
    };
    let max = state.config.batch_max_items;
    if items.len() > max {
        return batch_refused(
            INVALID_PROPERTY,
            &format!(
                "Property Name:BatchItemRequest holds {} items; at most {max} are allowed in one batch request",
                items.len()
            ),
            "2010",
            time,
        );
    }
    let mut ids = Vec::with_capacity(items.len());
    let mut seen = HashSet::new();
    for item in items {
        let Some(id) = batch_id(item) else {
            return batch_refused(
                "Required param missing, need to supply the required value for the API",
                "Required parameter bId is missing in the request",
                "2020",
                time,
            );
        };
        if !seen.insert(id.clone()) {
            return batch_refused(
                INVALID_PROPERTY,
                &format!("Property Name:bId {id} is used by more than one batch item"),
                "2010",
                time,
            );
        }
        ids.push(id);
    }
    let mut out = String::from("{\"BatchItemResponse\":[");
    let mut queries = Vec::new();
    for (i, (item, id)) in items.iter().zip(&ids).enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('{');
        match item.get("Query") {
            Some(Value::String(text)) => {
                queries.push(text.clone());
                match evaluate_query(&realm, text).await {
                    Evaluated::Ok(member) | Evaluated::Fault(_, member) => out.push_str(&member),
                }
            }
            Some(_) => out.push_str(&one_error(
                INVALID_PROPERTY,
                "Property Name:Query must be a string",
                "2010",
                None,
            )),
            None => out.push_str(&batch_write(&realm, item, time)),
        }
        out.push_str(",\"bId\":");
        push_json_str(&mut out, id);
        out.push('}');
    }
    out.push_str("],\"time\":\"");
    out.push_str(&pacific_millis(time));
    out.push_str("\"}");
    let mut response = respond::json(StatusCode::OK, JSON_OK, out);
    if !queries.is_empty() {
        response
            .extensions_mut()
            .insert(LoggedQuery(queries.join("\n")));
    }
    response
}

/// The member answering a batch item that is not a query: `"<Entity>":{...}` or `"Fault":..`.
fn batch_write(realm: &Realm, item: &Value, time: DateTime<Utc>) -> String {
    let unsupported = |what: &str| {
        one_error(
            "Unsupported Operation",
            &format!("Operation {what} is not supported."),
            "500",
            None,
        )
    };
    let Some(operation) = item.get("operation").and_then(Value::as_str) else {
        return unsupported("batch item without Query or operation");
    };
    let operation = operation.to_ascii_lowercase();
    let void = item
        .get("optionsData")
        .and_then(Value::as_str)
        .is_some_and(|o| o.eq_ignore_ascii_case("void"));
    let mode = match (operation.as_str(), void) {
        ("create", false) | ("update", false) => None,
        ("update", true) => Some("void"),
        ("delete", false) => Some("delete"),
        _ => return unsupported(&operation),
    };
    let Some(object) = item.as_object() else {
        return unsupported(&operation);
    };
    let mut payloads = object
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "bId" | "operation" | "optionsData"));
    let (Some((entity, payload)), None) = (payloads.next(), payloads.next()) else {
        return one_error(
            INVALID_PROPERTY,
            "Property Name:a batch item with an operation needs exactly one entity object",
            "2010",
            None,
        );
    };
    let result = realm
        .store_mut()
        .write(entity, payload.clone(), mode, time.timestamp());
    match result {
        Ok((canonical, outcome)) => {
            let mut member = String::with_capacity(2048);
            push_write_member(&mut member, &canonical, &outcome);
            member
        }
        Err(error) => match write_fault(&error) {
            Some((message, detail, code, element)) => one_error(message, &detail, code, element),
            None => unsupported(&format!("{operation} for {entity}")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::{Generator, Meta};
    use crate::store::PageRow;
    use chrono::TimeZone;

    fn generator() -> Generator {
        Generator::new(1, 3, 3, 3)
    }

    #[test]
    fn empty_page_and_empty_cdc_shapes() {
        let t = Utc.timestamp_millis_opt(1_601_384_690_776).unwrap();
        let page = Page {
            entity: "Customer".into(),
            generated: None,
            start: 7,
            rows: Vec::new(),
        };
        assert_eq!(
            page_body(&generator(), &page, t),
            r#"{"QueryResponse":{},"time":"2020-09-29T06:04:50.776-07:00"}"#
        );
        let sections = vec![("Estimate".to_owned(), None, Vec::new())];
        assert_eq!(
            cdc_body(&generator(), &sections, t),
            r#"{"CDCResponse":[{"QueryResponse":[{}]}],"time":"2020-09-29T06:04:50.776-07:00"}"#
        );
    }

    #[test]
    fn page_echoes_start_and_counts_rows() {
        let g = generator();
        let t = Utc.timestamp_millis_opt(1_601_384_690_776).unwrap();
        let meta = Meta {
            create: 1_500_000_000,
            lut: 1_500_000_000,
            sync: 0,
            active: true,
        };
        let rows = (1..=2)
            .map(|id| PageRow {
                id,
                meta,
                stored: None,
            })
            .collect();
        let page = Page {
            entity: "Item".into(),
            generated: Some(GenKind::Item),
            start: 21,
            rows,
        };
        let body = page_body(&g, &page, t);
        assert!(body.starts_with(r#"{"QueryResponse":{"Item":[{"Name":"#));
        assert!(body.ends_with(
            r#"],"startPosition":21,"maxResults":2},"time":"2020-09-29T06:04:50.776-07:00"}"#
        ));
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["QueryResponse"]["Item"][1]["Id"], "2");
    }
}
