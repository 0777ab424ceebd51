//! Loading: one page of records upserted into `raw.qb_<entity>` and the chunk's checkpoint
//! advanced, in one transaction.
//!
//! - One multi-row `INSERT ... SELECT FROM UNNEST(...) ON CONFLICT DO UPDATE` per page (the
//!   fastest upsert measured here, on par with COPY).
//! - Newer wins: a row is replaced only by a strictly newer version, ordered by
//!   (`MetaData.LastUpdatedTime`, `SyncToken`). Versions already stored are filtered out
//!   before the insert, so re-reading an unchanged window sends no payloads and writes no row
//!   versions; it only moves the checkpoint.
//! - Payloads go in as the exact JSON text QBO sent, cast to `jsonb` by PostgreSQL: no
//!   re-serialisation, no float coercion (`100.00` stays `100.00`).
//! - A record whose JSON `jsonb` refuses (a `\u0000` escape, or a UTF-16 surrogate without
//!   its pair) would fail the page's transaction on every attempt, and the chunk could never
//!   finish. Such a record is stored losslessly instead: `payload_text` keeps the exact text
//!   QBO sent, and `payload` the same document with those escapes replaced by `\ufffd` (see
//!   [`jsonb_safe`]). It is counted (`records_sanitised`) and logged with its Id and page.

use crate::entity::Entity;
use crate::extract::Record;
use crate::window::Chunk;
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use std::collections::HashMap;

/// Where a page goes and what it advances.
pub struct PageTarget<'a> {
    pub realm: &'a str,
    pub entity: Entity,
    pub run_id: i64,
    pub job_id: i64,
    pub chunk: &'a Chunk,
    pub page_number: i32,
    pub policy: Policy,
}

impl<'a> PageTarget<'a> {
    fn rows(&self) -> RowTarget<'a> {
        RowTarget {
            realm: self.realm,
            entity: self.entity,
            run_id: self.run_id,
            chunk: self.chunk,
            page_number: self.page_number,
            policy: self.policy,
        }
    }
}

/// When a stored version is replaced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Policy {
    /// Only by a strictly newer (`LastUpdatedTime`, `SyncToken`), or when the stored row is
    /// marked deleted (the record exists again).
    #[default]
    Newer,
    /// Also by the same version with a different payload: a re-read catching a change QBO
    /// made without bumping `LastUpdatedTime` (the sync's periodic re-read).
    NewerOrDifferent,
}

/// Where records go, without a checkpoint: the table, the run, and the provenance columns
/// (`extract_window_*` from `chunk`, `page_number`).
#[derive(Clone, Copy)]
pub struct RowTarget<'a> {
    pub realm: &'a str,
    pub entity: Entity,
    pub run_id: i64,
    pub chunk: &'a Chunk,
    pub page_number: i32,
    pub policy: Policy,
}

/// The checkpoint after this page.
pub struct Advance<'a> {
    /// New cursor (`None` leaves it as it is).
    pub cursor: Option<&'a str>,
    pub done: bool,
}

/// What a page write did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub received: u64,
    pub rows_written: u64,
    /// Records stored with `payload_text` because `jsonb` cannot hold them as sent.
    pub sanitised: u64,
}

