//! The trigger store (`qbo_pipeline.triggers`): definitions, their lifecycle, and claiming a
//! due trigger so that exactly one scheduler runs it.
//!
//! In: a [`TriggerInput`] (flags) or a YAML file shaped like the old project's triggers.yaml
//! ([`parse_yaml`]), validated into [`TriggerSpec`]s before anything is written. Out: rows
//! ([`TriggerRow`]) for `trigger list/show`, and [`Claim`]s for the scheduler.
//!
//! Claiming: in a short transaction a scheduler picks the oldest due row with
//! `FOR UPDATE SKIP LOCKED`, then takes a *session* advisory lock keyed by the trigger's name
//! on the same connection and keeps that connection for the whole run. Another scheduler skips
//! a trigger whose lock is held; if the holder dies its connection closes, the lock goes with
//! it, and the trigger (still due) is claimed again — the run resumes from its checkpoints.
//! [`Claim::finish`] applies the lifecycle of [`crate::schedule::after_run`] and records the
//! run id, the time it fired, the outcome and the error on the row.

use crate::app::UsageError;
use crate::pipelines::{self, Variables};
use crate::schedule::{self, CronSchedule, Schedule, TriggerKind, parse_instant, parse_timezone};
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Serialize;
use sqlx::{Connection, PgPool};
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// Default attempts of one fire before a failed trigger gives up.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// Default first back-off between attempts (doubles per attempt).
pub const DEFAULT_RETRY_BACKOFF_SECS: u32 = 60;

/// A trigger's status (stored as `active` / `inactive`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TriggerStatus {
    Active,
    Inactive,
}

impl TriggerStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TriggerStatus::Active => "active",
            TriggerStatus::Inactive => "inactive",
        }
    }

    pub fn parse(text: &str) -> Result<TriggerStatus, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "active" => Ok(TriggerStatus::Active),
            "inactive" => Ok(TriggerStatus::Inactive),
            other => Err(format!(
                "status '{other}' is not valid: use active or inactive"
            )),
        }
    }
}

/// The outcome of a trigger's last finished fire (stored as `succeeded` / `failed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Succeeded,
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
        }
    }
}

/// A validated trigger definition.
#[derive(Debug, Clone)]
pub struct TriggerSpec {
    pub name: String,
    pub pipeline: String,
    /// The company it runs against. `None` only while being read from a file or the command
    /// line, before the command's default realm (`--realm`, `QBO_REALM_ID`) is applied, and
    /// for triggers stored before triggers had a realm (they never fire until given one).
    pub realm: Option<String>,
    pub schedule: Schedule,
    /// The zone `once_at` / `start_time` / the cron expression are read in.
    pub timezone: Tz,
    pub variables: Variables,
    /// The status the definition asks for.
    pub status: TriggerStatus,
    pub max_attempts: u32,
    pub retry_backoff: Duration,
    /// `cli`, or the file it was applied from.
    pub source: String,
}

impl TriggerSpec {
    /// Same definition (the source is not part of it).
    pub fn same_definition(&self, other: &TriggerSpec) -> bool {
        self.name == other.name
            && self.pipeline == other.pipeline
            && self.realm == other.realm
            && self.schedule == other.schedule
            && self.timezone == other.timezone
            && self.variables == other.variables
            && self.status == other.status
            && self.max_attempts == other.max_attempts
            && self.retry_backoff == other.retry_backoff
    }

    /// `once 2026-02-02T00:02:00Z` / `cron '30 2 * * *' America/New_York`.
    pub fn describe(&self) -> String {
        describe_schedule(&self.schedule, self.timezone)
    }
}

fn describe_schedule(schedule: &Schedule, tz: Tz) -> String {
    match schedule {
        Schedule::Once(at) => format!("once {}", rfc3339(*at)),
        Schedule::Cron { cron, start } => {
            let mut s = format!("cron '{}' {}", cron.expr(), tz);
            if let Some(start) = start {
                s.push_str(&format!(" from {}", rfc3339(*start)));
            }
            s
        }
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Checks a trigger name: 1-100 letters, digits, `_`, `.`, `-`, starting with a letter or digit.
pub fn validate_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "trigger name '{name}' is not valid: use 1-100 letters, digits, '_', '.' or '-', e.g. customers_trigger"
        ))
    }
}

/// A trigger as given on the command line (or read from YAML), not yet validated.
#[derive(Debug, Clone, Default)]
pub struct TriggerInput {
    pub name: String,
    pub pipeline: String,
    /// The company (QBO realm id); `None` takes the command's default.
    pub realm: Option<String>,
    /// One-time: when (RFC 3339, or local `YYYY-MM-DD HH:MM:SS` in `timezone`).
    pub once_at: Option<String>,
    /// Recurring: a 5-field cron expression or `@hourly`/`@daily`/`@weekly`/`@monthly`/`@yearly`.
    pub cron: Option<String>,
    pub timezone: Option<String>,
    /// Recurring: not before this time.
    pub start_time: Option<String>,
    pub variables: Variables,
    pub status: Option<String>,
    pub max_attempts: Option<u32>,
    pub retry_backoff_secs: Option<u32>,
    pub source: String,
}

