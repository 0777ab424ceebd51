//! The `qbo-pipeline` binary: flags → validated input → `app` commands → exit code.
//!
//! Exit codes (contract.md): 0 success; 1 the run failed (committed work stays, a re-run
//! resumes); 2 invalid input or configuration, detected before anything is written.

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use qbo_pipeline::app::{self, DemoOptions, UsageError, is_usage_error};
use qbo_pipeline::backfill::{BackfillOptions, StopSignal};
use qbo_pipeline::cli_common::{
    HttpArgs, RealmArgs, database_settings, install_signal_handlers, job_command,
};
use qbo_pipeline::config::{self, ConfigError, DbSettings, ProcessEnv};
use qbo_pipeline::entity::{self, EntitySelection};
use qbo_pipeline::job::{Job, SyncSettings};
use qbo_pipeline::ledger;
use qbo_pipeline::runtime::Runtime;
use qbo_pipeline::window::{ChunkSize, Window, parse_day};
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "qbo-pipeline",
    version,
    about = "Copies a QuickBooks Online company's books (every entity of `qbo-pipeline entities`) into PostgreSQL",
    long_about = None
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Log filter (RUST_LOG syntax), e.g. `debug` or `qbo_pipeline=debug`.
    #[arg(long, global = true, env = "QBO_LOG", default_value = "info")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create or upgrade every schema and table (safe to run any number of times).
    Migrate,
    /// Extract entities whose MetaData.LastUpdatedTime falls in a window and upsert them.
    Backfill(BackfillArgs),
    /// Serve a simulated QuickBooks Online (OAuth + v3 API) for demos and tests.
    Sandbox(qbo_sandbox::SandboxArgs),
    /// Bring the tables up to date with QBO: new, edited and deleted records since the last
    /// sync (an entity never synced is loaded in full first), proved by QBO's counts.
    Sync(SyncArgs),
    /// The whole job end to end on the built-in sandbox and PostgreSQL.
    Demo(DemoArgs),
    /// The run ledger.
    Runs(RunsArgs),
    /// Every entity the pipeline extracts: name, QBO name, table, kind, CDC coverage.
    Entities {
        /// An array of {name, qbo_name, table, kind, cdc, filterable, pipeline, requires}.
        #[arg(long)]
        json: bool,
    },
    /// Check the loaded data and reconcile it with QBO's own counts.
    Validate(ValidateArgs),
    /// Run one pipeline now: qb_<entity>_backfill (qb_customers_backfill, qb_invoices_backfill, …).
    Run(qbo_pipeline::cli_schedule::RunArgs),
    /// Triggers: create, list, show, enable, disable, delete, apply FILE.
    Trigger(qbo_pipeline::cli_schedule::TriggerArgs),
    /// Fire due triggers until SIGTERM/Ctrl-C (or, with --exit-when-idle, until none is due).
    Scheduler(qbo_pipeline::cli_schedule::SchedulerArgs),
    /// Companies (realms): add (refresh token on stdin), list, remove.
    Realm(qbo_pipeline::cli_realm::RealmArgs),
    /// QBO API usage per company this month: calls, 429s, per endpoint and outcome, budget.
    Usage(UsageArgs),
    /// The HTTP server: /healthz, Prometheus /metrics, the JSON API (/api/runs); runs the
    /// scheduler too unless --no-scheduler. Prints QBO_WEB_URL= once listening.
    Serve(qbo_pipeline::cli_serve::ServeArgs),
    /// Connect a company through Intuit's consent page (OAuth authorization code): prints
    /// QBO_CONSENT_URL=, waits for the browser, registers the company with its token.
    Connect(qbo_pipeline::cli_connect::ConnectArgs),
}

