//! The commands, over validated input: `migrate`, `backfill`, `demo`, `runs`.
//!
//! The binary parses flags into these inputs; tests call the same functions. Errors the user
//! must fix (bad configuration, unreachable database) are [`UsageError`]s, which the binary
//! maps to exit code 2 before anything is written.

use crate::backfill::{BackfillOptions, BackfillReport, Engine, StopSignal};
use crate::config::{ConfigError, DbSettings, HttpSettings, QboSettings, RealmId};
use crate::db::{self, DbError};
use crate::entity::Entity;
use crate::window::{ChunkSize, Window, parse_day};
use anyhow::Context;
use qbo_client::{QboClient, http_client, token_http_client};
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
            || e.is::<qbo_sandbox::cli::RemoteListenRefused>()
            || e.is::<qbo_sandbox::config::ConfigError>()
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
    let auth = Arc::new(crate::token_store::authorizer(
        token_client,
        qbo,
        pool.clone(),
    ));
    let qbo_client = QboClient::new(
        client,
        &qbo.api_base,
        qbo.realm_id.as_str(),
        auth,
        http.clone(),
    )
    .context("building the QBO API URL")?;
    let events = crate::events::EventBus::default();
    events
        .attach(Arc::new(crate::table_stats::TableStats::new(pool.clone())))
        .keep();
    let qbo_client = qbo_client.with_observer(Arc::new(crate::events::BusObserver(events.clone())));
    Ok(Engine {
        pool,
        client: Arc::new(qbo_client),
        realm: qbo.realm_id.as_str().to_string(),
        events,
    })
}

/// Pool size for a backfill: the chunk writers, plus one session for every entity lock, one
/// for the run's liveness lock and two for token refreshes and the ledger. It does not grow
/// with the number of entities.
pub fn pool_size(opts: &BackfillOptions) -> u32 {
    (opts.concurrency + 4) as u32
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

/// Rows of one company per destination table: (table, rows, inactive rows).
pub async fn row_counts(pool: &PgPool, realm: &str) -> anyhow::Result<Vec<(String, i64, i64)>> {
    let mut out = Vec::new();
    for e in Entity::ALL {
        let (rows, inactive): (i64, i64) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT count(*), count(*) FILTER (WHERE payload->>'Active' = 'false') FROM {}
             WHERE realm_id = $1",
            e.table()
        )))
        .bind(realm)
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
    /// Load even into a database that holds data not from the demo (`--yes`).
    pub yes: bool,
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
            yes: false,
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

/// The comment `demo` puts on the `qbo_pipeline` schema of a database it loads: the mark of a
/// demo database (see [`DemoTarget`]).
pub const DEMO_MARKER: &str =
    "qbo-pipeline demo database (synthetic data from the built-in sandbox)";

/// The pipeline name of the runs `demo` records; no other command uses it.
pub const DEMO_PIPELINE: &str = "qb_demo_backfill";

/// Schemas qbo-pipeline owns. `demo` writes only there (and sqlx's `_sqlx_migrations`).
const OWN_SCHEMAS: [&str; 2] = ["raw", "qbo_pipeline"];

/// What a database holds, as far as `demo` is concerned. Decided before anything is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DemoTarget {
    /// No table of any other application, and no row in any table of `raw` or `qbo_pipeline`
    /// (a database that was only created or migrated).
    Empty,
    /// A demo database: no table of any other application, the `qbo_pipeline` schema carries
    /// [`DEMO_MARKER`], and every run in `qbo_pipeline.runs` is a demo run
    /// ([`DEMO_PIPELINE`]).
    Demo,
    /// Anything else: tables of another application, or qbo-pipeline data not from the demo
    /// (rows without the marker, or runs of real pipelines). The demo refuses it unless
    /// `--yes`, so synthetic records never mix with real ones by accident.
    Other {
        /// What it holds, for the message: table names, runs.
        holds: Vec<String>,
    },
}

impl DemoTarget {
    /// True when the demo may load into it without `--yes`.
    pub fn accepts_demo(&self) -> bool {
        matches!(self, DemoTarget::Empty | DemoTarget::Demo)
    }
}

