//! The QBO v3 handlers: `/query` (GET `?query=` and POST `application/text`/`text/plain`),
//! read-one-entity, change data capture, and QBO's answer for paths it does not know.
//!
//! In: requests that passed [`crate::faults::pipeline`] (authenticated, right realm, admitted).
//! Out: QBO's envelopes, built as text (payloads are already JSON text). Query pages are
//! rendered on a blocking thread after the store lock is released; `--mutate-during-paging`
//! edits happen after a page is rendered.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{OriginalUri, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use chrono::{DateTime, Utc};

use crate::clock::{pacific_millis, pacific_secs, push_json_str};
use crate::faults::LoggedQuery;
use crate::generate::GenKind;
use crate::oauth::url_form;
use crate::respond::{self, FaultError, JSON_FAULT, JSON_OK};
use crate::state::SandboxState;
use crate::store::{CdcRow, Page, QueryError, QueryOutcome, Store, WriteError, WriteOutcome};

type Params = Query<HashMap<String, String>>;

/// `GET /v3/company/{realm}/query?query=...`.
pub async fn query_get(State(state): State<Arc<SandboxState>>, Query(params): Params) -> Response {
    run_query(state, params.get("query").cloned()).await
}

/// `POST /v3/company/{realm}/query` with the query as the body.
pub async fn query_post(
    State(state): State<Arc<SandboxState>>,
    Query(params): Params,
    headers: HeaderMap,
    body: String,
) -> Response {
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
    run_query(state, text).await
}

async fn run_query(state: Arc<SandboxState>, text: Option<String>) -> Response {
    let time = state.now();
    let Some(text) = text else {
        return respond::parse_error(
            "QueryParserError: Encountered \"<EOF>\" at line 1, column 0.",
            time,
        );
    };
    let mut response = answer_query(&state, &text, time).await;
    response.extensions_mut().insert(LoggedQuery(text));
    response
}

async fn answer_query(state: &Arc<SandboxState>, text: &str, time: DateTime<Utc>) -> Response {
    let query = match qbo_query::parse(text) {
        Ok(q) => q,
        Err(e) => return respond::parse_error(&e.qbo_detail(), time),
    };
    // Payload conditions can scan a million records: keep that off the async workers.
    let worker = state.clone();
    let joined = tokio::task::spawn_blocking(move || {
        let store = worker.store();
        (store.query(&query), store.generator().clone())
    })
    .await;
    let Ok((outcome, generator)) = joined else {
        return respond::system_fault(StatusCode::INTERNAL_SERVER_ERROR, time);
    };
    let page = match outcome {
        Err(QueryError::Validation(detail)) => return respond::validation_error(&detail, time),
        Err(QueryError::Unavailable(_)) => return respond::permission_denied(time),
        Ok(QueryOutcome::Count(n)) => {
            let body = format!(
                "{{\"QueryResponse\":{{\"totalCount\":{n}}},\"time\":\"{}\"}}",
                pacific_millis(time)
            );
            return respond::json(StatusCode::OK, JSON_OK, body);
        }
        Ok(QueryOutcome::Page(page)) => page,
    };
    let rows = page.rows.len();
    state.note_page(rows);
    let touched: Vec<u64> = page
        .rows
        .iter()
        .take(state.faults().mutate_during_paging as usize)
        .map(|r| r.id)
        .collect();
    let entity = page.entity.clone();
    let body = tokio::task::spawn_blocking(move || page_body(&generator, &page, time))
        .await
        .unwrap_or_else(|_| String::new());
    if !touched.is_empty()
        && let Err(e) = state.touch(&entity, &touched)
    {
        tracing::warn!(entity, error = %e, "mutate-during-paging edit failed");
    }
    respond::json(StatusCode::OK, JSON_OK, body)
}

/// `{"QueryResponse":{"<E>":[...],"startPosition":S,"maxResults":n},"time":...}` or the empty
/// page `{"QueryResponse":{},"time":...}`.
pub fn page_body(
    generator: &crate::generate::Generator,
    page: &Page,
    time: DateTime<Utc>,
) -> String {
    if page.rows.is_empty() {
        return format!(
            "{{\"QueryResponse\":{{}},\"time\":\"{}\"}}",
            pacific_millis(time)
        );
    }
    let mut out = String::with_capacity(page.rows.len() * 2700 + 128);
    out.push_str("{\"QueryResponse\":{");
    push_json_str(&mut out, crate::catalog::response_key(&page.entity));
    out.push_str(":[");
    for (i, row) in page.rows.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        Store::render_into(generator, page.generated, row, &mut out);
    }
    out.push_str("],\"startPosition\":");
    out.push_str(&page.start.to_string());
    out.push_str(",\"maxResults\":");
    out.push_str(&page.rows.len().to_string());
    out.push_str("},\"time\":\"");
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

