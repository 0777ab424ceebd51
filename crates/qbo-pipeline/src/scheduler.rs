//! The scheduler: fires due triggers, one at a time per process, any number of processes per
//! database.
//!
//! [`Scheduler::try_run_next`] is one step with the clock injected: claim the oldest due
//! trigger (see [`crate::trigger`]), run its pipeline through the backfill engine, record the
//! outcome and the trigger's next state, and say what happened ([`Outcome`]). Tests drive it
//! step by step; [`Scheduler::run`] is the long-running loop around it (`qbo-pipeline
//! scheduler`), sleeping until the next fire time or `poll` (whichever is sooner).
//!
//! Stopping: the [`StopSignal`] is shared with the run in flight, which finishes its pages,
//! commits their checkpoints and ends; the trigger stays due, so the next scheduler (or the
//! same one restarted) resumes that run from its checkpoints.

use crate::backfill::StopSignal;
use crate::config::{DbSettings, HttpSettings, QboApp, QboSettings, RealmId};
use crate::job::{Job, Report, SyncSettings};
use crate::pipelines;
use crate::realm::{self, Selection};
use crate::runtime::Runtime;
use crate::schedule::missed_ticks;
use crate::trigger::{self, Finished, FireResult};
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What one step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing this scheduler may run now; `next_due` is the earliest upcoming fire time.
    Idle { next_due: Option<DateTime<Utc>> },
    /// A trigger fired.
    Fired(Fired),
    /// A stop was requested before anything was claimed.
    Stopped,
}

/// One fire of one trigger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fired {
    pub trigger: String,
    pub pipeline: String,
    pub result: FireResult,
    /// The trigger's state afterwards (None if it was deleted while it ran).
    pub after: Option<Finished>,
    /// Ticks of a recurring trigger that came due while no scheduler ran, folded into this fire.
    pub missed_ticks: u32,
}

/// Loop settings.
#[derive(Debug, Clone)]
pub struct LoopOptions {
    /// Longest sleep between looks at the store.
    pub poll: Duration,
    /// Return once nothing is due instead of waiting.
    pub exit_when_idle: bool,
}

/// What the loop did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoopReport {
    pub fired: u32,
    /// Fires whose run failed (retries pending included).
    pub failed: u32,
    /// Fires stopped by a signal (resumed by the next scheduler).
    pub interrupted: u32,
}

/// A scheduler for one realm (the QBO settings) and one database.
pub struct Scheduler {
    runtime: Arc<Runtime>,
    selection: Selection,
    pool: PgPool,
    stop: StopSignal,
    progress: bool,
    who: String,
    sync: SyncSettings,
    /// Ends a sleep early (the dashboard made a trigger due).
    wake: Option<Arc<tokio::sync::Notify>>,
}

/// Connections a scheduler's runtime needs: one run's (its chunk concurrency + 4) plus the
/// claim's session.
const SCHEDULER_POOL: u32 = 10;

impl Scheduler {
    /// A scheduler for the one realm of `qbo` (tests and one-company set-ups).
    pub async fn new(
        qbo: QboSettings,
        db: DbSettings,
        http: HttpSettings,
        stop: StopSignal,
    ) -> anyhow::Result<Scheduler> {
        let realm = qbo.realm_id.clone();
        let runtime = Runtime::open(&db, QboApp::single(&qbo), http, SCHEDULER_POOL, stop).await?;
        Ok(Scheduler::over(
            Arc::new(runtime),
            Selection::Realms(vec![realm]),
        ))
    }

    /// Opens a runtime for a scheduler of the realms `selection` names.
    pub async fn open(
        app: QboApp,
        db: DbSettings,
        http: HttpSettings,
        selection: Selection,
        stop: StopSignal,
    ) -> anyhow::Result<Scheduler> {
        let runtime = Runtime::open(&db, app, http, SCHEDULER_POOL, stop).await?;
        if let Selection::Realms(_) = selection {
            // Named realms must exist (exit 2); the others are read on every look.
            runtime.realms(&selection).await?;
        }
        Ok(Scheduler::over(Arc::new(runtime), selection))
    }

