//! Companies (realms) as data: the registry `qbo_pipeline.realms`, and which realms a command
//! works on.
//!
//! - The realm of `QBO_REALM_ID`/`QBO_REFRESH_TOKEN` registers itself (source `env`) whenever
//!   a command opens the database with them set, so a one-company set-up needs no `realm add`.
//! - `realm add` registers another company of the same Intuit app (source `added`); its
//!   refresh token goes to the token store (`qbo_pipeline.oauth_tokens`), never to argv.
//! - [`resolve`] turns `--realm R` (repeatable) / `--all-realms` / neither into the list of
//!   realms, each checked to be registered with a token, before anything is written.
//!
//! Data flows config → registry → runtime: nothing here talks to QBO.

use crate::config::{EnvRealm, RealmId};
use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// How a realm came to be registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RealmSource {
    /// `QBO_REALM_ID`/`QBO_REFRESH_TOKEN`.
    Env,
    /// `realm add`.
    Added,
    /// `connect` (Intuit's consent flow).
    Connect,
}

impl RealmSource {
    pub fn as_str(self) -> &'static str {
        match self {
            RealmSource::Env => "env",
            RealmSource::Added => "added",
            RealmSource::Connect => "connect",
        }
    }
}

/// One registered realm as `realm list` shows it. Never holds a token.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct RealmRow {
    pub realm_id: String,
    pub source: String,
    pub added_at: DateTime<Utc>,
    /// A refresh token is stored for it.
    pub has_token: bool,
    /// When the stored refresh token expires (as Intuit said at the last refresh).
    pub refresh_token_expires_at: Option<DateTime<Utc>>,
    /// When its token was last refreshed or stored.
    pub token_updated_at: Option<DateTime<Utc>>,
    /// Its triggers (active ones).
    pub triggers: i64,
    pub active_triggers: i64,
    /// Its most recent run.
    pub last_run_id: Option<i64>,
    pub last_run_status: Option<String>,
    pub last_run_started_at: Option<DateTime<Utc>>,
}

/// Registers `realm` (no-op when registered already; the first source is kept).
pub async fn register(
    pool: &PgPool,
    realm: &RealmId,
    source: RealmSource,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO qbo_pipeline.realms (realm_id, source) VALUES ($1, $2)
         ON CONFLICT (realm_id) DO NOTHING",
    )
    .bind(realm.as_str())
    .bind(source.as_str())
    .execute(pool)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// Registers the environment's realm, when it names one with a seed token.
pub async fn register_env(pool: &PgPool, env: Option<&EnvRealm>) -> Result<(), sqlx::Error> {
    if let Some(e) = env
        && e.seed.is_some()
    {
        register(pool, &e.realm_id, RealmSource::Env).await?;
    }
    Ok(())
}

/// Every registered realm, by id.
pub async fn list(pool: &PgPool) -> Result<Vec<RealmRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT r.realm_id, r.source, r.added_at,
                t.realm_id IS NOT NULL AS has_token,
                t.refresh_token_expires_at, t.updated_at AS token_updated_at,
                (SELECT count(*) FROM qbo_pipeline.triggers g WHERE g.realm_id = r.realm_id) AS triggers,
                (SELECT count(*) FROM qbo_pipeline.triggers g
                  WHERE g.realm_id = r.realm_id AND g.status = 'active') AS active_triggers,
                l.run_id AS last_run_id, l.status AS last_run_status, l.started_at AS last_run_started_at
         FROM qbo_pipeline.realms r
         LEFT JOIN qbo_pipeline.oauth_tokens t ON t.realm_id = r.realm_id
         LEFT JOIN LATERAL (
             SELECT run_id, status, started_at FROM qbo_pipeline.runs u
             WHERE u.realm_id = r.realm_id ORDER BY run_id DESC LIMIT 1
         ) l ON true
         ORDER BY r.realm_id",
    )
    .fetch_all(pool)
    .await
}

/// What `realm remove` did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Removed {
    pub realm_id: String,
    /// Its stored refresh token was deleted.
    pub token_deleted: bool,
    /// Its triggers, now inactive (they keep their realm; re-adding the realm and
    /// `trigger enable` arms them again).
    pub triggers_disabled: u64,
    /// Rows of the realm left in each `raw` table (when not purged).
    pub rows_kept: Vec<(String, i64)>,
    /// Rows deleted from each `raw` table (with `--purge`).
    pub rows_deleted: Vec<(String, i64)>,
}

/// Unregisters `realm` in one transaction: its token is deleted and its triggers are
/// deactivated. Its rows in `raw` (and its run ledger) are kept unless `purge`, which also
/// deletes its backfill jobs and checkpoints. `None` when it was not registered.
pub async fn remove(
    pool: &PgPool,
    realm: &RealmId,
    purge: bool,
    tables: &[&str],
) -> Result<Option<Removed>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let gone = sqlx::query("DELETE FROM qbo_pipeline.realms WHERE realm_id = $1")
        .bind(realm.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if gone == 0 {
        tx.rollback().await?;
        return Ok(None);
    }
    let mut out = Removed {
        realm_id: realm.as_str().to_string(),
        ..Removed::default()
    };
    out.token_deleted = sqlx::query("DELETE FROM qbo_pipeline.oauth_tokens WHERE realm_id = $1")
        .bind(realm.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected()
        > 0;
    out.triggers_disabled = sqlx::query(
        "UPDATE qbo_pipeline.triggers SET status = 'inactive', updated_at = now()
         WHERE realm_id = $1 AND status = 'active'",
    )
    .bind(realm.as_str())
    .execute(&mut *tx)
    .await?
    .rows_affected();
    for table in tables {
        // `tables` are the catalogue's fixed names: safe to splice.
        let n = if purge {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM {table} WHERE realm_id = $1"
            )))
            .bind(realm.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected() as i64
        } else {
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT count(*) FROM {table} WHERE realm_id = $1"
            )))
            .bind(realm.as_str())
            .fetch_one(&mut *tx)
            .await?
        };
        if n > 0 {
            if purge {
                out.rows_deleted.push((table.to_string(), n));
            } else {
                out.rows_kept.push((table.to_string(), n));
            }
        }
    }
    if purge {
        // Checkpoints go with their jobs (ON DELETE CASCADE).
        sqlx::query("DELETE FROM qbo_pipeline.backfill_jobs WHERE realm_id = $1")
            .bind(realm.as_str())
            .execute(&mut *tx)
            .await?;
        // Without its rows, the next sync of the company loads it in full again.
        sqlx::query("DELETE FROM qbo_pipeline.sync_state WHERE realm_id = $1")
            .bind(realm.as_str())
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(Some(out))
}