impl TriggerInput {
    /// Validates everything (pipeline and variables included); every problem is reported.
    pub fn validate(&self) -> Result<TriggerSpec, Vec<String>> {
        let mut problems = Vec::new();
        let at = |p: String| format!("trigger '{}': {p}", self.name);
        if let Err(e) = validate_name(&self.name) {
            problems.push(e);
        }
        let realm = match self.realm.as_deref() {
            None => None,
            Some(r) => crate::config::RealmId::parse(r)
                .map(|r| r.as_str().to_string())
                .map_err(|e| problems.push(at(e.replace("QBO_REALM_ID", "realm"))))
                .ok(),
        };
        let tz = match self.timezone.as_deref() {
            None => Some(Tz::UTC),
            Some(t) => parse_timezone(t)
                .map_err(|e| problems.push(at(e.to_string())))
                .ok(),
        };
        let status = match self.status.as_deref() {
            None => Some(TriggerStatus::Active),
            Some(s) => TriggerStatus::parse(s)
                .map_err(|e| problems.push(at(e)))
                .ok(),
        };
        let max_attempts = self.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS);
        if !(1..=100).contains(&max_attempts) {
            problems.push(at(format!(
                "max attempts {max_attempts} is out of range: use 1..=100"
            )));
        }
        let backoff = self
            .retry_backoff_secs
            .unwrap_or(DEFAULT_RETRY_BACKOFF_SECS);
        if backoff > 86_400 {
            problems.push(at(format!(
                "retry back-off {backoff} s is out of range: use 0..=86400"
            )));
        }
        let schedule = match (tz, &self.once_at, &self.cron) {
            (_, Some(_), Some(_)) => {
                problems.push(at("give either a one-time instant (--once-at) or a cron expression (--cron), not both".into()));
                None
            }
            (_, None, None) => {
                problems.push(at(
                    "no schedule: give --once-at RFC3339 or --cron EXPR".into()
                ));
                None
            }
            (Some(tz), Some(once), None) => {
                if self.start_time.is_some() {
                    problems.push(at(
                        "a start time only applies to recurring (cron) triggers".into()
                    ));
                }
                parse_instant(once, tz)
                    .map(Schedule::Once)
                    .map_err(|e| problems.push(at(e.to_string())))
                    .ok()
            }
            (Some(tz), None, Some(expr)) => {
                let cron =
                    CronSchedule::parse(expr, tz).map_err(|e| problems.push(at(e.to_string())));
                let start = match &self.start_time {
                    None => Ok(None),
                    Some(s) => parse_instant(s, tz)
                        .map(Some)
                        .map_err(|e| problems.push(at(e.to_string()))),
                };
                match (cron, start) {
                    (Ok(cron), Ok(start)) => Some(Schedule::Cron { cron, start }),
                    _ => None,
                }
            }
            (None, _, _) => None,
        };
        // The window is checked for the first fire: a one-time trigger next month may name a
        // window that ends next month.
        let first_run = match &schedule {
            Some(Schedule::Once(when)) => (*when).max(chrono::Utc::now()),
            _ => chrono::Utc::now(),
        };
        if let Err(e) = pipelines::resolve_pipeline_at(&self.pipeline, &self.variables, first_run) {
            problems.extend(e.problems.into_iter().map(at));
        }
        match (schedule, tz, status) {
            (Some(schedule), Some(timezone), Some(status)) if problems.is_empty() => {
                Ok(TriggerSpec {
                    name: self.name.clone(),
                    pipeline: self.pipeline.trim().to_string(),
                    realm,
                    schedule,
                    timezone,
                    variables: self.variables.clone(),
                    status,
                    max_attempts,
                    retry_backoff: Duration::from_secs(backoff.into()),
                    source: if self.source.is_empty() {
                        "cli".into()
                    } else {
                        self.source.clone()
                    },
                })
            }
            _ => Err(problems),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// YAML (`trigger apply FILE`)

/// The file: the old project's `triggers:` list, plus an optional file-wide `pipeline:` (Mage
/// kept one triggers.yaml per pipeline folder, so its entries may not name the pipeline).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct YamlFile {
    #[serde(default)]
    pipeline: Option<String>,
    /// File-wide company (QBO realm id) for entries without their own.
    #[serde(default)]
    realm: Option<serde_norway::Value>,
    triggers: Vec<YamlTrigger>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct YamlTrigger {
    name: String,
    #[serde(default, alias = "pipeline_uuid")]
    pipeline: Option<String>,
    /// The company (QBO realm id) this trigger runs against.
    #[serde(default)]
    realm: Option<serde_norway::Value>,
    schedule_interval: String,
    #[serde(default)]
    start_time: Option<serde_norway::Value>,
    #[serde(default)]
    timezone: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    variables: BTreeMap<String, serde_norway::Value>,
    #[serde(default)]
    max_attempts: Option<u32>,
    #[serde(default)]
    retry_backoff_secs: Option<u32>,
    /// Mage's `time` / `event` / `api`: only `time` is meaningful here.
    #[serde(default)]
    schedule_type: Option<String>,
    // Mage bookkeeping, accepted and ignored (never printed: `token` is Mage's API token).
    #[serde(default, rename = "description")]
    _description: Option<serde_norway::Value>,
    #[serde(default, rename = "envs")]
    _envs: Option<serde_norway::Value>,
    #[serde(default, rename = "last_enabled_at")]
    _last_enabled_at: Option<serde_norway::Value>,
    #[serde(default, rename = "settings")]
    _settings: Option<serde_norway::Value>,
    #[serde(default, rename = "sla")]
    _sla: Option<serde_norway::Value>,
    #[serde(default, rename = "token")]
    _token: Option<serde_norway::Value>,
    #[serde(default, rename = "repo_path")]
    _repo_path: Option<serde_norway::Value>,
}

fn scalar(v: &serde_norway::Value) -> Option<String> {
    match v {
        serde_norway::Value::String(s) => Some(s.clone()),
        serde_norway::Value::Number(n) => Some(n.to_string()),
        serde_norway::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Parses and validates a triggers.yaml; every problem in the file is reported at once.
pub fn parse_yaml(text: &str, source: &str) -> Result<Vec<TriggerSpec>, Vec<String>> {
    let file: YamlFile = serde_norway::from_str(text).map_err(|e| {
        vec![format!(
            "{source}: not a triggers file ({e}); expected `triggers:` followed by a list of name/schedule_interval/start_time/status/variables entries"
        )]
    })?;
    let mut problems = Vec::new();
    let mut specs = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for t in file.triggers {
        if !seen.insert(t.name.clone()) {
            problems.push(format!("trigger '{}' is declared twice", t.name));
            continue;
        }
        let mut local = Vec::new();
        if let Some(kind) = &t.schedule_type
            && kind != "time"
        {
            local.push(format!(
                    "trigger '{}': schedule_type '{kind}' is not supported: only time triggers (schedule_interval)",
                    t.name
                ));
        }
        let mut variables = Variables::new();
        for (k, v) in &t.variables {
            match scalar(v) {
                Some(s) => {
                    variables.insert(k.clone(), s);
                }
                None => local.push(format!(
                    "trigger '{}': variable '{k}' must be a plain value",
                    t.name
                )),
            }
        }
        let start_time = match &t.start_time {
            None | Some(serde_norway::Value::Null) => None,
            Some(v) => match scalar(v) {
                Some(s) => Some(s),
                None => {
                    local.push(format!(
                        "trigger '{}': start_time must be a date and time",
                        t.name
                    ));
                    None
                }
            },
        };
        let interval = t.schedule_interval.trim();
        let once = interval.eq_ignore_ascii_case("@once");
        if once && start_time.is_none() {
            local.push(format!(
                "trigger '{}': an @once trigger needs start_time (e.g. start_time: '2026-02-02 00:02:00'), the instant it fires",
                t.name
            ));
        }
        let pipeline = t.pipeline.clone().or_else(|| file.pipeline.clone());
        if pipeline.is_none() {
            local.push(format!(
                "trigger '{}': no pipeline: add `pipeline: {}` to it (or once at the top of the file)",
                t.name,
                pipelines::names()[0]
            ));
        }
        let input = TriggerInput {
            name: t.name.clone(),
            pipeline: pipeline.unwrap_or_default(),
            // Realm ids are numbers in YAML unless quoted: read either.
            realm: t.realm.as_ref().or(file.realm.as_ref()).and_then(scalar),
            once_at: if once { start_time.clone() } else { None },
            cron: if once {
                None
            } else {
                Some(interval.to_string())
            },
            timezone: t.timezone.clone(),
            start_time: if once { None } else { start_time },
            variables,
            status: t.status.clone(),
            max_attempts: t.max_attempts,
            retry_backoff_secs: t.retry_backoff_secs,
            source: source.to_string(),
        };
        match input.validate() {
            Ok(spec) if local.is_empty() => specs.push(spec),
            Ok(_) => {}
            Err(p) if once && input.once_at.is_none() => {
                // "no schedule" repeats the start_time problem already reported.
                local.extend(p.into_iter().filter(|m| !m.contains("no schedule")));
            }
            Err(p) => local.extend(p),
        }
        problems.extend(local);
    }
    if problems.is_empty() {
        Ok(specs)
    } else {
        Err(problems)
    }
}

// ---------------------------------------------------------------------------------------------
// The store

/// One stored trigger: definition and state.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct TriggerRow {
    pub name: String,
    pub pipeline: String,
    pub realm_id: Option<String>,
    pub kind: String,
    pub once_at: Option<DateTime<Utc>>,
    pub cron: Option<String>,
    pub timezone: String,
    pub start_at: Option<DateTime<Utc>>,
    pub variables: serde_json::Value,
    pub declared_status: String,
    pub max_attempts: i32,
    pub retry_backoff_secs: i32,
    pub source: String,
    pub status: String,
    pub next_fire_at: Option<DateTime<Utc>>,
    pub attempts: i32,
    pub claimed_at: Option<DateTime<Utc>>,
    pub claimed_by: Option<String>,
    pub last_run_id: Option<i64>,
    pub last_fired_at: Option<DateTime<Utc>>,
    pub last_finished_at: Option<DateTime<Utc>>,
    pub last_outcome: Option<String>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl TriggerRow {
    /// The stored definition, re-validated.
    pub fn spec(&self) -> Result<TriggerSpec, String> {
        let tz = parse_timezone(&self.timezone).map_err(|e| e.to_string())?;
        let schedule = match (TriggerKind::parse(&self.kind), self.once_at, &self.cron) {
            (Some(TriggerKind::Once), Some(at), _) => Schedule::Once(at),
            (Some(TriggerKind::Cron), _, Some(expr)) => Schedule::Cron {
                cron: CronSchedule::parse(expr, tz).map_err(|e| e.to_string())?,
                start: self.start_at,
            },
            _ => {
                return Err(format!(
                    "trigger '{}' has an inconsistent schedule",
                    self.name
                ));
            }
        };
        let variables: Variables = serde_json::from_value(self.variables.clone())
            .map_err(|e| format!("trigger '{}': variables are not text: {e}", self.name))?;
        Ok(TriggerSpec {
            name: self.name.clone(),
            pipeline: self.pipeline.clone(),
            realm: self.realm_id.clone(),
            schedule,
            timezone: tz,
            variables,
            status: TriggerStatus::parse(&self.declared_status)?,
            max_attempts: self.max_attempts.max(1) as u32,
            retry_backoff: Duration::from_secs(self.retry_backoff_secs.max(0) as u64),
            source: self.source.clone(),
        })
    }

    /// `once 2026-02-02T00:02:00Z` / `cron '@daily' UTC`.
    pub fn schedule_text(&self) -> String {
        match self.spec() {
            Ok(s) => s.describe(),
            Err(_) => format!("{} {}", self.kind, self.cron.as_deref().unwrap_or("?")),
        }
    }
}

impl fmt::Display for TriggerRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = |v: Option<DateTime<Utc>>| v.map(rfc3339).unwrap_or_else(|| "-".into());
        writeln!(f, "trigger {}  {}", self.name, self.status)?;
        writeln!(f, "  pipeline      {}", self.pipeline)?;
        writeln!(
            f,
            "  realm         {}",
            self.realm_id.as_deref().unwrap_or(
                "- (none: it does not fire until given one with `trigger enable NAME --realm R`)"
            )
        )?;
        writeln!(f, "  schedule      {}", self.schedule_text())?;
        writeln!(f, "  variables     {}", self.variables)?;
        writeln!(
            f,
            "  declared      {} (from {})",
            self.declared_status, self.source
        )?;
        writeln!(
            f,
            "  retries       {} attempts, back-off {} s doubling",
            self.max_attempts, self.retry_backoff_secs
        )?;
        writeln!(f, "  next fire     {}", t(self.next_fire_at))?;
        writeln!(
            f,
            "  attempts      {} failed so far for this fire",
            self.attempts
        )?;
        if let Some(at) = self.claimed_at {
            writeln!(
                f,
                "  claimed       {} by {}",
                rfc3339(at),
                self.claimed_by.as_deref().unwrap_or("?")
            )?;
        }
        writeln!(
            f,
            "  last run      {}",
            self.last_run_id
                .map(|r| r.to_string())
                .unwrap_or_else(|| "-".into())
        )?;
        writeln!(f, "  last fired    {}", t(self.last_fired_at))?;
        writeln!(f, "  last finished {}", t(self.last_finished_at))?;
        write!(
            f,
            "  last outcome  {}",
            self.last_outcome.as_deref().unwrap_or("-")
        )?;
        if let Some(e) = &self.last_error {
            write!(f, "\n  last error    {e}")?;
        }
        Ok(())
    }
}

const COLUMNS: &str = "name, pipeline, realm_id, kind, once_at, cron, timezone, start_at, variables, declared_status,
        max_attempts, retry_backoff_secs, source, status, next_fire_at, attempts, claimed_at, claimed_by,
        last_run_id, last_fired_at, last_finished_at, last_outcome, last_error, created_at, updated_at";

fn select(tail: &str) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM qbo_pipeline.triggers {tail}"
    ))
}

