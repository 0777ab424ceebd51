//! The `run`, `trigger …` and `scheduler` commands: clap argument types and their handlers.
//!
//! Flags are turned into validated input ([`crate::pipelines`], [`crate::trigger::TriggerInput`],
//! YAML) before the database is touched: bad input is a [`UsageError`] (exit 2) with nothing
//! written. Handlers return the process exit code; `main.rs` only dispatches to them.

use crate::app::{self, UsageError};
use crate::backfill::StopSignal;
use crate::cli_common::{HttpArgs, RealmArgs, install_signal_handlers, job_command};
use crate::config::{self, DbSettings, HttpSettings, ProcessEnv, QboApp};
use crate::job::{Job, SyncSettings};
use crate::pipelines::{self, Variables};
use crate::schedule::parse_instant;
use crate::scheduler::{LoopOptions, Scheduler};
use crate::trigger::{self, TriggerInput, TriggerRow};
use chrono::Utc;
use clap::{Args, Subcommand};
use std::process::ExitCode;
use std::time::Duration;

/// `qbo-pipeline run PIPELINE --var k=v ...`
#[derive(Args, Debug)]
pub struct RunArgs {
    /// qb_<entity>_backfill (qb_customers_backfill, …), qb_<entity>_sync or qb_sync.
    pub pipeline: String,
    /// Pipeline variable KEY=VALUE (repeat): fecha_inicio (alias from), fecha_fin (alias to),
    /// chunk (backfill pipelines; sync pipelines take none).
    #[arg(long = "var", value_name = "KEY=VALUE")]
    pub vars: Vec<String>,
    #[command(flatten)]
    pub qbo: QboFlags,
    /// Never draw progress bars.
    #[arg(long)]
    pub no_progress: bool,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub realm: RealmArgs,
}

/// `qbo-pipeline trigger ...`
#[derive(Args, Debug)]
pub struct TriggerArgs {
    #[command(subcommand)]
    pub command: TriggerCommand,
}

#[derive(Subcommand, Debug)]
pub enum TriggerCommand {
    /// Create a trigger (one-time with --once-at, recurring with --cron).
    Create(CreateArgs),
    /// Every trigger with its status, schedule, next fire time and last outcome.
    List {
        #[arg(long)]
        json: bool,
    },
    /// One trigger in full.
    Show {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Make a trigger active again (re-arm): attempts reset, next fire time recomputed.
    Enable {
        name: String,
        /// Move a one-time trigger to this instant (RFC 3339; a past instant fires at once).
        #[arg(long, value_name = "RFC3339")]
        once_at: Option<String>,
        /// Assign the trigger's company (QBO realm id); needed for a trigger stored before
        /// triggers had one.
        #[arg(long, value_name = "REALM_ID")]
        realm: Option<String>,
    },
    /// Make a trigger inactive; a run in progress finishes and is recorded.
    Disable { name: String },
    /// Delete a trigger (its runs stay in the ledger).
    Delete { name: String },
    /// Declare the triggers of a YAML file (the old project's triggers.yaml shape); repeatable.
    Apply {
        file: std::path::PathBuf,
        /// The company of entries without `realm:` (default: QBO_REALM_ID).
        #[arg(long, value_name = "REALM_ID")]
        realm: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    #[arg(long)]
    pub name: String,
    /// The company (QBO realm id) it runs against (default: QBO_REALM_ID).
    #[arg(long, value_name = "REALM_ID")]
    pub realm: Option<String>,
    /// qb_<entity>_backfill (e.g. qb_invoices_backfill), qb_<entity>_sync or qb_sync
    /// (`qbo-pipeline entities` lists the entities).
    #[arg(long)]
    pub pipeline: String,
    /// Fire once at this instant (RFC 3339, e.g. 2026-02-02T00:02:00Z); a past instant fires at once.
    #[arg(
        long,
        value_name = "RFC3339",
        conflicts_with = "cron",
        required_unless_present = "cron"
    )]
    pub once_at: Option<String>,
    /// Fire on this cron expression (5 fields, or @hourly/@daily/@weekly/@monthly/@yearly).
    #[arg(long, value_name = "EXPR")]
    pub cron: Option<String>,
    /// IANA time zone the cron expression (and local times) are read in.
    #[arg(long, value_name = "TZ")]
    pub timezone: Option<String>,
    /// A recurring trigger's first fire is not before this time.
    #[arg(long, value_name = "RFC3339", requires = "cron")]
    pub start_time: Option<String>,
    /// Pipeline variable KEY=VALUE (repeat): fecha_inicio (alias from), fecha_fin (alias to), chunk.
    #[arg(long = "var", value_name = "KEY=VALUE")]
    pub vars: Vec<String>,
    /// Attempts of one fire before the trigger gives up (failed runs resume from checkpoints).
    #[arg(long, default_value_t = trigger::DEFAULT_MAX_ATTEMPTS)]
    pub max_attempts: u32,
    /// First wait before a retry, in seconds; doubles per attempt, at most an hour.
    #[arg(long, default_value_t = trigger::DEFAULT_RETRY_BACKOFF_SECS)]
    pub retry_backoff_secs: u32,
    /// Create it inactive (arm it later with `trigger enable`).
    #[arg(long)]
    pub inactive: bool,
    #[arg(long)]
    pub json: bool,
}

