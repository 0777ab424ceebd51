//! Extraction: the queries the pipeline sends, and the pages QBO answers with.
//!
//! Paging is **keyset** paging on `MetaData.LastUpdatedTime`, not offset paging. Every page
//! query is
//!
//! ```text
//! SELECT * FROM Invoice WHERE MetaData.LastUpdatedTime >= '<cursor>'
//!   AND MetaData.LastUpdatedTime <= '<chunk end>' ORDERBY MetaData.LastUpdatedTime ASC
//!   STARTPOSITION 1 MAXRESULTS 1000
//! ```
//!
//! where the cursor is the `LastUpdatedTime` of the newest record already committed. A record
//! that stays in the window keeps its timestamp, so nothing that happens to other records
//! (edits moving them to a new time, deletions, insertions) can shift it past the cursor: an
//! edit that makes offset pages slide cannot make keyset pages skip. `>=` re-reads the records
//! sharing the cursor's second (QBO times have one-second precision), so ties at a page
//! boundary are never lost; the upsert makes the re-read a no-op. When a whole page shares
//! one second (more ties than a page holds), that second is read with offset pages on its own
//! ([`PageStep::TieSecond`]) and the cursor then moves one second on.
//!
//! Name-list entities add `Active IN (true, false)`: without it QBO silently hides inactive
//! records (Intuit documents this for every name list).

use crate::entity::{Entity, KeyShape};
use crate::window::{Chunk, qbo_literal};
use chrono::{DateTime, Duration, Utc};
use qbo_query::{Condition, Direction, Literal, Op, OrderBy, Query, Select};
use serde::Deserialize;
use serde_json::value::RawValue;

pub const LAST_UPDATED: &str = "MetaData.LastUpdatedTime";

fn base_conditions(entity: Entity) -> Vec<Condition> {
    if entity.is_name_list() {
        vec![Condition {
            field: "Active".into(),
            op: Op::In,
            value: Literal::List(vec![Literal::Bool(true), Literal::Bool(false)]),
        }]
    } else {
        Vec::new()
    }
}

fn time_condition(op: Op, literal: &str) -> Condition {
    Condition {
        field: LAST_UPDATED.into(),
        op,
        value: Literal::String(literal.to_string()),
    }
}

/// A keyset page: records of the chunk at or after `cursor` (a QBO time literal).
pub fn keyset_query(entity: Entity, chunk: &Chunk, cursor: &str, page_size: u32) -> Query {
    let mut conditions = vec![
        time_condition(Op::Ge, cursor),
        time_condition(Op::Le, &qbo_literal(chunk.end)),
    ];
    conditions.extend(base_conditions(entity));
    Query {
        select: Select::All { extra: Vec::new() },
        entity: entity.qbo_name().into(),
        conditions,
        order_by: Some(OrderBy {
            field: LAST_UPDATED.into(),
            direction: Direction::Asc,
        }),
        start_position: Some(1),
        max_results: Some(u64::from(page_size)),
    }
}

/// An offset page of the records sharing one second (used only when ties fill a page).
pub fn tie_query(entity: Entity, second: &str, start_position: u64, page_size: u32) -> Query {
    let mut conditions = vec![time_condition(Op::Eq, second)];
    conditions.extend(base_conditions(entity));
    Query {
        select: Select::All { extra: Vec::new() },
        entity: entity.qbo_name().into(),
        conditions,
        order_by: Some(OrderBy {
            field: "Id".into(),
            direction: Direction::Asc,
        }),
        start_position: Some(start_position),
        max_results: Some(u64::from(page_size)),
    }
}

/// `SELECT COUNT(*)` of the entity in `[start, end]`, inactive included.
pub fn count_query(entity: Entity, start: DateTime<Utc>, end: DateTime<Utc>) -> Query {
    let mut conditions = vec![
        time_condition(Op::Ge, &qbo_literal(start)),
        time_condition(Op::Le, &qbo_literal(end)),
    ];
    conditions.extend(base_conditions(entity));
    Query {
        select: Select::Count,
        entity: entity.qbo_name().into(),
        conditions,
        order_by: None,
        start_position: None,
        max_results: None,
    }
}

/// Pages of an entity read whole (singletons, entities without a usable time filter): every
/// record, by offset (`STARTPOSITION`), ordered by `Id` where QBO can order it so, inactive
/// name-list records included. A singleton is asked for as QBO documents it, without paging.
pub fn whole_query(entity: Entity, start_position: u64, page_size: u32) -> Query {
    let singleton = entity.is_singleton();
    Query {
        select: Select::All { extra: Vec::new() },
        entity: entity.qbo_name().into(),
        conditions: base_conditions(entity),
        order_by: whole_order(entity),
        start_position: (!singleton).then_some(start_position),
        max_results: (!singleton).then_some(u64::from(page_size)),
    }
}

/// Entities whose `ORDERBY` connectors report unreliable: paged in QBO's own order, the
/// read proved by its count instead (`crates/qbo-entities`, TaxAgency's row).
const UNRELIABLE_ORDER: &[&str] = &["TaxAgency"];

/// `ORDERBY Id` for a whole read, where the entity has an `Id` to order by (ExchangeRate has
/// none, RecurringTransaction's is inside its wrapper) and ordering by it is reliable.
fn whole_order(entity: Entity) -> Option<OrderBy> {
    (entity.key() == KeyShape::Id
        && !entity.is_singleton()
        && !UNRELIABLE_ORDER.contains(&entity.qbo_name()))
    .then(|| OrderBy {
        field: "Id".into(),
        direction: Direction::Asc,
    })
}