fn definition_params(
    spec: &TriggerSpec,
) -> (Option<DateTime<Utc>>, Option<String>, Option<DateTime<Utc>>) {
    match &spec.schedule {
        Schedule::Once(at) => (Some(*at), None, None),
        Schedule::Cron { cron, start } => (None, Some(cron.expr().to_string()), *start),
    }
}

/// Inserts or replaces a definition and arms it: state reset, next fire computed from `now`.
async fn write_spec<'e, E: sqlx::PgExecutor<'e>>(
    exec: E,
    spec: &TriggerSpec,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let (once_at, cron, start_at) = definition_params(spec);
    let next = match spec.status {
        TriggerStatus::Active => spec.schedule.first_fire(now),
        TriggerStatus::Inactive => None,
    };
    let status = if next.is_some() {
        spec.status
    } else {
        TriggerStatus::Inactive
    };
    sqlx::query(
        "INSERT INTO qbo_pipeline.triggers (name, pipeline, kind, once_at, cron, timezone, start_at, variables,
             declared_status, max_attempts, retry_backoff_secs, source, status, next_fire_at, attempts, realm_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, 0, $15)
         ON CONFLICT (name) DO UPDATE SET pipeline = EXCLUDED.pipeline, kind = EXCLUDED.kind,
             realm_id = EXCLUDED.realm_id,
             once_at = EXCLUDED.once_at, cron = EXCLUDED.cron, timezone = EXCLUDED.timezone,
             start_at = EXCLUDED.start_at, variables = EXCLUDED.variables,
             declared_status = EXCLUDED.declared_status, max_attempts = EXCLUDED.max_attempts,
             retry_backoff_secs = EXCLUDED.retry_backoff_secs, source = EXCLUDED.source,
             status = EXCLUDED.status, next_fire_at = EXCLUDED.next_fire_at, attempts = 0,
             updated_at = now()",
    )
    .bind(&spec.name)
    .bind(&spec.pipeline)
    .bind(spec.schedule.kind().as_str())
    .bind(once_at)
    .bind(cron)
    .bind(spec.timezone.name())
    .bind(start_at)
    .bind(serde_json::to_value(&spec.variables).unwrap_or_default())
    .bind(spec.status.as_str())
    .bind(spec.max_attempts as i32)
    .bind(spec.retry_backoff.as_secs() as i32)
    .bind(&spec.source)
    .bind(status.as_str())
    .bind(next)
    .bind(&spec.realm)
    .execute(exec)
    .await?;
    Ok(())
}