/// `qbo-pipeline scheduler`
#[derive(Args, Debug)]
pub struct SchedulerArgs {
    /// Longest wait between looks for due triggers, in seconds.
    #[arg(long, default_value_t = 15)]
    pub poll_secs: u64,
    /// Fire what is due, then exit when nothing is (for cron jobs and tests).
    #[arg(long)]
    pub exit_when_idle: bool,
    #[command(flatten)]
    pub qbo: QboFlags,
    /// Never draw progress bars.
    #[arg(long)]
    pub no_progress: bool,
    /// Serve these companies' triggers (repeatable), or every registered company's
    /// (`--all-realms`). Default: QBO_REALM_ID's when set, else every registered company's
    /// (read again on every look, so a company added meanwhile is served).
    #[command(flatten)]
    pub realm: RealmArgs,
}

/// QBO endpoints and client-side limits for the runs these commands start.
#[derive(Args, Debug)]
pub struct QboFlags {
    /// Overrides QBO_API_BASE_URL.
    #[arg(long)]
    pub api_base_url: Option<String>,
    /// Overrides QBO_TOKEN_URL.
    #[arg(long)]
    pub token_url: Option<String>,
    #[command(flatten)]
    pub http: HttpArgs,
}

impl QboFlags {
    pub fn settings(&self, problems: &mut Vec<String>) -> Option<(QboApp, HttpSettings)> {
        let before = problems.len();
        let http = self
            .http
            .settings()
            .map_err(|e| problems.extend(e.problems))
            .ok();
        let qbo = config::qbo_app(
            &ProcessEnv,
            self.api_base_url.as_deref(),
            self.token_url.as_deref(),
        )
        .map_err(|e| problems.extend(e.problems))
        .ok();
        match (qbo, http) {
            (Some(q), Some(http)) if problems.len() == before => Some((q, http)),
            _ => None,
        }
    }
}

pub(crate) fn database_settings(problems: &mut Vec<String>) -> Option<DbSettings> {
    match DbSettings::from_source(&ProcessEnv) {
        Ok(Some(db)) => Some(db),
        Ok(None) => {
            problems.push(
                "no database configured: set DATABASE_URL (postgres://USER:PASSWORD@HOST:PORT/DB) or POSTGRES_HOST/PORT/USER/PASSWORD/DB"
                    .into(),
            );
            None
        }
        Err(e) => {
            problems.push(e);
            None
        }
    }
}

use crate::runtime::usage;