/// `SELECT COUNT(*)` of every record of an entity read whole, inactive included.
pub fn whole_count_query(entity: Entity) -> Query {
    Query {
        select: Select::Count,
        entity: entity.qbo_name().into(),
        conditions: base_conditions(entity),
        order_by: None,
        start_position: None,
        max_results: None,
    }
}

/// An entity QBO will not serve to this company: its edition, region or settings lack the
/// feature the entity needs ([`qbo_entities::Feature`]). The run skips it with this note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable {
    pub reason: String,
}

/// The one place that decides whether a QBO error means "this company does not have this
/// entity" (skip it) rather than a failure (`docs/qbo-behaviour.md` §11). Only entities that
/// need a feature can be unavailable: the same answer for Invoice is a failure. Recognised:
/// a 4001 validation fault naming the entity unknown (`invalid context declaration`,
/// `Metadata not found for Entity`), a 5020 Permission Denied (Intuit's code for "a feature
/// your product is not entitled to"; what the sandbox answers), and a fault saying the
/// feature is not enabled or not supported. The exact fault for each missing feature is not
/// documented (uncertain).
pub fn unavailable(entity: Entity, err: &qbo_client::QboError) -> Option<Unavailable> {
    let qbo_client::QboError::Fault {
        status,
        code,
        message,
        detail,
        ..
    } = err
    else {
        return None;
    };
    if entity.spec().requires == qbo_entities::Feature::Always
        || !matches!(status, 200 | 400 | 403 | 404)
    {
        return None;
    }
    let text = format!("{message} {}", detail.as_deref().unwrap_or_default()).to_ascii_lowercase();
    let unknown_entity = code.as_deref() == Some("4001")
        && (text.contains("invalid context declaration")
            || text.contains("metadata not found for entity"));
    let not_entitled = code.as_deref() == Some("5020");
    let feature_off = text.contains("feature")
        && [
            "not enabled",
            "not supported",
            "not available",
            "turned off",
            "disabled",
        ]
        .iter()
        .any(|w| text.contains(w));
    (unknown_entity || not_entitled || feature_off).then(|| Unavailable {
        reason: format!(
            "the company does not offer {} (it needs {}): {}",
            entity.qbo_name(),
            serde_json::to_value(entity.spec().requires)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            qbo_client::printable(&err.to_string(), 300)
        ),
    })
}

/// One record of a page: the payload byte-for-byte as QBO sent it, plus the fields the
/// loader needs to order versions.
#[derive(Debug)]
pub struct Record {
    pub id: String,
    pub payload: Box<RawValue>,
    /// `MetaData.LastUpdatedTime` exactly as QBO wrote it (the next cursor).
    pub last_updated_text: String,
    pub last_updated: DateTime<Utc>,
    pub sync_token: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum PageError {
    /// Truncated or not JSON: usually a dropped connection; worth a retry.
    #[error("the page is not valid JSON ({0})")]
    Syntax(String),
    /// Valid JSON in an unexpected shape: retrying will not help.
    #[error("unexpected page shape: {0}")]
    Shape(String),
    /// The server answered a page that does not move the paging forward (the same page
    /// again, or records before the cursor): continuing would loop forever.
    #[error("QBO's paging made no progress: {0}")]
    NoProgress(String),
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "QueryResponse", borrow)]
    query_response: Option<std::collections::HashMap<String, &'a RawValue>>,
}

#[derive(Deserialize)]
struct Head {
    #[serde(rename = "Id", default)]
    id: Option<String>,
    #[serde(rename = "SyncToken", default)]
    sync_token: Option<String>,
    #[serde(rename = "MetaData", default)]
    meta: Option<Meta>,
}

#[derive(Deserialize)]
struct Meta {
    #[serde(rename = "LastUpdatedTime", default)]
    last_updated: Option<String>,
}

/// serde's message, cleaned: it may quote text from the page.
fn syntax_or_shape(e: serde_json::Error) -> PageError {
    let text = qbo_client::printable(&e.to_string(), 200);
    match e.classify() {
        serde_json::error::Category::Data => PageError::Shape(text),
        _ => PageError::Syntax(text),
    }
}

fn printable(s: &str) -> String {
    qbo_client::printable(s, 60)
}

/// The object of a wrapped record (`{"Invoice": {...}}`): its one member whose value is an
/// object. None, or more than one, is a shape error.
fn wrapped_inner(entity: Entity, payload: &RawValue) -> Result<&RawValue, PageError> {
    let members: std::collections::BTreeMap<String, &RawValue> =
        serde_json::from_str(payload.get()).map_err(syntax_or_shape)?;
    let mut objects = members
        .iter()
        .filter(|(_, v)| v.get().trim_start().starts_with('{'));
    match (objects.next(), objects.next()) {
        (Some((_, inner)), None) => Ok(inner),
        (None, _) => Err(PageError::Shape(format!(
            "a {} record wraps no object (expected e.g. {{\"Invoice\": {{...}}}})",
            entity.qbo_name()
        ))),
        (Some((a, _)), Some((b, _))) => Err(PageError::Shape(format!(
            "a {} record wraps more than one object ('{}', '{}')",
            entity.qbo_name(),
            printable(a),
            printable(b)
        ))),
    }
}

