//! Triggers and the scheduler: the life of a one-time trigger, retries and final failure,
//! resuming from checkpoints, racing schedulers, catch-up after downtime, SIGTERM mid-run,
//! idempotent `trigger apply`, and bad input. The clock is injected (`try_run_next(now)`);
//! nothing sleeps to wait for a schedule.

use crate::support::*;
use chrono::{DateTime, Duration as TimeDelta, Utc};
use qbo_pipeline::backfill::StopSignal;
use qbo_pipeline::entity::Entity;
use qbo_pipeline::scheduler::{Outcome, Scheduler};
use qbo_pipeline::trigger::{self, FireResult, TriggerInput, TriggerRow, TriggerSpec};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_qbo-pipeline");

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn spec(name: &str, pipeline: &str, schedule: (&str, &str), vars: &[(&str, &str)]) -> TriggerSpec {
    let (kind, value) = schedule;
    TriggerInput {
        name: name.into(),
        pipeline: pipeline.into(),
        once_at: (kind == "once").then(|| value.to_string()),
        cron: (kind == "cron").then(|| value.to_string()),
        variables: vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        realm: Some(qbo_sandbox::config::DEFAULT_REALM_ID.into()),
        ..TriggerInput::default()
    }
    .validate()
    .expect("valid trigger")
}

const WINDOW: [(&str, &str); 2] = [("fecha_inicio", "2014-01-01"), ("fecha_fin", "2025-12-31")];

async fn scheduler(
    sb: &qbo_sandbox::RunningSandbox,
    db: &TestDb,
    http: qbo_pipeline::config::HttpSettings,
) -> Scheduler {
    Scheduler::new(qbo_settings(sb), db.settings(), http, StopSignal::default())
        .await
        .expect("scheduler starts")
}

async fn row(db: &TestDb, name: &str) -> TriggerRow {
    trigger::get(&db.pool().await, name)
        .await
        .unwrap()
        .expect("trigger exists")
}

/// (run_id, pipeline, trigger_name, status) of every run.
async fn runs(db: &TestDb) -> Vec<(i64, String, Option<String>, String)> {
    sqlx::query_as(
        "SELECT run_id, pipeline, trigger_name, status FROM qbo_pipeline.runs ORDER BY run_id",
    )
    .fetch_all(&db.pool().await)
    .await
    .unwrap()
}

fn fired(outcome: Outcome) -> qbo_pipeline::scheduler::Fired {
    match outcome {
        Outcome::Fired(f) => f,
        other => panic!("expected a fire, got {other:?}"),
    }
}

#[tokio::test]
async fn a_one_time_trigger_fires_loads_and_becomes_inactive_with_its_run_recorded() {
    let sb = sandbox(small_company()).await;
    let db = TestDb::create().await;
    let s = scheduler(&sb, &db, fast_http()).await;
    let at = utc("2026-02-02T00:02:00Z");
    let created = trigger::create(
        s.pool(),
        &spec(
            "customers_trigger",
            "qb_customers_backfill",
            ("once", "2026-02-02T00:02:00Z"),
            &WINDOW,
        ),
        utc("2026-02-01T00:00:00Z"),
    )
    .await
    .unwrap();
    assert_eq!(
        (created.status.as_str(), created.next_fire_at),
        ("active", Some(at))
    );

    // Before its time: nothing runs, and the scheduler knows when to look again.
    assert_eq!(
        s.try_run_next(at - TimeDelta::seconds(1)).await.unwrap(),
        Outcome::Idle { next_due: Some(at) }
    );
    assert!(runs(&db).await.is_empty());

    let now = at + TimeDelta::seconds(3);
    let f = fired(s.try_run_next(now).await.unwrap());
    let FireResult::Succeeded { run_id } = f.result else {
        panic!("{f:?}")
    };
    let r = row(&db, "customers_trigger").await;
    assert_eq!(r.status, "inactive");
    assert_eq!(r.next_fire_at, None);
    assert_eq!(r.last_run_id, Some(run_id));
    assert_eq!(r.last_fired_at, Some(now));
    assert!(r.last_finished_at.unwrap() >= now);
    assert_eq!(r.last_outcome.as_deref(), Some("succeeded"));
    assert_eq!(r.last_error, None);
    assert_eq!(r.claimed_at, None);
    assert_eq!(
        runs(&db).await,
        vec![(
            run_id,
            "qb_customers_backfill".into(),
            Some("customers_trigger".into()),
            "succeeded".into()
        )]
    );
    assert_table_equals_sandbox(&db.pool().await, &sb, Entity::CUSTOMER, full_window()).await;

    // It never fires again.
    assert_eq!(
        s.try_run_next(now + TimeDelta::days(365)).await.unwrap(),
        Outcome::Idle { next_due: None }
    );
    assert_eq!(runs(&db).await.len(), 1);
}