/// Reads (never writes) what `pool`'s database holds: see [`DemoTarget`].
pub async fn inspect_demo_target(pool: &PgPool) -> anyhow::Result<DemoTarget> {
    /// Names listed in the message at most, per kind.
    const SHOWN: usize = 5;
    // Tables, views and foreign tables outside our schemas and the system's, except sqlx's
    // migration table and objects that belong to an extension.
    let others: Vec<String> = sqlx::query_scalar(
        "SELECT n.nspname || '.' || c.relname
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
            AND n.nspname <> ALL ($1)
            AND n.nspname NOT IN ('pg_catalog', 'information_schema')
            AND n.nspname NOT LIKE 'pg\\_%'
            AND NOT (n.nspname = 'public' AND c.relname = '_sqlx_migrations')
            AND NOT EXISTS (SELECT 1 FROM pg_depend d
                             WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                               AND d.deptype = 'e')
          ORDER BY 1",
    )
    .bind(&OWN_SCHEMAS[..])
    .fetch_all(pool)
    .await
    .context("listing the database's tables")?;
    if !others.is_empty() {
        let mut holds: Vec<String> = others
            .iter()
            .take(SHOWN)
            .map(|t| format!("table {t}"))
            .collect();
        if others.len() > SHOWN {
            holds.push(format!("{} more tables", others.len() - SHOWN));
        }
        return Ok(DemoTarget::Other { holds });
    }

    // `raw` first: its records matter most in the message.
    let tables: Vec<(String, String)> = sqlx::query_as(
        "SELECT schemaname::text, tablename::text FROM pg_tables
          WHERE schemaname = ANY ($1) ORDER BY schemaname <> 'raw', 1, 2",
    )
    .bind(&OWN_SCHEMAS[..])
    .fetch_all(pool)
    .await
    .context("listing qbo-pipeline's tables")?;
    let mut with_rows = Vec::new();
    for (schema, table) in &tables {
        let quoted = format!(
            "\"{}\".\"{}\"",
            schema.replace('"', "\"\""),
            table.replace('"', "\"\"")
        );
        let any: bool = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT EXISTS (SELECT 1 FROM {quoted})"
        )))
        .fetch_one(pool)
        .await
        .with_context(|| format!("reading {schema}.{table}"))?;
        if any {
            with_rows.push(format!("{schema}.{table}"));
        }
    }
    if with_rows.is_empty() {
        return Ok(DemoTarget::Empty);
    }

    let marker: Option<String> = sqlx::query_scalar(
        "SELECT obj_description(oid, 'pg_namespace') FROM pg_namespace WHERE nspname = 'qbo_pipeline'",
    )
    .fetch_optional(pool)
    .await
    .context("reading the qbo_pipeline schema's comment")?
    .flatten();
    let other_runs: i64 = if with_rows.iter().any(|t| t == "qbo_pipeline.runs") {
        sqlx::query_scalar("SELECT count(*) FROM qbo_pipeline.runs WHERE pipeline <> $1")
            .bind(DEMO_PIPELINE)
            .fetch_one(pool)
            .await
            .context("reading qbo_pipeline.runs")?
    } else {
        0
    };
    if marker.as_deref() == Some(DEMO_MARKER) && other_runs == 0 {
        return Ok(DemoTarget::Demo);
    }
    let mut holds = Vec::new();
    if other_runs > 0 {
        let runs = if other_runs == 1 { "run" } else { "runs" };
        holds.push(format!("{other_runs} {runs} of real pipelines"));
    }
    let shown = with_rows.len().min(SHOWN);
    holds.push(format!("rows in {}", with_rows[..shown].join(", ")));
    if with_rows.len() > shown {
        holds.push(format!("rows in {} more tables", with_rows.len() - shown));
    }
    if marker.as_deref() != Some(DEMO_MARKER) {
        holds.push("no demo marker".to_owned());
    }
    Ok(DemoTarget::Other { holds })
}