/// The `id` column of a record, from the entity's key shape.
fn record_id(entity: Entity, payload: &RawValue, head: &Head) -> Result<String, PageError> {
    let id = match entity.key() {
        KeyShape::Id | KeyShape::Wrapped => head
            .id
            .clone()
            .ok_or_else(|| PageError::Shape(format!("a {} record has no Id", entity.qbo_name())))?,
        KeyShape::Composite(parts) => {
            let members: std::collections::HashMap<String, serde_json::Value> =
                serde_json::from_str(payload.get()).map_err(syntax_or_shape)?;
            let mut values = Vec::with_capacity(parts.len());
            for part in parts {
                match members.get(*part) {
                    Some(serde_json::Value::String(v)) if !v.is_empty() => values.push(v.clone()),
                    _ => {
                        return Err(PageError::Shape(format!(
                            "a {} record has no {part} (its key is {})",
                            entity.qbo_name(),
                            parts.join(":")
                        )));
                    }
                }
            }
            values.join(":")
        }
    };
    // Ids are checked first: every message below may quote one.
    if id.is_empty() || id.len() > 50 || id.chars().any(|c| c.is_control()) {
        return Err(PageError::Shape(format!(
            "record Id '{}' is not 1-50 printable characters",
            printable(&id)
        )));
    }
    Ok(id)
}

/// Parses a query page of `entity`: its records are under the entity's response key (QBO's
/// name is accepted too). An empty page (`{"QueryResponse":{}}`) gives no records.
pub fn parse_page(body: &[u8], entity: Entity) -> Result<Vec<Record>, PageError> {
    let envelope: Envelope = serde_json::from_slice(body).map_err(syntax_or_shape)?;
    let qr = envelope
        .query_response
        .ok_or_else(|| PageError::Shape("no QueryResponse".into()))?;
    let find = |key: &str| {
        qr.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| *v)
    };
    let Some(raw) = find(entity.response_key()).or_else(|| find(entity.qbo_name())) else {
        return Ok(Vec::new());
    };
    // A singleton may come as the object itself rather than an array of one.
    let items: Vec<Box<RawValue>> = if entity.is_singleton() && raw.get().starts_with('{') {
        vec![raw.to_owned()]
    } else {
        serde_json::from_str(raw.get()).map_err(syntax_or_shape)?
    };
    if entity.is_singleton() && items.len() > 1 {
        return Err(PageError::Shape(format!(
            "{} is one record per company, and QBO answered {}",
            entity.qbo_name(),
            items.len()
        )));
    }
    parse_items(items, entity)
}

/// The records of a page's (or a CDC section's) array, each with its Id, version and exact
/// payload text.
fn parse_items(items: Vec<Box<RawValue>>, entity: Entity) -> Result<Vec<Record>, PageError> {
    items
        .into_iter()
        .map(|payload| {
            // The record proper: the wrapped object for wrapped entities.
            let record = match entity.key() {
                KeyShape::Wrapped => wrapped_inner(entity, &payload)?,
                _ => &*payload,
            };
            let head: Head = serde_json::from_str(record.get()).map_err(syntax_or_shape)?;
            let id = record_id(entity, &payload, &head)?;
            let text = head.meta.and_then(|m| m.last_updated).ok_or_else(|| {
                PageError::Shape(format!(
                    "record {} has no MetaData.LastUpdatedTime",
                    printable(&id)
                ))
            })?;
            let last_updated = qbo_query::eval::parse_datetime(&text)
                .ok_or_else(|| {
                    PageError::Shape(format!(
                        "record {id} has an unreadable LastUpdatedTime '{}'",
                        printable(&text)
                    ))
                })?
                .with_timezone(&Utc);
            let sync_token = head
                .sync_token
                .as_deref()
                .and_then(|s| s.trim().parse::<i64>().ok())
                .unwrap_or(0);
            Ok(Record {
                id,
                payload,
                last_updated_text: text,
                last_updated,
                sync_token,
            })
        })
        .collect()
}

/// One entity's part of a CDC answer.
#[derive(Debug)]
pub struct CdcSection {
    pub entity: Entity,
    /// Objects changed (created, edited, voided, made inactive): full payloads.
    pub changed: Vec<Record>,
    /// Objects deleted (`"status":"Deleted"`): Id and when (their `LastUpdatedTime`, else
    /// the answer's `time`).
    pub deleted: Vec<(String, DateTime<Utc>)>,
}

/// A parsed CDC answer.
#[derive(Debug)]
pub struct CdcAnswer {
    /// One per requested entity, in the order asked (empty when QBO had nothing).
    pub sections: Vec<CdcSection>,
    /// Objects in the answer, changed and deleted, across entities: QBO answers at most
    /// 1000, so an answer holding that many may be cut short.
    pub objects: usize,
    /// QBO's clock when it answered.
    pub time: Option<DateTime<Utc>>,
}

