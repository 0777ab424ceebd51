//! The commands, over validated input: `migrate`, `backfill`, `demo`, `runs`.
//!
//! The binary parses flags into these inputs; tests call the same functions. Errors the user
//! must fix (bad configuration, unreachable database) are [`UsageError`]s, which the binary
//! maps to exit code 2 before anything is written.

use crate::auth::Authorizer;
use crate::backfill::{BackfillOptions, BackfillReport, Engine, StopSignal};
use crate::client::{QboClient, http_client, token_http_client};
use crate::config::{ConfigError, DbSettings, HttpSettings, QboSettings, RealmId};
use crate::db::{self, DbError};
use crate::entity::Entity;
use crate::window::{ChunkSize, Window, parse_day};
use anyhow::Context;
use secrecy::SecretString;
use sqlx::PgPool;
use std::sync::Arc;

/// An error in what the user supplied: exit code 2, nothing written.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

impl From<ConfigError> for UsageError {
    fn from(e: ConfigError) -> Self {
        UsageError(e.to_string())
    }
}

/// True when `err` is the user's to fix (exit 2).
pub fn is_usage_error(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.is::<UsageError>()
            || e.is::<ConfigError>()
            || matches!(e.downcast_ref::<DbError>(), Some(DbError::Connect { .. }))
    })
}

/// Connects (an unreachable server is a usage error) and runs migrations.
pub async fn open_database(db: &DbSettings, max_connections: u32) -> anyhow::Result<PgPool> {
    let pool = db::connect(db, max_connections)
        .await
        .map_err(|e| UsageError(e.to_string()))?;
    db::migrate(&pool, db).await?;
    Ok(pool)
}

/// Connects for a command that only reads or changes existing state (`runs`, `trigger show`,
/// `trigger delete`, ...): a database that was never migrated holds nothing, so `None` is
/// returned and nothing is created in it. A database from an older version is upgraded
/// (reading it needs the current schema).
pub async fn open_existing_database(
    db: &DbSettings,
    max_connections: u32,
) -> anyhow::Result<Option<PgPool>> {
    let pool = db::connect(db, max_connections)
        .await
        .map_err(|e| UsageError(e.to_string()))?;
    let migrated: bool = sqlx::query_scalar("SELECT to_regclass('qbo_pipeline.runs') IS NOT NULL")
        .fetch_one(&pool)
        .await?;
    if !migrated {
        pool.close().await;
        return Ok(None);
    }
    db::migrate(&pool, db).await?;
    Ok(Some(pool))
}

/// Builds the engine for one realm: token store, authorised client, limits.
pub fn engine(pool: PgPool, qbo: &QboSettings, http: &HttpSettings) -> anyhow::Result<Engine> {
    let client = http_client(http).context("building the HTTP client")?;
    let token_client = token_http_client(http).context("building the HTTP client")?;
    let auth = Arc::new(Authorizer::new(token_client, qbo.clone(), pool.clone()));
    let qbo_client = QboClient::new(client, &qbo.api_base, &qbo.realm_id, auth, http.clone())
        .context("building the QBO API URL")?;
    Ok(Engine {
        pool,
        client: Arc::new(qbo_client),
        realm: qbo.realm_id.as_str().to_string(),
    })
}

/// Pool size for a backfill: chunk writers, per-entity locks, the run's liveness lock.
pub fn pool_size(opts: &BackfillOptions) -> u32 {
    (opts.concurrency + opts.entities.len() + 4) as u32
}

/// `backfill`: validated input in, report out.
pub async fn backfill(
    qbo: &QboSettings,
    db: &DbSettings,
    http: &HttpSettings,
    opts: &BackfillOptions,
    stop: &StopSignal,
) -> anyhow::Result<BackfillReport> {
    let pool = open_database(db, pool_size(opts)).await?;
    let engine = engine(pool.clone(), qbo, http)?;
    let report = engine.backfill(opts, stop).await;
    pool.close().await;
    report
}

/// Rows per destination table: (table, rows, inactive rows).
pub async fn row_counts(pool: &PgPool) -> anyhow::Result<Vec<(String, i64, i64)>> {
    let mut out = Vec::new();
    for e in Entity::ALL {
        let (rows, inactive): (i64, i64) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT count(*), count(*) FILTER (WHERE payload->>'Active' = 'false') FROM {}",
            e.table()
        )))
        .fetch_one(pool)
        .await?;
        out.push((e.table().to_string(), rows, inactive));
    }
    Ok(out)
}

