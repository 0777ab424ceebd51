//! `qbo_pipeline.sync_state`: per (realm, entity), where its sync stands.
//!
//! - `full`: its first load (all of its history, through a backfill job over `full_from` ..
//!   `full_to` with that job's checkpoints) has not completed; the next sync resumes it.
//! - `incremental`: loaded; `mark` is QBO's clock at or before which every change has been
//!   applied, committed with the rows it covers ([`advance`] takes the transaction).
//! - `unavailable`: the company does not offer the entity (its edition lacks it); it is asked
//!   again once [`UNAVAILABLE_RECHECK`] has passed, so idle syncs do not pay for it.

use crate::entity::Entity;
use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use sqlx::PgPool;
use std::collections::HashMap;

/// How long an entity the company does not offer is left alone before it is asked again.
pub const UNAVAILABLE_RECHECK: TimeDelta = TimeDelta::days(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Full,
    Incremental,
    Unavailable,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Full => "full",
            Phase::Incremental => "incremental",
            Phase::Unavailable => "unavailable",
        }
    }
    fn parse(s: &str) -> Option<Phase> {
        Some(match s {
            "full" => Phase::Full,
            "incremental" => Phase::Incremental,
            "unavailable" => Phase::Unavailable,
            _ => return None,
        })
    }
}

/// One entity's sync state.
#[derive(Debug, Clone)]
pub struct SyncState {
    pub entity: Entity,
    pub phase: Phase,
    pub mark: DateTime<Utc>,
    pub full_from: NaiveDate,
    pub full_to: NaiveDate,
    pub next_reread_at: Option<DateTime<Utc>>,
    pub qbo_count: Option<i64>,
    pub updated_at: DateTime<Utc>,
}

type Row = (
    String,
    String,
    DateTime<Utc>,
    NaiveDate,
    NaiveDate,
    Option<DateTime<Utc>>,
    Option<i64>,
    DateTime<Utc>,
);

/// The states of `realm`'s entities that have one.
pub async fn load(pool: &PgPool, realm: &str) -> Result<HashMap<Entity, SyncState>, sqlx::Error> {
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT entity, phase, mark, full_from, full_to, next_reread_at, qbo_count, updated_at
         FROM qbo_pipeline.sync_state WHERE realm_id = $1",
    )
    .bind(realm)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(
            |(entity, phase, mark, full_from, full_to, next_reread_at, qbo_count, updated_at)| {
                let entity = Entity::lookup(&entity)?;
                Some((
                    entity,
                    SyncState {
                        entity,
                        phase: Phase::parse(&phase)?,
                        mark,
                        full_from,
                        full_to,
                        next_reread_at,
                        qbo_count,
                        updated_at,
                    },
                ))
            },
        )
        .collect())
}

/// Starts an entity's first load: phase `full`, its mark (QBO's clock before the load began)
/// and the window its backfill job covers. Committed before the load starts, so a resumed
/// sync loads the same window (the same job, resumed from its checkpoints).
pub async fn begin_full(
    pool: &PgPool,
    realm: &str,
    entity: Entity,
    mark: DateTime<Utc>,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO qbo_pipeline.sync_state (realm_id, entity, phase, mark, full_from, full_to)
         VALUES ($1, $2, 'full', $3, $4, $5)
         ON CONFLICT (realm_id, entity) DO UPDATE SET phase = 'full', mark = EXCLUDED.mark,
             full_from = EXCLUDED.full_from, full_to = EXCLUDED.full_to, updated_at = now()",
    )
    .bind(realm)
    .bind(entity.cli_name())
    .bind(mark)
    .bind(from)
    .bind(to)
    .execute(pool)
    .await?;
    Ok(())
}

/// The first load completed: incremental from its mark, first re-read at `next_reread_at`.
pub async fn complete_full(
    pool: &PgPool,
    realm: &str,
    entity: Entity,
    next_reread_at: Option<DateTime<Utc>>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE qbo_pipeline.sync_state SET phase = 'incremental', full_completed_at = now(),
             next_reread_at = $3, updated_at = now()
         WHERE realm_id = $1 AND entity = $2",
    )
    .bind(realm)
    .bind(entity.cli_name())
    .bind(next_reread_at)
    .execute(pool)
    .await?;
    Ok(())
}

/// The company does not offer the entity: remembered so idle syncs skip it for a while.
pub async fn mark_unavailable(
    pool: &PgPool,
    realm: &str,
    entity: Entity,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO qbo_pipeline.sync_state (realm_id, entity, phase, mark, full_from, full_to)
         VALUES ($1, $2, 'unavailable', $3, $4, $4)
         ON CONFLICT (realm_id, entity) DO UPDATE SET phase = 'unavailable', updated_at = now()",
    )
    .bind(realm)
    .bind(entity.cli_name())
    .bind(now)
    .bind(now.date_naive())
    .execute(pool)
    .await?;
    Ok(())
}