#[derive(Args, Debug)]
struct UsageArgs {
    /// Only this company (repeatable); every company with usage by default.
    #[arg(long = "realm", value_name = "REALM_ID")]
    realms: Vec<String>,
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct ValidateArgs {
    /// An entity (see `qbo-pipeline entities`) or all (default all).
    #[arg(long = "entity", value_delimiter = ',')]
    entities: Vec<String>,
    /// Reconcile from this day (with --to); default: the span of the loaded extraction windows.
    #[arg(long = "from", visible_alias = "fecha-inicio")]
    from: Option<String>,
    #[arg(long = "to", visible_alias = "fecha-fin")]
    to: Option<String>,
    /// Archive report.md, report.json, report.html and queries.sql in a timestamped folder here.
    #[arg(long)]
    evidence_dir: Option<std::path::PathBuf>,
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    format: ReportFormat,
    /// Also compare the Id sets (reads every record's Id from QBO) and list missing/extra Ids.
    #[arg(long)]
    deep: bool,
    /// Check the database alone, without QBO credentials (no reconciliation).
    #[arg(long)]
    offline: bool,
    #[arg(long)]
    api_base_url: Option<String>,
    #[arg(long)]
    token_url: Option<String>,
    #[command(flatten)]
    http: HttpArgs,
    #[command(flatten)]
    realm: RealmArgs,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ReportFormat {
    Text,
    Json,
    Markdown,
}

#[derive(Args, Debug)]
struct BackfillArgs {
    /// An entity (its name, QBO's name or its table: see `qbo-pipeline entities`) or all;
    /// repeat or comma-separate for several.
    #[arg(long = "entity", value_delimiter = ',', required = true)]
    entities: Vec<String>,
    /// First day (UTC, YYYY-MM-DD), included.
    #[arg(long = "from", visible_alias = "fecha-inicio")]
    from: String,
    /// Last day (UTC, YYYY-MM-DD), included.
    #[arg(long = "to", visible_alias = "fecha-fin")]
    to: String,
    /// How the window is split: auto (sized from QBO's count of the window), day, week,
    /// month, year or whole.
    #[arg(long, default_value = "auto")]
    chunk: String,
    /// Records per page (QBO's maximum is 1000).
    #[arg(long, default_value_t = 1000)]
    page_size: u32,
    /// Ignore checkpoints of an interrupted run and start over.
    #[arg(long)]
    restart: bool,
    /// Chunks paged at once, across entities.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    #[command(flatten)]
    http: HttpArgs,
    /// Overrides QBO_API_BASE_URL.
    #[arg(long)]
    api_base_url: Option<String>,
    /// Overrides QBO_TOKEN_URL.
    #[arg(long)]
    token_url: Option<String>,
    /// Never draw progress bars.
    #[arg(long)]
    no_progress: bool,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Count what the backfill would read (QBO's counts per entity) and estimate its pages,
    /// requests and time at the configured limits; write no rows, runs or checkpoints.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    realm: RealmArgs,
}

#[derive(Args, Debug)]
struct SyncArgs {
    /// An entity (its name, QBO's name or its table: see `qbo-pipeline entities`) or all
    /// (the default); repeat or comma-separate for several.
    #[arg(long = "entity", value_delimiter = ',')]
    entities: Vec<String>,
    /// Chunks paged at once in full loads and re-reads.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    #[command(flatten)]
    qbo: qbo_pipeline::cli_schedule::QboFlags,
    /// Never draw progress bars.
    #[arg(long)]
    no_progress: bool,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Print where each entity's sync stands (mark, last sync and mode, last count proof,
    /// deleted rows, next re-read) from the database, without syncing; --realm filters.
    #[arg(long)]
    status: bool,
    #[command(flatten)]
    realm: RealmArgs,
}

#[derive(Args, Debug)]
struct DemoArgs {
    #[arg(long, default_value_t = DemoOptions::default().customers)]
    customers: u64,
    #[arg(long, default_value_t = DemoOptions::default().invoices)]
    invoices: u64,
    #[arg(long, default_value_t = DemoOptions::default().items)]
    items: u64,
    #[arg(long, default_value_t = DemoOptions::default().seed)]
    seed: u64,
    #[arg(long)]
    no_progress: bool,
    /// Load into DATABASE_URL even when it holds data that is not from the demo (by default
    /// the demo only loads into an empty database or one an earlier demo loaded).
    #[arg(long)]
    yes: bool,
    /// Two companies, a full sync of both, edits and deletions, a second sync, a cron trigger
    /// per company; then keep the dashboard (`serve`, with the scheduler) up on that data and
    /// print its URL, until Ctrl-C/SIGTERM.
    #[arg(long)]
    serve: bool,
    /// With --serve: the address to listen on; port 0 picks a free one. An address that is
    /// not loopback needs QBO_WEB_TOKEN.
    #[arg(long, requires = "serve", default_value = "127.0.0.1:8080")]
    listen: String,
}

#[derive(Args, Debug)]
struct RunsArgs {
    #[command(subcommand)]
    command: Option<RunsCommand>,
    /// JSON output.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum RunsCommand {
    /// The most recent runs.
    List {
        /// How many runs, newest first (1..=10000).
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(i64).range(1..=10_000))]
        limit: i64,
        /// Only the runs of this company (repeatable); every company's by default.
        #[arg(long = "realm", value_name = "REALM_ID")]
        realms: Vec<String>,
    },
    /// One run with its per-entity figures.
    Show { run_id: i64 },
}

/// `qbo-pipeline runs list | head` closes stdout early: `println!` then panics with a broken
/// pipe. That is the reader's choice, not a failure: exit quietly as Unix tools do (141, as if
/// killed by SIGPIPE). Every other panic keeps the default report.
fn exit_quietly_on_broken_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}