/// `demo` settings.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub customers: u64,
    pub invoices: u64,
    pub items: u64,
    pub seed: u64,
    pub window: Window,
    pub chunk: ChunkSize,
    pub progress: bool,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            customers: 1_000,
            invoices: 20_000,
            items: 300,
            seed: 42,
            window: Window::new(
                parse_day("2014-01-01").expect("valid"),
                parse_day("2025-12-31").expect("valid"),
            )
            .expect("valid window"),
            chunk: ChunkSize::Auto,
            progress: true,
        }
    }
}

/// What the demo did.
pub struct DemoReport {
    pub report: BackfillReport,
    pub counts: Vec<(String, i64, i64)>,
    pub sandbox_counts: Vec<(String, u64)>,
    pub database: String,
}

/// `demo`: the whole job on the built-in sandbox. Uses `db` when given (creating the
/// database if missing), else a private throwaway PostgreSQL.
pub async fn demo(
    db: Option<DbSettings>,
    opts: &DemoOptions,
    stop: &StopSignal,
) -> anyhow::Result<DemoReport> {
    let mut private = None;
    let mut database = None;
    let db = match db {
        Some(db) => {
            db::ensure_database(&db)
                .await
                .map_err(|e| UsageError(e.to_string()))?;
            db
        }
        None => {
            eprintln!(
                "DATABASE_URL is not set: starting a private PostgreSQL for this demo (its data is discarded at the end)"
            );
            let pg = crate::pgtemp::PrivatePostgres::start()
                .await
                .map_err(|e| UsageError(e.to_string()))?;
            let settings = DbSettings::from_url(&pg.url()).map_err(UsageError)?;
            // The URL's host is a placeholder; the socket directory says where the server is.
            database = Some(format!(
                "the private PostgreSQL (socket {})",
                pg.socket_path().display()
            ));
            private = Some(pg);
            settings
        }
    };
    let config = qbo_sandbox::SandboxConfig {
        seed: opts.seed,
        customers: opts.customers,
        invoices: opts.invoices,
        items: opts.items,
        ..qbo_sandbox::SandboxConfig::default()
    };
    let sandbox = qbo_sandbox::spawn(config, ([127, 0, 0, 1], 0).into())
        .await
        .context("starting the built-in sandbox")?;
    eprintln!("sandbox QBO listening on {}", sandbox.base_url());
    let qbo = QboSettings {
        client_id: sandbox.client_id().to_string(),
        client_secret: SecretString::from(sandbox.client_secret().to_string()),
        realm_id: RealmId::parse(sandbox.realm_id()).map_err(UsageError)?,
        refresh_token: SecretString::from(sandbox.refresh_token().to_string()),
        api_base: url::Url::parse(&sandbox.base_url())?,
        token_url: url::Url::parse(&sandbox.token_url())?,
        token_key: None,
    };
    let backfill_opts = BackfillOptions {
        entities: Entity::ALL.to_vec(),
        window: opts.window,
        chunk: opts.chunk,
        page_size: 1000,
        restart: false,
        concurrency: 4,
        pipeline: Some("qb_demo_backfill".into()),
        trigger: None,
        progress: opts.progress,
    };
    let http = HttpSettings::default();
    let result = async {
        let pool = open_database(&db, pool_size(&backfill_opts)).await?;
        let engine = engine(pool.clone(), &qbo, &http)?;
        let report = engine.backfill(&backfill_opts, stop).await?;
        let counts = row_counts(&pool).await?;
        pool.close().await;
        anyhow::Ok((report, counts))
    }
    .await;
    let sandbox_counts = Entity::ALL
        .iter()
        .map(|e| {
            (
                e.qbo_name().to_string(),
                sandbox.state().count(
                    e.qbo_name(),
                    Some(opts.window.start()),
                    Some(opts.window.end()),
                ),
            )
        })
        .collect();
    sandbox.shutdown().await;
    if let Some(pg) = private
        && let Err(e) = pg.stop().await
    {
        tracing::warn!(error = %e, "stopping the private PostgreSQL failed");
    }
    let (report, counts) = result?;
    Ok(DemoReport {
        report,
        counts,
        sandbox_counts,
        database: database.unwrap_or_else(|| db.display().to_string()),
    })
}