/// `trigger create`: a new trigger; an existing name is a usage error (nothing written).
pub async fn create(
    pool: &PgPool,
    spec: &TriggerSpec,
    now: DateTime<Utc>,
) -> anyhow::Result<TriggerRow> {
    let mut tx = pool.begin().await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM qbo_pipeline.triggers WHERE name = $1)")
            .bind(&spec.name)
            .fetch_one(&mut *tx)
            .await?;
    if exists {
        return Err(UsageError(format!(
            "trigger '{}' already exists: see `qbo-pipeline trigger show {0}`; delete it first or use `trigger apply`",
            spec.name
        ))
        .into());
    }
    write_spec(&mut *tx, spec, now).await?;
    tx.commit().await?;
    // Another process may delete it between the commit and this read.
    get(pool, &spec.name)
        .await?
        .ok_or_else(|| deleted_meanwhile(&spec.name))
}

pub async fn list(pool: &PgPool) -> Result<Vec<TriggerRow>, sqlx::Error> {
    sqlx::query_as(select("ORDER BY name"))
        .fetch_all(pool)
        .await
}

pub async fn get(pool: &PgPool, name: &str) -> Result<Option<TriggerRow>, sqlx::Error> {
    sqlx::query_as(select("WHERE name = $1"))
        .bind(name)
        .fetch_optional(pool)
        .await
}