#[tokio::test]
async fn a_failing_trigger_is_retried_with_backoff_then_becomes_inactive_and_failed() {
    let sb = sandbox(small_company()).await;
    let db = TestDb::create().await;
    let s = scheduler(&sb, &db, fast_http()).await;
    sb.state().revoke_refresh_tokens(); // every attempt ends in invalid_grant
    let now = utc("2026-02-02T00:00:00Z");
    trigger::create(
        s.pool(),
        &spec(
            "items_trigger",
            "qb_items_backfill",
            ("once", "2026-02-02T00:00:00Z"),
            &WINDOW,
        ),
        now,
    )
    .await
    .unwrap();

    // Attempt 1 fails: retried 60 s later (the default back-off), still active.
    let f = fired(s.try_run_next(now).await.unwrap());
    assert!(matches!(f.result, FireResult::Failed { .. }), "{f:?}");
    let r = row(&db, "items_trigger").await;
    assert_eq!(
        (r.status.as_str(), r.attempts, r.next_fire_at),
        ("active", 1, Some(now + TimeDelta::seconds(60)))
    );
    assert_eq!(
        r.last_outcome, None,
        "no final outcome while a retry is pending"
    );
    assert!(
        r.last_error
            .as_deref()
            .unwrap_or_default()
            .contains("invalid_grant"),
        "{r:?}"
    );
    assert_eq!(
        s.try_run_next(now + TimeDelta::seconds(59)).await.unwrap(),
        Outcome::Idle {
            next_due: Some(now + TimeDelta::seconds(60))
        }
    );

    // Attempt 2 fails: the back-off doubles.
    let t2 = now + TimeDelta::seconds(60);
    fired(s.try_run_next(t2).await.unwrap());
    let r = row(&db, "items_trigger").await;
    assert_eq!(
        (r.attempts, r.next_fire_at),
        (2, Some(t2 + TimeDelta::seconds(120)))
    );

    // Attempt 3 is the last: inactive, outcome failed, the error kept.
    let t3 = t2 + TimeDelta::seconds(120);
    let f = fired(s.try_run_next(t3).await.unwrap());
    let FireResult::Failed { run_id, error } = f.result else {
        panic!()
    };
    let r = row(&db, "items_trigger").await;
    assert_eq!(r.status, "inactive");
    assert_eq!(r.next_fire_at, None);
    assert_eq!(r.last_outcome.as_deref(), Some("failed"));
    assert_eq!(r.last_error.as_deref(), Some(error.as_str()));
    assert_eq!(r.last_run_id, run_id);
    assert_eq!(r.last_fired_at, Some(t3));
    assert!(
        error.contains("Re-authorise") || error.contains("re-authorise"),
        "advice in {error}"
    );
    assert!(!error.contains(sb.client_secret()) && !error.contains(sb.refresh_token()));
    let ledger = runs(&db).await;
    assert_eq!(ledger.len(), 3, "{ledger:?}");
    assert!(ledger.iter().all(|(_, p, t, st)| p == "qb_items_backfill"
        && t.as_deref() == Some("items_trigger")
        && st == "failed"));
    assert_eq!(
        s.try_run_next(t3 + TimeDelta::days(1)).await.unwrap(),
        Outcome::Idle { next_due: None }
    );
}

