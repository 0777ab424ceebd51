//! `demo --serve`: the demo with everything the dashboard shows. Two sandbox companies
//! registered in one database, a full sync of both, edits and deletions made in the sandbox
//! and a second sync that picks them up, an enabled cron trigger per company, then the same
//! server as `serve` ([`crate::cli_serve::run_server`]) with the scheduler, until
//! Ctrl-C/SIGTERM.

use crate::app::{self, DemoOptions, check_demo_target, demo_database, mark_demo_database};
use crate::backfill::StopSignal;
use crate::config::{DbSettings, HttpSettings, QboApp, RealmId};
use crate::entity::Entity;
use crate::realm::Selection;
use crate::runtime::Runtime;
use crate::scheduler::Scheduler;
use crate::sync::{SyncOptions, SyncReport};
use crate::trigger::{self, TriggerInput};
use anyhow::Context;
use qbo_sandbox::RunningSandbox;
use secrecy::SecretString;
use std::sync::Arc;
use std::time::Duration;

/// The recurring sync the demo declares for each company.
pub const DEMO_CRON: &str = "*/15 * * * *";

/// Runs the demo with two companies, then serves on `listen` until the stop signal.
/// `token` is `QBO_WEB_TOKEN` (already checked, with `listen`, by
/// [`crate::cli_serve::web_settings`]).
pub async fn demo_serve(
    db: Option<DbSettings>,
    opts: &DemoOptions,
    listen: std::net::SocketAddr,
    token: Option<SecretString>,
    stop: &StopSignal,
) -> anyhow::Result<()> {
    let (db, private, database) = demo_database(db).await?;
    let target = check_demo_target(&db, opts.yes).await?;
    // Bound before anything is loaded: a busy port is a usage error found first.
    let listener = crate::cli_serve::bind(listen).await?;
    let config = qbo_sandbox::SandboxConfig {
        seed: opts.seed,
        customers: opts.customers,
        invoices: opts.invoices,
        items: opts.items,
        realms: 2,
        refresh_token: format!("demo-{:032x}", rand::random::<u128>()),
        ..qbo_sandbox::SandboxConfig::default()
    };
    let sandbox = qbo_sandbox::spawn(config, ([127, 0, 0, 1], 0).into())
        .await
        .context("starting the built-in sandbox")?;
    eprintln!(
        "sandbox QBO listening on {} (companies {})",
        sandbox.base_url(),
        sandbox.realm_ids().join(", ")
    );
    let outcome = run(&db, opts, target, &sandbox, listener, token, stop).await;
    sandbox.shutdown().await;
    if let Some(pg) = private
        && let Err(e) = pg.stop().await
    {
        tracing::warn!(error = %e, "stopping the private PostgreSQL failed");
    }
    if outcome.is_ok()
        && let Some(database) = database
    {
        eprintln!("{database} stopped: the demo's data is discarded");
    }
    outcome
}

