//! PostgreSQL: connecting, creating the database when asked, and migrations.
//!
//! Migrations live in `crates/qbo-pipeline/migrations` and are compiled into the binary; sqlx
//! serialises concurrent migrators with an advisory lock, so any number of processes may run
//! `migrate` at once.

use crate::config::DbSettings;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};
use std::str::FromStr;
use std::time::Duration;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error(
        "cannot connect to PostgreSQL at {target}: {source}; check DATABASE_URL (or POSTGRES_HOST/PORT/USER/PASSWORD/DB) and that the server is running"
    )]
    Connect {
        target: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("migrating the database at {target} failed: {source}")]
    Migrate {
        target: String,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    #[error("creating database '{name}' at {target} failed: {source}")]
    Create {
        name: String,
        target: String,
        #[source]
        source: sqlx::Error,
    },
}

fn options(db: &DbSettings) -> Result<PgConnectOptions, DbError> {
    PgConnectOptions::from_str(db.url())
        .map(|o| {
            o.application_name("qbo-pipeline")
                .log_statements(tracing::log::LevelFilter::Trace)
        })
        .map_err(|source| DbError::Connect {
            target: db.display().to_string(),
            source,
        })
}

/// Opens a pool. Fails fast (5 s) when the server is unreachable.
///
/// The pipeline relies on **session** semantics: advisory locks held by a connection for the
/// length of a run (run liveness, per-entity and per-realm exclusion, claimed triggers). So:
/// - every connection turns off `idle_session_timeout` (PostgreSQL 14+) for itself, since a
///   server-wide timeout would end an idle lock-holding session and silently drop its lock;
/// - a pooler that hands consecutive statements of one connection to different server
///   sessions (PgBouncer in `transaction` or `statement` mode) is refused when this start-up
///   check sees it; the check is best-effort (a quiet pooler may hand one client the same
///   session every time), so the README states the requirement rather than relying on it:
///   connect to PostgreSQL directly or through session pooling.
pub async fn connect(db: &DbSettings, max_connections: u32) -> Result<PgPool, DbError> {
    if let Some(warning) = db.tls_warning() {
        tracing::warn!("{warning}");
    }
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(30))
        .after_connect(|conn, _meta| {
            Box::pin(async move {
                sqlx::query(
                    "SELECT set_config('idle_session_timeout', '0', false)
                     WHERE current_setting('server_version_num')::int >= 140000",
                )
                .execute(conn)
                .await
                .map(|_| ())
            })
        })
        .connect_with(options(db)?)
        .await
        .map_err(|source| DbError::Connect {
            target: db.display().to_string(),
            source,
        })?;
    check_session_pooling(&pool)
        .await
        .map_err(|source| DbError::Connect {
            target: db.display().to_string(),
            source,
        })?;
    Ok(pool)
}

/// Fails when two statements on one connection reach two server sessions (see [`connect`]).
async fn check_session_pooling(pool: &PgPool) -> Result<(), sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let mut pids = Vec::with_capacity(3);
    for _ in 0..3 {
        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut *conn)
            .await?;
        pids.push(pid);
    }
    if pids.windows(2).any(|w| w[0] != w[1]) {
        return Err(sqlx::Error::Configuration(
            "the database connection does not keep one server session (a pooler such as PgBouncer in transaction or statement mode?): qbo-pipeline holds session advisory locks for the length of a run; connect to PostgreSQL directly or through a session-mode pool".into(),
        ));
    }
    Ok(())
}

/// Creates the target database if it does not exist (used by `demo`).
pub async fn ensure_database(db: &DbSettings) -> Result<(), DbError> {
    let opts = options(db)?;
    let name = opts.get_database().unwrap_or("postgres").to_string();
    if PgConnectOptions::connect(&opts).await.is_ok() {
        return Ok(());
    }
    let admin = opts.clone().database("postgres");
    let mut conn = admin.connect().await.map_err(|source| DbError::Connect {
        target: db.display().to_string(),
        source,
    })?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut conn)
            .await
            .map_err(|source| DbError::Create {
                name: name.clone(),
                target: db.display().to_string(),
                source,
            })?;
    if !exists {
        let ident = format!("\"{}\"", name.replace('"', "\"\""));
        let sql = format!("CREATE DATABASE {ident}");
        if let Err(source) = sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
        {
            // Another process may have created it in the meantime.
            let raced =
                matches!(&source, sqlx::Error::Database(d) if d.code().as_deref() == Some("42P04"));
            if !raced {
                return Err(DbError::Create {
                    name,
                    target: db.display().to_string(),
                    source,
                });
            }
        }
    }
    let _ = conn.close().await;
    Ok(())
}

/// Creates or upgrades every schema and table; safe to run any number of times.
pub async fn migrate(pool: &PgPool, db: &DbSettings) -> Result<(), DbError> {
    MIGRATOR.run(pool).await.map_err(|source| DbError::Migrate {
        target: db.display().to_string(),
        source,
    })
}