/// `run PIPELINE --var ...`: one pipeline, now.
pub async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let mut problems = Vec::new();
    let vars = pipelines::parse_vars(&args.vars)
        .map_err(|e| problems.extend(e.problems.clone()))
        .unwrap_or_default();
    let pipeline = if problems.is_empty() {
        pipelines::resolve_pipeline(&args.pipeline, &vars)
            .map_err(|e| problems.extend(e.problems))
            .ok()
    } else {
        None
    };
    let settings = args.qbo.settings(&mut problems);
    let selection = args.realm.selection(&mut problems);
    let db = database_settings(&mut problems);
    let (Some(pipeline), Some((qbo, http)), Some(db)) = (pipeline, settings, db) else {
        return Err(usage(problems));
    };
    if !problems.is_empty() {
        return Err(usage(problems));
    }
    let sync = SyncSettings::from_source(&ProcessEnv, &mut problems);
    if !problems.is_empty() {
        return Err(usage(problems));
    }
    let job = Job::from_pipeline(&pipeline, None, !args.no_progress, &sync);
    job_command(&db, qbo, http, &selection, &job, args.json).await
}

/// The realm a trigger created on the command line runs against: `--realm`, else
/// `QBO_REALM_ID`; neither is a usage error (a trigger never runs against a guessed company).
fn default_realm(flag: Option<&str>, problems: &mut Vec<String>) -> Option<String> {
    let realm = flag
        .map(str::to_string)
        .or_else(|| config::Source::get(&ProcessEnv, "QBO_REALM_ID"))
        .filter(|r| !r.trim().is_empty());
    if realm.is_none() {
        problems
            .push("no company for the trigger: pass --realm REALM_ID (or set QBO_REALM_ID)".into());
    }
    realm
}

/// Gives entries of a triggers file without `realm:` the command's realm.
fn with_realm(
    specs: Vec<trigger::TriggerSpec>,
    fallback: Option<&str>,
    problems: &mut Vec<String>,
) -> Vec<trigger::TriggerSpec> {
    let fallback = match fallback.map(crate::config::RealmId::parse) {
        Some(Ok(r)) => Some(r.as_str().to_string()),
        Some(Err(e)) => {
            problems.push(e.replace("QBO_REALM_ID", "--realm"));
            return specs;
        }
        None => None,
    };
    specs
        .into_iter()
        .map(|mut s| {
            if s.realm.is_none() {
                match &fallback {
                    Some(r) => s.realm = Some(r.clone()),
                    None => problems.push(format!(
                        "trigger '{}': no company: add `realm: REALM_ID` to it (or once at the top of the file), or pass --realm / set QBO_REALM_ID",
                        s.name
                    )),
                }
            }
            s
        })
        .collect()
}