/// Parses `{"CDCResponse":[{"QueryResponse":[{"Invoice":[...],"startPosition":1,
/// "maxResults":n}, {}, ...]}],"time":"..."}` for the `entities` asked. An entity QBO did
/// not ask for, a section that is not an object, or a fault inside the answer is a shape
/// error (nothing of it is applied).
pub fn parse_cdc(body: &[u8], entities: &[Entity]) -> Result<CdcAnswer, PageError> {
    #[derive(Deserialize)]
    struct Answer<'a> {
        #[serde(rename = "CDCResponse", borrow)]
        cdc: Option<Vec<Part<'a>>>,
        #[serde(default, borrow)]
        time: Option<std::borrow::Cow<'a, str>>,
    }
    #[derive(Deserialize)]
    struct Part<'a> {
        #[serde(rename = "QueryResponse", default, borrow)]
        query: Option<Vec<std::collections::HashMap<String, &'a RawValue>>>,
        #[serde(rename = "Fault", default, borrow)]
        fault: Option<&'a RawValue>,
    }
    #[derive(Deserialize)]
    struct Status {
        #[serde(default)]
        status: Option<String>,
        #[serde(rename = "Id", default)]
        id: Option<String>,
        #[serde(rename = "MetaData", default)]
        meta: Option<Meta>,
    }
    let answer: Answer = serde_json::from_slice(body).map_err(syntax_or_shape)?;
    let time = answer
        .time
        .as_deref()
        .and_then(|t| qbo_query::eval::parse_datetime(t.trim()))
        .map(|t| t.with_timezone(&Utc));
    let parts = answer
        .cdc
        .ok_or_else(|| PageError::Shape("no CDCResponse".into()))?;
    let mut sections: Vec<CdcSection> = entities
        .iter()
        .map(|&entity| CdcSection {
            entity,
            changed: Vec::new(),
            deleted: Vec::new(),
        })
        .collect();
    let mut objects = 0;
    for part in parts {
        if let Some(fault) = part.fault {
            return Err(PageError::Shape(format!(
                "the CDC answer holds a fault: {}",
                qbo_client::printable(fault.get(), 300)
            )));
        }
        for group in part.query.unwrap_or_default() {
            for (key, value) in group {
                if matches!(key.as_str(), "startPosition" | "maxResults" | "totalCount") {
                    continue;
                }
                let Some(section) = sections.iter_mut().find(|s| {
                    key.eq_ignore_ascii_case(s.entity.response_key())
                        || key.eq_ignore_ascii_case(s.entity.qbo_name())
                }) else {
                    return Err(PageError::Shape(format!(
                        "the CDC answer holds '{}', which was not asked for",
                        printable(&key)
                    )));
                };
                let items: Vec<Box<RawValue>> =
                    serde_json::from_str(value.get()).map_err(syntax_or_shape)?;
                objects += items.len();
                let mut changed = Vec::with_capacity(items.len());
                for item in items {
                    let status: Status =
                        serde_json::from_str(item.get()).map_err(syntax_or_shape)?;
                    if status
                        .status
                        .as_deref()
                        .is_some_and(|s| s.eq_ignore_ascii_case("Deleted"))
                    {
                        let id = status.id.filter(|id| {
                            !id.is_empty() && id.len() <= 50 && !id.chars().any(char::is_control)
                        });
                        let Some(id) = id else {
                            return Err(PageError::Shape(format!(
                                "a deleted {} in the CDC answer has no usable Id",
                                section.entity.qbo_name()
                            )));
                        };
                        let at = status
                            .meta
                            .and_then(|m| m.last_updated)
                            .and_then(|t| qbo_query::eval::parse_datetime(t.trim()))
                            .map(|t| t.with_timezone(&Utc))
                            .or(time)
                            .ok_or_else(|| {
                                PageError::Shape(format!(
                                    "deleted {} {id}: no LastUpdatedTime and no answer time",
                                    section.entity.qbo_name()
                                ))
                            })?;
                        section.deleted.push((id, at));
                    } else {
                        changed.push(item);
                    }
                }
                section
                    .changed
                    .extend(parse_items(changed, section.entity)?);
            }
        }
    }
    Ok(CdcAnswer {
        sections,
        objects,
        time,
    })
}

/// QBO's clock: the envelope `time` of an answer (`"time":"2020-09-29T06:04:50.776-07:00"`),
/// the instant QBO answered. None when absent or unreadable.
pub fn parse_time(body: &[u8]) -> Option<DateTime<Utc>> {
    #[derive(Deserialize)]
    struct Timed<'a> {
        #[serde(default, borrow)]
        time: Option<std::borrow::Cow<'a, str>>,
    }
    let timed: Timed = serde_json::from_slice(body).ok()?;
    qbo_query::eval::parse_datetime(timed.time?.trim()).map(|t| t.with_timezone(&Utc))
}

/// Parses a `COUNT(*)` answer: `{"QueryResponse":{"totalCount":N}}`. A missing or
/// non-numeric `totalCount` is an error, never a count of 0 (that would "prove" an empty
/// range).
pub fn parse_count(body: &[u8]) -> Result<u64, PageError> {
    // Typed, so a large body is skipped rather than built into a tree.
    #[derive(Deserialize)]
    struct Envelope {
        #[serde(rename = "QueryResponse")]
        query_response: Option<Counted>,
    }
    #[derive(Deserialize)]
    struct Counted {
        #[serde(rename = "totalCount", default)]
        total: Option<serde::de::IgnoredAny>,
    }
    // `totalCount` must be a non-negative integer: read it as a number first.
    #[derive(Deserialize)]
    struct Number {
        #[serde(rename = "QueryResponse")]
        query_response: Option<NumberInner>,
    }
    #[derive(Deserialize)]
    struct NumberInner {
        #[serde(rename = "totalCount")]
        total: u64,
    }
    let missing =
        || PageError::Shape("the count answer has no numeric QueryResponse.totalCount".into());
    let envelope: Envelope = serde_json::from_slice(body).map_err(syntax_or_shape)?;
    if envelope.query_response.and_then(|q| q.total).is_none() {
        return Err(missing());
    }
    let n: Number = serde_json::from_slice(body).map_err(|_| missing())?;
    n.query_response.map(|q| q.total).ok_or_else(missing)
}

/// What to do after a keyset page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageStep {
    /// Fewer records than asked: the chunk is finished.
    Done,
    /// Continue from this cursor (the newest record's time, as QBO wrote it).
    Next(String),
    /// The page is full of one second: read that second with offset pages, then continue
    /// one second later.
    TieSecond { second: String, after: String },
}