/// Sets an entity's mark inside the transaction that applied the changes it covers. A mark
/// that moves back only makes the next sync read more; it is set as given, so a wrong time
/// is corrected by the next answer.
pub async fn advance(
    tx: &mut sqlx::PgConnection,
    realm: &str,
    entity: Entity,
    mark: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE qbo_pipeline.sync_state SET mark = $3, updated_at = now()
         WHERE realm_id = $1 AND entity = $2",
    )
    .bind(realm)
    .bind(entity.cli_name())
    .bind(mark)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// What the sync of one entity ended with: how it read it, and its count proof.
pub struct Finished<'a> {
    pub mode: &'a str,
    pub run_id: i64,
    pub qbo_count: Option<u64>,
    pub live_rows: Option<u64>,
    pub proven: bool,
    pub reread_next: Option<DateTime<Utc>>,
}

pub async fn finish(
    pool: &PgPool,
    realm: &str,
    entity: Entity,
    f: &Finished<'_>,
) -> Result<(), sqlx::Error> {
    let as_i64 = |n: Option<u64>| n.map(|n| i64::try_from(n).unwrap_or(i64::MAX));
    sqlx::query(
        "UPDATE qbo_pipeline.sync_state SET last_sync_at = now(), last_mode = $3,
             last_run_id = $4, qbo_count = coalesce($5, qbo_count),
             live_rows = coalesce($6, live_rows),
             last_proven_at = CASE WHEN $7 THEN now() ELSE last_proven_at END,
             last_reread_at = CASE WHEN $8::timestamptz IS NOT NULL THEN now() ELSE last_reread_at END,
             next_reread_at = coalesce($8, next_reread_at), updated_at = now()
         WHERE realm_id = $1 AND entity = $2",
    )
    .bind(realm)
    .bind(entity.cli_name())
    .bind(f.mode)
    .bind(f.run_id)
    .bind(as_i64(f.qbo_count))
    .bind(as_i64(f.live_rows))
    .bind(f.proven)
    .bind(f.reread_next)
    .execute(pool)
    .await?;
    Ok(())
}

/// One row of `sync --status`.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct StatusRow {
    pub realm_id: String,
    pub entity: String,
    pub phase: String,
    pub mark: DateTime<Utc>,
    pub last_sync_at: Option<DateTime<Utc>>,
    pub last_mode: Option<String>,
    pub last_run_id: Option<i64>,
    pub last_proven_at: Option<DateTime<Utc>>,
    pub qbo_count: Option<i64>,
    pub live_rows: Option<i64>,
    pub deleted_rows: Option<i64>,
    pub last_reread_at: Option<DateTime<Utc>>,
    pub next_reread_at: Option<DateTime<Utc>>,
}

/// Where every entity's sync stands, for the realms given (all when empty), with the rows
/// marked deleted counted from its table.
pub async fn status(pool: &PgPool, realms: &[String]) -> Result<Vec<StatusRow>, sqlx::Error> {
    let mut rows: Vec<StatusRow> = sqlx::query_as(
        "SELECT realm_id, entity, phase, mark, last_sync_at, last_mode, last_run_id,
                last_proven_at, qbo_count, live_rows, NULL::bigint AS deleted_rows,
                last_reread_at, next_reread_at
         FROM qbo_pipeline.sync_state
         WHERE cardinality($1::text[]) = 0 OR realm_id = ANY($1)
         ORDER BY realm_id, entity",
    )
    .bind(realms)
    .fetch_all(pool)
    .await?;
    for row in &mut rows {
        if let Some(e) = Entity::lookup(&row.entity) {
            row.deleted_rows = Some(
                sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                    "SELECT count(*) FROM {} WHERE realm_id = $1 AND deleted_at_utc IS NOT NULL",
                    e.table()
                )))
                .bind(&row.realm_id)
                .fetch_one(pool)
                .await?,
            );
        }
    }
    Ok(rows)
}

/// When an entity loaded at `loaded` is first re-read: `every` after, spread by a fraction
/// of `every` (0.5 to 1.5 of it, fixed per realm and entity) so the re-reads of a company's
/// entities fall on different syncs.
pub fn first_reread(
    realm: &str,
    entity: Entity,
    loaded: DateTime<Utc>,
    every: TimeDelta,
) -> Option<DateTime<Utc>> {
    if every <= TimeDelta::zero() {
        return None;
    }
    // FNV-1a: stable across builds and platforms (std's hasher is not).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in realm.bytes().chain([0]).chain(entity.cli_name().bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let fraction = (h % 1000) as f64 / 1000.0;
    let secs = every.num_seconds() as f64 * (0.5 + fraction);
    loaded.checked_add_signed(TimeDelta::seconds(secs as i64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_rereads_are_spread_between_half_and_one_and_a_half_periods() {
        let loaded = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let week = TimeDelta::days(7);
        let mut seen = std::collections::BTreeSet::new();
        for e in Entity::all() {
            let at = first_reread("123", e, loaded, week).unwrap();
            assert!(
                at >= loaded + week / 2 && at <= loaded + week * 3 / 2,
                "{e}"
            );
            assert_eq!(first_reread("123", e, loaded, week), Some(at), "stable");
            seen.insert(at.timestamp() / 3600);
        }
        assert!(seen.len() > 20, "40 entities fall on many different hours");
        assert_eq!(
            first_reread("1", Entity::INVOICE, loaded, TimeDelta::zero()),
            None
        );
    }
}