/// `GET /v3/company/{realm}/{entity}/{id}`.
pub async fn read(
    State(state): State<Arc<SandboxState>>,
    Path((_realm, entity, id)): Path<(String, String, String)>,
    OriginalUri(uri): OriginalUri,
) -> Response {
    let time = state.now();
    let found = {
        let store = state.store();
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
        let numeric = if crate::catalog::is_singleton(&canonical) && id == state.realm_id() {
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
            "Object Not Found : Something you're trying to use has been made inactive. Check the fields with accounts, customers, items, vendors or employees.",
            "610",
            "ValidationFault",
            Some(time),
        );
    };
    state.note_records(1);
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

/// `POST /v3/company/{realm}/{entity}[?operation=delete|void]`: create, update (sparse or
/// full; both merge the sent top-level properties), delete or void.
pub async fn write(
    State(state): State<Arc<SandboxState>>,
    Path((_realm, entity)): Path<(String, String)>,
    Query(params): Params,
    OriginalUri(uri): OriginalUri,
    body: String,
) -> Response {
    let time = state.now();
    let fault = |message: &str, detail: &str, code: &str, element: Option<&str>| {
        let body = respond::fault_body(
            &[FaultError {
                message,
                detail,
                code,
                element,
            }],
            "ValidationFault",
            Some(time),
        );
        respond::json(StatusCode::BAD_REQUEST, JSON_FAULT, body)
    };
    let invalid = |detail: &str| {
        fault(
            "Request has invalid or unsupported property",
            &format!("Property Name:{detail}"),
            "2010",
            None,
        )
    };
    let body: serde_json::Value = match serde_json::from_str(&body) {
        Ok(v) => v,
        Err(e) => return invalid(&e.to_string()),
    };
    let operation = params.get("operation").map(|o| o.to_ascii_lowercase());
    let result = state
        .store_mut()
        .write(&entity, body, operation.as_deref(), time.timestamp());
    let (canonical, outcome) = match result {
        Ok(done) => done,
        Err(WriteError::NotFound) => {
            return fault(
                "Object Not Found",
                "Object Not Found : Something you're trying to use has been made inactive. Check the fields with accounts, customers, items, vendors or employees.",
                "610",
                Some(""),
            );
        }
        Err(WriteError::Stale) => {
            return fault(
                "Stale Object Error",
                "Stale Object Error : You and another user were working on this at the same time. The other user finished before you did, so your work was not saved.",
                "5010",
                Some(""),
            );
        }
        Err(WriteError::Duplicate) => {
            return fault(
                "Duplicate Name Exists Error",
                "The name supplied already exists. : null",
                "6240",
                None,
            );
        }
        Err(WriteError::Invalid(detail)) => return invalid(&detail),
        Err(WriteError::Unsupported) => return unsupported_operation(uri.path(), time),
    };
    let mut out = String::with_capacity(2048);
    out.push('{');
    push_json_str(&mut out, crate::catalog::response_key(&canonical));
    out.push(':');
    match outcome {
        WriteOutcome::Record(value) => out.push_str(&value.to_string()),
        WriteOutcome::Deleted(id) => {
            out.push_str("{\"domain\":\"QBO\",\"status\":\"Deleted\",\"Id\":\"");
            out.push_str(&id.to_string());
            out.push_str("\"}");
        }
    }
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
    let singleton = state
        .store()
        .resolve(&entity)
        .filter(|c| crate::catalog::is_singleton(c));
    match singleton {
        Some(canonical) => {
            let uri = OriginalUri(uri);
            read(State(state), Path((realm, canonical, "1".to_owned())), uri).await
        }
        None => unsupported_operation(uri.path(), state.now()),
    }
}

/// Any other `/v3/company/{realm}/...` path.
pub async fn unsupported(
    State(state): State<Arc<SandboxState>>,
    OriginalUri(uri): OriginalUri,
) -> Response {
    unsupported_operation(uri.path(), state.now())
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
pub async fn cdc(State(state): State<Arc<SandboxState>>, Query(params): Params) -> Response {
    let time = state.now();
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
        let store = state.store();
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
    state.note_records(served);
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