/// Decides the next step from a keyset page asked from `cursor` (pure). A full page must
/// move the cursor forward (or be a page of ties at one second not before it); otherwise the
/// server is repeating itself and the paging fails instead of looping forever.
pub fn next_step(
    records: &[Record],
    page_size: u32,
    cursor: DateTime<Utc>,
) -> Result<PageStep, PageError> {
    let (Some(first), Some(last)) = (records.first(), records.last()) else {
        return Ok(PageStep::Done);
    };
    if records.len() < page_size as usize {
        return Ok(PageStep::Done);
    }
    if last.last_updated < cursor || first.last_updated < cursor {
        return Err(PageError::NoProgress(format!(
            "a page asked from {} holds records of {} (record {})",
            cursor.to_rfc3339(),
            first.last_updated.min(last.last_updated).to_rfc3339(),
            first.id
        )));
    }
    if first.last_updated == last.last_updated {
        return Ok(PageStep::TieSecond {
            second: last.last_updated_text.clone(),
            after: qbo_literal(last.last_updated + Duration::seconds(1)),
        });
    }
    if last.last_updated <= cursor {
        return Err(PageError::NoProgress(format!(
            "a full page asked from {} ends at the same time",
            cursor.to_rfc3339()
        )));
    }
    Ok(PageStep::Next(last.last_updated_text.clone()))
}

/// Most records read at one second by offset pages before the paging gives up (QBO cannot
/// hold anywhere near this many writes in one second).
pub const MAX_TIE_RECORDS: u64 = 1_000_000;

/// Checks an offset page of the ties at `second` that started at `position`: every record
/// must be of that second, and a page must bring at least one Id not seen on the earlier
/// pages of this second (`seen`, updated here), so a server repeating or alternating pages
/// is caught. `Ok(true)` when the page is full (read on).
pub fn tie_page_full(
    records: &[Record],
    page_size: u32,
    second: DateTime<Utc>,
    position: u64,
    seen: &mut std::collections::HashSet<String>,
) -> Result<bool, PageError> {
    if let Some(r) = records.iter().find(|r| r.last_updated != second) {
        return Err(PageError::NoProgress(format!(
            "a page of the records at {} holds record {} of {}",
            second.to_rfc3339(),
            r.id,
            r.last_updated.to_rfc3339()
        )));
    }
    let before = seen.len();
    seen.extend(records.iter().map(|r| r.id.clone()));
    if !records.is_empty() && seen.len() == before {
        return Err(PageError::NoProgress(format!(
            "the offset page at position {position} of {} repeats records already read",
            second.to_rfc3339()
        )));
    }
    let full = records.len() >= page_size as usize;
    if full && position.saturating_add(u64::from(page_size)) > MAX_TIE_RECORDS {
        return Err(PageError::NoProgress(format!(
            "more than {MAX_TIE_RECORDS} records claim the one second {}",
            second.to_rfc3339()
        )));
    }
    Ok(full)
}

