//! The process's runtime, built once and shared by the commands and the scheduler: the
//! database pool (migrations checked once), the Intuit app's settings, one authorised client
//! (token refresher + rate limiter + in-flight cap) per realm, made on first use and kept,
//! the event bus its engines publish on, and the stop signal every wait races.
//!
//! Data flows config → runtime (realms, clients) → engine: a command resolves its realms
//! here ([`Runtime::realms`]), then runs [`Runtime::engine`] for each.

use crate::app::{UsageError, open_database};
use crate::backfill::{Engine, StopSignal};
use crate::config::{DbSettings, HttpSettings, QboApp, RealmId};
use crate::events::{Attached, BusObserver, EventBus};
use crate::realm::{self, Selection};
use crate::run_log::RunLog;
use crate::usage::{MonthlyBudget, UsageMeter};
use anyhow::Context;
use qbo_client::{QboClient, http_client, token_http_client};
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Everything a process builds once.
pub struct Runtime {
    pool: PgPool,
    db: DbSettings,
    app: QboApp,
    http: HttpSettings,
    api_client: reqwest::Client,
    token_client: reqwest::Client,
    clients: Mutex<HashMap<RealmId, Arc<QboClient>>>,
    events: EventBus,
    stop: StopSignal,
    /// API usage counted from the bus, added to `qbo_pipeline.api_usage` every few seconds
    /// by `flusher` and once more at [`Runtime::close`].
    meter: Arc<UsageMeter>,
    _metering: Attached,
    /// The runs' log lines, flushed to `qbo_pipeline.run_log` every second (migration 0011).
    run_log: Arc<RunLog>,
    _logging: Attached,
    /// Refreshes the planner's statistics of the tables a run fills.
    _stats: Attached,
    flusher: tokio::task::JoinHandle<()>,
    budget: Option<Arc<MonthlyBudget>>,
}

