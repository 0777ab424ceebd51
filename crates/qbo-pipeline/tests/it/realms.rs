//! Companies (realms) as data: `realm add` (token on stdin, proved, never echoed), `realm list`,
//! `realm remove` (rows kept unless --purge), `--realm`/`--all-realms`, the environment's
//! realm registered by itself, and one process working a company at a time.

use crate::support::*;
use sqlx::{Connection, PgConnection};
use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The app's credentials and URLs, without a company: realms come from the registry.
pub(crate) fn app_only(c: &mut Command, sb: &qbo_sandbox::RunningSandbox, db: &TestDb) {
    c.env("QBO_API_BASE_URL", sb.base_url())
        .env("QBO_TOKEN_URL", sb.token_url())
        .env("QBO_CLIENT_ID", sb.client_id())
        .env("QBO_CLIENT_SECRET", sb.client_secret())
        .env("DATABASE_URL", &db.url);
}

/// Runs `cmd` with `input` on its standard input.
pub(crate) fn with_stdin(mut cmd: Command, input: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("output")
}

const WINDOW: [&str; 4] = ["--from", "2014-01-01", "--to", "2025-12-31"];

async fn count(db: &TestDb, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
        .fetch_one(&db.pool().await)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realm_add_proves_the_token_from_stdin_never_echoes_it_and_backfill_uses_it() {
    let sb = sandbox(small_company()).await;
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = command(dir.path());
    app_only(&mut c, &sb, &db);
    c.args(["realm", "add", "--realm-id", sb.realm_id()]);
    let out = with_stdin(c, &format!("{}\n", sb.refresh_token()));
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(all.contains("registered"), "{all}");
    assert!(!all.contains(sb.refresh_token()), "token echoed: {all}");
    assert!(!all.contains(sb.client_secret()), "secret echoed: {all}");
    let source: String = sqlx::query_scalar("SELECT source FROM qbo_pipeline.realms")
        .fetch_one(&db.pool().await)
        .await
        .unwrap();
    assert_eq!(source, "added");
    let stored: String = sqlx::query_scalar(
        "SELECT refresh_token FROM qbo_pipeline.oauth_tokens WHERE realm_id = $1",
    )
    .bind(sb.realm_id())
    .fetch_one(&db.pool().await)
    .await
    .unwrap();
    assert_ne!(stored, sb.refresh_token(), "the rotated token is stored");

    let mut c = command(dir.path());
    app_only(&mut c, &sb, &db);
    let out = c.args(["realm", "list", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list[0]["realm_id"], sb.realm_id());
    assert_eq!(list[0]["has_token"], true);
    assert!(!String::from_utf8_lossy(&out.stdout).contains(&stored));

    // No QBO_REALM_ID: a backfill works on every registered realm, with the stored token.
    let mut c = command(dir.path());
    app_only(&mut c, &sb, &db);
    let out = c
        .args(["backfill", "--entity", "customers", "--no-progress"])
        .args(WINDOW)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let rows = count(&db, "SELECT count(*) FROM raw.qb_customers").await;
    assert_eq!(rows, sb.state().all_records("Customer").len() as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realm_add_with_a_refused_token_stores_nothing_and_exits_2() {
    let sb = sandbox(small_company()).await;
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    for (input, expect) in [
        ("", "no refresh token on standard input"),
        ("two words\n", "not a refresh token"),
        ("AB11NotTheRightToken\n", "invalid_grant"),
    ] {
        let mut c = command(dir.path());
        app_only(&mut c, &sb, &db);
        c.args(["realm", "add", "--realm-id", sb.realm_id()]);
        let out = with_stdin(c, input);
        let all = text(&out);
        assert_eq!(out.status.code(), Some(2), "{input:?}: {all}");
        assert!(all.contains(expect), "{input:?}: {all}");
        assert!(all.contains("nothing was stored") || !expect.contains("grant"));
        if !input.trim().is_empty() {
            assert!(!all.contains(input.trim()), "token echoed: {all}");
        }
    }
    let migrated = !schemas(&db).await.is_empty();
    if migrated {
        assert_eq!(
            count(&db, "SELECT count(*) FROM qbo_pipeline.realms").await,
            0
        );
        assert_eq!(
            count(&db, "SELECT count(*) FROM qbo_pipeline.oauth_tokens").await,
            0
        );
    }
    // A bad realm id is refused before anything is read or written.
    let mut c = command(dir.path());
    app_only(&mut c, &sb, &db);
    c.args(["realm", "add", "--realm-id", "12 34"]);
    let out = with_stdin(c, sb.refresh_token());
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--realm-id"), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_or_conflicting_realms_exit_2_and_write_nothing() {
    let sb = sandbox(small_company()).await;
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["backfill", "--entity", "customers", "--realm", "999"],
            "realm 999 is not registered",
        ),
        (
            vec![
                "backfill",
                "--entity",
                "customers",
                "--realm",
                "999",
                "--all-realms",
            ],
            "cannot be used with",
        ),
        (
            vec!["backfill", "--entity", "customers", "--realm", "9 9"],
            "--realm",
        ),
        (
            vec!["run", "qb_items_backfill", "--realm", "424242"],
            "realm 424242 is not registered",
        ),
    ];
    for (args, expect) in cases {
        let mut c = command(dir.path());
        with_sandbox(&mut c, &sb, &db);
        let mut args = args.clone();
        if args[0] == "backfill" {
            args.extend(WINDOW);
        } else {
            args.extend([
                "--var",
                "fecha_inicio=2014-01-01",
                "--var",
                "fecha_fin=2025-12-31",
            ]);
        }
        let out = c.args(&args).output().unwrap();
        let all = text(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {all}");
        assert!(
            all.contains(expect),
            "{args:?}: expected {expect:?} in {all}"
        );
    }
    if !schemas(&db).await.is_empty() {
        assert_eq!(
            count(&db, "SELECT count(*) FROM qbo_pipeline.runs").await,
            0
        );
        assert_eq!(count(&db, "SELECT count(*) FROM raw.qb_customers").await, 0);
    }
    // Without any company configured or registered, the message says how to add one.
    let mut c = command(dir.path());
    app_only(&mut c, &sb, &db);
    let out = c
        .args(["backfill", "--entity", "items"])
        .args(WINDOW)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("realm add"), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realm_remove_disables_triggers_keeps_rows_unless_purged() {
    let sb = sandbox(small_company()).await;
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    // The environment's realm registers itself with its first backfill.
    let mut c = command(dir.path());
    with_sandbox(&mut c, &sb, &db);
    let out = c
        .args(["backfill", "--entity", "items", "--no-progress"])
        .args(WINDOW)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM qbo_pipeline.realms WHERE source = 'env'"
        )
        .await,
        1
    );
    let items = count(&db, "SELECT count(*) FROM raw.qb_items").await;
    assert!(items > 0);
    let mut c = command(dir.path());
    with_sandbox(&mut c, &sb, &db);
    let out = c
        .args([
            "trigger",
            "create",
            "--name",
            "nightly",
            "--pipeline",
            "qb_items_backfill",
            "--cron",
            "@daily",
            "--var",
            "fecha_inicio=2014-01-01",
            "--var",
            "fecha_fin=2025-12-31",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let mut c = command(dir.path());
    app_only(&mut c, &sb, &db);
    let out = c.args(["realm", "remove", sb.realm_id()]).output().unwrap();
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(all.contains(&format!("{items} kept in raw")), "{all}");
    assert!(all.contains("1 disabled"), "{all}");
    assert_eq!(count(&db, "SELECT count(*) FROM raw.qb_items").await, items);
    assert_eq!(
        count(&db, "SELECT count(*) FROM qbo_pipeline.oauth_tokens").await,
        0
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM qbo_pipeline.triggers WHERE status = 'active'"
        )
        .await,
        0
    );
    // Removing it again: not registered.
    let mut c = command(dir.path());
    app_only(&mut c, &sb, &db);
    let out = c.args(["realm", "remove", sb.realm_id()]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));

    // Re-added (the replaced seed still works within Intuit's grace period), then purged.
    let mut c = command(dir.path());
    app_only(&mut c, &sb, &db);
    c.args(["realm", "add", "--realm-id", sb.realm_id()]);
    let out = with_stdin(c, sb.refresh_token());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let mut c = command(dir.path());
    app_only(&mut c, &sb, &db);
    let out = c
        .args(["realm", "remove", sb.realm_id(), "--purge", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let removed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(removed["rows_deleted"][0][1], items, "{removed}");
    assert_eq!(count(&db, "SELECT count(*) FROM raw.qb_items").await, 0);
    assert_eq!(
        count(&db, "SELECT count(*) FROM qbo_pipeline.backfill_jobs").await,
        0
    );
}

/// Holds realm `realm`'s lock from a separate session, as another process working it would.
async fn hold_realm(db: &TestDb, realm: &str) -> PgConnection {
    let mut conn = PgConnection::connect(&db.url).await.unwrap();
    sqlx::query("SELECT pg_advisory_lock(hashtextextended($1, 0))")
        .bind(format!("qbo_pipeline.realm:{realm}"))
        .execute(&mut conn)
        .await
        .unwrap();
    conn
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_company_is_worked_by_one_process_at_a_time() {
    let sb = sandbox(small_company()).await;
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    // Migrate first, so the lock can be taken before the backfill starts.
    let mut c = command(dir.path());
    with_sandbox(&mut c, &sb, &db);
    assert_eq!(c.arg("migrate").output().unwrap().status.code(), Some(0));
    let held = hold_realm(&db, sb.realm_id()).await;

    let mut c = command(dir.path());
    with_sandbox(&mut c, &sb, &db);
    let child = c
        .args(["backfill", "--entity", "customers", "--no-progress"])
        .args(WINDOW)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        count(&db, "SELECT count(*) FROM qbo_pipeline.runs").await,
        0,
        "no run starts while another process works the company"
    );
    assert_eq!(
        sb.state().stats().requests_total,
        0,
        "not one request sent meanwhile"
    );

    // A scheduler passes over the busy company's due trigger and stays idle.
    let mut c = command(dir.path());
    with_sandbox(&mut c, &sb, &db);
    let out = c
        .args([
            "trigger",
            "create",
            "--name",
            "now",
            "--pipeline",
            "qb_items_backfill",
            "--once-at",
            "2020-01-01T00:00:00Z",
            "--var",
            "fecha_inicio=2014-01-01",
            "--var",
            "fecha_fin=2025-12-31",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let mut c = command(dir.path());
    with_sandbox(&mut c, &sb, &db);
    let out = c
        .args(["scheduler", "--exit-when-idle", "--no-progress"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("0 fired"), "{}", text(&out));

    held.close().await.unwrap();
    let started = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("another process is working on this company"),
        "{}",
        text(&out)
    );
    assert!(started.elapsed() < Duration::from_secs(60));
    // Free again: the scheduler fires the trigger.
    let mut c = command(dir.path());
    with_sandbox(&mut c, &sb, &db);
    let out = c
        .args(["scheduler", "--exit-when-idle", "--no-progress"])
        .output()
        .unwrap();
    assert!(text(&out).contains("1 fired"), "{}", text(&out));
}

/// Registers every company of a multi-company sandbox with `realm add`.
pub(crate) fn add_all(sb: &qbo_sandbox::RunningSandbox, db: &TestDb, dir: &std::path::Path) {
    for id in sb.realm_ids() {
        let mut c = command(dir);
        app_only(&mut c, sb, db);
        c.args(["realm", "add", "--realm-id", id]);
        let out = with_stdin(c, sb.refresh_token_of(id).unwrap());
        assert_eq!(out.status.code(), Some(0), "{id}: {}", text(&out));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_companies_in_one_database_never_cross_talk() {
    let sb = sandbox(qbo_sandbox::SandboxConfig {
        realms: 2,
        ..small_company()
    })
    .await;
    let ids: Vec<String> = sb.realm_ids().iter().map(|s| s.to_string()).collect();
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    add_all(&sb, &db, dir.path());

    // One command back-fills both companies.
    let mut c = command(dir.path());
    app_only(&mut c, &sb, &db);
    let out = c
        .args([
            "backfill",
            "--entity",
            "customers,invoices",
            "--all-realms",
            "--no-progress",
            "--json",
        ])
        .args(WINDOW)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let reports: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reports.as_array().map(Vec::len), Some(2), "{reports}");
    let pool = db.pool().await;
    for id in &ids {
        let realm = sb.realm(id).unwrap();
        for (entity, table) in [("Customer", "qb_customers"), ("Invoice", "qb_invoices")] {
            let want: std::collections::BTreeMap<String, serde_json::Value> = realm
                .all_records(entity)
                .into_iter()
                .map(|r| (r["Id"].as_str().unwrap().to_string(), r))
                .collect();
            let got: Vec<(String, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT id, payload::text FROM raw.{table} WHERE realm_id = $1"
            )))
            .bind(id)
            .fetch_all(&pool)
            .await
            .unwrap();
            assert_eq!(got.len(), want.len(), "{id} {entity}");
            for (rid, payload) in got {
                let payload: serde_json::Value = serde_json::from_str(&payload).unwrap();
                assert_eq!(Some(&payload), want.get(&rid), "{id} {entity} {rid}");
            }
        }
        // Each company's own token chain was used and rotated.
        let rotations: i32 = sqlx::query_scalar(
            "SELECT rotations FROM qbo_pipeline.oauth_tokens WHERE realm_id = $1",
        )
        .bind(id)
        .fetch_one(&pool)
        .await
        .unwrap();
        assert!(rotations >= 1, "{id}: {rotations}");
    }
    // The two companies' books differ (own data), so equal rows above prove no cross-talk.
    assert_ne!(
        sb.realm(&ids[0]).unwrap().all_records("Customer")[0],
        sb.realm(&ids[1]).unwrap().all_records("Customer")[0]
    );

    // Validation per company passes for both.
    let mut c = command(dir.path());
    app_only(&mut c, &sb, &db);
    let out = c
        .args(["validate", "--entity", "customers,invoices", "--all-realms"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    for id in &ids {
        assert!(
            text(&out).contains(&format!("realm {id}:")),
            "{}",
            text(&out)
        );
    }
    let mut c = command(dir.path());
    app_only(&mut c, &sb, &db);
    let out = c
        .args([
            "validate",
            "--entity",
            "customers",
            "--all-realms",
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let reports: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let realms: Vec<&str> = reports
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["realm_id"].as_str().unwrap())
        .collect();
    assert_eq!(realms, ids.iter().map(String::as_str).collect::<Vec<_>>());

    // A trigger of the second company, fired by a scheduler that serves every registered
    // company, runs against that company only.
    let mut c = command(dir.path());
    app_only(&mut c, &sb, &db);
    let out = c
        .args([
            "trigger",
            "create",
            "--name",
            "second-items",
            "--realm",
            &ids[1],
            "--pipeline",
            "qb_items_backfill",
            "--once-at",
            "2020-01-01T00:00:00Z",
            "--var",
            "fecha_inicio=2014-01-01",
            "--var",
            "fecha_fin=2025-12-31",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let first_queries = sb.state().stats_of(&ids[0]).unwrap().requests_total;
    let mut c = command(dir.path());
    app_only(&mut c, &sb, &db);
    let out = c
        .args(["scheduler", "--exit-when-idle", "--no-progress"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("1 fired"), "{}", text(&out));
    let items: Vec<(String, i64)> = sqlx::query_as(
        "SELECT realm_id, count(*) FROM raw.qb_items GROUP BY realm_id ORDER BY realm_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        items,
        vec![(
            ids[1].clone(),
            sb.realm(&ids[1]).unwrap().all_records("Item").len() as i64
        )]
    );
    assert_eq!(
        sb.state().stats_of(&ids[0]).unwrap().requests_total,
        first_queries,
        "the first company got no request from the second's trigger"
    );
    let run_realm: String = sqlx::query_scalar(
        "SELECT realm_id FROM qbo_pipeline.runs WHERE trigger_name = 'second-items'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(run_realm, ids[1]);

    // `runs list --realm` shows one company's runs; without it, every company's, each named.
    let runs_of = |realm: Option<&str>| {
        let mut c = command(dir.path());
        app_only(&mut c, &sb, &db);
        c.args(["runs", "list", "--json"]);
        if let Some(r) = realm {
            c.args(["--realm", r]);
        }
        let out = c.output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        rows.as_array()
            .unwrap()
            .iter()
            .map(|r| r["realm_id"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let all = runs_of(None);
    assert!(ids.iter().all(|id| all.contains(id)), "{all:?}");
    for id in &ids {
        let own = runs_of(Some(id));
        assert!(
            !own.is_empty() && own.iter().all(|r| r == id),
            "{id}: {own:?}"
        );
    }
    // The text table names each run's company.
    let mut c = command(dir.path());
    app_only(&mut c, &sb, &db);
    let out = c
        .args(["runs", "list", "--realm", &ids[1]])
        .output()
        .unwrap();
    assert!(
        text(&out).contains(&ids[1]) && !text(&out).contains(&ids[0]),
        "{}",
        text(&out)
    );
    let mut c = command(dir.path());
    app_only(&mut c, &sb, &db);
    let out = c
        .args(["runs", "list", "--realm", "not a realm"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realm_add_with_another_companys_token_exits_2_and_stores_nothing() {
    let sb = sandbox(qbo_sandbox::SandboxConfig {
        realms: 2,
        ..small_company()
    })
    .await;
    let ids: Vec<String> = sb.realm_ids().iter().map(|s| s.to_string()).collect();
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    // The second company's token, offered for the first company: Intuit refreshes it (it is
    // a good token), but the first company's books refuse it.
    let token = sb.refresh_token_of(&ids[1]).unwrap().to_string();
    let mut c = command(dir.path());
    app_only(&mut c, &sb, &db);
    c.args(["realm", "add", "--realm-id", &ids[0]]);
    let out = with_stdin(c, &token);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(all.contains("belongs to another company"), "{all}");
    assert!(all.contains("nothing was stored"), "{all}");
    assert!(!all.contains(&token), "token echoed: {all}");
    assert_eq!(
        count(&db, "SELECT count(*) FROM qbo_pipeline.realms").await,
        0
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM qbo_pipeline.oauth_tokens").await,
        0,
        "the token store is as it was"
    );
}