    /// A scheduler over an existing runtime.
    pub fn over(runtime: Arc<Runtime>, selection: Selection) -> Scheduler {
        let host = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "unknown-host".into());
        Scheduler {
            pool: runtime.pool().clone(),
            stop: runtime.stop().clone(),
            runtime,
            selection,
            progress: false,
            who: format!("{host}:{}", std::process::id()),
            sync: SyncSettings::default(),
            wake: None,
        }
    }

    /// Wakes from a sleep between looks at the triggers when `wake` is notified.
    pub fn with_wake(mut self, wake: Arc<tokio::sync::Notify>) -> Scheduler {
        self.wake = Some(wake);
        self
    }

    /// The settings of the sync pipelines it runs (`QBO_SYNC_REREAD_DAYS`).
    pub fn with_sync(mut self, sync: SyncSettings) -> Scheduler {
        self.sync = sync;
        self
    }

    /// The realms whose triggers this scheduler fires now: the named ones, or the
    /// environment's, or every registered realm with a token (read again on every look, so
    /// a company added while it runs is served).
    async fn served_realms(&self) -> anyhow::Result<Vec<String>> {
        let env = self.runtime.app().env_realm.as_ref();
        Ok(match (&self.selection, env) {
            (Selection::Realms(list), _) => list.iter().map(|r| r.to_string()).collect(),
            (Selection::Default, Some(e)) => vec![e.realm_id.to_string()],
            _ => {
                let mut out: Vec<String> = realm::list(&self.pool)
                    .await?
                    .into_iter()
                    .filter(|r| r.has_token)
                    .map(|r| r.realm_id)
                    .collect();
                if let Some(e) = env
                    && e.seed.is_some()
                    && !out.iter().any(|r| r == e.realm_id.as_str())
                {
                    out.push(e.realm_id.to_string());
                }
                out
            }
        })
    }

    pub fn with_progress(mut self, progress: bool) -> Scheduler {
        self.progress = progress;
        self
    }

    /// Names this scheduler in `claimed_by` (default `host:pid`).
    pub fn with_name(mut self, who: impl Into<String>) -> Scheduler {
        self.who = who.into();
        self
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// One step at `now`: fire the oldest due trigger no other scheduler is running.
    pub async fn try_run_next(&self, now: DateTime<Utc>) -> anyhow::Result<Outcome> {
        if self.stop.is_stopped() {
            return Ok(Outcome::Stopped);
        }
        let realms = self.served_realms().await?;
        let Some(claim) = trigger::claim(&self.pool, now, &self.who, &realms).await? else {
            let next_due = trigger::next_due_after(&self.pool, now, &realms).await?;
            return Ok(Outcome::Idle { next_due });
        };
        let started = Instant::now();
        let row = claim.trigger.clone();
        let due = row.next_fire_at.unwrap_or(now);
        let spec = row.spec();
        let missed = match &spec {
            Ok(s) => missed_ticks(&s.schedule, due, now, 10_000),
            Err(_) => 0,
        };
        tracing::info!(
            trigger = %row.name, pipeline = %row.pipeline, due = %due, attempt = row.attempts + 1,
            missed_ticks = missed, "trigger fired"
        );
        let result = match spec.map_err(|e| e.to_string()).and_then(|s| {
            pipelines::resolve_pipeline(&s.pipeline, &s.variables).map_err(|e| e.to_string())
        }) {
            Err(error) => FireResult::Invalid {
                error: format!(
                    "the stored trigger cannot run: {error}; fix it with `qbo-pipeline trigger apply` or delete it"
                ),
            },
            Ok(run) => {
                let mut job = Job::from_pipeline(&run, Some(&row.name), self.progress, &self.sync);
                // The claim holds the realm's lock for this run.
                job.hold_realm_lock();
                // The run is its own task: should anything in it panic, the attempt is
                // recorded as failed (and counted against max_attempts) instead of the
                // scheduler dying with the trigger claimed and unrecorded.
                let (runtime, stop, realm) =
                    (self.runtime.clone(), self.stop.clone(), claim.realm.clone());
                let task = tokio::spawn(async move {
                    let realm = RealmId::parse(&realm).map_err(anyhow::Error::msg)?;
                    job.run(&runtime.engine(&realm)?, &stop).await
                });
                match task.await {
                    Ok(report) => fire_result(report, &self.stop),
                    Err(e) => FireResult::Failed {
                        run_id: None,
                        error: format!(
                            "the run ended abnormally ({}); this is a bug in qbo-pipeline, please report it with the log",
                            if e.is_panic() { "panic" } else { "cancelled" }
                        ),
                    },
                }
            }
        };
        let elapsed = chrono::Duration::from_std(started.elapsed()).unwrap_or_default();
        let after = claim.finish(&self.pool, &result, now + elapsed).await?;
        log_fire(&row.name, &result, after.as_ref());
        Ok(Outcome::Fired(Fired {
            trigger: row.name,
            pipeline: row.pipeline,
            result,
            after,
            missed_ticks: missed,
        }))
    }

    /// Fires due triggers until stopped (or, with `exit_when_idle`, until nothing is due).
    pub async fn run(&self, opts: &LoopOptions) -> anyhow::Result<LoopReport> {
        let mut report = LoopReport::default();
        tracing::info!(scheduler = %self.who, realms = ?self.served_realms().await.unwrap_or_default(), poll_secs = opts.poll.as_secs_f64(), "scheduler started");
        match trigger::without_realm(&self.pool).await {
            Ok(names) if !names.is_empty() => tracing::warn!(
                triggers = names.join(", "),
                "these triggers have no company (stored before triggers had one) and never fire: give each one with `qbo-pipeline trigger enable NAME --realm REALM_ID`"
            ),
            _ => {}
        }
        loop {
            let now = Utc::now();
            let outcome = match self.try_run_next(now).await {
                Ok(o) => o,
                Err(e) if !opts.exit_when_idle => {
                    tracing::error!(
                        error = format!("{e:#}"),
                        "the scheduler could not read or update the trigger store; trying again"
                    );
                    self.sleep_until(Instant::now() + opts.poll).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            match outcome {
                Outcome::Stopped => break,
                Outcome::Fired(f) => {
                    report.fired += 1;
                    match f.result {
                        FireResult::Succeeded { .. } => {}
                        FireResult::Interrupted { .. } => report.interrupted += 1,
                        FireResult::Failed { .. } | FireResult::Invalid { .. } => {
                            report.failed += 1
                        }
                    }
                }
                Outcome::Idle { next_due } => {
                    if opts.exit_when_idle {
                        break;
                    }
                    let wait = next_due
                        .and_then(|t| (t - Utc::now()).to_std().ok())
                        .map_or(opts.poll, |d| d.min(opts.poll));
                    self.sleep_until(Instant::now() + wait).await;
                }
            }
        }
        tracing::info!(
            fired = report.fired,
            failed = report.failed,
            interrupted = report.interrupted,
            "scheduler stopped"
        );
        Ok(report)
    }

    /// Sleeps until `deadline` or a stop request, whichever is first.
    async fn sleep_until(&self, deadline: Instant) {
        let sleep = self
            .stop
            .sleep(deadline.saturating_duration_since(Instant::now()));
        match &self.wake {
            None => {
                sleep.await;
            }
            Some(wake) => {
                tokio::select! {
                    _ = sleep => {}
                    _ = wake.notified() => {}
                }
            }
        }
    }

    pub async fn close(self) {
        self.pool.close().await;
    }

    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }
}

fn fire_result(report: anyhow::Result<Report>, stop: &StopSignal) -> FireResult {
    match report {
        Ok(r) if r.succeeded() => FireResult::Succeeded { run_id: r.run_id() },
        Ok(r) => match r.error() {
            None if r.interrupted() => FireResult::Interrupted {
                run_id: Some(r.run_id()),
            },
            error => FireResult::Failed {
                run_id: Some(r.run_id()),
                error: error.unwrap_or_else(|| "the run did not complete".into()),
            },
        },
        Err(_) if stop.is_stopped() => FireResult::Interrupted { run_id: None },
        Err(e) => FireResult::Failed {
            run_id: None,
            error: format!("{e:#}"),
        },
    }
}

fn log_fire(name: &str, result: &FireResult, after: Option<&Finished>) {
    let next = after.and_then(|a| a.next_fire_at).map(|t| t.to_rfc3339());
    let status = after.map(|a| a.status.as_str()).unwrap_or("deleted");
    match result {
        FireResult::Succeeded { run_id } => {
            tracing::info!(
                trigger = name,
                run_id,
                status,
                next_fire_at = next,
                "trigger run succeeded"
            )
        }
        FireResult::Interrupted { run_id } => tracing::warn!(
            trigger = name,
            run_id,
            "trigger run stopped by a signal; it stays due and the next scheduler resumes it"
        ),
        FireResult::Failed { run_id, error } => match after {
            Some(a) if a.outcome.is_none() => tracing::warn!(
                trigger = name,
                run_id,
                error = error.as_str(),
                attempts = a.attempts,
                retry_at = next,
                "trigger run failed; it will be retried from its checkpoints"
            ),
            _ => tracing::error!(
                trigger = name,
                run_id,
                error = error.as_str(),
                status,
                next_fire_at = next,
                "trigger run failed on its last attempt; see `qbo-pipeline trigger show` and the runbook"
            ),
        },
        FireResult::Invalid { error } => tracing::error!(
            trigger = name,
            error = error.as_str(),
            "trigger deactivated"
        ),
    }
}