/// `None` when `jsonb` accepts the JSON text as it is; otherwise the same text with every
/// `\u0000` escape and every unpaired surrogate escape replaced by `\ufffd`. Only escapes
/// are concerned: valid JSON cannot hold a raw NUL, and Rust strings hold no raw surrogate.
pub fn jsonb_safe(json: &str) -> Option<String> {
    let bytes = json.as_bytes();
    let hex = |at: usize| -> Option<u32> {
        let digits = json.get(at..at + 4)?;
        u32::from_str_radix(digits, 16).ok()
    };
    let mut out: Option<String> = None;
    let mut copied = 0; // bytes of `json` already in `out`
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            i += 1;
            continue;
        }
        if bytes.get(i + 1) != Some(&b'u') {
            i += 2; // any other escape is two bytes
            continue;
        }
        let Some(code) = hex(i + 2) else {
            i += 2;
            continue;
        };
        let mut len = 6;
        let bad = match code {
            0 => true,
            0xD800..=0xDBFF => {
                let paired = bytes.get(i + 6) == Some(&b'\\')
                    && bytes.get(i + 7) == Some(&b'u')
                    && hex(i + 8).is_some_and(|lo| (0xDC00..=0xDFFF).contains(&lo));
                if paired {
                    len = 12;
                }
                !paired
            }
            0xDC00..=0xDFFF => true,
            _ => false,
        };
        if bad {
            let o = out.get_or_insert_with(|| String::with_capacity(json.len()));
            o.push_str(&json[copied..i]);
            o.push_str("\\ufffd");
            copied = i + 6;
        }
        i += len;
    }
    out.map(|mut o| {
        o.push_str(&json[copied..]);
        o
    })
}

/// Keeps one record per Id, the newest version.
fn dedupe_newest(records: Vec<Record>) -> Vec<Record> {
    let mut by_id: HashMap<String, Record> = HashMap::with_capacity(records.len());
    for r in records {
        match by_id.get(&r.id) {
            Some(old) if (old.last_updated, old.sync_token) >= (r.last_updated, r.sync_token) => {}
            _ => {
                by_id.insert(r.id.clone(), r);
            }
        }
    }
    by_id.into_values().collect()
}

/// The columns of the rows to upsert, parallel slices.
#[derive(Clone, Copy)]
struct Rows<'a> {
    ids: &'a [&'a str],
    payloads: &'a [&'a str],
    times: &'a [DateTime<Utc>],
    tokens: &'a [i64],
    originals: &'a [Option<&'a str>],
}

impl<'a> Rows<'a> {
    fn one(&self, i: usize) -> Rows<'a> {
        Rows {
            ids: &self.ids[i..=i],
            payloads: &self.payloads[i..=i],
            times: &self.times[i..=i],
            tokens: &self.tokens[i..=i],
            originals: &self.originals[i..=i],
        }
    }
}

/// PostgreSQL refused a document's content (not a connection or constraint problem).
fn refused_document(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if matches!(
        d.code().as_deref(),
        // numeric_value_out_of_range, invalid_text_representation, untranslatable_character,
        // character_not_in_repertoire, program_limit_exceeded, invalid_parameter_value
        Some("22003" | "22P02" | "22P05" | "22021" | "54000" | "22023")
    ))
}