/// `trigger ...`
pub async fn trigger(args: TriggerArgs) -> anyhow::Result<ExitCode> {
    let mut problems = Vec::new();
    // Validate the input first; only then connect.
    let spec = match &args.command {
        TriggerCommand::Create(c) => {
            let vars: Variables = pipelines::parse_vars(&c.vars)
                .map_err(|e| problems.extend(e.problems.clone()))
                .unwrap_or_default();
            let input = TriggerInput {
                name: c.name.clone(),
                pipeline: c.pipeline.clone(),
                realm: default_realm(c.realm.as_deref(), &mut problems),
                once_at: c.once_at.clone(),
                cron: c.cron.clone(),
                timezone: c.timezone.clone(),
                start_time: c.start_time.clone(),
                variables: vars,
                status: Some(if c.inactive { "inactive" } else { "active" }.into()),
                max_attempts: Some(c.max_attempts),
                retry_backoff_secs: Some(c.retry_backoff_secs),
                source: "cli".into(),
            };
            if problems.is_empty() {
                input.validate().map_err(|p| problems.extend(p)).ok()
            } else {
                None
            }
        }
        _ => None,
    };
    let file_specs = match &args.command {
        TriggerCommand::Apply { file, realm, .. } => match std::fs::read_to_string(file) {
            Ok(text) => {
                let fallback = realm
                    .clone()
                    .or_else(|| config::Source::get(&ProcessEnv, "QBO_REALM_ID"));
                trigger::parse_yaml(&text, &file.display().to_string())
                    .map(|specs| with_realm(specs, fallback.as_deref(), &mut problems))
                    .map_err(|p| problems.extend(p))
                    .ok()
            }
            Err(e) => {
                problems.push(format!("cannot read {}: {e}", file.display()));
                None
            }
        },
        _ => None,
    };
    let once_at = match &args.command {
        TriggerCommand::Enable {
            once_at: Some(t), ..
        } => parse_instant(t, chrono_tz::Tz::UTC)
            .map_err(|e| problems.push(format!("--once-at: {e}")))
            .ok(),
        _ => None,
    };
    if let TriggerCommand::Enable { realm: Some(r), .. } = &args.command
        && let Err(e) = crate::config::RealmId::parse(r)
    {
        problems.push(e.replace("QBO_REALM_ID", "--realm"));
    }
    if let TriggerCommand::Show { name, .. }
    | TriggerCommand::Enable { name, .. }
    | TriggerCommand::Disable { name }
    | TriggerCommand::Delete { name } = &args.command
        && let Err(e) = trigger::validate_name(name)
    {
        problems.push(e);
    }
    let db = database_settings(&mut problems);
    let Some(db) = db.filter(|_| problems.is_empty()) else {
        return Err(usage(problems));
    };
    let writes = matches!(
        args.command,
        TriggerCommand::Create(_) | TriggerCommand::Apply { .. }
    );
    let pool = if writes {
        app::open_database(&db, 2).await?
    } else {
        match app::open_existing_database(&db, 2).await? {
            Some(pool) => pool,
            // Never migrated: no trigger exists, and nothing is created to say so.
            None => {
                return match &args.command {
                    TriggerCommand::List { json: true } => {
                        println!("[]");
                        Ok(ExitCode::SUCCESS)
                    }
                    TriggerCommand::List { json: false } => {
                        print_table(&[]);
                        Ok(ExitCode::SUCCESS)
                    }
                    TriggerCommand::Show { name, .. }
                    | TriggerCommand::Enable { name, .. }
                    | TriggerCommand::Disable { name }
                    | TriggerCommand::Delete { name } => Err(UsageError(format!(
                        "no trigger '{name}': see `qbo-pipeline trigger list`"
                    ))
                    .into()),
                    TriggerCommand::Create(_) | TriggerCommand::Apply { .. } => {
                        unreachable!("writing commands open the database with migrations")
                    }
                };
            }
        }
    };
    let now = Utc::now();
    let result = async {
        match args.command {
            TriggerCommand::Create(c) => {
                let spec = spec.expect("validated above");
                let row = trigger::create(&pool, &spec, now).await?;
                print_row(&row, c.json)?;
            }
            TriggerCommand::List { json } => {
                let rows = trigger::list(&pool).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&rows)?);
                } else {
                    print_table(&rows);
                }
            }
            TriggerCommand::Show { name, json } => match trigger::get(&pool, &name).await? {
                Some(row) => print_row(&row, json)?,
                None => {
                    return Err(UsageError(format!(
                        "no trigger '{name}': see `qbo-pipeline trigger list`"
                    ))
                    .into());
                }
            },
            TriggerCommand::Enable { name, realm, .. } => {
                let realm = realm.as_deref().map(str::trim);
                let row = trigger::enable(&pool, &name, once_at, realm, now).await?;
                println!(
                    "trigger {} is active; next fire {}",
                    row.name,
                    row.next_fire_at
                        .map(|t| t.to_rfc3339())
                        .unwrap_or_else(|| "-".into())
                );
            }
            TriggerCommand::Disable { name } => {
                let row = trigger::disable(&pool, &name).await?;
                println!("trigger {} is inactive", row.name);
            }
            TriggerCommand::Delete { name } => {
                trigger::delete(&pool, &name).await?;
                println!("trigger {name} deleted (its runs stay in `qbo-pipeline runs list`)");
            }
            TriggerCommand::Apply { file, json, .. } => {
                let specs = file_specs.expect("validated above");
                let report = trigger::apply(&pool, &specs, now).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&report)?);
                } else {
                    println!(
                        "{}: {} created, {} updated, {} unchanged",
                        file.display(),
                        report.created.len(),
                        report.updated.len(),
                        report.unchanged.len()
                    );
                    for (what, names) in [
                        ("created", &report.created),
                        ("updated", &report.updated),
                        ("unchanged", &report.unchanged),
                    ] {
                        for n in names {
                            println!("  {what:<9} {n}");
                        }
                    }
                }
            }
        }
        anyhow::Ok(())
    }
    .await;
    pool.close().await;
    result?;
    Ok(ExitCode::SUCCESS)
}