/// Which realms a command works on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Selection {
    /// Neither flag: `QBO_REALM_ID` when set, else every registered realm.
    #[default]
    Default,
    /// `--realm R` (repeatable).
    Realms(Vec<RealmId>),
    /// `--all-realms`.
    All,
}

impl Selection {
    /// From the flags; every value is checked. `--realm` with `--all-realms` is refused by
    /// clap before this.
    pub fn from_flags(realms: &[String], all: bool) -> Result<Selection, Vec<String>> {
        if all {
            return Ok(Selection::All);
        }
        if realms.is_empty() {
            return Ok(Selection::Default);
        }
        let mut problems = Vec::new();
        let mut out: Vec<RealmId> = Vec::new();
        for r in realms {
            match RealmId::parse(r) {
                Ok(id) if !out.contains(&id) => out.push(id),
                Ok(_) => {}
                Err(e) => problems.push(format!("--realm: {}", e.replace("QBO_REALM_ID ", ""))),
            }
        }
        if problems.is_empty() {
            Ok(Selection::Realms(out))
        } else {
            Err(problems)
        }
    }
}

/// The realms `selection` names, each registered with a stored token (or the environment's
/// realm with its seed), in a stable order. Problems are the user's to fix (exit 2).
pub async fn resolve(
    pool: &PgPool,
    selection: &Selection,
    env: Option<&EnvRealm>,
) -> anyhow::Result<Result<Vec<RealmId>, Vec<String>>> {
    let rows = list(pool).await?;
    let known = |r: &RealmId| rows.iter().find(|row| row.realm_id == r.as_str());
    let env_seeded = |r: &RealmId| env.is_some_and(|e| &e.realm_id == r && e.seed.is_some());
    let wanted: Vec<RealmId> = match selection {
        Selection::Realms(list) => list.clone(),
        Selection::Default => match env {
            Some(e) => vec![e.realm_id.clone()],
            None => rows
                .iter()
                .filter_map(|r| RealmId::parse(&r.realm_id).ok())
                .collect(),
        },
        Selection::All => rows
            .iter()
            .filter_map(|r| RealmId::parse(&r.realm_id).ok())
            .collect(),
    };
    let mut problems = Vec::new();
    if wanted.is_empty() {
        problems.push(
            "no company to work on: set QBO_REALM_ID and QBO_REFRESH_TOKEN, or register one with `qbo-pipeline realm add --realm-id REALM_ID` (its refresh token on standard input)"
                .to_string(),
        );
    }
    for r in &wanted {
        if env_seeded(r) {
            continue;
        }
        match known(r) {
            None => problems.push(format!(
                "realm {r} is not registered: register it with `qbo-pipeline realm add --realm-id {r}` (see `qbo-pipeline realm list`)"
            )),
            Some(row) if !row.has_token => problems.push(format!(
                "realm {r} has no refresh token: pipe one into `qbo-pipeline realm add --realm-id {r}`"
            )),
            Some(_) => {}
        }
    }
    Ok(if problems.is_empty() {
        Ok(wanted)
    } else {
        Err(problems)
    })
}

/// Checks a refresh token read from standard input before anything is sent or stored.
pub fn check_token(text: &str) -> Result<String, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("no refresh token on standard input: pipe it in, e.g. `printf %s \"$TOKEN\" | qbo-pipeline realm add --realm-id R`".into());
    }
    if t.len() > qbo_client::auth::MAX_TOKEN_LEN || !t.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(
            "what was read from standard input is not a refresh token (expected one line of printable characters, no spaces)"
                .into(),
        );
    }
    Ok(t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_to_selection() {
        assert_eq!(Selection::from_flags(&[], false), Ok(Selection::Default));
        assert_eq!(
            Selection::from_flags(&["1".into()], true),
            Ok(Selection::All)
        );
        let s = Selection::from_flags(&["123".into(), "123".into(), "45".into()], false).unwrap();
        assert_eq!(
            s,
            Selection::Realms(vec![
                RealmId::parse("123").unwrap(),
                RealmId::parse("45").unwrap()
            ])
        );
        let err = Selection::from_flags(&["12 3".into()], false).unwrap_err();
        assert!(err[0].starts_with("--realm:"), "{err:?}");
    }

    #[test]
    fn tokens_from_stdin_are_checked_and_never_echoed() {
        assert_eq!(check_token("  AB11tok\n").unwrap(), "AB11tok");
        assert!(check_token("\n").unwrap_err().contains("no refresh token"));
        let err = check_token("two words").unwrap_err();
        assert!(!err.contains("two words"), "{err}");
        assert!(check_token(&"x".repeat(qbo_client::auth::MAX_TOKEN_LEN + 1)).is_err());
    }
}
