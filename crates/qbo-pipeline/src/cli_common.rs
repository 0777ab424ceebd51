//! Command-line pieces shared by every command: client-side limit flags, signal handling,
//! the database target.

use crate::app::UsageError;
use crate::backfill::StopSignal;
use crate::config::{ConfigError, DbSettings, HttpSettings, ProcessEnv};
use clap::Args;
use std::time::Duration;

#[derive(Args, Debug)]
pub struct HttpArgs {
    /// Requests per minute per realm (QBO allows 500).
    #[arg(long, default_value_t = HttpSettings::default().requests_per_minute)]
    pub rpm: u32,
    /// Requests in flight per realm (QBO allows 10).
    #[arg(long, default_value_t = HttpSettings::default().max_in_flight)]
    pub max_in_flight: u32,
    /// Batch requests per minute per realm (QBO allows 40); small queries such as counts
    /// share batch requests of up to 30. 0 sends every query on its own.
    #[arg(long, default_value_t = HttpSettings::default().batch_per_minute)]
    pub batch_rpm: u32,
    /// Retries of one request after 429, 5xx, timeouts or dropped connections.
    #[arg(long, default_value_t = HttpSettings::default().max_retries)]
    pub max_retries: u32,
    /// Seconds to wait after a 429 that has no Retry-After header.
    #[arg(long, default_value_t = 60.0)]
    pub throttle_wait_secs: f64,
    /// Seconds before a request is abandoned and retried.
    #[arg(long, default_value_t = 130.0)]
    pub request_timeout_secs: f64,
}

impl HttpArgs {
    /// The validated settings; every problem is reported.
    pub fn settings(&self) -> Result<HttpSettings, ConfigError> {
        let mut problems = Vec::new();
        let secs = |v: f64, name: &str, problems: &mut Vec<String>| {
            if v.is_finite() && (0.0..=3600.0).contains(&v) {
                Duration::from_secs_f64(v)
            } else {
                problems.push(format!(
                    "--{name} {v} is out of range: use 0..=3600 seconds"
                ));
                Duration::ZERO
            }
        };
        if self.max_retries > 100 {
            problems.push(format!(
                "--max-retries {} is out of range: use 0..=100",
                self.max_retries
            ));
        }
        if self.request_timeout_secs.is_finite() && self.request_timeout_secs < 1.0 {
            problems.push(format!(
                "--request-timeout-secs {} is too short: use 1..=3600 seconds (QBO may take up to 120 s to answer a query)",
                self.request_timeout_secs
            ));
        }
        let s = HttpSettings {
            requests_per_minute: self.rpm,
            max_in_flight: self.max_in_flight,
            batch_per_minute: self.batch_rpm,
            max_retries: self.max_retries,
            throttle_wait: secs(self.throttle_wait_secs, "throttle-wait-secs", &mut problems),
            request_timeout: secs(
                self.request_timeout_secs,
                "request-timeout-secs",
                &mut problems,
            ),
            ..HttpSettings::default()
        };
        problems.extend(s.validate());
        if problems.is_empty() {
            Ok(s)
        } else {
            Err(ConfigError { problems })
        }
    }
}

/// First SIGINT/SIGTERM: stop gracefully (pages in flight commit). Second: exit at once.
pub fn install_signal_handlers(stop: StopSignal) {
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return,
            };
        let mut seen = 0;
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {},
                _ = term.recv() => {},
            }
            seen += 1;
            if seen == 1 {
                eprintln!("stopping: finishing the pages in flight (signal again to exit at once)");
                stop.stop();
            } else {
                std::process::exit(130);
            }
        }
    });
}

/// `DATABASE_URL` or `POSTGRES_*`; a usage error when neither is set.
pub fn database_settings() -> Result<DbSettings, UsageError> {
    DbSettings::from_source(&ProcessEnv)
        .map_err(UsageError)?
        .ok_or_else(|| {
            UsageError(
                "no database configured: set DATABASE_URL (postgres://USER:PASSWORD@HOST:PORT/DB) or POSTGRES_HOST/PORT/USER/PASSWORD/DB"
                    .into(),
            )
        })
}

/// `--realm R` (repeatable) / `--all-realms`, on every command that talks to QBO.
#[derive(Args, Debug, Default, Clone)]
pub struct RealmArgs {
    /// Work on this company (QBO realm id); repeat for several. Default: the realm of
    /// QBO_REALM_ID when set, else every registered company (`qbo-pipeline realm list`).
    #[arg(long = "realm", value_name = "REALM_ID", conflicts_with = "all_realms")]
    pub realms: Vec<String>,
    /// Work on every registered company (the environment's included).
    #[arg(long)]
    pub all_realms: bool,
}

impl RealmArgs {
    /// The validated selection; problems are added to `problems`.
    pub fn selection(&self, problems: &mut Vec<String>) -> crate::realm::Selection {
        crate::realm::Selection::from_flags(&self.realms, self.all_realms)
            .map_err(|e| problems.extend(e))
            .unwrap_or_default()
    }
}

/// Runs `job` on every company of `selection` through one runtime (pool, clients and stop
/// signal built once), printing each report; see [`job_realms`].
pub async fn job_command(
    db: &crate::config::DbSettings,
    app: crate::config::QboApp,
    http: crate::config::HttpSettings,
    selection: &crate::realm::Selection,
    job: &crate::job::Job,
    json: bool,
) -> anyhow::Result<std::process::ExitCode> {
    let stop = StopSignal::default();
    install_signal_handlers(stop.clone());
    let runtime = crate::runtime::Runtime::open(db, app, http, job.pool_size(), stop).await?;
    let result = match runtime.realms(selection).await {
        Ok(realms) => job_realms(&runtime, &realms, job, json).await,
        Err(e) => Err(e),
    };
    runtime.close().await;
    result
}

/// Runs `job` on each realm in turn through the runtime's engines and prints each report
/// (a header per realm when there are several; `--json` prints one report, or an array of
/// `{"realm_id", "report"}` for several). Exit 0 when every run succeeded, else 1.
pub async fn job_realms(
    runtime: &crate::runtime::Runtime,
    realms: &[crate::config::RealmId],
    job: &crate::job::Job,
    json: bool,
) -> anyhow::Result<std::process::ExitCode> {
    let mut reports = Vec::new();
    for realm in realms {
        if runtime.stop().is_stopped() {
            break;
        }
        let report = job.run(&runtime.engine(realm)?, runtime.stop()).await?;
        if !json {
            if realms.len() > 1 {
                println!("realm {realm}:");
            }
            println!("{}", report.table());
        }
        if let Some(e) = report.error() {
            eprintln!("error: realm {realm}: {e}");
        }
        reports.push((realm.clone(), report));
    }
    if json {
        if let [(_, one)] = reports.as_slice() {
            println!("{}", serde_json::to_string_pretty(one)?);
        } else {
            let all: Vec<_> = reports
                .iter()
                .map(|(r, report)| serde_json::json!({ "realm_id": r.as_str(), "report": report }))
                .collect();
            println!("{}", serde_json::to_string_pretty(&all)?);
        }
    }
    let ok = reports.len() == realms.len() && reports.iter().all(|(_, r)| r.succeeded());
    Ok(if ok {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::from(1)
    })
}