fn print_row(row: &TriggerRow, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(row)?);
    } else {
        println!("{row}");
    }
    Ok(())
}

fn print_table(rows: &[TriggerRow]) {
    let t = |v: Option<chrono::DateTime<Utc>>| {
        v.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_else(|| "-".into())
    };
    println!(
        "{:<24} {:<22} {:<20} {:<8} {:<20} {:<40} {:>5} {:>6} {:<9} {:<20}",
        "trigger",
        "pipeline",
        "realm",
        "status",
        "next fire (UTC)",
        "schedule",
        "tries",
        "run",
        "outcome",
        "last fired (UTC)"
    );
    for r in rows {
        println!(
            "{:<24} {:<22} {:<20} {:<8} {:<20} {:<40} {:>5} {:>6} {:<9} {:<20}",
            r.name,
            r.pipeline,
            r.realm_id.as_deref().unwrap_or("- (none)"),
            if r.claimed_at.is_some() {
                "running"
            } else {
                r.status.as_str()
            },
            t(r.next_fire_at),
            r.schedule_text(),
            format!("{}/{}", r.attempts, r.max_attempts),
            r.last_run_id
                .map(|n| n.to_string())
                .unwrap_or_else(|| "-".into()),
            r.last_outcome.as_deref().unwrap_or("-"),
            t(r.last_fired_at),
        );
    }
}

/// `scheduler`: fires due triggers until SIGTERM/Ctrl-C (or idle, with --exit-when-idle).
/// Exit 0 when stopped by a signal or idle; 1 when a run failed during an --exit-when-idle pass.
pub async fn scheduler(args: SchedulerArgs) -> anyhow::Result<ExitCode> {
    let mut problems = Vec::new();
    if !(1..=3600).contains(&args.poll_secs) {
        problems.push(format!(
            "--poll-secs {} is out of range: use 1..=3600",
            args.poll_secs
        ));
    }
    let settings = args.qbo.settings(&mut problems);
    let db = database_settings(&mut problems);
    let sync = SyncSettings::from_source(&ProcessEnv, &mut problems);
    let (Some((qbo, http)), Some(db)) = (settings, db) else {
        return Err(usage(problems));
    };
    if !problems.is_empty() {
        return Err(usage(problems));
    }
    let stop = StopSignal::default();
    install_signal_handlers(stop.clone());
    let selection = args.realm.selection(&mut problems);
    if !problems.is_empty() {
        return Err(usage(problems));
    }
    let scheduler = Scheduler::open(qbo, db, http, selection, stop.clone())
        .await?
        .with_progress(!args.no_progress)
        .with_sync(sync);
    let opts = LoopOptions {
        poll: Duration::from_secs(args.poll_secs),
        exit_when_idle: args.exit_when_idle,
    };
    let report = scheduler.run(&opts).await;
    scheduler.close().await;
    let report = report?;
    eprintln!(
        "scheduler: {} fired, {} failed, {} interrupted{}",
        report.fired,
        report.failed,
        report.interrupted,
        if stop.is_stopped() {
            " (stopped by a signal; interrupted runs resume on the next start)"
        } else {
            ""
        }
    );
    Ok(
        if args.exit_when_idle && report.failed > 0 && !stop.is_stopped() {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        },
    )
}