/// The newer-wins upsert of `rows`. `as_text`: `payload` becomes a JSON string holding the
/// document's text (for a document PostgreSQL refuses; `payload_text` keeps it exactly).
async fn insert_rows(
    tx: &mut sqlx::PgConnection,
    target: &RowTarget<'_>,
    rows: &Rows<'_>,
    as_text: bool,
) -> Result<u64, sqlx::Error> {
    let table = target.entity.table();
    let payload = if as_text {
        "to_jsonb(u.payload)"
    } else {
        "u.payload::jsonb"
    };
    let result = sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {table} AS t (realm_id, id, payload, ingested_at_utc,
             extract_window_start_utc, extract_window_end_utc, page_number,
             source_last_updated_utc, sync_token, run_id, payload_text)
         SELECT $1, u.id, {payload}, (now() AT TIME ZONE 'UTC'), $2, $3, $4, u.lu, u.st, $5, u.original
         FROM UNNEST($6::varchar[], $7::text[], $8::timestamptz[], $9::bigint[], $10::text[])
             AS u(id, payload, lu, st, original)
         ON CONFLICT (realm_id, id) DO UPDATE SET
             payload = EXCLUDED.payload,
             payload_text = EXCLUDED.payload_text,
             ingested_at_utc = EXCLUDED.ingested_at_utc,
             extract_window_start_utc = EXCLUDED.extract_window_start_utc,
             extract_window_end_utc = EXCLUDED.extract_window_end_utc,
             page_number = EXCLUDED.page_number,
             source_last_updated_utc = EXCLUDED.source_last_updated_utc,
             sync_token = EXCLUDED.sync_token,
             run_id = EXCLUDED.run_id,
             deleted_at_utc = NULL
         WHERE (EXCLUDED.source_last_updated_utc, EXCLUDED.sync_token)
             > (coalesce(t.source_last_updated_utc, '-infinity'), coalesce(t.sync_token, -1))
            OR t.deleted_at_utc IS NOT NULL
            OR ($11 AND (EXCLUDED.source_last_updated_utc, EXCLUDED.sync_token)
                    = (t.source_last_updated_utc, t.sync_token)
                AND t.payload IS DISTINCT FROM EXCLUDED.payload)"
    )))
    .bind(target.realm)
    .bind(target.chunk.start_rfc3339())
    .bind(target.chunk.end_rfc3339())
    .bind(target.page_number)
    .bind(target.run_id)
    .bind(rows.ids)
    .bind(rows.payloads)
    .bind(rows.times)
    .bind(rows.tokens)
    .bind(rows.originals)
    .bind(target.policy == Policy::NewerOrDifferent)
    .execute(&mut *tx)
    .await?;
    Ok(result.rows_affected())
}

/// Upserts one page and advances the checkpoint and the run's figures, atomically.
pub async fn write_page(
    pool: &PgPool,
    target: &PageTarget<'_>,
    records: Vec<Record>,
    advance: Advance<'_>,
) -> Result<Written, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let Written {
        received,
        rows_written,
        sanitised,
    } = upsert(&mut tx, &target.rows(), records).await?;

    sqlx::query(
        "UPDATE qbo_pipeline.checkpoints SET
             cursor_text = coalesce($3, cursor_text), pages = $4, records = records + $5,
             done = $6, run_id = $7, updated_at = now(),
             completed_at = CASE WHEN $6 THEN now() ELSE completed_at END
         WHERE job_id = $1 AND chunk_start = $2",
    )
    .bind(target.job_id)
    .bind(target.chunk.start)
    .bind(advance.cursor)
    .bind(target.page_number)
    .bind(received as i64)
    .bind(advance.done)
    .bind(target.run_id)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE qbo_pipeline.run_entities SET pages = pages + 1, records = records + $3,
             rows_written = rows_written + $4, chunks_done = chunks_done + $5::int,
             records_sanitised = records_sanitised + $6
         WHERE run_id = $1 AND entity = $2",
    )
    .bind(target.run_id)
    .bind(target.entity.cli_name())
    .bind(received as i64)
    .bind(rows_written as i64)
    .bind(i32::from(advance.done))
    .bind(sanitised as i64)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Written {
        received,
        rows_written,
        sanitised,
    })
}

