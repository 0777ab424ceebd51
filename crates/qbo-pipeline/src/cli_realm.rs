//! The `realm add | list | remove` commands: companies (realms) as data.
//!
//! `realm add` reads the first refresh token from standard input (never from the command
//! line, where `ps` and shell history would show it; without echo on a terminal), proves it
//! by refreshing it and reading the company's `CompanyInfo`, and only then stores the rotated
//! token and registers the realm. A token QuickBooks refuses, or one that belongs to another
//! company, leaves nothing behind (exit 2).

use crate::app::{self, UsageError};
use crate::backfill::StopSignal;
use crate::cli_common::{HttpArgs, database_settings, install_signal_handlers};
use crate::config::{self, ProcessEnv, RealmId};
use crate::entity::Entity;
use crate::realm::{self, RealmSource};
use anyhow::Context;
use clap::{Args, Subcommand};
use qbo_client::{AuthError, QboClient, QboError, RequestStats, http_client, token_http_client};
use secrecy::SecretString;
use std::io::Read;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Args, Debug)]
pub struct RealmArgs {
    #[command(subcommand)]
    pub command: RealmCommand,
}

#[derive(Subcommand, Debug)]
pub enum RealmCommand {
    /// Register a company of the same Intuit app; its refresh token is read from standard input.
    Add {
        /// The company's QBO realm id.
        #[arg(long, value_name = "REALM_ID")]
        realm_id: String,
        /// Overrides QBO_API_BASE_URL.
        #[arg(long)]
        api_base_url: Option<String>,
        /// Overrides QBO_TOKEN_URL.
        #[arg(long)]
        token_url: Option<String>,
        #[command(flatten)]
        http: HttpArgs,
        #[arg(long)]
        json: bool,
    },
    /// Every registered company: token expiry, triggers, last run.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Unregister a company: its token is deleted and its triggers disabled; its rows stay
    /// in `raw` unless --purge.
    Remove {
        /// The company's QBO realm id.
        realm_id: String,
        /// Also delete its rows from every `raw` table and its backfill checkpoints.
        #[arg(long)]
        purge: bool,
        #[arg(long)]
        json: bool,
    },
}

pub async fn realm(args: RealmArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        RealmCommand::Add {
            realm_id,
            api_base_url,
            token_url,
            http,
            json,
        } => add(&realm_id, api_base_url, token_url, &http, json).await,
        RealmCommand::List { json } => list(json).await,
        RealmCommand::Remove {
            realm_id,
            purge,
            json,
        } => remove(&realm_id, purge, json).await,
    }
}

/// Reads the token: hidden input on a terminal, else the whole of standard input.
fn read_token(realm: &RealmId) -> Result<String, String> {
    let stdin = std::io::stdin();
    let text = if std::io::IsTerminal::is_terminal(&stdin) {
        eprint!("refresh token for realm {realm} (input hidden): ");
        rpassword::read_password().map_err(|e| format!("cannot read the token: {e}"))?
    } else {
        let mut buf = String::new();
        stdin
            .lock()
            .take(qbo_client::auth::MAX_TOKEN_LEN as u64 + 2)
            .read_to_string(&mut buf)
            .map_err(|_| {
                "standard input is not text: pipe the refresh token in as one line".to_string()
            })?;
        buf
    };
    realm::check_token(&text)
}

async fn add(
    realm_id: &str,
    api_base_url: Option<String>,
    token_url: Option<String>,
    http: &HttpArgs,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let mut problems = Vec::new();
    let realm = RealmId::parse(realm_id)
        .map_err(|e| problems.push(e.replace("QBO_REALM_ID", "--realm-id")))
        .ok();
    let app = config::qbo_app(&ProcessEnv, api_base_url.as_deref(), token_url.as_deref())
        .map_err(|e| problems.extend(e.problems))
        .ok();
    let http = http
        .settings()
        .map_err(|e| problems.extend(e.problems))
        .ok();
    let db = database_settings().map_err(|e| problems.push(e.0)).ok();
    let (Some(realm), Some(app), Some(http), Some(db)) = (realm, app, http, db) else {
        return Err(crate::runtime::usage(problems));
    };
    if !problems.is_empty() {
        return Err(crate::runtime::usage(problems));
    }
    let token = read_token(&realm).map_err(UsageError)?;
    let stop = StopSignal::default();
    install_signal_handlers(stop.clone());
    prove_and_store(&app, &http, &db, &realm, token, &stop, json).await
}