#[tokio::test]
async fn a_retry_resumes_from_the_checkpoints_of_the_failed_attempt() {
    let mut config = small_company();
    config.invoices = 1200;
    let sb = sandbox(config).await;
    let db = TestDb::create().await;
    let mut http = fast_http();
    http.max_retries = 0; // the first server error fails the run
    let s = scheduler(&sb, &db, http).await;
    let now = utc("2026-02-02T00:00:00Z");
    let vars = [WINDOW[0], WINDOW[1], ("chunk", "month")];
    trigger::create(
        s.pool(),
        &spec(
            "invoice_trigger",
            "qb_invoices_backfill",
            ("once", "2026-02-02T00:00:00Z"),
            &vars,
        ),
        now,
    )
    .await
    .unwrap();
    // Fail every request once some pages are served.
    let state = sb.state().clone();
    let mut faults = state.faults();
    faults.latency = Duration::from_millis(5);
    state.set_faults(faults);
    let breaker = tokio::spawn(async move {
        loop {
            if state.stats().query_pages >= 30 {
                let mut f = state.faults();
                f.error_rate = 1.0;
                state.set_faults(f);
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    let f = fired(s.try_run_next(now).await.unwrap());
    breaker.await.unwrap();
    assert!(matches!(f.result, FireResult::Failed { .. }), "{f:?}");
    let committed: i64 = sqlx::query_scalar("SELECT count(*) FROM raw.qb_invoices")
        .fetch_one(&db.pool().await)
        .await
        .unwrap();
    assert!(committed > 0, "the failed attempt committed pages");

    let mut faults = sb.state().faults();
    faults.error_rate = 0.0;
    sb.state().set_faults(faults);
    let f = fired(s.try_run_next(now + TimeDelta::seconds(60)).await.unwrap());
    let FireResult::Succeeded { run_id } = f.result else {
        panic!("{f:?}")
    };
    let skipped: i32 = sqlx::query_scalar(
        "SELECT chunks_skipped FROM qbo_pipeline.run_entities WHERE run_id = $1",
    )
    .bind(run_id)
    .fetch_one(&db.pool().await)
    .await
    .unwrap();
    assert!(
        skipped > 0,
        "the retry skipped the chunks the failed attempt finished"
    );
    let r = row(&db, "invoice_trigger").await;
    assert_eq!(
        (r.status.as_str(), r.last_outcome.as_deref(), r.attempts),
        ("inactive", Some("succeeded"), 0)
    );
    assert_table_equals_sandbox(&db.pool().await, &sb, Entity::INVOICE, full_window()).await;
}

#[tokio::test]
async fn two_schedulers_racing_on_one_database_run_each_trigger_exactly_once() {
    let sb = sandbox(small_company()).await;
    let mut faults = sb.state().faults();
    faults.latency = Duration::from_millis(3);
    sb.state().set_faults(faults);
    let db = TestDb::create().await;
    let a = scheduler(&sb, &db, fast_http()).await.with_name("a");
    let b = scheduler(&sb, &db, fast_http()).await.with_name("b");
    let now = utc("2026-02-02T00:06:00Z");
    for (name, pipeline) in [
        ("customers_trigger", "qb_customers_backfill"),
        ("invoice_trigger", "qb_invoices_backfill"),
        ("items_trigger", "qb_items_backfill"),
    ] {
        trigger::create(
            a.pool(),
            &spec(name, pipeline, ("once", "2026-02-02T00:00:00Z"), &WINDOW),
            now,
        )
        .await
        .unwrap();
    }
    let (fa, fb) = tokio::join!(drain(&a, now), drain(&b, now));
    let mut all: Vec<String> = fa.iter().chain(&fb).cloned().collect();
    all.sort();
    assert_eq!(
        all,
        vec!["customers_trigger", "invoice_trigger", "items_trigger"],
        "a: {fa:?}, b: {fb:?}"
    );
    let ledger = runs(&db).await;
    assert_eq!(ledger.len(), 3, "one run per trigger: {ledger:?}");
    let pool = db.pool().await;
    // The three triggers load these three, and nothing else (the sandbox has records of
    // every entity).
    for entity in Entity::ALL {
        if GENERATED.contains(&entity) {
            assert_table_equals_sandbox(&pool, &sb, entity, full_window()).await;
        } else {
            assert!(table_rows(&pool, entity).await.is_empty(), "{entity}");
        }
    }
}

/// Fires until no trigger is active (the other scheduler may still hold one).
async fn drain(s: &Scheduler, now: DateTime<Utc>) -> Vec<String> {
    let mut fired = Vec::new();
    let started = Instant::now();
    loop {
        match s.try_run_next(now).await.unwrap() {
            Outcome::Fired(f) => fired.push(f.trigger),
            Outcome::Idle { .. } => {
                let active: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM qbo_pipeline.triggers WHERE status = 'active'",
                )
                .fetch_one(s.pool())
                .await
                .unwrap();
                if active == 0 || started.elapsed() > Duration::from_secs(60) {
                    return fired;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Outcome::Stopped => unreachable!(),
        }
    }
}

#[tokio::test]
async fn a_claimed_trigger_whose_scheduler_died_is_claimed_again() {
    let sb = sandbox(small_company()).await;
    let db = TestDb::create().await;
    let s = scheduler(&sb, &db, fast_http()).await;
    let now = utc("2026-02-02T00:00:00Z");
    trigger::create(
        s.pool(),
        &spec(
            "items_trigger",
            "qb_items_backfill",
            ("once", "2026-02-02T00:00:00Z"),
            &WINDOW,
        ),
        now,
    )
    .await
    .unwrap();
    // A scheduler claims it and dies (its connection closes without finishing).
    let other = db.pool().await;
    let claim = trigger::claim(
        &other,
        now,
        "doomed",
        &[qbo_sandbox::config::DEFAULT_REALM_ID.into()],
    )
    .await
    .unwrap()
    .expect("claimed");
    assert_eq!(
        s.try_run_next(now).await.unwrap(),
        Outcome::Idle { next_due: None },
        "held by the live claim"
    );
    drop(claim);
    other.close().await;
    // The server ends the dead session (and drops its lock) asynchronously after the socket
    // closes; a live scheduler polls, so poll here too.
    let mut outcome = s.try_run_next(now).await.unwrap();
    for _ in 0..100 {
        if !matches!(outcome, Outcome::Idle { .. }) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        outcome = s.try_run_next(now).await.unwrap();
    }
    let f = fired(outcome);
    assert!(matches!(f.result, FireResult::Succeeded { .. }), "{f:?}");
    assert_eq!(row(&db, "items_trigger").await.status, "inactive");
}

#[tokio::test]
async fn a_recurring_trigger_due_five_times_while_down_fires_once() {
    let sb = sandbox(small_company()).await;
    let db = TestDb::create().await;
    let s = scheduler(&sb, &db, fast_http()).await;
    let armed = utc("2026-02-02T10:00:00Z");
    trigger::create(
        s.pool(),
        &spec(
            "every_10_min",
            "qb_items_backfill",
            ("cron", "*/10 * * * *"),
            &WINDOW,
        ),
        armed,
    )
    .await
    .unwrap();
    assert_eq!(
        row(&db, "every_10_min").await.next_fire_at,
        Some(utc("2026-02-02T10:10:00Z"))
    );

    // No scheduler ran from 10:00 to 10:55: 10:10, 10:20, 10:30, 10:40 and 10:50 came due.
    let now = utc("2026-02-02T10:55:00Z");
    let f = fired(s.try_run_next(now).await.unwrap());
    assert!(matches!(f.result, FireResult::Succeeded { .. }), "{f:?}");
    assert_eq!(f.missed_ticks, 4, "five due ticks folded into one fire");
    let r = row(&db, "every_10_min").await;
    assert_eq!(
        (r.status.as_str(), r.next_fire_at),
        ("active", Some(utc("2026-02-02T11:00:00Z")))
    );
    assert_eq!(r.last_outcome.as_deref(), Some("succeeded"));
    assert_eq!(
        s.try_run_next(now).await.unwrap(),
        Outcome::Idle {
            next_due: Some(utc("2026-02-02T11:00:00Z"))
        }
    );
    assert_eq!(
        runs(&db).await.len(),
        1,
        "fired once, not once per missed tick"
    );

    // Its next tick fires again (re-reading the window, writing nothing new).
    let f = fired(s.try_run_next(utc("2026-02-02T11:00:30Z")).await.unwrap());
    assert!(matches!(f.result, FireResult::Succeeded { .. }));
    assert_eq!(
        row(&db, "every_10_min").await.next_fire_at,
        Some(utc("2026-02-02T11:10:00Z"))
    );
    assert_eq!(runs(&db).await.len(), 2);
}

// ---------------------------------------------------------------------------------------------
// The binary

/// A command with a clean environment: nothing from the developer's shell or `.env` leaks in.
fn command(dir: &std::path::Path) -> Command {
    let mut c = Command::new(BIN);
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(dir)
        .stdin(Stdio::null());
    c
}

fn with_sandbox(c: &mut Command, sb: &qbo_sandbox::RunningSandbox, db: &TestDb) {
    c.env("QBO_API_BASE_URL", sb.base_url())
        .env("QBO_TOKEN_URL", sb.token_url())
        .env("QBO_CLIENT_ID", sb.client_id())
        .env("QBO_CLIENT_SECRET", sb.client_secret())
        .env("QBO_REALM_ID", sb.realm_id())
        .env("QBO_REFRESH_TOKEN", sb.refresh_token())
        .env("DATABASE_URL", &db.url);
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

async fn run_bin(
    dir: &std::path::Path,
    sb: &qbo_sandbox::RunningSandbox,
    db: &TestDb,
    args: &[&str],
) -> Output {
    let mut c = command(dir);
    with_sandbox(&mut c, sb, db);
    c.args(args).output().await.unwrap()
}

#[tokio::test]
async fn sigterm_mid_run_commits_and_exits_0_then_the_next_scheduler_resumes() {
    let mut config = small_company();
    config.invoices = 1500;
    let sb = sandbox(config).await;
    let mut faults = sb.state().faults();
    faults.latency = Duration::from_millis(40);
    sb.state().set_faults(faults);
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let out = run_bin(
        dir.path(),
        &sb,
        &db,
        &[
            "trigger",
            "create",
            "--name",
            "invoice_trigger",
            "--pipeline",
            "qb_invoices_backfill",
            "--once-at",
            "2020-01-01T00:00:00Z",
            "--var",
            "fecha_inicio=2014-01-01",
            "--var",
            "fecha_fin=2025-12-31",
            "--var",
            "chunk=month",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let mut c = command(dir.path());
    with_sandbox(&mut c, &sb, &db);
    let child = c
        .args(["scheduler", "--poll-secs", "1", "--no-progress"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pool = db.pool().await;
    let started = Instant::now();
    loop {
        let pages: Option<i64> =
            sqlx::query_scalar("SELECT sum(pages)::bigint FROM qbo_pipeline.checkpoints")
                .fetch_one(&pool)
                .await
                .ok()
                .flatten();
        if pages.unwrap_or(0) >= 10 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no progress before SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id().expect("running") as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let out = child.wait_with_output().await.unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let r = row(&db, "invoice_trigger").await;
    assert_eq!(r.status, "active", "an interrupted fire stays due: {r:?}");
    assert_eq!(
        (r.attempts, r.last_outcome.as_deref(), r.claimed_at),
        (0, None, None),
        "not counted as a failure"
    );
    let ledger = runs(&db).await;
    assert_eq!(ledger.len(), 1);
    assert_eq!(
        ledger[0].3, "failed",
        "the interrupted run is recorded with its error"
    );
    let committed: i64 = sqlx::query_scalar("SELECT count(*) FROM raw.qb_invoices")
        .fetch_one(&pool)
        .await
        .unwrap();
    let pages: i64 = sqlx::query_scalar("SELECT sum(pages)::bigint FROM qbo_pipeline.checkpoints")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(committed > 0 && pages >= 10);

    // A later scheduler resumes it: nothing lost, nothing duplicated.
    let mut faults = sb.state().faults();
    faults.latency = Duration::ZERO;
    sb.state().set_faults(faults);
    let out = run_bin(
        dir.path(),
        &sb,
        &db,
        &["scheduler", "--exit-when-idle", "--no-progress"],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let r = row(&db, "invoice_trigger").await;
    assert_eq!(
        (r.status.as_str(), r.last_outcome.as_deref()),
        ("inactive", Some("succeeded")),
        "{r:?}"
    );
    let ledger = runs(&db).await;
    assert_eq!(ledger.len(), 2);
    assert_eq!(r.last_run_id, Some(ledger[1].0));
    let skipped: i32 = sqlx::query_scalar(
        "SELECT chunks_skipped FROM qbo_pipeline.run_entities WHERE run_id = $1",
    )
    .bind(ledger[1].0)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(skipped > 0, "finished chunks were skipped on resume");
    assert_table_equals_sandbox(&pool, &sb, Entity::INVOICE, full_window()).await;
}

const TRIGGERS_YAML: &str = r#"# The old project's triggers, one file for the three pipelines.
triggers:
- name: invoice_trigger
  pipeline: qb_invoices_backfill
  schedule_interval: '@once'
  start_time: 2026-02-02 00:00:00
  status: active
  variables:
    fecha_inicio: '2014-01-01'
    fecha_fin: '2025-12-31'
- name: customers_trigger
  pipeline: qb_customers_backfill
  schedule_interval: '@once'
  start_time: 2026-02-02 00:02:00
  status: active
  variables:
    fecha_inicio: '2014-01-01'
    fecha_fin: '2025-12-31'
- name: items_nightly
  pipeline: qb_items_backfill
  schedule_interval: '30 2 * * *'
  timezone: America/New_York
  status: active
  variables:
    fecha_inicio: '2014-01-01'
    fecha_fin: '2025-12-31'
"#;

#[tokio::test]
async fn trigger_apply_twice_changes_nothing_and_reports_what_it_did() {
    let sb = sandbox(small_company()).await;
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("triggers.yaml");
    std::fs::write(&file, TRIGGERS_YAML).unwrap();
    let apply = || run_bin(dir.path(), &sb, &db, &["trigger", "apply", "triggers.yaml"]);
    let out = apply().await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("3 created, 0 updated, 0 unchanged"),
        "{}",
        text(&out)
    );
    let before = trigger::list(&db.pool().await).await.unwrap();
    let out = apply().await;
    assert!(
        text(&out).contains("0 created, 0 updated, 3 unchanged"),
        "{}",
        text(&out)
    );
    let after = trigger::list(&db.pool().await).await.unwrap();
    assert_eq!(
        serde_json::to_value(&before).unwrap(),
        serde_json::to_value(&after).unwrap(),
        "not a byte changed"
    );

    // A one-time trigger that ran (now inactive) is not re-armed by the same file.
    let s = scheduler(&sb, &db, fast_http()).await;
    let f = fired(s.try_run_next(utc("2026-02-02T00:01:00Z")).await.unwrap());
    assert_eq!(f.trigger, "invoice_trigger");
    assert_eq!(row(&db, "invoice_trigger").await.status, "inactive");
    let out = apply().await;
    assert!(
        text(&out).contains("0 created, 0 updated, 3 unchanged"),
        "{}",
        text(&out)
    );
    assert_eq!(row(&db, "invoice_trigger").await.status, "inactive");

    // A changed definition is updated (and re-armed); the rest is unchanged.
    std::fs::write(&file, TRIGGERS_YAML.replace("30 2 * * *", "45 3 * * *")).unwrap();
    let out = apply().await;
    assert!(
        text(&out).contains("0 created, 1 updated, 2 unchanged"),
        "{}",
        text(&out)
    );
    assert!(
        text(&out).contains("updated   items_nightly"),
        "{}",
        text(&out)
    );
    let out = run_bin(dir.path(), &sb, &db, &["trigger", "list", "--json"]).await;
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 3);
    let out = run_bin(dir.path(), &sb, &db, &["trigger", "show", "items_nightly"]).await;
    assert!(
        text(&out).contains("cron '45 3 * * *' America/New_York"),
        "{}",
        text(&out)
    );
}

#[tokio::test]
async fn disabling_and_rearming_a_trigger_as_the_runbook_says() {
    let sb = sandbox(small_company()).await;
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let ok = async |args: &[&str]| {
        let out = run_bin(dir.path(), &sb, &db, args).await;
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    // A past --once-at is allowed and fires at once.
    ok(&[
        "trigger",
        "create",
        "--name",
        "items_trigger",
        "--pipeline",
        "qb_items_backfill",
        "--once-at",
        "2020-01-01T00:00:00Z",
        "--var",
        "fecha_inicio=2014-01-01",
        "--var",
        "fecha_fin=2025-12-31",
    ])
    .await;
    ok(&["trigger", "disable", "items_trigger"]).await;
    ok(&["scheduler", "--exit-when-idle"]).await;
    assert!(
        runs(&db).await.is_empty(),
        "a disabled trigger does not fire"
    );
    let listed = ok(&["trigger", "list"]).await;
    assert!(
        listed.contains("items_trigger") && listed.contains("inactive"),
        "{listed}"
    );
    ok(&["trigger", "enable", "items_trigger"]).await;
    ok(&["scheduler", "--exit-when-idle"]).await;
    let r = row(&db, "items_trigger").await;
    assert_eq!(
        (r.status.as_str(), r.last_outcome.as_deref()),
        ("inactive", Some("succeeded"))
    );
    let shown = ok(&["trigger", "show", "items_trigger"]).await;
    assert!(
        shown.contains(&format!("last run      {}", r.last_run_id.unwrap())),
        "{shown}"
    );
    let run_shown = ok(&["runs", "show", &r.last_run_id.unwrap().to_string()]).await;
    assert!(run_shown.contains("trigger   items_trigger"), "{run_shown}");
    // Re-arm a one-time trigger at a new instant, then run it again now.
    ok(&[
        "trigger",
        "enable",
        "items_trigger",
        "--once-at",
        "2021-06-01T00:00:00Z",
    ])
    .await;
    ok(&["scheduler", "--exit-when-idle"]).await;
    assert_eq!(runs(&db).await.len(), 2);
    // The runbook's SQL for triggers runs as written.
    let runbook = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/runbook.md"
    ))
    .unwrap();
    let section = &runbook[runbook
        .find("## Triggers and the scheduler")
        .expect("runbook section")..];
    let pool = db.pool().await;
    let mut statements = 0;
    for block in section.split("```sql").skip(1) {
        let sql = &block[..block.find("```").unwrap()];
        for statement in sql.split(';').filter(|s| {
            s.lines()
                .any(|l| !l.trim().is_empty() && !l.trim().starts_with("--"))
        }) {
            sqlx::raw_sql(sqlx::AssertSqlSafe(statement.to_string()))
                .execute(&pool)
                .await
                .unwrap_or_else(|e| panic!("{statement}: {e}"));
            statements += 1;
        }
    }
    assert!(statements >= 2, "{statements}");
    ok(&["trigger", "delete", "items_trigger"]).await;
    assert_eq!(runs(&db).await.len(), 2, "runs outlive their trigger");
    // `run` runs a pipeline now, outside any trigger.
    let out = ok(&[
        "run",
        "qb_customers_backfill",
        "--var",
        "from=2014-01-01",
        "--var",
        "to=2025-12-31",
        "--no-progress",
    ])
    .await;
    assert!(
        out.contains("customers") && out.contains("succeeded"),
        "{out}"
    );
    let last = runs(&db).await.pop().unwrap();
    assert_eq!((last.1.as_str(), last.2), ("qb_customers_backfill", None));
}

async fn schemas(db: &TestDb) -> Vec<String> {
    sqlx::query_scalar("SELECT nspname::text FROM pg_namespace WHERE nspname IN ('raw', 'qbo_pipeline') ORDER BY 1")
        .fetch_all(&db.pool().await)
        .await
        .unwrap()
}

#[tokio::test]
async fn bad_trigger_input_exits_2_with_advice_and_writes_nothing() {
    let sb = sandbox(small_company()).await;
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.yaml"),
        TRIGGERS_YAML.replace("qb_items_backfill", "qb_vendorz_backfill"),
    )
    .unwrap();
    let create = |extra: &[&'static str]| -> Vec<&'static str> {
        let mut v = vec![
            "trigger",
            "create",
            "--name",
            "t1",
            "--pipeline",
            "qb_items_backfill",
            "--var",
            "fecha_inicio=2014-01-01",
            "--var",
            "fecha_fin=2025-12-31",
        ];
        v.extend_from_slice(extra);
        v
    };
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "trigger",
                "create",
                "--name",
                "t1",
                "--pipeline",
                "qb_vendorz_backfill",
                "--cron",
                "@daily",
                "--var",
                "fecha_inicio=2014-01-01",
                "--var",
                "fecha_fin=2025-12-31",
            ],
            "unknown pipeline 'qb_vendorz_backfill'",
        ),
        (
            create(&["--cron", "61 * * * *"]),
            "invalid cron expression '61 * * * *'",
        ),
        (
            create(&["--cron", "@daily", "--timezone", "Mars/Olympus"]),
            "unknown time zone 'Mars/Olympus'",
        ),
        (
            create(&["--cron", "@daily", "--var", "colour=red"]),
            "unknown variable 'colour'",
        ),
        (
            create(&["--once-at", "next tuesday"]),
            "invalid time 'next tuesday'",
        ),
        (
            create(&["--once-at", "2026-01-01T00:00:00Z", "--cron", "@daily"]),
            "cannot be used with",
        ),
        (create(&[]), "--once-at"),
        (
            vec![
                "trigger",
                "create",
                "--name",
                "has space",
                "--pipeline",
                "qb_items_backfill",
                "--cron",
                "@daily",
                "--var",
                "fecha_inicio=2014-01-01",
                "--var",
                "fecha_fin=2025-12-31",
            ],
            "trigger name 'has space'",
        ),
        (
            vec!["trigger", "apply", "bad.yaml"],
            "unknown pipeline 'qb_vendorz_backfill'",
        ),
        (
            vec!["trigger", "apply", "missing.yaml"],
            "cannot read missing.yaml",
        ),
        (
            vec![
                "run",
                "qb_vendorz_backfill",
                "--var",
                "fecha_inicio=2014-01-01",
                "--var",
                "fecha_fin=2025-12-31",
            ],
            "unknown pipeline",
        ),
        (
            vec![
                "run",
                "qb_items_backfill",
                "--var",
                "fecha_inicio=2014-01-01",
            ],
            "fecha_fin (YYYY-MM-DD) is required",
        ),
        (
            vec![
                "run",
                "qb_items_backfill",
                "--var",
                "fecha_inicio=2014-01-01",
                "--var",
                "fecha_fin=2025-12-31",
                "--var",
                "size=big",
            ],
            "unknown variable 'size'",
        ),
        (vec!["scheduler", "--poll-secs", "0"], "--poll-secs 0"),
    ];
    for (args, expect) in cases {
        let out = run_bin(dir.path(), &sb, &db, &args).await;
        let all = text(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {all}");
        assert!(
            all.contains(expect),
            "{args:?}: expected {expect:?} in {all}"
        );
    }
    assert!(schemas(&db).await.is_empty(), "nothing was written");
    assert_eq!(
        sb.state().stats().requests_total,
        0,
        "no request reached QBO"
    );

    // With the schema in place, a bad definition still writes no trigger.
    let out = run_bin(dir.path(), &sb, &db, &["migrate"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = run_bin(dir.path(), &sb, &db, &["trigger", "apply", "bad.yaml"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = run_bin(dir.path(), &sb, &db, &["trigger", "show", "nope"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("no trigger 'nope'"), "{}", text(&out));
    assert!(trigger::list(&db.pool().await).await.unwrap().is_empty());
}

/// Regression: triggers had no realm, so a scheduler ran every due trigger against its own
/// company, including the triggers of another company's scheduler sharing the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedulers_of_two_companies_run_only_their_own_triggers() {
    let mut a_config = small_company();
    a_config.realm_id = "1111111111".into();
    let mut b_config = small_company();
    b_config.realm_id = "2222222222".into();
    let (a, b) = (sandbox(a_config).await, sandbox(b_config).await);
    let db = TestDb::create().await;
    let pool = qbo_pipeline::app::open_database(&db.settings(), 2)
        .await
        .unwrap();
    let now = utc("2026-02-02T00:00:00Z");
    for (name, realm) in [("for_a", "1111111111"), ("for_b", "2222222222")] {
        let mut s = spec(
            name,
            "qb_items_backfill",
            ("once", "2026-02-01T00:00:00Z"),
            &WINDOW,
        );
        s.realm = Some(realm.into());
        trigger::create(&pool, &s, now).await.unwrap();
    }
    let sched_a = scheduler(&a, &db, fast_http()).await;
    let fired = sched_a.try_run_next(now).await.unwrap();
    let Outcome::Fired(f) = fired else {
        panic!("{fired:?}")
    };
    assert_eq!(f.trigger, "for_a");
    assert!(
        matches!(f.result, FireResult::Succeeded { .. }),
        "{:?}",
        f.result
    );
    assert_eq!(
        sched_a.try_run_next(now).await.unwrap(),
        Outcome::Idle { next_due: None },
        "company A's scheduler leaves company B's due trigger alone"
    );
    let sched_b = scheduler(&b, &db, fast_http()).await;
    let Outcome::Fired(f) = sched_b.try_run_next(now).await.unwrap() else {
        panic!()
    };
    assert_eq!(f.trigger, "for_b");
    let realms: Vec<(Option<String>, String)> =
        sqlx::query_as("SELECT trigger_name, realm_id FROM qbo_pipeline.runs ORDER BY run_id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        realms,
        vec![
            (Some("for_a".into()), "1111111111".into()),
            (Some("for_b".into()), "2222222222".into())
        ]
    );
    // Each company's rows are its own.
    for (sb, realm) in [(&a, "1111111111"), (&b, "2222222222")] {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM raw.qb_items WHERE realm_id = $1")
            .bind(realm)
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(n as u64, sb.state().count("Item", None, None));
    }
}

/// Triggers stored before triggers had a realm get one only when the database has only ever
/// worked with one company; otherwise they wait, unfired, until given one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_triggers_are_given_a_realm_only_when_it_is_certain() {
    use std::borrow::Cow;
    for (realms, expected) in [
        (vec!["1111111111"], Some("1111111111")),
        (vec!["1111111111", "2222222222"], None),
    ] {
        let db = TestDb::create().await;
        let pool = db.pool().await;
        let full = &qbo_pipeline::db::MIGRATOR;
        let before = sqlx::migrate::Migrator {
            migrations: Cow::Owned(
                full.migrations
                    .iter()
                    .filter(|m| m.version < 6)
                    .cloned()
                    .collect(),
            ),
            ignore_missing: false,
            locking: true,
            no_tx: false,
            table_name: full.table_name.clone(),
            create_schemas: full.create_schemas.clone(),
        };
        before.run(&pool).await.unwrap();
        for realm in &realms {
            sqlx::query("INSERT INTO qbo_pipeline.runs (pipeline, realm_id, params, status) VALUES ('p', $1, '{}', 'succeeded')")
                .bind(realm)
                .execute(&pool)
                .await
                .unwrap();
        }
        sqlx::query(
            "INSERT INTO qbo_pipeline.triggers (name, pipeline, kind, once_at, declared_status, status, next_fire_at)
             VALUES ('old', 'qb_items_backfill', 'once', now(), 'active', 'active', now())",
        )
        .execute(&pool)
        .await
        .unwrap();
        full.run(&pool).await.unwrap();
        let realm: Option<String> =
            sqlx::query_scalar("SELECT realm_id FROM qbo_pipeline.triggers WHERE name = 'old'")
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(realm.as_deref(), expected, "known realms {realms:?}");
        if expected.is_none() {
            assert_eq!(
                trigger::without_realm(&pool).await.unwrap(),
                vec!["old".to_string()]
            );
            let err = trigger::enable(&pool, "old", None, None, Utc::now())
                .await
                .unwrap_err();
            assert!(err.to_string().contains("--realm"), "{err}");
            let row = trigger::enable(&pool, "old", None, Some("2222222222"), Utc::now())
                .await
                .unwrap();
            assert_eq!(row.realm_id.as_deref(), Some("2222222222"));
        }
    }
}