fn not_found(name: &str) -> anyhow::Error {
    UsageError(format!(
        "no trigger '{name}': see `qbo-pipeline trigger list`"
    ))
    .into()
}

fn deleted_meanwhile(name: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "trigger '{name}' was deleted by another process while this command changed it; see `qbo-pipeline trigger list`"
    )
}

/// `trigger enable` (re-arm): active again, attempts reset, next fire recomputed from `now`
/// (a one-time trigger fires at its instant, at once if that is past). `once_at` moves a
/// one-time trigger to a new instant.
/// `realm` assigns the trigger's company (required for a trigger stored without one).
pub async fn enable(
    pool: &PgPool,
    name: &str,
    once_at: Option<DateTime<Utc>>,
    realm: Option<&str>,
    now: DateTime<Utc>,
) -> anyhow::Result<TriggerRow> {
    let mut tx = pool.begin().await?;
    let row: Option<TriggerRow> = sqlx::query_as(select("WHERE name = $1 FOR UPDATE"))
        .bind(name)
        .fetch_optional(&mut *tx)
        .await?;
    let Some(row) = row else {
        return Err(not_found(name));
    };
    let mut spec = row.spec().map_err(UsageError)?;
    if let Some(at) = once_at {
        match spec.schedule {
            Schedule::Once(_) => spec.schedule = Schedule::Once(at),
            Schedule::Cron { .. } => {
                return Err(UsageError(format!(
                    "trigger '{name}' is recurring (cron): --once-at applies to one-time triggers"
                ))
                .into());
            }
        }
    }
    if realm.is_none() && spec.realm.is_none() {
        return Err(UsageError(format!(
            "trigger '{name}' has no company (it was stored before triggers had one): give it one with `qbo-pipeline trigger enable {name} --realm REALM_ID`"
        ))
        .into());
    }
    let next = spec.schedule.first_fire(now);
    sqlx::query(
        "UPDATE qbo_pipeline.triggers SET status = 'active', once_at = coalesce($2, once_at), next_fire_at = $3,
             attempts = 0, realm_id = coalesce($4, realm_id), updated_at = now() WHERE name = $1",
    )
    .bind(name)
    .bind(once_at)
    .bind(next)
    .bind(realm)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    get(pool, name)
        .await?
        .ok_or_else(|| deleted_meanwhile(name))
}

/// `trigger disable`: inactive, nothing due. A run in progress finishes and is recorded.
pub async fn disable(pool: &PgPool, name: &str) -> anyhow::Result<TriggerRow> {
    let n = sqlx::query(
        "UPDATE qbo_pipeline.triggers SET status = 'inactive', next_fire_at = NULL, attempts = 0, updated_at = now()
         WHERE name = $1",
    )
    .bind(name)
    .execute(pool)
    .await?
    .rows_affected();
    if n == 0 {
        return Err(not_found(name));
    }
    get(pool, name)
        .await?
        .ok_or_else(|| deleted_meanwhile(name))
}

/// `trigger delete`. Its runs stay in the ledger.
pub async fn delete(pool: &PgPool, name: &str) -> anyhow::Result<()> {
    let n = sqlx::query("DELETE FROM qbo_pipeline.triggers WHERE name = $1")
        .bind(name)
        .execute(pool)
        .await?
        .rows_affected();
    if n == 0 {
        return Err(not_found(name));
    }
    Ok(())
}

/// What `trigger apply` did.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct ApplyReport {
    pub created: Vec<String>,
    pub updated: Vec<String>,
    pub unchanged: Vec<String>,
}

/// `trigger apply`: declares every trigger of a file in one transaction. A trigger whose
/// definition is unchanged is left alone — including its state: a one-time trigger that ran
/// (now inactive) is not re-armed by applying the same file again, and one disabled by hand
/// stays disabled. A changed definition replaces the stored one and re-arms it. Triggers not in
/// the file are not touched.
pub async fn apply(
    pool: &PgPool,
    specs: &[TriggerSpec],
    now: DateTime<Utc>,
) -> anyhow::Result<ApplyReport> {
    let mut report = ApplyReport::default();
    let mut tx = pool.begin().await?;
    // Serialise concurrent applies of overlapping files.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('qbo_pipeline.trigger_apply', 0))")
        .execute(&mut *tx)
        .await?;
    for spec in specs {
        let existing: Option<TriggerRow> = sqlx::query_as(select("WHERE name = $1 FOR UPDATE"))
            .bind(&spec.name)
            .fetch_optional(&mut *tx)
            .await?;
        match existing {
            None => {
                write_spec(&mut *tx, spec, now).await?;
                report.created.push(spec.name.clone());
            }
            Some(row) => match row.spec() {
                Ok(old) if old.same_definition(spec) => report.unchanged.push(spec.name.clone()),
                _ => {
                    write_spec(&mut *tx, spec, now).await?;
                    report.updated.push(spec.name.clone());
                }
            },
        }
    }
    tx.commit().await?;
    Ok(report)
}