/// The newer-wins upsert of `records` into their table, inside `tx` (no checkpoint): versions
/// already stored are filtered out first (so re-reading sends no payloads); a record whose
/// row is marked deleted is written again and the mark cleared (it exists in QBO).
pub async fn upsert(
    tx: &mut sqlx::PgConnection,
    target: &RowTarget<'_>,
    records: Vec<Record>,
) -> Result<Written, sqlx::Error> {
    let received = records.len() as u64;
    let records = dedupe_newest(records);
    let table = target.entity.table();
    let mut rows_written = 0;
    let mut sanitised = 0;
    if !records.is_empty() {
        let ids: Vec<&str> = records.iter().map(|r| r.id.as_str()).collect();
        type Stored = (String, Option<DateTime<Utc>>, Option<i64>, bool);
        let stored: Vec<Stored> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT id, source_last_updated_utc, sync_token, deleted_at_utc IS NOT NULL
             FROM {table} WHERE realm_id = $1 AND id = ANY($2::varchar[])"
        )))
        .bind(target.realm)
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?;
        let stored: HashMap<String, Stored> =
            stored.into_iter().map(|row| (row.0.clone(), row)).collect();
        let newer: Vec<&Record> = records
            .iter()
            .filter(|r| match stored.get(&r.id) {
                None => true,
                Some((_, lu, st, deleted)) => {
                    let theirs = (Some(r.last_updated), r.sync_token);
                    let ours = (*lu, st.unwrap_or(i64::MIN));
                    *deleted
                        || theirs > ours
                        || (target.policy == Policy::NewerOrDifferent && theirs == ours)
                }
            })
            .collect();

        if !newer.is_empty() {
            let ids: Vec<&str> = newer.iter().map(|r| r.id.as_str()).collect();
            let safe: Vec<Option<String>> =
                newer.iter().map(|r| jsonb_safe(r.payload.get())).collect();
            let payloads: Vec<&str> = newer
                .iter()
                .zip(&safe)
                .map(|(r, s)| s.as_deref().unwrap_or(r.payload.get()))
                .collect();
            let originals: Vec<Option<&str>> = newer
                .iter()
                .zip(&safe)
                .map(|(r, s)| s.as_ref().map(|_| r.payload.get()))
                .collect();
            for (r, s) in newer.iter().zip(&safe) {
                if s.is_some() {
                    sanitised += 1;
                    tracing::warn!(
                        entity = %target.entity,
                        id = %r.id,
                        page = target.page_number,
                        chunk_start = %target.chunk.start_rfc3339(),
                        "record holds characters jsonb cannot store (\\u0000 or a lone surrogate): stored with its exact text in payload_text"
                    );
                }
            }
            let times: Vec<DateTime<Utc>> = newer.iter().map(|r| r.last_updated).collect();
            let tokens: Vec<i64> = newer.iter().map(|r| r.sync_token).collect();
            let rows = Rows {
                ids: &ids,
                payloads: &payloads,
                times: &times,
                tokens: &tokens,
                originals: &originals,
            };
            // The page under a savepoint: should PostgreSQL refuse a document (a number
            // beyond `numeric`'s range, say), the page is written again record by record and
            // only the refused ones are stored as text (see `insert_refused`).
            sqlx::query("SAVEPOINT page_rows").execute(&mut *tx).await?;
            match insert_rows(&mut *tx, target, &rows, false).await {
                Ok(n) => rows_written = n,
                Err(e) if refused_document(&e) => {
                    sqlx::query("ROLLBACK TO SAVEPOINT page_rows")
                        .execute(&mut *tx)
                        .await?;
                    for i in 0..ids.len() {
                        let one = rows.one(i);
                        sqlx::query("SAVEPOINT one_row").execute(&mut *tx).await?;
                        match insert_rows(&mut *tx, target, &one, false).await {
                            Ok(n) => rows_written += n,
                            Err(e) if refused_document(&e) => {
                                sqlx::query("ROLLBACK TO SAVEPOINT one_row")
                                    .execute(&mut *tx)
                                    .await?;
                                tracing::warn!(
                                    entity = %target.entity,
                                    id = %ids[i],
                                    page = target.page_number,
                                    error = %e,
                                    "PostgreSQL refused the record's document: stored as text (payload is a JSON string of it, payload_text the exact text)"
                                );
                                let original = [Some(originals[i].unwrap_or(payloads[i]))];
                                let as_text = Rows {
                                    originals: &original,
                                    ..one
                                };
                                rows_written +=
                                    insert_rows(&mut *tx, target, &as_text, true).await?;
                                if originals[i].is_none() {
                                    sanitised += 1;
                                }
                            }
                            Err(e) => return Err(e),
                        }
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    Ok(Written {
        received,
        rows_written,
        sanitised,
    })
}

/// Marks rows deleted (`deleted_at_utc`, UTC) as QBO reported them at the given times; their
/// last payload stays. A row already marked keeps its first mark, and a deletion older than
/// the version stored is ignored (the row holds news QBO gave after it). Returns the rows
/// marked.
pub async fn mark_deleted(
    tx: &mut sqlx::PgConnection,
    realm: &str,
    entity: Entity,
    run_id: i64,
    deletions: &[(String, DateTime<Utc>)],
) -> Result<u64, sqlx::Error> {
    if deletions.is_empty() {
        return Ok(0);
    }
    let ids: Vec<&str> = deletions.iter().map(|(id, _)| id.as_str()).collect();
    let times: Vec<DateTime<Utc>> = deletions.iter().map(|(_, at)| *at).collect();
    let table = entity.table();
    let done = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE {table} AS t SET deleted_at_utc = (u.at AT TIME ZONE 'UTC'), run_id = $2
         FROM UNNEST($3::varchar[], $4::timestamptz[]) AS u(id, at)
         WHERE t.realm_id = $1 AND t.id = u.id AND t.deleted_at_utc IS NULL
           AND (t.source_last_updated_utc IS NULL OR u.at >= t.source_last_updated_utc)"
    )))
    .bind(realm)
    .bind(run_id)
    .bind(&ids)
    .bind(&times)
    .execute(&mut *tx)
    .await?;
    Ok(done.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::value::RawValue;

    fn rec(id: &str, secs: i64, token: i64) -> Record {
        Record {
            id: id.into(),
            payload: RawValue::from_string(format!("{{\"Id\":\"{id}\",\"v\":{token}}}")).unwrap(),
            last_updated_text: String::new(),
            last_updated: DateTime::from_timestamp(secs, 0).unwrap(),
            sync_token: token,
        }
    }

    #[test]
    fn jsonb_safe_replaces_only_what_jsonb_refuses() {
        assert_eq!(
            jsonb_safe(r#"{"a":"plain \u2019 \ud83d\ude00 \\u0000"}"#),
            None
        );
        assert_eq!(
            jsonb_safe(r#"{"a":"x\u0000y"}"#).as_deref(),
            Some(r#"{"a":"x\ufffdy"}"#)
        );
        assert_eq!(
            jsonb_safe(r#"{"a":"\ud800","b":"\udc00\u0041","c":"\uD83D"}"#).as_deref(),
            Some(r#"{"a":"\ufffd","b":"\ufffd\u0041","c":"\ufffd"}"#)
        );
        // A high surrogate followed by another high one: both lone.
        assert_eq!(
            jsonb_safe(r#""\ud800\ud800""#).as_deref(),
            Some(r#""\ufffd\ufffd""#)
        );
        // Truncated escapes at the end do not panic.
        assert_eq!(jsonb_safe("\\u00"), None);
        assert_eq!(jsonb_safe("\\"), None);
        assert_eq!(jsonb_safe("é\\uD800é").as_deref(), Some("é\\ufffdé"));
    }

    #[test]
    fn pages_with_nul_and_lone_surrogates_parse() {
        let body = r#"{"QueryResponse":{"Customer":[{"Id":"1","DisplayName":"a\u0000b \ud800","MetaData":{"LastUpdatedTime":"2015-10-08T13:28:29-07:00"}}]}}"#;
        let records = crate::extract::parse_page(body.as_bytes(), Entity::CUSTOMER).unwrap();
        assert_eq!(records.len(), 1);
        assert!(jsonb_safe(records[0].payload.get()).is_some());
    }

    #[test]
    fn dedupe_keeps_the_newest_version() {
        let out = dedupe_newest(vec![
            rec("1", 10, 0),
            rec("1", 20, 1),
            rec("2", 5, 0),
            rec("1", 20, 0),
        ]);
        let mut out: Vec<(String, i64)> = out.into_iter().map(|r| (r.id, r.sync_token)).collect();
        out.sort();
        assert_eq!(out, vec![("1".into(), 1), ("2".into(), 0)]);
    }
}