/// Connects to `db` and decides whether the demo may load into it, before anything is
/// written: a [`UsageError`] (exit 2) saying what to do when it may not and `yes` is false.
/// Returns what the database holds.
pub(crate) async fn check_demo_target(db: &DbSettings, yes: bool) -> anyhow::Result<DemoTarget> {
    let pool = db::connect(db, 1)
        .await
        .map_err(|e| UsageError(e.to_string()))?;
    let target = inspect_demo_target(&pool).await;
    pool.close().await;
    let target = target?;
    if let DemoTarget::Other { holds } = &target {
        if !yes {
            return Err(UsageError(format!(
                "refusing to run the demo: DATABASE_URL points at {}, which holds data that is not \
                 from the demo ({}). The demo loads synthetic records and would mix them with it; \
                 nothing was written. Point DATABASE_URL at a new or empty database (a missing \
                 one is created), unset DATABASE_URL to use a private throwaway PostgreSQL, or \
                 pass --yes to load into this database anyway",
                db.display(),
                holds.join("; ")
            ))
            .into());
        }
        tracing::warn!(
            database = db.display(),
            holds = %holds.join("; "),
            "--yes: loading the demo into a database that holds data not from the demo"
        );
    }
    Ok(target)
}

/// Puts [`DEMO_MARKER`] on the `qbo_pipeline` schema (after migrations created it).
pub(crate) async fn mark_demo_database(pool: &PgPool) -> anyhow::Result<()> {
    let sql = format!(
        "COMMENT ON SCHEMA qbo_pipeline IS '{}'",
        DEMO_MARKER.replace('\'', "''")
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .execute(pool)
        .await
        .context("marking the database as a demo database")?;
    Ok(())
}

/// The demo's database: `db` when given (created if missing), else a private throwaway
/// PostgreSQL (returned, to be stopped at the end) and how to name it.
pub(crate) async fn demo_database(
    db: Option<DbSettings>,
) -> anyhow::Result<(
    DbSettings,
    Option<crate::pgtemp::PrivatePostgres>,
    Option<String>,
)> {
    Ok(match db {
        Some(db) => {
            db::ensure_database(&db)
                .await
                .map_err(|e| UsageError(e.to_string()))?;
            (db, None, None)
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
            let database = format!(
                "the private PostgreSQL (socket {})",
                pg.socket_path().display()
            );
            (settings, Some(pg), Some(database))
        }
    })
}

/// `demo`: the whole job on the built-in sandbox. Uses `db` when given (creating the
/// database if missing), else a private throwaway PostgreSQL. A given database must be empty
/// or a demo database ([`DemoTarget`]) unless `opts.yes`; it is checked before anything is
/// written.
pub async fn demo(
    db: Option<DbSettings>,
    opts: &DemoOptions,
    stop: &StopSignal,
) -> anyhow::Result<DemoReport> {
    let (db, private, database) = demo_database(db).await?;
    let target = check_demo_target(&db, opts.yes).await?;
    let config = qbo_sandbox::SandboxConfig {
        seed: opts.seed,
        customers: opts.customers,
        invoices: opts.invoices,
        items: opts.items,
        // A new seed token per run: this sandbox does not know the token an earlier demo
        // stored for the same realm, and a changed seed makes the token store start over.
        refresh_token: format!("demo-{:032x}", rand::random::<u128>()),
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
        seed: Some(SecretString::from(sandbox.refresh_token().to_string())),
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
        pipeline: Some(DEMO_PIPELINE.into()),
        trigger: None,
        progress: opts.progress,
        realm_lock_held: false,
    };
    let http = HttpSettings::default();
    let result = async {
        let pool = open_database(&db, pool_size(&backfill_opts)).await?;
        // A database loaded with --yes despite holding other data is not marked: the next
        // demo asks again.
        if target.accepts_demo()
            && let Err(e) = mark_demo_database(&pool).await
        {
            tracing::warn!(error = %format!("{e:#}"), "the next demo into this database will need --yes");
        }
        let engine = engine(pool.clone(), &qbo, &http)?;
        let report = engine.backfill(&backfill_opts, stop).await?;
        let counts = row_counts(&pool, qbo.realm_id.as_str()).await?;
        pool.close().await;
        anyhow::Ok((report, counts))
    }
    .await;
    // Entities read whole are counted whole, whatever the window.
    let sandbox_counts = Entity::ALL
        .iter()
        .map(|e| {
            let (from, to) = match e.read_whole() {
                true => (None, None),
                false => (Some(opts.window.start()), Some(opts.window.end())),
            };
            let n = sandbox.state().count(e.qbo_name(), from, to);
            (e.qbo_name().to_string(), n)
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