/// The earliest fire time after `now` among active triggers (for the scheduler's sleep).
pub async fn next_due_after(
    pool: &PgPool,
    now: DateTime<Utc>,
    realms: &[String],
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT min(next_fire_at) FROM qbo_pipeline.triggers
         WHERE status = 'active' AND next_fire_at > $1 AND realm_id = ANY($2)",
    )
    .bind(now)
    .bind(realms)
    .fetch_one(pool)
    .await
}

/// Active triggers that no scheduler fires because they have no realm (stored before
/// triggers had one, in a database that worked with several companies).
pub async fn without_realm(pool: &PgPool) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT name FROM qbo_pipeline.triggers WHERE status = 'active' AND realm_id IS NULL ORDER BY name",
    )
    .fetch_all(pool)
    .await
}

fn lock_key_sql() -> &'static str {
    "hashtextextended('qbo_pipeline.trigger:' || $1::text, 0)"
}

/// A due trigger this process holds: the row as claimed and the connection holding its
/// advisory lock. Dropping it without [`Claim::finish`] closes that connection (releasing
/// the lock) and leaves the trigger due.
pub struct Claim {
    pub trigger: TriggerRow,
    /// The `now` it was claimed at (the scheduled time of this fire).
    pub claimed_at: DateTime<Utc>,
    /// The trigger's realm, whose lock the claim holds too.
    pub realm: String,
    conn: Option<sqlx::pool::PoolConnection<sqlx::Postgres>>,
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            drop(conn.detach());
        }
    }
}

/// Claims the oldest due trigger of one of `realms` that no other scheduler is running, or
/// `None`. A trigger of another company, or of none, is never claimed, nor one of a company
/// another process is working on (its realm lock is taken with the trigger's and held by the
/// claim until [`Claim::finish`]).
pub async fn claim(
    pool: &PgPool,
    now: DateTime<Utc>,
    who: &str,
    realms: &[String],
) -> Result<Option<Claim>, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let mut busy: Vec<String> = Vec::new();
    let mut realms: Vec<String> = realms.to_vec();
    loop {
        let mut tx = conn.begin().await?;
        let due: Option<(String, String)> = sqlx::query_as(
            "SELECT name, realm_id FROM qbo_pipeline.triggers
             WHERE status = 'active' AND next_fire_at <= $1 AND NOT (name = ANY($2))
                 AND realm_id = ANY($3)
             ORDER BY next_fire_at, name LIMIT 1 FOR UPDATE SKIP LOCKED",
        )
        .bind(now)
        .bind(&busy)
        .bind(&realms)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((name, realm)) = due else {
            tx.commit().await?;
            return Ok(None);
        };
        let locked: bool = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT pg_try_advisory_lock({})",
            lock_key_sql()
        )))
        .bind(&name)
        .fetch_one(&mut *tx)
        .await?;
        if !locked {
            // Another scheduler is running it.
            tx.commit().await?;
            busy.push(name);
            continue;
        }
        // One process works a company at a time: the realm's lock is held with the
        // trigger's for the whole run. A realm another process is working is passed over.
        let realm_free: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
                .bind(crate::checkpoint::LockSession::realm_key(&realm))
                .fetch_one(&mut *tx)
                .await?;
        if !realm_free {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT pg_advisory_unlock({})",
                lock_key_sql()
            )))
            .bind(&name)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            realms.retain(|r| r != &realm);
            continue;
        }
        let row: TriggerRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "UPDATE qbo_pipeline.triggers SET claimed_at = $2, claimed_by = $3, updated_at = now()
             WHERE name = $1 RETURNING {COLUMNS}"
        )))
        .bind(&name)
        .bind(now)
        .bind(who)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        return Ok(Some(Claim {
            trigger: row,
            claimed_at: now,
            realm,
            conn: Some(conn),
        }));
    }
}

/// How a claimed fire ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FireResult {
    Succeeded {
        run_id: i64,
    },
    /// `run_id` is None when no run could be recorded (e.g. the database or QBO settings).
    Failed {
        run_id: Option<i64>,
        error: String,
    },
    /// Stopped by a signal: the trigger stays due and the next scheduler resumes the run.
    Interrupted {
        run_id: Option<i64>,
    },
    /// The stored definition can no longer run (edited by hand): the trigger is deactivated.
    Invalid {
        error: String,
    },
}

/// The trigger after [`Claim::finish`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    pub status: TriggerStatus,
    pub next_fire_at: Option<DateTime<Utc>>,
    pub attempts: u32,
    /// Recorded as `last_outcome` (None while a retry is pending or after an interruption).
    pub outcome: Option<Outcome>,
}