/// How often run log lines are written.
const LOG_FLUSH: std::time::Duration = std::time::Duration::from_secs(1);
/// How often (in log flushes: every 5 s) API usage is added to the table (and the budget
/// sees other processes' calls).
const USAGE_FLUSH_TICKS: u64 = 5;

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("db", &self.db.display())
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// Connects (an unreachable database is a usage error), migrates, and registers the
    /// environment's realm.
    pub async fn open(
        db: &DbSettings,
        app: QboApp,
        http: HttpSettings,
        max_connections: u32,
        stop: StopSignal,
    ) -> anyhow::Result<Runtime> {
        let api_client = http_client(&http).context("building the HTTP client")?;
        let token_client = token_http_client(&http).context("building the HTTP client")?;
        let pool = open_database(db, max_connections).await?;
        realm::register_env(&pool, app.env_realm.as_ref()).await?;
        let events = EventBus::default();
        let meter = Arc::new(UsageMeter::default());
        let metering = events.attach(meter.clone());
        let run_log = Arc::new(RunLog::default());
        let logging = events.attach(run_log.clone());
        let stats = events.attach(Arc::new(crate::table_stats::TableStats::new(pool.clone())));
        let budget = match app.monthly_budget {
            Some(limit) => Some(Arc::new(MonthlyBudget::new(
                limit,
                crate::usage::month_calls(&pool).await?,
            ))),
            None => None,
        };
        let flusher = tokio::spawn({
            let (pool, meter, budget) = (pool.clone(), meter.clone(), budget.clone());
            let run_log = run_log.clone();
            async move {
                let mut ticks = 0u64;
                loop {
                    tokio::time::sleep(LOG_FLUSH).await;
                    if let Err(e) = run_log.flush(&pool).await {
                        tracing::warn!(error = %e, "could not record run log lines; kept for the next try");
                    }
                    ticks += 1;
                    if ticks.is_multiple_of(USAGE_FLUSH_TICKS) {
                        flush_usage(&pool, &meter, budget.as_deref()).await;
                    }
                }
            }
        });
        Ok(Runtime {
            pool,
            db: db.clone(),
            app,
            http,
            api_client,
            token_client,
            clients: Mutex::new(HashMap::new()),
            events,
            stop,
            meter,
            _metering: metering,
            run_log,
            _logging: logging,
            _stats: stats,
            flusher,
            budget,
        })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn db(&self) -> &DbSettings {
        &self.db
    }

    pub fn app(&self) -> &QboApp {
        &self.app
    }

    pub fn http(&self) -> &HttpSettings {
        &self.http
    }

    pub fn stop(&self) -> &StopSignal {
        &self.stop
    }

    /// The bus every engine of this runtime publishes its events on (the log sink attached).
    pub fn events(&self) -> &EventBus {
        &self.events
    }

    /// The realms a command works on; a realm that is not registered, or has no token, is
    /// a usage error (exit 2) found before anything is written.
    pub async fn realms(&self, selection: &Selection) -> anyhow::Result<Vec<RealmId>> {
        match realm::resolve(&self.pool, selection, self.app.env_realm.as_ref()).await? {
            Ok(realms) => Ok(realms),
            Err(problems) => Err(usage(problems)),
        }
    }

    /// The realm's authorised client: one per realm per process, so its token refresher and
    /// its limits are shared by everything the process runs for that company.
    pub fn client(&self, realm: &RealmId) -> anyhow::Result<Arc<QboClient>> {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = clients.get(realm) {
            return Ok(c.clone());
        }
        let settings = self.app.realm(realm);
        let auth = Arc::new(crate::token_store::authorizer(
            self.token_client.clone(),
            &settings,
            self.pool.clone(),
        ));
        let mut client = QboClient::new(
            self.api_client.clone(),
            &settings.api_base,
            realm.as_str(),
            auth,
            self.http.clone(),
        )
        .context("building the QBO API URL")?
        .with_observer(Arc::new(BusObserver(self.events.clone())));
        if let Some(budget) = &self.budget {
            client = client.with_gate(budget.clone());
        }
        let client = Arc::new(client);
        clients.insert(realm.clone(), client.clone());
        Ok(client)
    }

    /// The clients made so far (the realms this process has talked to).
    pub fn clients(&self) -> Vec<(RealmId, Arc<QboClient>)> {
        let clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        clients
            .iter()
            .map(|(r, c)| (r.clone(), c.clone()))
            .collect()
    }

    /// The engine for one realm.
    pub fn engine(&self, realm: &RealmId) -> anyhow::Result<Engine> {
        Ok(Engine {
            pool: self.pool.clone(),
            client: self.client(realm)?,
            realm: realm.as_str().to_string(),
            events: self.events.clone(),
        })
    }

    /// Adds what is left of the API usage to the table, then closes the pool.
    pub async fn close(self) {
        self.flusher.abort();
        flush_usage(&self.pool, &self.meter, self.budget.as_deref()).await;
        if let Err(e) = self.run_log.flush(&self.pool).await {
            tracing::warn!(error = %e, "could not record the last run log lines");
        }
        self.pool.close().await;
    }
}

async fn flush_usage(pool: &PgPool, meter: &UsageMeter, budget: Option<&MonthlyBudget>) {
    match meter.flush(pool).await {
        Ok(flushed) => {
            if let Some(budget) = budget {
                match crate::usage::month_calls(pool).await {
                    Ok(stored) => budget.refresh(stored, &flushed),
                    Err(e) => tracing::warn!(error = %e, "could not read this month's API calls"),
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not record API usage; kept for the next try"),
    }
}

/// Problems as one usage error (exit 2).
pub fn usage(problems: Vec<String>) -> anyhow::Error {
    if problems.len() == 1 {
        UsageError(problems.into_iter().next().unwrap_or_default()).into()
    } else {
        let mut text = format!("{} problems:", problems.len());
        for p in problems {
            text.push_str("\n  - ");
            text.push_str(&p);
        }
        UsageError(text).into()
    }
}