fn main() -> ExitCode {
    exit_quietly_on_broken_stdout();
    // `.env` first, so clap's env fallbacks see it (real environment variables win).
    let dotenv = config::load_dotenv();
    let cli = Cli::parse();
    if let Err(e) = init_logging(cli.log_format, &cli.log) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    if let Err(e) = dotenv {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            if is_usage_error(&err) {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

/// Sets up logging; a filter that does not parse (`RUST_LOG`, `--log` or `QBO_LOG`) is an
/// error, not silently replaced.
fn init_logging(format: LogFormat, filter: &str) -> Result<(), String> {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    let parse = |name: &str, text: &str| {
        // A bare word is a target in RUST_LOG syntax; here it must be a level, so that a
        // typo such as `verbose` is reported instead of silently logging nothing.
        if let Some(word) = text.split(',').map(str::trim).find(|d| {
            !d.is_empty()
                && !d.contains(['=', '[', ':'])
                && !LEVELS.contains(&d.to_ascii_lowercase().as_str())
        }) {
            return Err(format!(
                "{name} '{text}': '{word}' is not a log level: use error, warn, info, debug or trace (or target=level, e.g. qbo_pipeline=debug)"
            ));
        }
        tracing_subscriber::EnvFilter::builder()
            .parse(text)
            .map_err(|e| {
                format!(
                    "{name} '{text}' is not a log filter ({e}): use a level (error, warn, info, debug, trace) or target=level pairs, e.g. info,qbo_pipeline=debug"
                )
            })
    };
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => parse("RUST_LOG", &v)?,
        _ => parse("--log (or QBO_LOG)", filter)?,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Migrate => {
            let db = database_settings()?;
            let pool = app::open_database(&db, 2).await?;
            pool.close().await;
            println!("database {} is migrated", db.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Sandbox(args) => {
            qbo_sandbox::run_cli(args).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Backfill(args) => backfill(args).await,
        Command::Sync(args) => sync(args).await,
        Command::Demo(args) => demo(args).await,
        Command::Runs(args) => runs(args).await,
        Command::Entities { json } => {
            let list = entity::listing();
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!(
                    "{:<22} {:<20} {:<26} {:<12} {:<5} {:<10} {:<18} pipeline",
                    "name", "qbo_name", "table", "kind", "cdc", "filterable", "requires"
                );
                for e in list {
                    println!(
                        "{:<22} {:<20} {:<26} {:<12} {:<5} {:<10} {:<18} {}",
                        e.name,
                        e.qbo_name,
                        e.table,
                        e.kind.as_str(),
                        if e.cdc { "yes" } else { "no" },
                        if e.filterable { "yes" } else { "no" },
                        serde_json::to_value(e.requires)?.as_str().unwrap_or("-"),
                        e.pipeline
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Validate(args) => validate(args).await,
        Command::Run(args) => qbo_pipeline::cli_schedule::run(args).await,
        Command::Trigger(args) => qbo_pipeline::cli_schedule::trigger(args).await,
        Command::Scheduler(args) => qbo_pipeline::cli_schedule::scheduler(args).await,
        Command::Realm(args) => qbo_pipeline::cli_realm::realm(args).await,
        Command::Usage(args) => usage(args).await,
        Command::Serve(args) => qbo_pipeline::cli_serve::serve(args).await,
        Command::Connect(args) => qbo_pipeline::cli_connect::connect(args).await,
    }
}

fn backfill_options(args: &BackfillArgs) -> Result<BackfillOptions, ConfigError> {
    let mut problems = Vec::new();
    let mut selections = Vec::new();
    for e in &args.entities {
        match e.parse::<EntitySelection>() {
            Ok(s) => selections.push(s),
            Err(err) => problems.push(err.to_string()),
        }
    }
    let from = parse_day(&args.from).map_err(|e| problems.push(format!("--from: {e}")));
    let to = parse_day(&args.to).map_err(|e| problems.push(format!("--to: {e}")));
    let window = match (from, to) {
        (Ok(f), Ok(t)) => Window::new(f, t)
            .map_err(|e| problems.push(e.to_string()))
            .ok(),
        _ => None,
    };
    let chunk = args
        .chunk
        .parse::<ChunkSize>()
        .map_err(|e| problems.push(format!("--chunk: {e}")))
        .ok();
    if !(1..=1000).contains(&args.page_size) {
        problems.push(format!(
            "--page-size {} is out of range: QBO returns 1 to 1000 records per page",
            args.page_size
        ));
    }
    if !(1..=64).contains(&args.concurrency) {
        problems.push(format!(
            "--concurrency {} is out of range: use 1..=64",
            args.concurrency
        ));
    }
    match (window, chunk) {
        (Some(window), Some(chunk)) if problems.is_empty() => Ok(BackfillOptions {
            entities: entity::expand(&selections),
            window,
            chunk,
            page_size: args.page_size,
            restart: args.restart,
            concurrency: args.concurrency,
            pipeline: None,
            trigger: None,
            progress: !args.no_progress,
            realm_lock_held: false,
        }),
        _ => Err(ConfigError { problems }),
    }
}

async fn backfill(args: BackfillArgs) -> anyhow::Result<ExitCode> {
    // Validate everything before touching anything.
    let mut problems = Vec::new();
    let opts = backfill_options(&args).map_err(|e| problems.extend(e.problems));
    let http = args
        .http
        .settings()
        .map_err(|e| problems.extend(e.problems));
    let qbo = config::qbo_app(
        &ProcessEnv,
        args.api_base_url.as_deref(),
        args.token_url.as_deref(),
    )
    .map_err(|e| problems.extend(e.problems));
    let selection = args.realm.selection(&mut problems);
    let db = database_settings().map_err(|e| problems.push(e.0));
    let (Ok(opts), Ok(http), Ok(qbo), Ok(db)) = (opts, http, qbo, db) else {
        return Err(ConfigError { problems }.into());
    };
    if !problems.is_empty() {
        return Err(ConfigError { problems }.into());
    }
    if args.dry_run {
        return dry_run(&db, qbo, http, &selection, &opts, args.json).await;
    }
    job_command(&db, qbo, http, &selection, &Job::Backfill(opts), args.json).await
}

async fn dry_run(
    db: &DbSettings,
    qbo: config::QboApp,
    http: config::HttpSettings,
    selection: &qbo_pipeline::realm::Selection,
    opts: &BackfillOptions,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let stop = StopSignal::default();
    install_signal_handlers(stop.clone());
    let rpm = http.requests_per_minute;
    let runtime = Runtime::open(db, qbo, http, 4, stop).await?;
    let result = async {
        let mut reports = Vec::new();
        for realm in runtime.realms(selection).await? {
            let report = runtime
                .engine(&realm)?
                .dry_run(opts, rpm, runtime.stop())
                .await?;
            if !json {
                println!("{}", report.table());
            }
            reports.push(report);
        }
        if json {
            println!("{}", serde_json::to_string_pretty(&reports)?);
        }
        Ok::<_, anyhow::Error>(ExitCode::SUCCESS)
    }
    .await;
    runtime.close().await;
    result
}

/// `usage`: reads `qbo_pipeline.api_usage`; never writes, never creates the schema.
async fn usage(args: UsageArgs) -> anyhow::Result<ExitCode> {
    let budget = match std::env::var("QBO_MONTHLY_CALL_BUDGET") {
        Ok(v) if !v.trim().is_empty() => match v.trim().parse::<u64>() {
            Ok(n) if n >= 1 => Some(n),
            _ => {
                return Err(UsageError(format!(
                    "QBO_MONTHLY_CALL_BUDGET '{}' is not a number of API calls (e.g. 500000); unset it for no budget",
                    qbo_client::printable(&v, 40)
                ))
                .into());
            }
        },
        _ => None,
    };
    let db = database_settings()?;
    let Some(pool) = app::open_existing_database(&db, 2).await? else {
        println!("no API usage recorded: the database holds no qbo-pipeline schema");
        return Ok(ExitCode::SUCCESS);
    };
    let report = qbo_pipeline::usage::report(&pool, &args.realms, budget).await?;
    pool.close().await;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    if report.is_empty() {
        println!("no API usage recorded this month");
    }
    for u in report {
        println!(
            "realm {}: {} API calls this month, {} today, {} throttled (429){}",
            u.realm_id,
            u.calls_this_month,
            u.calls_today,
            u.throttled_this_month,
            match (u.monthly_budget, u.budget_left) {
                (Some(b), Some(left)) => format!("; budget {b}, {left} left"),
                _ => String::new(),
            }
        );
        for e in u.by_endpoint {
            println!("  {:<8} {:<10} {:>10}", e.endpoint, e.outcome, e.requests);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `sync --status`: reads the sync state; never writes, never creates the schema.
async fn sync_status(args: &SyncArgs) -> anyhow::Result<ExitCode> {
    let db = database_settings()?;
    let Some(pool) = app::open_existing_database(&db, 2).await? else {
        println!("no sync has run yet: the database holds no qbo-pipeline schema");
        return Ok(ExitCode::SUCCESS);
    };
    let rows = qbo_pipeline::sync::state::status(&pool, &args.realm.realms).await?;
    pool.close().await;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    let t = |v: Option<chrono::DateTime<chrono::Utc>>| {
        v.map_or("-".to_string(), |t| t.format("%Y-%m-%d %H:%M").to_string())
    };
    let n = |v: Option<i64>| v.map_or("-".to_string(), |v| v.to_string());
    println!(
        "{:<18} {:<22} {:<12} {:<20} {:<17} {:<14} {:<17} {:>9} {:>9} {:>7} {:<17}",
        "realm",
        "entity",
        "phase",
        "mark (UTC)",
        "last sync",
        "mode",
        "last proven",
        "qbo",
        "live",
        "deleted",
        "next re-read"
    );
    for r in rows {
        println!(
            "{:<18} {:<22} {:<12} {:<20} {:<17} {:<14} {:<17} {:>9} {:>9} {:>7} {:<17}",
            r.realm_id,
            r.entity,
            r.phase,
            r.mark.format("%Y-%m-%d %H:%M:%S"),
            t(r.last_sync_at),
            r.last_mode.as_deref().unwrap_or("-"),
            t(r.last_proven_at),
            n(r.qbo_count),
            n(r.live_rows),
            n(r.deleted_rows),
            t(r.next_reread_at)
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn sync(args: SyncArgs) -> anyhow::Result<ExitCode> {
    if args.status {
        return sync_status(&args).await;
    }
    // Validate everything before touching anything.
    let mut problems = Vec::new();
    let mut selections = Vec::new();
    for e in &args.entities {
        match e.parse::<EntitySelection>() {
            Ok(s) => selections.push(s),
            Err(err) => problems.push(err.to_string()),
        }
    }
    if !(1..=64).contains(&args.concurrency) {
        problems.push(format!(
            "--concurrency {} is out of range: use 1..=64",
            args.concurrency
        ));
    }
    let settings = SyncSettings::from_source(&ProcessEnv, &mut problems);
    let qbo_http = args.qbo.settings(&mut problems);
    let selection = args.realm.selection(&mut problems);
    let db = database_settings().map_err(|e| problems.push(e.0));
    let (Some((qbo, http)), Ok(db)) = (qbo_http, db) else {
        return Err(ConfigError { problems }.into());
    };
    if !problems.is_empty() {
        return Err(ConfigError { problems }.into());
    }
    let entities = if selections.is_empty() {
        entity::Entity::ALL.to_vec()
    } else {
        entity::expand(&selections)
    };
    let mut opts = qbo_pipeline::sync::SyncOptions::new(entities);
    opts.reread_every = settings.reread_every;
    opts.concurrency = args.concurrency;
    opts.progress = !args.no_progress;
    job_command(&db, qbo, http, &selection, &Job::Sync(opts), args.json).await
}

async fn demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let db = DbSettings::from_source(&ProcessEnv).map_err(UsageError)?;
    let opts = DemoOptions {
        customers: args.customers,
        invoices: args.invoices,
        items: args.items,
        seed: args.seed,
        progress: !args.no_progress,
        yes: args.yes,
        ..DemoOptions::default()
    };
    if args.serve {
        let mut problems = Vec::new();
        let (listen, token) = qbo_pipeline::cli_serve::web_settings(&args.listen, &mut problems);
        let Some(listen) = listen.filter(|_| problems.is_empty()) else {
            return Err(qbo_pipeline::runtime::usage(problems));
        };
        let stop = StopSignal::default();
        install_signal_handlers(stop.clone());
        qbo_pipeline::cli_demo::demo_serve(db, &opts, listen, token, &stop).await?;
        return Ok(ExitCode::SUCCESS);
    }
    let stop = StopSignal::default();
    install_signal_handlers(stop.clone());
    let demo = app::demo(db, &opts, &stop).await?;
    println!("{}", demo.report.table());
    println!();
    println!("rows of the demo's company in {}:", demo.database);
    let empty = demo.counts.iter().filter(|c| c.1 == 0).count();
    for (table, rows, inactive) in demo.counts.iter().filter(|c| c.1 > 0) {
        println!("  {table:<28} {rows:>8} rows ({inactive} inactive)");
    }
    println!("  ({empty} other tables empty)");
    println!("the sandbox holds (window 2014-01-01..2025-12-31, inactive included):");
    for (entity, n) in demo.sandbox_counts.iter().filter(|c| c.1 > 0) {
        println!("  {entity:<28} {n:>8}");
    }
    if let Some(e) = demo.report.error() {
        eprintln!("error: {e}");
    }
    Ok(if demo.report.succeeded() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn validate(args: ValidateArgs) -> anyhow::Result<ExitCode> {
    let mut problems = Vec::new();
    let mut selections = Vec::new();
    for e in &args.entities {
        match e.parse::<EntitySelection>() {
            Ok(s) => selections.push(s),
            Err(err) => problems.push(err.to_string()),
        }
    }
    let window = match (&args.from, &args.to) {
        (None, None) => None,
        (Some(f), Some(t)) => match (parse_day(f), parse_day(t)) {
            (Ok(f), Ok(t)) => Window::new(f, t)
                .map_err(|e| problems.push(e.to_string()))
                .ok(),
            (f, t) => {
                for e in [f.err(), t.err()].into_iter().flatten() {
                    problems.push(e.to_string());
                }
                None
            }
        },
        _ => {
            problems.push("give both --from and --to, or neither".into());
            None
        }
    };
    let http = args
        .http
        .settings()
        .map_err(|e| problems.extend(e.problems));
    let qbo = if args.offline {
        None
    } else {
        config::qbo_app(
            &ProcessEnv,
            args.api_base_url.as_deref(),
            args.token_url.as_deref(),
        )
        .map_err(|e| {
            problems.extend(e.problems);
            problems.push("(or pass --offline to check the database without QBO)".into());
        })
        .ok()
    };
    let selection = args.realm.selection(&mut problems);
    let db = database_settings().map_err(|e| problems.push(e.0));
    if let Some(dir) = &args.evidence_dir
        && dir.exists()
        && !dir.is_dir()
    {
        problems.push(format!(
            "--evidence-dir {} is not a directory",
            dir.display()
        ));
    }
    let (Ok(http), Ok(db)) = (http, db) else {
        return Err(ConfigError { problems }.into());
    };
    if !problems.is_empty() {
        return Err(ConfigError { problems }.into());
    }
    let opts = qbo_pipeline::validate::ValidateOptions {
        entities: entity::expand(&selections),
        window,
        deep: args.deep,
    };
    let Some(app) = qbo else {
        // Offline: the database alone, every company in it.
        let pool = app::open_database(&db, 4).await?;
        let report = qbo_pipeline::validate::validate(&pool, None, &opts).await?;
        let code = finish_validation(&pool, &report, &args, true).await?;
        pool.close().await;
        return Ok(code);
    };
    let runtime = Runtime::open(&db, app, http, 4, StopSignal::default()).await?;
    let realms = match runtime.realms(&selection).await {
        Ok(r) => r,
        Err(e) => {
            runtime.close().await;
            return Err(e);
        }
    };
    let mut code = ExitCode::SUCCESS;
    // With several companies, JSON is one array of {"realm_id", "report"}.
    let json_array = realms.len() > 1 && matches!(args.format, ReportFormat::Json);
    let mut reports = Vec::new();
    for realm in &realms {
        if realms.len() > 1 && !json_array {
            println!("realm {realm}:");
        }
        let engine = runtime.engine(realm)?;
        let report = qbo_pipeline::validate::validate(
            runtime.pool(),
            Some((engine.client.as_ref(), realm.as_str())),
            &opts,
        )
        .await?;
        if finish_validation(runtime.pool(), &report, &args, !json_array).await?
            != ExitCode::SUCCESS
        {
            code = ExitCode::from(1);
        }
        if json_array {
            reports.push(serde_json::json!({ "realm_id": realm.as_str(), "report": report }));
        }
    }
    if json_array {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    }
    runtime.close().await;
    Ok(code)
}

/// Archives, records and prints one validation report; exit 0 when it passed.
async fn finish_validation(
    pool: &sqlx::PgPool,
    report: &qbo_pipeline::validate::Report,
    args: &ValidateArgs,
    print: bool,
) -> anyhow::Result<ExitCode> {
    let evidence = match &args.evidence_dir {
        Some(dir) => Some(report.archive(dir)?),
        None => None,
    };
    report.record(pool, evidence.as_deref()).await?;
    match args.format {
        _ if !print => {}
        ReportFormat::Text => print!("{}", report.text()),
        ReportFormat::Json => println!("{}", serde_json::to_string_pretty(report)?),
        ReportFormat::Markdown => print!("{}", report.markdown()),
    }
    if let Some(dir) = evidence {
        eprintln!("evidence archived in {}", dir.display());
    }
    Ok(if report.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn runs(args: RunsArgs) -> anyhow::Result<ExitCode> {
    let db = database_settings()?;
    let command = args.command.unwrap_or(RunsCommand::List {
        limit: 20,
        realms: Vec::new(),
    });
    if let RunsCommand::List { realms, .. } = &command {
        let problems: Vec<String> = realms
            .iter()
            .filter_map(|r| config::RealmId::parse(r).err())
            .collect();
        if !problems.is_empty() {
            return Err(qbo_pipeline::runtime::usage(problems));
        }
    }
    let Some(pool) = app::open_existing_database(&db, 2).await? else {
        // Never migrated: there are no runs, and nothing is created to say so.
        return match command {
            RunsCommand::List { .. } if args.json => {
                println!("[]");
                Ok(ExitCode::SUCCESS)
            }
            RunsCommand::List { .. } => {
                println!("no runs yet");
                Ok(ExitCode::SUCCESS)
            }
            RunsCommand::Show { run_id } => {
                Err(UsageError(format!("no run {run_id}: see `qbo-pipeline runs list`")).into())
            }
        };
    };
    match command {
        RunsCommand::List { limit, realms } => {
            let rows = ledger::list_runs(&pool, limit, &realms).await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!(
                    "{:>6}  {:<24} {:<20} {:<10} {:<20} {:<20} {:>10} {:>8}  {:<10} error",
                    "run",
                    "pipeline",
                    "realm",
                    "status",
                    "started (UTC)",
                    "finished (UTC)",
                    "records",
                    "requests",
                    "validated"
                );
                for r in rows {
                    println!(
                        "{:>6}  {:<24} {:<20} {:<10} {:<20} {:<20} {:>10} {:>8}  {:<10} {}{}",
                        r.run_id,
                        r.pipeline,
                        r.realm_id,
                        r.status,
                        r.started_at.format("%Y-%m-%d %H:%M:%S"),
                        r.finished_at
                            .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                            .unwrap_or_else(|| "-".into()),
                        r.records,
                        r.requests,
                        match r.validation_passed {
                            Some(true) => "passed",
                            Some(false) => "FAILED",
                            None => "-",
                        },
                        r.error.unwrap_or_default(),
                        r.validation_evidence
                            .map(|d| format!(" evidence: {d}"))
                            .unwrap_or_default()
                    );
                }
            }
        }
        RunsCommand::Show { run_id } => {
            let Some((run, entities)) = ledger::show_run(&pool, run_id)
                .await
                .context("reading the run ledger")?
            else {
                return Err(
                    UsageError(format!("no run {run_id}: see `qbo-pipeline runs list`")).into(),
                );
            };
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &serde_json::json!({"run": run, "entities": entities})
                    )?
                );
            } else {
                println!("run {}  {}  {}", run.run_id, run.pipeline, run.status);
                println!("  realm     {}", run.realm_id);
                println!("  trigger   {}", run.trigger_name.as_deref().unwrap_or("-"));
                println!("  params    {}", run.params);
                println!("  started   {}", run.started_at);
                println!(
                    "  finished  {}",
                    run.finished_at
                        .map(|t| t.to_string())
                        .unwrap_or_else(|| "-".into())
                );
                if let Some(e) = &run.error {
                    println!("  error     {e}");
                }
                for e in entities {
                    if let Some(mode) = &e.mode {
                        println!(
                            "  {:<22} {:<10} mode {mode} changes {} written {} deleted {} qbo_count {} requests {} retries {} 429s {}{}",
                            e.entity,
                            e.status,
                            e.changes.unwrap_or(0),
                            e.rows_written,
                            e.rows_deleted.unwrap_or(0),
                            e.expected
                                .map(|n| n.to_string())
                                .unwrap_or_else(|| "-".into()),
                            e.requests,
                            e.retries,
                            e.throttled,
                            e.note
                                .as_ref()
                                .map(|n| format!(" ({n})"))
                                .unwrap_or_default()
                        );
                        continue;
                    }
                    if let Some(note) = &e.note {
                        println!("  {:<22} {:<10} {note}", e.entity, e.status);
                        continue;
                    }
                    println!(
                        "  {:<22} {:<10} chunks {}/{} (resumed past {}, unchanged {}) pages {} records {} written {} expected {} requests {} retries {} 429s {}",
                        e.entity,
                        e.status,
                        e.chunks_done,
                        e.chunks_total,
                        e.chunks_skipped,
                        e.chunks_verified,
                        e.pages,
                        e.records,
                        e.rows_written,
                        e.expected
                            .map(|n| n.to_string())
                            .unwrap_or_else(|| "-".into()),
                        e.requests,
                        e.retries,
                        e.throttled
                    );
                }
            }
        }
    }
    pool.close().await;
    Ok(ExitCode::SUCCESS)
}