impl Claim {
    /// Records the fire and applies the lifecycle, then releases the trigger. `finished_at`
    /// is when the run ended.
    pub async fn finish(
        mut self,
        pool: &PgPool,
        result: &FireResult,
        finished_at: DateTime<Utc>,
    ) -> Result<Option<Finished>, sqlx::Error> {
        let outcome = self.record(pool, result, finished_at).await;
        if let Some(mut conn) = self.conn.take() {
            let unlocked = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT pg_advisory_unlock({})",
                lock_key_sql()
            )))
            .bind(&self.trigger.name)
            .execute(&mut *conn)
            .await;
            let realm_unlocked = sqlx::query("SELECT pg_advisory_unlock(hashtextextended($1, 0))")
                .bind(crate::checkpoint::LockSession::realm_key(&self.realm))
                .execute(&mut *conn)
                .await;
            if unlocked.is_err() || realm_unlocked.is_err() {
                drop(conn.detach());
            }
        }
        outcome
    }

    async fn record(
        &self,
        pool: &PgPool,
        result: &FireResult,
        finished_at: DateTime<Utc>,
    ) -> Result<Option<Finished>, sqlx::Error> {
        let name = &self.trigger.name;
        let now = self.claimed_at;
        let mut tx = pool.begin().await?;
        let current: Option<TriggerRow> = sqlx::query_as(select("WHERE name = $1 FOR UPDATE"))
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(current) = current else {
            // Deleted while it ran: the run stays in the ledger.
            tx.commit().await?;
            return Ok(None);
        };
        let claimed_spec = self.trigger.spec().ok();
        let unchanged = match (&claimed_spec, current.spec()) {
            (Some(a), Ok(b)) => a.same_definition(&b),
            _ => false,
        };
        let still_active = current.status == "active";
        // Disabled, re-armed or redefined while it ran: record the fire, keep what was set.
        let lifecycle =
            unchanged && still_active && current.next_fire_at == self.trigger.next_fire_at;
        let run_id = match result {
            FireResult::Succeeded { run_id } => Some(*run_id),
            FireResult::Failed { run_id, .. } | FireResult::Interrupted { run_id } => *run_id,
            FireResult::Invalid { .. } => None,
        };
        let (finished, error) = match (result, &claimed_spec) {
            (FireResult::Interrupted { .. }, _) => (
                Finished {
                    status: TriggerStatus::Active,
                    next_fire_at: self.trigger.next_fire_at,
                    attempts: self.trigger.attempts.max(0) as u32,
                    outcome: None,
                },
                None,
            ),
            (FireResult::Invalid { error }, _) | (FireResult::Failed { error, .. }, None) => (
                Finished {
                    status: TriggerStatus::Inactive,
                    next_fire_at: None,
                    attempts: 0,
                    outcome: Some(Outcome::Failed),
                },
                Some(error.clone()),
            ),
            (FireResult::Succeeded { .. }, Some(spec))
            | (FireResult::Failed { .. }, Some(spec)) => {
                let succeeded = matches!(result, FireResult::Succeeded { .. });
                let after = schedule::after_run(
                    &spec.schedule,
                    now,
                    succeeded,
                    self.trigger.attempts.max(0) as u32,
                    spec.max_attempts,
                    spec.retry_backoff,
                );
                let error = match result {
                    FireResult::Failed { error, .. } => Some(error.clone()),
                    _ => None,
                };
                (
                    Finished {
                        status: if after.active {
                            TriggerStatus::Active
                        } else {
                            TriggerStatus::Inactive
                        },
                        next_fire_at: after.next_fire_at,
                        attempts: after.attempts,
                        outcome: after.final_outcome.then_some(if succeeded {
                            Outcome::Succeeded
                        } else {
                            Outcome::Failed
                        }),
                    },
                    error,
                )
            }
            (FireResult::Succeeded { .. }, None) => (
                Finished {
                    status: TriggerStatus::Inactive,
                    next_fire_at: None,
                    attempts: 0,
                    outcome: Some(Outcome::Succeeded),
                },
                None,
            ),
        };
        let interrupted = matches!(result, FireResult::Interrupted { .. });
        sqlx::query(
            "UPDATE qbo_pipeline.triggers SET
                 status = CASE WHEN $2 THEN $3 ELSE status END,
                 next_fire_at = CASE WHEN $2 THEN $4 ELSE next_fire_at END,
                 attempts = CASE WHEN $2 THEN $5 ELSE attempts END,
                 claimed_at = NULL, claimed_by = NULL,
                 last_run_id = coalesce($6, last_run_id),
                 last_fired_at = $7,
                 last_finished_at = CASE WHEN $8 THEN last_finished_at ELSE $9 END,
                 last_outcome = CASE WHEN $8 THEN last_outcome ELSE coalesce($10, last_outcome) END,
                 last_error = CASE WHEN $8 THEN last_error WHEN $10 = 'succeeded' THEN NULL ELSE coalesce($11, last_error) END,
                 updated_at = now()
             WHERE name = $1",
        )
        .bind(name)
        .bind(lifecycle)
        .bind(finished.status.as_str())
        .bind(finished.next_fire_at)
        .bind(finished.attempts as i32)
        .bind(run_id)
        .bind(now)
        .bind(interrupted)
        .bind(finished_at)
        .bind(finished.outcome.map(|o| o.as_str()))
        .bind(error)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(finished))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD_PROJECT: &str = r#"
triggers:
- name: customers_trigger
  pipeline_uuid: qb_customers_backfill
  schedule_interval: '@once'
  schedule_type: time
  start_time: 2026-02-02 00:02:00
  status: inactive  # Cambiado de 'active' después de ejecución exitosa
  envs: []
  sla: null
  settings: null
  token: 0123456789abcdef
  variables:
    fecha_inicio: '2014-01-01'
    fecha_fin: '2025-12-31'
- name: nightly_items
  pipeline: qb_items_backfill
  schedule_interval: '30 2 * * *'
  timezone: America/Guayaquil
  status: active
  max_attempts: 5
  variables:
    from: 2014-01-01
    to: 2025-12-31
    chunk: month
