//! The binary, as users and scripts run it.

use crate::support::*;
use qbo_pipeline::entity::Entity;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_exits_2_with_advice_and_writes_nothing() {
    let sb = sandbox(small_company()).await;
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let good = [
        "backfill",
        "--entity",
        "customers",
        "--from",
        "2014-01-01",
        "--to",
        "2025-12-31",
    ];
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            vec![
                "backfill",
                "--entity",
                "customers",
                "--from",
                "2023-02-30",
                "--to",
                "2025-12-31",
            ],
            vec![],
            "YYYY-MM-DD",
        ),
        (
            vec![
                "backfill",
                "--entity",
                "customers",
                "--from",
                "2025-01-02",
                "--to",
                "2025-01-01",
            ],
            vec![],
            "after",
        ),
        (
            vec![
                "backfill",
                "--entity",
                "vendors,vendorz",
                "--from",
                "2014-01-01",
                "--to",
                "2025-12-31",
            ],
            vec![],
            "unknown entity 'vendorz': `qbo-pipeline entities` lists the 40 names",
        ),
        (
            vec![
                "backfill",
                "--entity",
                "customers",
                "--fecha-inicio",
                "2014-01-01",
                "--fecha-fin",
                "nope",
            ],
            vec![],
            "--to",
        ),
        (
            [&good[..], &["--page-size", "0"]].concat(),
            vec![],
            "--page-size 0",
        ),
        (
            [&good[..], &["--page-size", "1001"]].concat(),
            vec![],
            "1 to 1000",
        ),
        (
            [&good[..], &["--chunk", "fortnight"]].concat(),
            vec![],
            "day, week, month, year",
        ),
        (
            good.to_vec(),
            vec![("QBO_CLIENT_SECRET", "")],
            "QBO_CLIENT_SECRET is empty",
        ),
        (
            good.to_vec(),
            vec![("QBO_REALM_ID", "not a realm")],
            "QBO_REALM_ID",
        ),
        (
            good.to_vec(),
            vec![(
                "DATABASE_URL",
                "postgres://postgres@127.0.0.1:1/nowhere?sslmode=disable",
            )],
            "cannot connect to PostgreSQL",
        ),
    ];
    for (args, env, expect) in cases {
        let mut c = command(dir.path());
        with_sandbox(&mut c, &sb, &db);
        for (k, v) in &env {
            c.env(k, v);
        }
        let out = c.args(&args).output().unwrap();
        let all = text(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {all}");
        assert!(
            all.contains(expect),
            "{args:?}: expected {expect:?} in {all}"
        );
    }
    // Missing credentials are all named at once.
    let out = command(dir.path())
        .env("DATABASE_URL", &db.url)
        .args(good)
        .output()
        .unwrap();
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    for var in [
        "QBO_CLIENT_ID",
        "QBO_CLIENT_SECRET",
        "QBO_REALM_ID",
        "QBO_REFRESH_TOKEN",
    ] {
        assert!(all.contains(var), "{var} named in {all}");
    }
    assert!(schemas(&db).await.is_empty(), "nothing was written");
    assert_eq!(
        sb.state().stats().requests_total,
        0,
        "no request reached QBO"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dotenv_is_read_and_the_environment_wins() {
    let sb = sandbox(small_company()).await;
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(".env"),
        format!(
            "QBO_API_BASE_URL={}\nQBO_TOKEN_URL={}\nQBO_CLIENT_ID={}\nQBO_CLIENT_SECRET={}\nQBO_REALM_ID={}\nQBO_REFRESH_TOKEN={}\nDATABASE_URL=postgres://postgres@127.0.0.1:1/wrong\n",
            sb.base_url(), sb.token_url(), sb.client_id(), sb.client_secret(), sb.realm_id(), sb.refresh_token()
        ),
    )
    .unwrap();
    let out = command(dir.path())
        .env("DATABASE_URL", &db.url)
        .args([
            "backfill",
            "--entity",
            "items",
            "--from",
            "2014-01-01",
            "--to",
            "2025-12-31",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM raw.qb_items")
        .fetch_one(&db.pool().await)
        .await
        .unwrap();
    assert!(n > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_run_then_the_same_command_resumes() {
    let mut config = small_company();
    config.invoices = 1500;
    let sb = sandbox(config).await;
    let mut faults = sb.state().faults();
    faults.latency = Duration::from_millis(25);
    sb.state().set_faults(faults);
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "backfill",
        "--entity",
        "invoices",
        "--from",
        "2014-01-01",
        "--to",
        "2025-12-31",
        "--chunk",
        "month",
        "--page-size",
        "20",
        "--concurrency",
        "2",
        "--no-progress",
    ];
    let mut c = command(dir.path());
    with_sandbox(&mut c, &sb, &db);
    let mut child = c
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until some pages are committed, then kill -9.
    let started = Instant::now();
    loop {
        let pages: Option<i64> = match PgPoolExt::try_pool(&db).await {
            Some(pool) => {
                sqlx::query_scalar("SELECT sum(pages)::bigint FROM qbo_pipeline.checkpoints")
                    .fetch_one(&pool)
                    .await
                    .ok()
                    .flatten()
            }
            None => None,
        };
        if pages.unwrap_or(0) >= 10 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no progress before kill"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it could be killed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let pool = db.pool().await;
    let committed: i64 = sqlx::query_scalar("SELECT count(*) FROM raw.qb_invoices")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(committed > 0);

    let mut faults = sb.state().faults();
    faults.latency = Duration::ZERO;
    sb.state().set_faults(faults);
    let mut c = command(dir.path());
    with_sandbox(&mut c, &sb, &db);
    let out = c.args(args).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_table_equals_sandbox(&pool, &sb, Entity::INVOICE, full_window()).await;
    let runs: Vec<(String, i32)> = sqlx::query_as(
        "SELECT r.status, coalesce(e.chunks_skipped, 0) FROM qbo_pipeline.runs r
         LEFT JOIN qbo_pipeline.run_entities e USING (run_id) ORDER BY run_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!(
        runs[0].0, "abandoned",
        "the killed run is recorded as abandoned"
    );
    assert_eq!(runs[1].0, "succeeded");
    assert!(
        runs[1].1 > 0,
        "finished chunks were skipped on resume: {runs:?}"
    );
}

/// Connects only once the database is reachable (used while a child process migrates).
struct PgPoolExt;
impl PgPoolExt {
    async fn try_pool(db: &TestDb) -> Option<sqlx::PgPool> {
        sqlx::PgPool::connect(&db.url).await.ok()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_one_realm_load_everything_once() {
    let sb = sandbox(qbo_sandbox::SandboxConfig {
        rotation: qbo_sandbox::Rotation::EveryRefresh,
        refresh_grace: Duration::ZERO,
        ..small_company()
    })
    .await;
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let spawn = |entity: &str| {
        let mut c = command(dir.path());
        with_sandbox(&mut c, &sb, &db);
        c.args([
            "backfill",
            "--entity",
            entity,
            "--from",
            "2014-01-01",
            "--to",
            "2025-12-31",
            "--page-size",
            "100",
            "--no-progress",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
    };
    let a = spawn("all");
    let b = spawn("all");
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert_eq!(a.status.code(), Some(0), "{}", text(&a));
    assert_eq!(b.status.code(), Some(0), "{}", text(&b));
    let pool = db.pool().await;
    for entity in Entity::ALL {
        assert_table_equals_sandbox(&pool, &sb, entity, full_window()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_any_output() {
    let sb = sandbox(qbo_sandbox::SandboxConfig {
        rotation: qbo_sandbox::Rotation::EveryRefresh,
        ..small_company()
    })
    .await;
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let mut outputs = String::new();
    for args in [
        vec![
            "--log",
            "trace",
            "backfill",
            "--entity",
            "all",
            "--from",
            "2014-01-01",
            "--to",
            "2025-12-31",
            "--page-size",
            "200",
        ],
        vec![
            "--log-format",
            "json",
            "--log",
            "debug",
            "backfill",
            "--entity",
            "items",
            "--from",
            "2014-01-01",
            "--to",
            "2025-12-31",
            "--json",
        ],
        vec!["runs", "list"],
        vec!["runs", "show", "1", "--json"],
    ] {
        let mut c = command(dir.path());
        with_sandbox(&mut c, &sb, &db);
        let out = c.args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", text(&out));
        outputs.push_str(&text(&out));
    }
    // A failing run's error output too.
    sb.state().revoke_refresh_tokens();
    let mut c = command(dir.path());
    with_sandbox(&mut c, &sb, &db);
    c.env("QBO_REFRESH_TOKEN", "a-fresh-but-unknown-token-0123456789");
    let out = c
        .args([
            "backfill",
            "--entity",
            "items",
            "--from",
            "2014-01-01",
            "--to",
            "2025-12-31",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    outputs.push_str(&text(&out));

    let pool = db.pool().await;
    let stored: String = sqlx::query_scalar("SELECT refresh_token FROM qbo_pipeline.oauth_tokens")
        .fetch_one(&pool)
        .await
        .unwrap();
    for secret in [
        sb.client_secret(),
        sb.refresh_token(),
        stored.as_str(),
        "a-fresh-but-unknown-token-0123456789",
    ] {
        assert!(!outputs.contains(secret), "a secret was printed");
    }
    assert!(
        outputs.contains("Re-authorise"),
        "invalid_grant advice shown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandbox_command_prints_sourceable_settings_a_backfill_can_use() {
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let mut child = command(dir.path())
        .args([
            "sandbox",
            "--listen",
            "127.0.0.1:0",
            "--customers",
            "30",
            "--invoices",
            "200",
            "--items",
            "20",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let lines: Vec<(String, String)> = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        let mut out = Vec::new();
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line.unwrap();
            if let Some((k, v)) = line.split_once('=') {
                out.push((k.to_string(), v.to_string()));
            }
            if out.len() == 6 {
                break;
            }
        }
        out
    })
    .await
    .unwrap();
    let keys: Vec<&str> = lines.iter().map(|(k, _)| k.as_str()).collect();
    for k in [
        "QBO_API_BASE_URL",
        "QBO_TOKEN_URL",
        "QBO_CLIENT_ID",
        "QBO_CLIENT_SECRET",
        "QBO_REALM_ID",
        "QBO_REFRESH_TOKEN",
    ] {
        assert!(keys.contains(&k), "{k} in {keys:?}");
    }
    let mut c = command(dir.path());
    c.env("DATABASE_URL", &db.url);
    for (k, v) in &lines {
        c.env(k, v.trim_matches(|ch| ch == '\'' || ch == '"'));
    }
    let out = c
        .args([
            "backfill",
            "--entity",
            "all",
            "--from",
            "2014-01-01",
            "--to",
            "2025-12-31",
        ])
        .output()
        .unwrap();
    child.kill().ok();
    child.wait().ok();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let total: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM raw.qb_customers) + (SELECT count(*) FROM raw.qb_invoices) + (SELECT count(*) FROM raw.qb_items)",
    )
    .fetch_one(&db.pool().await)
    .await
    .unwrap();
    assert!(total >= 250, "{total}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("customers") && stdout.contains("succeeded"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_is_repeatable() {
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    for _ in 0..2 {
        let out = command(dir.path())
            .env("DATABASE_URL", &db.url)
            .arg("migrate")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    }
    assert_eq!(
        schemas(&db).await,
        vec!["qbo_pipeline".to_string(), "raw".to_string()]
    );
    let out = command(dir.path()).arg("migrate").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("DATABASE_URL"));
}

// ---------------------------------------------------------------------------------------------
// `demo` into a configured database

/// A small demo: a few records, a few requests.
fn demo_command(dir: &std::path::Path, db: &TestDb, yes: bool) -> Command {
    let mut c = command(dir);
    c.env("DATABASE_URL", &db.url).args([
        "demo",
        "--no-progress",
        "--customers",
        "4",
        "--invoices",
        "12",
        "--items",
        "3",
    ]);
    if yes {
        c.arg("--yes");
    }
    c
}

/// Every table of `raw`, `qbo_pipeline` and `public` with a digest of all its rows, plus the
/// comment on `qbo_pipeline`: equal before and after means nothing was written.
async fn fingerprint(db: &TestDb) -> Vec<(String, String)> {
    let pool = db.pool().await;
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables
          WHERE schemaname IN ('raw', 'qbo_pipeline', 'public') ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let mut out = Vec::new();
    for table in tables {
        let digest: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) || ':' || md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), ''))
               FROM {table} t"
        )))
        .fetch_one(&pool)
        .await
        .unwrap();
        out.push((table, digest));
    }
    let comment: Option<String> = sqlx::query_scalar(
        "SELECT obj_description(oid, 'pg_namespace') FROM pg_namespace WHERE nspname = 'qbo_pipeline'",
    )
    .fetch_optional(&pool)
    .await
    .unwrap()
    .flatten();
    out.push(("comment on qbo_pipeline".into(), format!("{comment:?}")));
    pool.close().await;
    out
}

/// (pipeline, runs) in the ledger.
async fn runs_by_pipeline(db: &TestDb) -> Vec<(String, i64)> {
    let pool = db.pool().await;
    let rows = sqlx::query_as(
        "SELECT pipeline, count(*) FROM qbo_pipeline.runs GROUP BY pipeline ORDER BY pipeline",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    rows
}

async fn demo_marker(db: &TestDb) -> Option<String> {
    let pool = db.pool().await;
    let marker = sqlx::query_scalar(
        "SELECT obj_description(oid, 'pg_namespace') FROM pg_namespace WHERE nspname = 'qbo_pipeline'",
    )
    .fetch_optional(&pool)
    .await
    .unwrap()
    .flatten();
    pool.close().await;
    marker
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_refuses_a_database_with_real_data_unless_yes() {
    // A real (non-demo) load: a run of a real pipeline and its rows.
    let sb = sandbox(qbo_sandbox::SandboxConfig {
        customers: 5,
        invoices: 10,
        items: 2,
        ..small_company()
    })
    .await;
    let db = TestDb::create().await;
    let report = backfill(
        &sb,
        &db,
        &fast_http(),
        &options(&Entity::ALL, full_window()),
    )
    .await;
    assert!(report.succeeded());
    let real_runs = runs_by_pipeline(&db).await;
    assert!(!real_runs.is_empty());
    let before = fingerprint(&db).await;
    let dir = tempfile::tempdir().unwrap();

    let out = demo_command(dir.path(), &db, false).output().unwrap();
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(2), "{shown}");
    for part in [
        "refusing to run the demo",
        "holds data that is not from the demo",
        "1 run of real pipelines",
        // The first tables with rows, by name (the sandbox has records of every entity).
        "rows in raw.qb_accounts",
        "nothing was written",
        "new or empty database",
        "--yes",
    ] {
        assert!(shown.contains(part), "missing {part:?} in:\n{shown}");
    }
    assert_eq!(
        fingerprint(&db).await,
        before,
        "the refused demo wrote something"
    );

    // --yes: loads anyway, next to the real data, and does not mark the database as a demo's.
    let out = demo_command(dir.path(), &db, true).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let mut expected = real_runs.clone();
    expected.push(("qb_demo_backfill".into(), 1));
    expected.sort();
    assert_eq!(runs_by_pipeline(&db).await, expected);
    assert_eq!(demo_marker(&db).await, None);

    // So the next demo without --yes is refused again.
    let before = fingerprint(&db).await;
    let out = demo_command(dir.path(), &db, false).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_eq!(fingerprint(&db).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_refuses_a_database_of_another_application() {
    let db = TestDb::create().await;
    let pool = db.pool().await;
    sqlx::query("CREATE TABLE public.app_users (id int PRIMARY KEY)")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let before = fingerprint(&db).await;
    let dir = tempfile::tempdir().unwrap();

    let out = demo_command(dir.path(), &db, false).output().unwrap();
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(2), "{shown}");
    assert!(shown.contains("table public.app_users"), "{shown}");
    assert!(shown.contains("--yes"), "{shown}");
    // Not even the schemas or sqlx's migration table were created.
    assert_eq!(schemas(&db).await, Vec::<String>::new());
    assert_eq!(fingerprint(&db).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_runs_again_into_its_own_database() {
    let dir = tempfile::tempdir().unwrap();
    // A fresh database, and one that was only migrated: both count as empty.
    for migrated_first in [false, true] {
        let db = TestDb::create().await;
        if migrated_first {
            qbo_pipeline::app::open_database(&db.settings(), 1)
                .await
                .unwrap()
                .close()
                .await;
        }
        for run in 1..=2 {
            let out = demo_command(dir.path(), &db, false).output().unwrap();
            assert_eq!(
                out.status.code(),
                Some(0),
                "demo {run} (migrated first: {migrated_first}): {}",
                text(&out)
            );
        }
        assert_eq!(
            runs_by_pipeline(&db).await,
            vec![("qb_demo_backfill".to_string(), 2)]
        );
        assert_eq!(
            demo_marker(&db).await.as_deref(),
            Some(qbo_pipeline::app::DEMO_MARKER)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entities_lists_the_catalogue_as_the_contract_says() {
    let dir = tempfile::tempdir().unwrap();
    let out = command(dir.path())
        .args(["entities", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), Entity::ALL.len());
    assert_eq!(list.len(), 40);
    for (row, e) in list.iter().zip(Entity::ALL) {
        assert_eq!(row["name"], e.cli_name());
        assert_eq!(row["qbo_name"], e.qbo_name());
        assert_eq!(row["table"], e.table());
        assert!(row["cdc"].is_boolean());
        assert_eq!(row["filterable"], e.spec().filterable);
        assert_eq!(row["pipeline"], e.pipeline_name());
        assert!(row["requires"].is_string());
        let kind = row["kind"].as_str().unwrap();
        assert!(
            ["name-list", "transaction", "singleton", "other"].contains(&kind),
            "{kind}"
        );
        // Every listed name is accepted by --entity.
        assert!(
            row["name"]
                .as_str()
                .unwrap()
                .parse::<qbo_pipeline::entity::EntitySelection>()
                .is_ok()
        );
    }
    // A reader that stops early (`| head`) is no crash.
    let mut early = command(dir.path())
        .args(["entities", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(early.stdout.take());
    let closed = early.wait_with_output().unwrap();
    assert!(
        !String::from_utf8_lossy(&closed.stderr).contains("panicked"),
        "{}",
        text(&closed)
    );
    let table = command(dir.path()).arg("entities").output().unwrap();
    assert_eq!(table.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&table.stdout).contains("raw.qb_invoices"));
}