async fn run(
    db: &DbSettings,
    opts: &DemoOptions,
    target: app::DemoTarget,
    sandbox: &RunningSandbox,
    listener: tokio::net::TcpListener,
    token: Option<SecretString>,
    stop: &StopSignal,
) -> anyhow::Result<()> {
    let realms: Vec<RealmId> = sandbox
        .realm_ids()
        .into_iter()
        .map(RealmId::parse)
        .collect::<Result<_, _>>()
        .map_err(app::UsageError)?;
    let first = realms[0].clone();
    let app = QboApp {
        client_id: sandbox.client_id().to_string(),
        client_secret: SecretString::from(sandbox.client_secret().to_string()),
        api_base: url::Url::parse(&sandbox.base_url())?,
        token_url: url::Url::parse(&sandbox.token_url())?,
        token_key: None,
        env_realm: Some(crate::config::EnvRealm {
            realm_id: first.clone(),
            seed: Some(SecretString::from(sandbox.refresh_token().to_string())),
        }),
        monthly_budget: None,
    };
    let http = HttpSettings::default();
    // Opening the runtime migrates and registers the first company (as the environment's).
    let runtime = Arc::new(Runtime::open(db, app.clone(), http.clone(), 12, stop.clone()).await?);
    if target.accepts_demo()
        && let Err(e) = mark_demo_database(runtime.pool()).await
    {
        tracing::warn!(error = %format!("{e:#}"), "the next demo into this database will need --yes");
    }
    // The second company the way an operator adds one: `realm add` with its refresh token.
    for realm in &realms[1..] {
        let seed = sandbox
            .refresh_token_of(realm.as_str())
            .context("the sandbox's second company has no token")?
            .to_string();
        crate::cli_realm::prove_and_store(&app, &http, db, realm, seed, stop, false).await?;
    }

    let sync_all = |progress: bool| {
        let mut o = SyncOptions::new(Entity::ALL.to_vec());
        o.progress = progress;
        o
    };
    println!("== first sync of both companies (every entity in full)");
    for realm in &realms {
        let report = sync_one(&runtime, realm, &sync_all(opts.progress), stop).await?;
        println!("company {realm}: run {}", report.run_id);
        println!("{}", report.table());
    }

    println!("== edits and deletions in the sandbox");
    for change in change_books(sandbox, &realms)? {
        println!("  {change}");
    }

    println!("== second sync: what changed");
    for realm in &realms {
        let report = sync_one(&runtime, realm, &sync_all(false), stop).await?;
        let changed: Vec<String> = report
            .entities
            .iter()
            .filter(|e| e.rows_written > 0 || e.rows_deleted > 0)
            .map(|e| {
                format!(
                    "{} {} written, {} deleted ({})",
                    e.entity.cli_name(),
                    e.rows_written,
                    e.rows_deleted,
                    e.mode
                )
            })
            .collect();
        println!(
            "company {realm}: run {} in {:.2}s: {}",
            report.run_id,
            report.seconds,
            if changed.is_empty() {
                "nothing".to_string()
            } else {
                changed.join("; ")
            }
        );
    }

    let specs = realms
        .iter()
        .map(|realm| {
            TriggerInput {
                name: format!("demo_sync_{realm}"),
                pipeline: crate::pipelines::SYNC_ALL.into(),
                realm: Some(realm.as_str().to_string()),
                cron: Some(DEMO_CRON.into()),
                source: "demo".into(),
                ..TriggerInput::default()
            }
            .validate()
            .map_err(|p| anyhow::anyhow!(p.join("; ")))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    trigger::apply(runtime.pool(), &specs, chrono::Utc::now()).await?;
    for spec in &specs {
        println!("trigger {}: {}", spec.name, spec.describe());
    }

    if stop.is_stopped() {
        return Ok(());
    }
    let mut web = crate::web::WebOptions::new();
    web.token = token;
    // "Connect a company" on the dashboard goes to the sandbox's consent page.
    web.auth_url = url::Url::parse(&format!("{}/connect/oauth2", sandbox.base_url()))?;
    let scheduler = Scheduler::over(runtime.clone(), Selection::All).with_wake(web.wake.clone());
    println!("serving the dashboard over the demo's data; Ctrl-C or SIGTERM stops it");
    crate::cli_serve::run_server(
        runtime,
        listener,
        web,
        Some(scheduler),
        Duration::from_secs(30),
    )
    .await
}

async fn sync_one(
    runtime: &Runtime,
    realm: &RealmId,
    opts: &SyncOptions,
    stop: &StopSignal,
) -> anyhow::Result<SyncReport> {
    let report = runtime.engine(realm)?.sync(opts, stop).await?;
    if let Some(e) = report.error() {
        anyhow::bail!("the sync of company {realm} failed: {e}");
    }
    if report.interrupted {
        anyhow::bail!("stopped during the sync of company {realm}");
    }
    Ok(report)
}

/// Edits and deletes a few records of each company (the sandbox's admin API, as an
/// accountant would in QuickBooks); says what it did.
fn change_books(sandbox: &RunningSandbox, realms: &[RealmId]) -> anyhow::Result<Vec<String>> {
    let mut done = Vec::new();
    for (k, realm) in realms.iter().enumerate() {
        let books = sandbox
            .realm(realm.as_str())
            .context("a sandbox company is missing")?;
        let ids = |entity: &str| -> Vec<String> {
            books
                .all_records(entity)
                .iter()
                .filter_map(|r| r["Id"].as_str().map(str::to_string))
                .collect()
        };
        let invoices = ids("Invoice");
        let (edits, deletes) = if k == 0 { (5, 3) } else { (2, 2) };
        anyhow::ensure!(
            invoices.len() >= edits + deletes,
            "company {realm} has too few invoices for the demo's edits"
        );
        for id in &invoices[..edits] {
            books.update(
                "Invoice",
                id,
                serde_json::json!({"PrivateNote": "edited by the demo"}),
            )?;
        }
        for id in &invoices[edits..edits + deletes] {
            books.delete("Invoice", id)?;
        }
        done.push(format!(
            "company {realm}: {edits} invoices edited ({}), {deletes} deleted ({})",
            invoices[..edits].join(", "),
            invoices[edits..edits + deletes].join(", ")
        ));
        if k > 0
            && let Some(id) = ids("Customer").first()
        {
            books.update(
                "Customer",
                id,
                serde_json::json!({"Notes": "edited by the demo"}),
            )?;
            done.push(format!("company {realm}: customer {id} edited"));
        }
    }
    Ok(done)
}