"#;

    #[test]
    fn the_old_projects_file_parses() {
        let specs = parse_yaml(OLD_PROJECT, "triggers.yaml").unwrap();
        assert_eq!(specs.len(), 2);
        let c = &specs[0];
        assert_eq!(c.name, "customers_trigger");
        assert_eq!(c.pipeline, "qb_customers_backfill");
        assert_eq!(c.status, TriggerStatus::Inactive);
        assert_eq!(c.describe(), "once 2026-02-02T00:02:00Z");
        assert_eq!(c.max_attempts, DEFAULT_MAX_ATTEMPTS);
        assert_eq!(c.variables["fecha_inicio"], "2014-01-01");
        let n = &specs[1];
        assert_eq!(n.describe(), "cron '30 2 * * *' America/Guayaquil");
        assert_eq!(n.max_attempts, 5);
        assert_eq!(n.variables["chunk"], "month");
        // Parsing twice gives the same definitions.
        let again = parse_yaml(OLD_PROJECT, "other.yaml").unwrap();
        assert!(specs.iter().zip(&again).all(|(a, b)| a.same_definition(b)));
    }

    #[test]
    fn the_shipped_example_file_is_valid() {
        let specs = parse_yaml(
            include_str!("../../../triggers.example.yaml"),
            "triggers.example.yaml",
        )
        .unwrap();
        let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "invoice_trigger",
                "customers_trigger",
                "items_trigger",
                "items_nightly"
            ]
        );
        // 19:06 in Guayaquil is 00:06 UTC, as the old project's table says.
        assert_eq!(specs[2].describe(), "once 2026-02-02T00:06:00Z");
        assert_eq!(specs[3].status, TriggerStatus::Inactive);
    }

    #[test]
    fn a_file_wide_pipeline_serves_entries_without_one() {
        let text = "pipeline: qb_invoices_backfill\ntriggers:\n- name: invoice_trigger\n  schedule_interval: '@once'\n  start_time: '2026-02-02 00:00:00'\n  variables: {fecha_inicio: '2014-01-01', fecha_fin: '2025-12-31'}\n";
        let specs = parse_yaml(text, "f").unwrap();
        assert_eq!(specs[0].pipeline, "qb_invoices_backfill");
    }

    #[test]
    fn every_problem_in_a_file_is_reported() {
        let text = r#"
triggers:
- name: a
  pipeline: qb_vendorz_backfill
  schedule_interval: '@once'
  variables: {fecha_inicio: '2014-01-01', fecha_fin: '2025-12-31'}
- name: b
  pipeline: qb_items_backfill
  schedule_interval: '61 * * * *'
  timezone: Mars/Olympus
  variables: {fecha_inicio: '2014-01-01', fecha_fin: '2025-12-31', colour: red}
- name: b
  pipeline: qb_items_backfill
  schedule_interval: '@daily'
  variables: {}
- name: c
  schedule_interval: '@daily'
  status: paused
  variables: {fecha_inicio: '2014-01-01', fecha_fin: '2025-12-31'}
"#;
        let problems = parse_yaml(text, "f").unwrap_err().join("\n");
        for want in [
            "trigger 'a': an @once trigger needs start_time",
            "unknown pipeline 'qb_vendorz_backfill'",
            "unknown time zone 'Mars/Olympus'",
            "unknown variable 'colour'",
            "trigger 'b' is declared twice",
            "trigger 'c': no pipeline",
            "status 'paused'",
        ] {
            assert!(problems.contains(want), "{want:?} in\n{problems}");
        }
        let err = parse_yaml(
            "triggers:\n- name: x\n  schedule_interval: '@daily'\n  colour: red\n",
            "f",
        )
        .unwrap_err();
        assert!(err[0].contains("unknown field `colour`"), "{err:?}");
        assert!(parse_yaml("not: [a, trigger file", "f").is_err());
    }

    #[test]
    fn a_one_time_trigger_may_name_a_window_ending_when_it_fires() {
        let day = |d: i64| {
            (chrono::Utc::now() + chrono::Duration::days(d))
                .format("%Y-%m-%d")
                .to_string()
        };
        let input = |at: String, to: String| TriggerInput {
            name: "later".into(),
            pipeline: "qb_items_backfill".into(),
            realm: Some("123".into()),
            once_at: Some(format!("{at}T00:00:00Z")),
            variables: [
                ("from".to_string(), "2020-01-01".to_string()),
                ("to".to_string(), to),
            ]
            .into_iter()
            .collect(),
            ..TriggerInput::default()
        };
        assert!(
            input(day(40), day(30)).validate().is_ok(),
            "valid when it fires"
        );
        let err = input(day(40), day(60)).validate().unwrap_err().join("; ");
        assert!(err.contains("after tomorrow"), "{err}");
    }

    #[test]
    fn inputs_are_validated_together() {
        let base = TriggerInput {
            name: "t".into(),
            pipeline: "qb_items_backfill".into(),
            variables: [("fecha_inicio", "2014-01-01"), ("fecha_fin", "2025-12-31")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..TriggerInput::default()
        };
        let both = TriggerInput {
            once_at: Some("2026-01-01T00:00:00Z".into()),
            cron: Some("@daily".into()),
            ..base.clone()
        };
        assert!(both.validate().unwrap_err()[0].contains("not both"));
        let none = base.clone();
        assert!(none.validate().unwrap_err()[0].contains("no schedule"));
        let bad_name = TriggerInput {
            name: "no spaces".into(),
            once_at: Some("2026-01-01T00:00:00Z".into()),
            ..base.clone()
        };
        assert!(bad_name.validate().unwrap_err()[0].contains("trigger name"));
        let ok = TriggerInput {
            once_at: Some("2020-01-01T00:00:00Z".into()),
            ..base.clone()
        };
        assert_eq!(
            ok.validate().unwrap().source,
            "cli",
            "a past instant is allowed"
        );
        let tries = TriggerInput {
            max_attempts: Some(0),
            cron: Some("@daily".into()),
            ..base
        };
        assert!(tries.validate().unwrap_err()[0].contains("max attempts 0"));
    }
}