/// Proves `token` for `realm` (a refresh, then the company's `CompanyInfo` read) and keeps
/// it in the token store, the realm registered; a token that does not prove leaves the store
/// as it was (a usage error naming why). Prints what it did. Used by `realm add` and
/// `connect`.
pub(crate) async fn prove_and_store(
    app: &config::QboApp,
    http: &config::HttpSettings,
    db: &config::DbSettings,
    realm: &RealmId,
    token: String,
    stop: &StopSignal,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let stored = prove_and_store_quiet(app, http, db, realm, token, stop).await?;
    let Stored {
        company,
        registered: new,
        encrypted,
        ..
    } = &stored;
    let (company, new, encrypted) = (company.clone(), *new, *encrypted);
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "realm_id": realm.as_str(),
                "company_name": company,
                "registered": new,
                "token_encrypted": encrypted,
            }))?
        );
    } else {
        println!(
            "realm {realm}{} {}; its refresh token is stored{} in qbo_pipeline.oauth_tokens",
            company.map(|c| format!(" ({c})")).unwrap_or_default(),
            if new {
                "registered"
            } else {
                "was registered already: its token is replaced"
            },
            if encrypted { " encrypted" } else { "" },
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// What [`prove_and_store_quiet`] stored.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    pub company: Option<String>,
    /// The realm was not registered before.
    pub registered: bool,
    pub encrypted: bool,
}

/// [`prove_and_store`] without printing (the dashboard's connect).
pub(crate) async fn prove_and_store_quiet(
    app: &config::QboApp,
    http: &config::HttpSettings,
    db: &config::DbSettings,
    realm: &RealmId,
    token: String,
    stop: &StopSignal,
) -> anyhow::Result<Stored> {
    let (realm, stop) = (realm.clone(), stop.clone());
    let http = http.clone();
    let pool = app::open_database(db, 3).await?;
    let mut settings = app.realm(&realm);
    settings.seed = Some(SecretString::from(token));
    // What the token store held for this realm, to put back should the token not prove.
    let saved: Option<Saved> = sqlx::query_as(
        "SELECT client_id, refresh_token, seed_refresh_token, refresh_token_expires_at, rotations,
                previous_refresh_token, rotated_at
         FROM qbo_pipeline.oauth_tokens WHERE realm_id = $1",
    )
    .bind(realm.as_str())
    .fetch_optional(&pool)
    .await?;
    let auth = Arc::new(crate::token_store::authorizer(
        token_http_client(&http).context("building the HTTP client")?,
        &settings,
        pool.clone(),
    ));
    let client = QboClient::new(
        http_client(&http).context("building the HTTP client")?,
        &settings.api_base,
        realm.as_str(),
        auth,
        http.clone(),
    )
    .context("building the QBO API URL")?;
    let stats = RequestStats::default();
    let proof = client
        .query("SELECT * FROM CompanyInfo", &stats, &stop)
        .await;
    let company = match proof {
        Ok(body) => company_name(&body),
        Err(e) => {
            restore(&pool, &realm, saved).await?;
            pool.close().await;
            return Err(match &e {
                QboError::Auth(AuthError::InvalidGrant { .. }) => UsageError(format!(
                    "QuickBooks refused this refresh token (invalid_grant): it is wrong, expired or already used. Get a new one for realm {realm} (Intuit's OAuth 2.0 playground, or `qbo-pipeline connect`) and pipe it in again; nothing was stored"
                ))
                .into(),
                QboError::Auth(AuthError::InvalidClient { .. }) => UsageError(format!("{e}; nothing was stored")).into(),
                QboError::Fault { status: 401 | 403, .. } => UsageError(format!(
                    "QuickBooks accepted the token but refused access to realm {realm} ({e}): the token belongs to another company, or the app is not connected to this one; nothing was stored"
                ))
                .into(),
                _ => anyhow::Error::new(e).context(format!(
                    "could not prove the token against realm {realm}; nothing was stored"
                )),
            });
        }
    };
    let new = realm::register(&pool, &realm, RealmSource::Added).await?;
    pool.close().await;
    Ok(Stored {
        company,
        registered: new,
        encrypted: app.token_key.is_some(),
    })
}

/// A realm's row of the token store, as it was before `realm add`.
type Saved = (
    String,
    String,
    String,
    Option<chrono::DateTime<chrono::Utc>>,
    i32,
    Option<String>,
    Option<chrono::DateTime<chrono::Utc>>,
);

/// `CompanyName` from a `CompanyInfo` query answer, when there is one.
fn company_name(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let name = v
        .pointer("/QueryResponse/CompanyInfo/0/CompanyName")?
        .as_str()?;
    Some(qbo_client::printable(name, 200))
}

/// Puts the token store's row for `realm` back as it was before `realm add` (deleting it
/// when there was none).
async fn restore(pool: &sqlx::PgPool, realm: &RealmId, saved: Option<Saved>) -> anyhow::Result<()> {
    match saved {
        None => {
            sqlx::query("DELETE FROM qbo_pipeline.oauth_tokens WHERE realm_id = $1")
                .bind(realm.as_str())
                .execute(pool)
                .await?;
        }
        Some((client, rt, seed, expires, rotations, previous, rotated)) => {
            sqlx::query(
                "UPDATE qbo_pipeline.oauth_tokens SET client_id = $2, refresh_token = $3,
                     seed_refresh_token = $4, refresh_token_expires_at = $5, rotations = $6,
                     previous_refresh_token = $7, rotated_at = $8, updated_at = now()
                 WHERE realm_id = $1",
            )
            .bind(realm.as_str())
            .bind(client)
            .bind(rt)
            .bind(seed)
            .bind(expires)
            .bind(rotations)
            .bind(previous)
            .bind(rotated)
            .execute(pool)
            .await?;
        }
    }
    Ok(())
}

async fn list(json: bool) -> anyhow::Result<ExitCode> {
    let db = database_settings()?;
    let Some(pool) = app::open_existing_database(&db, 2).await? else {
        println!(
            "{}",
            if json {
                "[]"
            } else {
                "no companies registered"
            }
        );
        return Ok(ExitCode::SUCCESS);
    };
    let rows = realm::list(&pool).await?;
    pool.close().await;
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        println!(
            "no companies registered: set QBO_REALM_ID and QBO_REFRESH_TOKEN, or `qbo-pipeline realm add --realm-id R`"
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<20} {:<8} {:<26} {:<9} last run",
        "realm", "source", "refresh token expires", "triggers"
    );
    for r in rows {
        let token = match (r.has_token, r.refresh_token_expires_at) {
            (false, _) => "- (no token)".to_string(),
            (true, Some(t)) => t.format("%Y-%m-%d %H:%M UTC").to_string(),
            (true, None) => "unknown".to_string(),
        };
        let last = match (r.last_run_id, &r.last_run_status) {
            (Some(id), Some(s)) => format!("#{id} {s}"),
            _ => "-".into(),
        };
        println!(
            "{:<20} {:<8} {:<26} {:<9} {}",
            r.realm_id,
            r.source,
            token,
            format!("{}/{}", r.active_triggers, r.triggers),
            last
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn remove(realm_id: &str, purge: bool, json: bool) -> anyhow::Result<ExitCode> {
    let realm = RealmId::parse(realm_id)
        .map_err(|e| UsageError(e.replace("QBO_REALM_ID", "the realm id")))?;
    let db = database_settings()?;
    let Some(pool) = app::open_existing_database(&db, 2).await? else {
        return Err(UsageError(format!(
            "realm {realm} is not registered (this database holds no companies)"
        ))
        .into());
    };
    let tables: Vec<&str> = Entity::ALL.iter().map(|e| e.table()).collect();
    let removed = realm::remove(&pool, &realm, purge, &tables).await?;
    pool.close().await;
    let Some(removed) = removed else {
        return Err(UsageError(format!(
            "realm {realm} is not registered: see `qbo-pipeline realm list`"
        ))
        .into());
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&removed)?);
    } else {
        println!("realm {realm} removed");
        println!(
            "  refresh token: {}",
            if removed.token_deleted {
                "deleted"
            } else {
                "none was stored"
            }
        );
        println!(
            "  triggers: {} disabled (they keep their realm; re-add it and `trigger enable` them)",
            removed.triggers_disabled
        );
        if purge {
            let n: i64 = removed.rows_deleted.iter().map(|(_, n)| n).sum();
            println!("  rows: {n} deleted from raw, with its backfill checkpoints");
            for (t, n) in &removed.rows_deleted {
                println!("    {t:<28} {n:>9}");
            }
        } else {
            let n: i64 = removed.rows_kept.iter().map(|(_, n)| n).sum();
            println!(
                "  rows: {n} kept in raw (and its run history); delete them with `realm remove {realm} --purge`"
            );
            for (t, n) in &removed.rows_kept {
                println!("    {t:<28} {n:>9}");
            }
        }
    }
    if config::Source::get(&ProcessEnv, "QBO_REALM_ID").is_some_and(|r| r.trim() == realm.as_str())
    {
        eprintln!(
            "warning: QBO_REALM_ID names this realm: the next command run with QBO_REALM_ID/QBO_REFRESH_TOKEN set registers it again"
        );
    }
    Ok(ExitCode::SUCCESS)
}