/// Reads a cursor literal (as QBO wrote it, or as [`qbo_literal`] made it).
pub fn cursor_time(literal: &str) -> Result<DateTime<Utc>, PageError> {
    qbo_query::eval::parse_datetime(literal)
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(|| PageError::Shape("unreadable cursor time".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::window::{ChunkSize, Window, parse_day, plan};

    fn chunk() -> Chunk {
        let w = Window::new(
            parse_day("2015-01-01").unwrap(),
            parse_day("2015-12-31").unwrap(),
        )
        .unwrap();
        plan(w, ChunkSize::Year)[0]
    }

    #[test]
    fn keyset_query_text() {
        let q = keyset_query(
            Entity::CUSTOMER,
            &chunk(),
            "2015-03-01T10:00:00-08:00",
            1000,
        );
        let text = q.to_string();
        assert_eq!(
            text,
            "SELECT * FROM Customer WHERE MetaData.LastUpdatedTime >= '2015-03-01T10:00:00-08:00' AND MetaData.LastUpdatedTime <= '2015-12-31T15:59:59-08:00' AND Active IN (true, false) ORDERBY MetaData.LastUpdatedTime ASC STARTPOSITION 1 MAXRESULTS 1000"
        );
        assert_eq!(
            qbo_query::parse(&text).unwrap(),
            q,
            "printed query re-parses"
        );
        let inv = keyset_query(Entity::INVOICE, &chunk(), "x", 10).to_string();
        assert!(
            !inv.contains("Active"),
            "transactions have no Active field: {inv}"
        );
    }

    #[test]
    fn count_and_tie_queries() {
        let c = chunk();
        let q = count_query(Entity::ITEM, c.start, c.end).to_string();
        assert!(q.starts_with("SELECT COUNT(*) FROM Item WHERE"), "{q}");
        assert!(q.contains("Active IN (true, false)"), "{q}");
        let t = tie_query(Entity::INVOICE, "2015-03-01T10:00:00-08:00", 1001, 1000).to_string();
        assert!(
            t.contains("MetaData.LastUpdatedTime = '2015-03-01T10:00:00-08:00'"),
            "{t}"
        );
        assert!(t.contains("STARTPOSITION 1001"), "{t}");
    }

    const PAGE: &str = r#"{"QueryResponse":{"Customer":[{"Id":"5","SyncToken":"1","MetaData":{"CreateTime":"2015-10-01T16:54:59-07:00","LastUpdatedTime":"2015-10-08T13:28:29-07:00"},"Balance":100.00,"DisplayName":"Amy\u2019s \"Bird\" \\ Sanctuary 鳥"},{"Id":"6","SyncToken":"0","MetaData":{"LastUpdatedTime":"2015-10-08T13:28:30-07:00"}}],"startPosition":1,"maxResults":2},"time":"2020-09-29T06:04:50.776-07:00"}"#;

    #[test]
    fn parses_pages_keeping_payload_bytes() {
        let records = parse_page(PAGE.as_bytes(), Entity::CUSTOMER).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].id, "5");
        assert_eq!(records[0].sync_token, 1);
        assert_eq!(
            records[0].last_updated.to_rfc3339(),
            "2015-10-08T20:28:29+00:00"
        );
        assert!(records[0].payload.get().contains(r#""Balance":100.00"#));
        assert!(
            records[0]
                .payload
                .get()
                .contains(r#"Amy\u2019s \"Bird\" \\ Sanctuary 鳥"#)
        );
        let from = records[0].last_updated;
        assert_eq!(
            next_step(&records, 2, from).unwrap(),
            PageStep::Next("2015-10-08T13:28:30-07:00".into())
        );
        assert_eq!(next_step(&records, 3, from).unwrap(), PageStep::Done);
    }

    #[test]
    fn empty_and_broken_pages() {
        let empty = br#"{"QueryResponse":{},"time":"2020-09-29T06:04:50.776-07:00"}"#;
        assert!(parse_page(empty, Entity::CUSTOMER).unwrap().is_empty());
        assert!(matches!(
            parse_page(&PAGE.as_bytes()[..100], Entity::CUSTOMER),
            Err(PageError::Syntax(_))
        ));
        let no_meta = br#"{"QueryResponse":{"Item":[{"Id":"1"}]}}"#;
        assert!(matches!(
            parse_page(no_meta, Entity::ITEM),
            Err(PageError::Shape(_))
        ));
        assert_eq!(
            parse_count(br#"{"QueryResponse":{"totalCount":41},"time":"x"}"#).unwrap(),
            41
        );
    }

    #[test]
    fn a_page_full_of_one_second_switches_to_tie_mode() {
        let body = r#"{"QueryResponse":{"Invoice":[{"Id":"1","MetaData":{"LastUpdatedTime":"2015-10-08T13:28:29-07:00"}},{"Id":"2","MetaData":{"LastUpdatedTime":"2015-10-08T20:28:29Z"}}]}}"#;
        let records = parse_page(body.as_bytes(), Entity::INVOICE).unwrap();
        assert_eq!(
            next_step(&records, 2, records[0].last_updated).unwrap(),
            PageStep::TieSecond {
                second: "2015-10-08T20:28:29Z".into(),
                after: "2015-10-08T13:28:30-07:00".into()
            }
        );
    }

    #[test]
    fn ids_must_be_printable_and_messages_are_clean() {
        let nul = r#"{"QueryResponse":{"Item":[{"Id":"1\u0000","MetaData":{"LastUpdatedTime":"2015-10-08T13:28:29-07:00"}}]}}"#;
        let Err(PageError::Shape(m)) = parse_page(nul.as_bytes(), Entity::ITEM) else {
            panic!("a NUL in an Id is refused")
        };
        assert!(!m.contains('\0'), "{m}");
        let forged = r#"{"QueryResponse":{"Item":[{"Id":"2","MetaData":{"LastUpdatedTime":"x\n2026-01-01 INFO forged line"}}]}}"#;
        let Err(PageError::Shape(m)) = parse_page(forged.as_bytes(), Entity::ITEM) else {
            panic!("unreadable time")
        };
        assert!(!m.contains('\n'), "no forged log line: {m}");
    }

    #[test]
    fn a_server_that_repeats_itself_is_caught() {
        let records = parse_page(PAGE.as_bytes(), Entity::CUSTOMER).unwrap();
        let last = records[1].last_updated;
        // The same full page answered for a cursor at its own end: no progress.
        assert!(matches!(
            next_step(&records, 2, last),
            Err(PageError::NoProgress(_))
        ));
        // Records before the cursor.
        assert!(matches!(
            next_step(&records, 2, last + Duration::seconds(5)),
            Err(PageError::NoProgress(_))
        ));
        let ties = r#"{"QueryResponse":{"Invoice":[{"Id":"1","MetaData":{"LastUpdatedTime":"2015-10-08T13:28:29-07:00"}},{"Id":"2","MetaData":{"LastUpdatedTime":"2015-10-08T20:28:29Z"}}]}}"#;
        let ties = parse_page(ties.as_bytes(), Entity::INVOICE).unwrap();
        let second = ties[0].last_updated;
        let mut seen = std::collections::HashSet::new();
        assert!(tie_page_full(&ties, 2, second, 1, &mut seen).unwrap());
        assert!(matches!(
            tie_page_full(&ties, 2, second, 3, &mut seen),
            Err(PageError::NoProgress(_))
        ));
        // Alternating pages (A, B, A) are caught too.
        let (a, b) = (&ties[..1], &ties[1..]);
        let mut seen = std::collections::HashSet::new();
        assert!(tie_page_full(a, 1, second, 1, &mut seen).unwrap());
        assert!(tie_page_full(b, 1, second, 2, &mut seen).unwrap());
        assert!(matches!(
            tie_page_full(a, 1, second, 3, &mut seen),
            Err(PageError::NoProgress(_))
        ));
        assert!(matches!(
            tie_page_full(
                &ties,
                2,
                second + Duration::seconds(1),
                1,
                &mut Default::default()
            ),
            Err(PageError::NoProgress(_))
        ));
        assert!(matches!(
            tie_page_full(&ties, 2, second, MAX_TIE_RECORDS, &mut Default::default()),
            Err(PageError::NoProgress(_))
        ));
        assert!(matches!(
            parse_count(br#"{"QueryResponse":{}}"#),
            Err(PageError::Shape(_))
        ));
    }

    fn by(qbo: &str) -> Entity {
        Entity::from_qbo_name(qbo).unwrap()
    }

    #[test]
    fn whole_reads_page_by_offset_ordered_by_id_where_possible() {
        let q = whole_query(by("TaxCode"), 1001, 1000).to_string();
        assert_eq!(
            q,
            "SELECT * FROM TaxCode WHERE Active IN (true, false) ORDERBY Id ASC STARTPOSITION 1001 MAXRESULTS 1000"
        );
        assert_eq!(
            qbo_query::parse(&q).unwrap(),
            whole_query(by("TaxCode"), 1001, 1000)
        );
        // No Id to order by, or an unreliable order: QBO's own order, proved by the count.
        let ex = whole_query(by("ExchangeRate"), 1, 500).to_string();
        assert_eq!(
            ex,
            "SELECT * FROM ExchangeRate STARTPOSITION 1 MAXRESULTS 500"
        );
        assert!(
            !whole_query(by("RecurringTransaction"), 1, 9)
                .to_string()
                .contains("ORDERBY")
        );
        assert!(
            !whole_query(by("TaxAgency"), 1, 9)
                .to_string()
                .contains("ORDERBY")
        );
        assert_eq!(
            whole_query(by("CompanyInfo"), 1, 9).to_string(),
            "SELECT * FROM CompanyInfo"
        );
        assert_eq!(
            whole_count_query(by("CompanyCurrency")).to_string(),
            "SELECT COUNT(*) FROM CompanyCurrency WHERE Active IN (true, false)"
        );
    }

    #[test]
    fn records_are_keyed_by_the_entity_key_shape() {
        let body = br#"{"QueryResponse":{"ExchangeRate":[{"SourceCurrencyCode":"EUR","TargetCurrencyCode":"USD","AsOfDate":"2025-03-01","Rate":1.0812,"SyncToken":"2","MetaData":{"LastUpdatedTime":"2025-03-01T01:00:00-08:00"}}]}}"#;
        let r = parse_page(body, by("ExchangeRate")).unwrap();
        assert_eq!(
            (r[0].id.as_str(), r[0].sync_token),
            ("EUR:USD:2025-03-01", 2)
        );
        let missing = br#"{"QueryResponse":{"ExchangeRate":[{"SourceCurrencyCode":"EUR","AsOfDate":"2025-03-01","MetaData":{"LastUpdatedTime":"2025-03-01T01:00:00-08:00"}}]}}"#;
        let Err(PageError::Shape(m)) = parse_page(missing, by("ExchangeRate")) else {
            panic!("a key part is missing")
        };
        assert!(m.contains("TargetCurrencyCode"), "{m}");

        let wrapped = br#"{"QueryResponse":{"RecurringTransaction":[{"Invoice":{"Id":"7","SyncToken":"3","MetaData":{"LastUpdatedTime":"2025-01-02T10:00:00-08:00"},"RecurringInfo":{"Name":"Monthly"}}}]}}"#;
        let r = parse_page(wrapped, by("RecurringTransaction")).unwrap();
        assert_eq!((r[0].id.as_str(), r[0].sync_token), ("7", 3));
        assert!(
            r[0].payload.get().starts_with(r#"{"Invoice":"#),
            "the wrapper is kept"
        );
        for bad in [
            &br#"{"QueryResponse":{"RecurringTransaction":[{"Invoice":"x"}]}}"#[..],
            br#"{"QueryResponse":{"RecurringTransaction":[{}]}}"#,
            br#"{"QueryResponse":{"RecurringTransaction":[{"Invoice":{"Id":"1"},"Bill":{"Id":"2"}}]}}"#,
            br#"{"QueryResponse":{"RecurringTransaction":[{"Invoice":{"MetaData":{"LastUpdatedTime":"2025-01-02T10:00:00-08:00"}}}]}}"#,
            br#"{"QueryResponse":{"RecurringTransaction":[7]}}"#,
        ] {
            assert!(
                matches!(parse_page(bad, by("RecurringTransaction")), Err(PageError::Shape(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }

        let ccp = br#"{"QueryResponse":{"CreditCardPaymentTxn":[{"Id":"3","MetaData":{"LastUpdatedTime":"2025-01-02T10:00:00-08:00"}}]}}"#;
        assert_eq!(parse_page(ccp, by("CreditCardPayment")).unwrap()[0].id, "3");
        let two = br#"{"QueryResponse":{"CompanyInfo":[{"Id":"1","MetaData":{"LastUpdatedTime":"2025-01-02T10:00:00-08:00"}},{"Id":"2","MetaData":{"LastUpdatedTime":"2025-01-02T10:00:00-08:00"}}]}}"#;
        assert!(matches!(
            parse_page(two, by("CompanyInfo")),
            Err(PageError::Shape(_))
        ));
        let one = br#"{"QueryResponse":{"Preferences":{"Id":"1","MetaData":{"LastUpdatedTime":"2025-01-02T10:00:00-08:00"}}}}"#;
        assert_eq!(parse_page(one, by("Preferences")).unwrap().len(), 1);
    }

    #[test]
    fn an_entity_the_company_lacks_is_classified_in_one_place() {
        let fault = |status, code: &str, message: &str, detail: &str| qbo_client::QboError::Fault {
            status,
            code: Some(code.into()),
            message: message.into(),
            detail: Some(detail.into()),
            intuit_tid: None,
            retry_after: None,
        };
        let unknown = fault(
            400,
            "4001",
            "Invalid query",
            "QueryValidationError: invalid context declaration: ExchangeRate",
        );
        assert!(unavailable(by("ExchangeRate"), &unknown).is_some());
        // The entity every company has: the same answer is a failure, not a skip.
        assert!(unavailable(Entity::INVOICE, &unknown).is_none());
        let off = fault(
            400,
            "6000",
            "A business validation error has occurred",
            "Multicurrency feature is not enabled for this company",
        );
        let u = unavailable(by("CompanyCurrency"), &off).unwrap();
        assert!(u.reason.contains("multi-currency"), "{}", u.reason);
        // QBO's (and the sandbox's) 5020 for a feature the company is not entitled to.
        let denied = fault(
            400,
            "5020",
            "Permission Denied Error",
            "Permission Denied Error : You do not have the access rights to use this feature.",
        );
        let u = unavailable(by("JournalCode"), &denied).unwrap();
        assert!(u.reason.contains("journal-codes"), "{}", u.reason);
        assert!(unavailable(Entity::INVOICE, &denied).is_none());
        for other in [
            fault(
                400,
                "4001",
                "Invalid query",
                "Property Foo not found for Entity ExchangeRate",
            ),
            fault(401, "3200", "AuthenticationFailed", "feature not enabled"),
            fault(500, "10000", "An application error has occurred", ""),
        ] {
            assert!(unavailable(by("ExchangeRate"), &other).is_none(), "{other}");
        }
    }

    #[test]
    fn a_cdc_answer_splits_into_changes_and_deletions_per_entity() {
        let body = br#"{"CDCResponse":[{"QueryResponse":[
            {"Invoice":[
                {"Id":"5","SyncToken":"2","MetaData":{"LastUpdatedTime":"2026-03-10T04:00:00-08:00"}},
                {"domain":"QBO","status":"Deleted","Id":"6","MetaData":{"LastUpdatedTime":"2026-03-10T04:00:01-08:00"}}
             ],"startPosition":1,"maxResults":2},
            {},
            {"Customer":[{"domain":"QBO","status":"Deleted","Id":"9"}]}
        ]}],"time":"2026-03-10T04:00:05.123-08:00"}"#;
        let a = parse_cdc(body, &[Entity::INVOICE, Entity::ITEM, Entity::CUSTOMER]).unwrap();
        assert_eq!(a.objects, 3);
        let time = a.time.unwrap();
        assert_eq!(time.to_rfc3339(), "2026-03-10T12:00:05.123+00:00");
        assert_eq!(a.sections.len(), 3);
        let inv = &a.sections[0];
        assert_eq!(inv.changed.len(), 1);
        assert_eq!(
            (inv.changed[0].id.as_str(), inv.changed[0].sync_token),
            ("5", 2)
        );
        assert_eq!(inv.deleted.len(), 1);
        assert_eq!(inv.deleted[0].0, "6");
        assert_eq!(inv.deleted[0].1.to_rfc3339(), "2026-03-10T12:00:01+00:00");
        assert!(a.sections[1].changed.is_empty() && a.sections[1].deleted.is_empty());
        // A deletion without MetaData is dated by the answer.
        assert_eq!(a.sections[2].deleted, vec![("9".to_string(), time)]);
        // An empty answer.
        let empty = parse_cdc(
            br#"{"CDCResponse":[{"QueryResponse":[{}]}],"time":"2019-03-13T10:24:05.179-07:00"}"#,
            &[Entity::INVOICE],
        )
        .unwrap();
        assert_eq!(empty.objects, 0);
    }

    #[test]
    fn a_cdc_answer_that_cannot_be_trusted_is_an_error_never_a_partial_apply() {
        let e = [Entity::INVOICE];
        let err = |body: &[u8]| parse_cdc(body, &e).unwrap_err();
        // Cut short: worth a retry.
        assert!(matches!(
            err(br#"{"CDCResponse":[{"QueryResponse":[{"Invoice":[{"Id":"5""#),
            PageError::Syntax(_)
        ));
        for (body, want) in [
            (&br#"{"time":"2026-01-01T00:00:00Z"}"#[..], "no CDCResponse"),
            (
                br#"{"CDCResponse":[{"QueryResponse":[{"Bill":[]}]}]}"#,
                "'Bill', which was not asked for",
            ),
            (
                br#"{"CDCResponse":[{"Fault":{"Error":[{"Message":"x"}]}}]}"#,
                "holds a fault",
            ),
            (
                br#"{"CDCResponse":[{"QueryResponse":[{"Invoice":[{"status":"Deleted","Id":""}]}]}],"time":"2026-01-01T00:00:00Z"}"#,
                "no usable Id",
            ),
            (
                br#"{"CDCResponse":[{"QueryResponse":[{"Invoice":[{"status":"Deleted","Id":"1"}]}]}]}"#,
                "no LastUpdatedTime and no answer time",
            ),
            (
                br#"{"CDCResponse":[{"QueryResponse":[{"Invoice":[{"Id":"1"}]}]}]}"#,
                "no MetaData.LastUpdatedTime",
            ),
        ] {
            let text = err(body).to_string();
            assert!(text.contains(want), "{want:?} in {text}");
        }
    }

    #[test]
    fn the_answer_time_is_read_when_present_and_readable() {
        assert_eq!(
            parse_time(br#"{"QueryResponse":{},"time":"2020-09-29T06:04:50.776-07:00"}"#)
                .map(|t| t.timestamp_millis()),
            Some(1_601_384_690_776)
        );
        assert_eq!(parse_time(br#"{"QueryResponse":{}}"#), None);
        assert_eq!(parse_time(br#"{"time":"yesterday"}"#), None);
        assert_eq!(parse_time(b"not json"), None);
    }
}
