//! Hostile servers, careless values and concurrent processes must not hurt the data: every
//! case ends in a clear error or a correct load, never a panic (exit 101), a hang past its
//! cap, or memory beyond a bound. Each test here failed on the code before the fix it covers.

use crate::hostile::{self, Mode};
use crate::support::*;
use std::process::{Command, Output};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Peak memory a failing run may reach. A normal run of this size needs ~30 MB; the 256 MiB
/// gzip body once took 4 GB.
const MEMORY_BOUND_KB: u64 = 200 * 1024;

fn hostile_backfill(h: &hostile::RunningHostile, db: &TestDb, dir: &std::path::Path) -> Command {
    let mut c = command(dir);
    c.args([
        "backfill",
        "--entity",
        "customers",
        "--from",
        "2020-01-01",
        "--to",
        "2020-12-31",
        "--chunk",
        "whole",
        "--no-progress",
        "--max-retries",
        "1",
    ])
    .env("DATABASE_URL", &db.url);
    for (k, v) in h.env() {
        c.env(k, v);
    }
    c
}

/// No secret of the hostile world in `out`, and no panic.
fn assert_clean(out: &Output, h: &hostile::RunningHostile) {
    let all = text(out);
    assert_ne!(out.status.code(), Some(101), "the process panicked:\n{all}");
    assert!(!all.contains("panicked"), "{all}");
    for secret in [hostile::CLIENT_SECRET, hostile::SEED_TOKEN, "AT-hostile"] {
        assert!(!all.contains(secret), "a secret reached the output:\n{all}");
    }
    for issued in h.state.issued.lock().unwrap().iter() {
        assert!(
            !all.contains(issued.as_str()),
            "a token reached the output:\n{all}"
        );
    }
}

async fn run_hostile(mode: Mode, extra: &[&str]) -> (Output, u64, hostile::RunningHostile, TestDb) {
    let h = hostile::spawn(mode).await;
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = hostile_backfill(&h, &db, dir.path());
    c.args(extra);
    let (out, rss) = run_measured(c, Duration::from_secs(120));
    assert_clean(&out, &h);
    assert!(
        rss < MEMORY_BOUND_KB,
        "peak memory {rss} KiB is over the bound of {MEMORY_BOUND_KB} KiB:\n{}",
        text(&out)
    );
    (out, rss, h, db)
}

fn assert_fails_with(out: &Output, needles: &[&str]) {
    let all = text(out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    for n in needles {
        assert!(all.contains(n), "expected '{n}' in:\n{all}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_record_time_is_a_typed_error_naming_entity_id_and_page() {
    let (out, _, _h, db) = run_hostile(Mode::BadTime, &[]).await;
    assert_fails_with(
        &out,
        &[
            "customers, page 1",
            "record 2",
            "unreadable LastUpdatedTime",
        ],
    );
    // The run is recorded as failed (a scheduler would count the attempt).
    let status: String = sqlx::query_scalar("SELECT status FROM qbo_pipeline.runs")
        .fetch_one(&db.pool().await)
        .await
        .unwrap();
    assert_eq!(status, "failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gzip_bomb_is_refused_within_bounded_memory() {
    let (out, rss, ..) = run_hostile(Mode::HugeGzip, &[]).await;
    assert_fails_with(&out, &["larger than 67108864 bytes"]);
    eprintln!("peak RSS with a 256 MiB gzip body: {rss} KiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_plain_body_is_refused_within_bounded_memory() {
    let (out, rss, ..) = run_hostile(Mode::HugeBody, &[]).await;
    assert_fails_with(&out, &["larger than 67108864 bytes"]);
    eprintln!("peak RSS with a 200 MiB streamed body: {rss} KiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_repeating_a_page_fails_the_chunk_instead_of_looping() {
    let (out, _, h, _db) = run_hostile(Mode::EndlessPages, &["--page-size", "2"]).await;
    assert_fails_with(&out, &["paging made no progress"]);
    // One count and two pages: the repeat is caught on the second page.
    assert!(h.state.api_requests.load(Ordering::SeqCst) <= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fault_inside_a_200_is_recognised_wherever_it_stands() {
    let (out, ..) = run_hostile(Mode::FaultIn200, &[]).await;
    assert_fails_with(&out, &["code 4000", "An application error has occurred"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_count_without_total_count_proves_nothing() {
    let (out, _, h, db) = run_hostile(Mode::NoTotalCount, &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("unreadable"), "{}", text(&out));
    // The re-run cannot prove the chunk unchanged by a missing count: it reads it again.
    let before = h.state.api_requests.load(Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let (again, _) = run_measured(
        hostile_backfill(&h, &db, dir.path()),
        Duration::from_secs(60),
    );
    assert_clean(&again, &h);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    let pool = db.pool().await;
    let verified: i32 = sqlx::query_scalar(
        "SELECT chunks_verified FROM qbo_pipeline.run_entities ORDER BY run_id DESC LIMIT 1",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(verified, 0);
    assert_eq!(
        h.state.api_requests.load(Ordering::SeqCst) - before,
        3,
        "window count, chunk count, page"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_jsonb_refuses_are_stored_losslessly_and_counted() {
    let (out, _, _h, db) = run_hostile(Mode::Poison, &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let pool = db.pool().await;
    let rows: Vec<(String, serde_json::Value, Option<String>)> =
        sqlx::query_as("SELECT id, payload, payload_text FROM raw.qb_customers ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(rows.len(), 6, "no record of the page is lost");
    let name = |i: usize| rows[i].1["DisplayName"].as_str().unwrap().to_string();
    assert_eq!(name(0), "Customer 1");
    assert_eq!(rows[0].2, None);
    assert_eq!(name(1), "Customer 2\u{fffd} nul");
    assert!(
        rows[1]
            .2
            .as_deref()
            .unwrap()
            .contains(r#""DisplayName":"Customer 2\u0000 nul""#)
    );
    assert_eq!(name(2), "Customer 3 lone \u{fffd} high");
    assert!(rows[2].2.as_deref().unwrap().contains(r"lone \ud800 high"));
    assert_eq!(name(3), "Customer 4 lone \u{fffd} low, pair \u{1f600}");
    assert!(
        rows[3]
            .2
            .as_deref()
            .unwrap()
            .contains(r"\udfff low, pair \ud83d\ude00")
    );
    assert_eq!(rows[4].2, None);
    // The document PostgreSQL refuses outright is kept as text: payload a JSON string of it.
    let refused = rows[5].2.as_deref().unwrap();
    assert!(refused.contains(r#""Balance":1e200000"#), "{refused}");
    assert_eq!(rows[5].1.as_str(), Some(refused));
    let sanitised: i64 =
        sqlx::query_scalar("SELECT records_sanitised FROM qbo_pipeline.run_entities")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(sanitised, 4);
    assert!(
        text(&out).contains("payload_text"),
        "each such record is logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_never_carry_tokens_to_another_host() {
    let trap = hostile::trap().await;
    let to = format!("http://{}/elsewhere", trap.addr);
    let (out, ..) = run_hostile(Mode::TokenRedirect(to.clone()), &[]).await;
    assert_fails_with(&out, &["redirect (HTTP 307)", "never followed"]);
    let (out, ..) = run_hostile(Mode::ApiRedirect(to), &[]).await;
    assert_fails_with(&out, &["HTTP 302"]);
    assert_eq!(
        trap.hits.load(Ordering::SeqCst),
        0,
        "nothing reached the other host"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_token_lifetimes_neither_panic_nor_lose_the_rotated_token() {
    let h = hostile::spawn(Mode::HostileTokens).await;
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    for run in 1..=3 {
        let (out, _) = run_measured(
            hostile_backfill(&h, &db, dir.path()),
            Duration::from_secs(60),
        );
        assert_clean(&out, &h);
        assert_eq!(out.status.code(), Some(0), "run {run}: {}", text(&out));
        let (stored, expires_ok): (String, bool) = sqlx::query_as(
            "SELECT refresh_token,
                    refresh_token_expires_at BETWEEN now() - interval '1 minute' AND now() + interval '11 years'
             FROM qbo_pipeline.oauth_tokens",
        )
        .fetch_one(&db.pool().await)
        .await
        .unwrap();
        let issued = h.state.issued.lock().unwrap().clone();
        assert_eq!(Some(&stored), issued.last(), "the newest token is stored");
        assert!(expires_ok, "the expiry is clamped to a sane range");
    }
    // `expires_in: 0` is clamped: one refresh per process, not one per request.
    assert_eq!(h.state.token_requests.load(Ordering::SeqCst), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_31_year_retry_after_exits_at_once() {
    let h = hostile::spawn(Mode::HugeRetryAfter).await;
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = hostile_backfill(&h, &db, dir.path());
    c.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = c.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while h.state.api_requests.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the binary never asked");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let signalled = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let out = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::task::spawn_blocking(move || child.wait_with_output()),
    )
    .await
    .expect("the binary exits soon after SIGTERM, not after the Retry-After")
    .unwrap()
    .unwrap();
    eprintln!("exited {:?} after SIGTERM", signalled.elapsed());
    assert_clean(&out, &h);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("interrupted"), "{}", text(&out));
    let status: String = sqlx::query_scalar("SELECT status FROM qbo_pipeline.runs")
        .fetch_one(&db.pool().await)
        .await
        .unwrap();
    assert_eq!(status, "failed", "the run is recorded, not left running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dotenv_is_read_from_the_working_directory_only_literally_and_never_echoed() {
    let trap = hostile::trap().await;
    let db = TestDb::create().await;
    let parent = tempfile::tempdir().unwrap();
    let child = parent.path().join("work");
    std::fs::create_dir(&child).unwrap();
    // A .env planted in a parent directory is not read.
    std::fs::write(
        parent.path().join(".env"),
        format!(
            "QBO_CLIENT_ID=x\nQBO_CLIENT_SECRET=planted-secret\nQBO_REALM_ID=1\nQBO_REFRESH_TOKEN=planted-token\nQBO_TOKEN_URL=http://{0}/steal\nQBO_API_BASE_URL=http://{0}\nDATABASE_URL={1}\n",
            trap.addr, db.url
        ),
    )
    .unwrap();
    let backfill = [
        "backfill",
        "--entity",
        "customers",
        "--from",
        "2020-01-01",
        "--to",
        "2020-01-31",
    ];
    let out = command(&child).args(backfill).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("QBO_CLIENT_ID is not set"),
        "{}",
        text(&out)
    );
    assert_eq!(trap.hits.load(Ordering::SeqCst), 0);

    // Values are literal: `$VAR` is not expanded.
    std::fs::write(child.join(".env"), "DATABASE_URL=$PLANTED_URL\n").unwrap();
    let out = command(&child)
        .env("PLANTED_URL", &db.url)
        .arg("migrate")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("DATABASE_URL"), "{}", text(&out));
    assert!(schemas(&db).await.is_empty(), "nothing was written");

    // A malformed line is reported by number, never echoed (it may hold a secret).
    std::fs::write(
        child.join(".env"),
        "# comment\nQBO_CLIENT_SECRET super-secret-value-123\n",
    )
    .unwrap();
    let out = command(&child).arg("migrate").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains(".env line 2"), "{}", text(&out));
    assert!(
        !text(&out).contains("super-secret-value-123"),
        "{}",
        text(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impossible_input_exits_2_before_anything_is_written() {
    let sb = sandbox(small_company()).await;
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    // The binary with the sandbox's configuration, `env` added and `unset` removed.
    let bin = |args: &[&str], env: &[(&str, &str)], unset: &[&str]| {
        let mut c = command(dir.path());
        with_sandbox(&mut c, &sb, &db);
        c.envs(env.iter().copied()).args(args);
        for k in unset {
            c.env_remove(k);
        }
        c.output().unwrap()
    };
    let window = ["--from", "2020-01-01", "--to", "2020-01-31"];
    let backfill = |extra: &[&str], env: &[(&str, &str)]| {
        let mut args = vec!["backfill", "--entity", "customers"];
        args.extend(window);
        args.extend(extra);
        bin(&args, env, &[])
    };
    let cases: Vec<(Output, &str)> = vec![
        (
            backfill(&["--request-timeout-secs", "0"], &[]),
            "--request-timeout-secs",
        ),
        (backfill(&["--max-retries", "100000"], &[]), "--max-retries"),
        (
            bin(
                &[
                    "backfill",
                    "--entity",
                    "customers",
                    "--chunk",
                    "day",
                    "--from",
                    "2020-01-01",
                    "--to",
                    "9999-12-31",
                ],
                &[],
                &[],
            ),
            "after tomorrow",
        ),
        (bin(&["runs", "list", "--limit=-1"], &[], &[]), "--limit"),
        (bin(&["runs", "show", "99"], &[], &[]), "no run 99"),
        (
            bin(&["trigger", "show", "nope"], &[], &[]),
            "no trigger 'nope'",
        ),
        (
            bin(&["trigger", "delete", "nope"], &[], &[]),
            "no trigger 'nope'",
        ),
        (
            bin(&["trigger", "enable", "t", "--realm", " "], &[], &[]),
            "--realm",
        ),
        (
            bin(&["migrate"], &[("QBO_LOG", "verbose")], &[]),
            "'verbose' is not a log level",
        ),
        (
            bin(&["--log", "info,qbo_pipeline=loud", "migrate"], &[], &[]),
            "is not a log filter",
        ),
        (
            backfill(&[], &[("QBO_TOKEN_KEY", "c2hvcnQ=")]),
            "QBO_TOKEN_KEY holds 5 bytes, not 32",
        ),
        (
            backfill(
                &[],
                &[(
                    "QBO_TOKEN_URL",
                    "https://user:pa55word@example.invalid/token",
                )],
            ),
            "holds a user name or password",
        ),
        (
            bin(
                &[
                    "trigger",
                    "create",
                    "--name",
                    "t",
                    "--pipeline",
                    "qb_items_backfill",
                    "--once-at",
                    "2026-01-01T00:00:00Z",
                    "--var",
                    "from=2020-01-01",
                    "--var",
                    "to=2020-01-31",
                ],
                &[],
                &["QBO_REALM_ID"],
            ),
            "no company for the trigger",
        ),
        (
            bin(&["sandbox", "--listen", "0.0.0.0:0"], &[], &[]),
            "--allow-remote",
        ),
        (
            bin(
                &["sandbox", "--access-token-ttl-secs", "18446744073709551615"],
                &[],
                &[],
            ),
            "--access-token-ttl-secs",
        ),
    ];
    for (out, needle) in &cases {
        let all = text(out);
        assert_eq!(out.status.code(), Some(2), "{needle}: {all}");
        assert!(all.contains(needle), "expected '{needle}' in:\n{all}");
        assert!(!all.contains("pa55word"), "{all}");
    }
    assert!(
        schemas(&db).await.is_empty(),
        "nothing was written by any of them"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_encrypted_at_rest_when_a_key_is_configured() {
    let sb = sandbox(small_company()).await;
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let key = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="; // 32 bytes
    let run = |key: Option<&str>| {
        let mut c = command(dir.path());
        with_sandbox(&mut c, &sb, &db);
        if let Some(k) = key {
            c.env("QBO_TOKEN_KEY", k);
        }
        c.args([
            "backfill",
            "--entity",
            "items",
            "--from",
            "2014-01-01",
            "--to",
            "2025-12-31",
            "--no-progress",
        ]);
        c.output().unwrap()
    };
    for _ in 0..2 {
        let out = run(Some(key));
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        assert!(!text(&out).contains(key));
    }
    let (stored, seed, previous): (String, String, Option<String>) = sqlx::query_as(
        "SELECT refresh_token, seed_refresh_token, previous_refresh_token FROM qbo_pipeline.oauth_tokens",
    )
    .fetch_one(&db.pool().await)
    .await
    .unwrap();
    assert!(stored.starts_with("enc:v1:"), "{stored}");
    assert!(previous.unwrap().starts_with("enc:v1:"));
    assert!(seed.starts_with("sha256:"), "the seed is kept as a digest");
    assert!(!seed.contains(sb.refresh_token()));
    // Without the key, the stored token cannot be used: the message says what to do.
    let out = run(None);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("QBO_TOKEN_KEY"), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_newest_token_falls_back_to_the_one_it_replaced() {
    let sb = sandbox(small_company()).await;
    let db = TestDb::create().await;
    let opts = options(
        &[qbo_pipeline::entity::Entity::ITEM],
        window("2014-01-01", "2025-12-31"),
    );
    let first = backfill(&sb, &db, &fast_http(), &opts).await;
    assert!(first.succeeded(), "{:?}", first.error());
    let pool = db.pool().await;
    // The stored newest token is lost or mangled (e.g. a crash between Intuit's answer and
    // the commit of a later rotation): the previous one is still valid for a day.
    sqlx::query("UPDATE qbo_pipeline.oauth_tokens SET refresh_token = 'RT-mangled'")
        .execute(&pool)
        .await
        .unwrap();
    let second = backfill(&sb, &db, &fast_http(), &opts).await;
    assert!(second.succeeded(), "{:?}", second.error());
    let stored: String = sqlx::query_scalar("SELECT refresh_token FROM qbo_pipeline.oauth_tokens")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_ne!(stored, "RT-mangled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_run_is_never_marked_abandoned() {
    let db = TestDb::create().await;
    let pool = qbo_pipeline::app::open_database(&db.settings(), 8)
        .await
        .unwrap();
    let stop = qbo_pipeline::backfill::StopSignal::default();
    let sweeper = {
        let pool = pool.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            while !stop.is_stopped() {
                qbo_pipeline::ledger::mark_abandoned(&pool).await.unwrap();
            }
        })
    };
    let params = serde_json::json!({});
    for _ in 0..150 {
        let guard = qbo_pipeline::ledger::start_run(&pool, "p", None, "r", &params)
            .await
            .unwrap();
        let status: String =
            sqlx::query_scalar("SELECT status FROM qbo_pipeline.runs WHERE run_id = $1")
                .bind(guard.run_id)
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(
            status, "running",
            "run {} was marked abandoned while alive",
            guard.run_id
        );
        qbo_pipeline::ledger::finish_run(&pool, guard, None)
            .await
            .unwrap();
    }
    stop.stop();
    sweeper.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_ignore_a_server_idle_session_timeout() {
    let db = TestDb::create().await;
    {
        let pool = db.pool().await;
        let major: i32 =
            sqlx::query_scalar("SELECT current_setting('server_version_num')::int / 10000")
                .fetch_one(&pool)
                .await
                .unwrap();
        assert!(
            major >= 14,
            "this test needs PostgreSQL 14+ (idle_session_timeout)"
        );
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "ALTER DATABASE \"{}\" SET idle_session_timeout = '1s'",
            db.name
        )))
        .execute(&pool)
        .await
        .unwrap();
    }
    let pool = qbo_pipeline::db::connect(&db.settings(), 2).await.unwrap();
    let mut conn = pool.acquire().await.unwrap();
    let setting: String = sqlx::query_scalar("SHOW idle_session_timeout")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(
        setting, "0",
        "a lock-holding idle session must not be ended by the server"
    );
    // And the session indeed survives idling past the server's timeout.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let alive: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(alive, 1);
}

/// Connections per process stay within --concurrency + 4 however many entities a run
/// covers (each entity used to pin a connection of its own for its lock).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_do_not_grow_with_the_entity_count() {
    let mut config = small_company();
    config.faults.latency = Duration::from_millis(40);
    let sb = sandbox(config).await;
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = command(dir.path());
    with_sandbox(&mut c, &sb, &db);
    c.args([
        "backfill",
        "--entity",
        "all",
        "--from",
        "2014-01-01",
        "--to",
        "2025-12-31",
        "--chunk",
        "year",
        "--concurrency",
        "1",
        "--page-size",
        "20",
        "--no-progress",
    ]);
    let child = c.spawn().unwrap();
    let watcher = db.pool().await;
    let mut peak = 0i64;
    let waiter = tokio::task::spawn_blocking(move || child.wait_with_output());
    while !waiter.is_finished() {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
             AND application_name = 'qbo-pipeline'",
        )
        .fetch_one(&watcher)
        .await
        .unwrap();
        peak = peak.max(n);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let out = waiter.await.unwrap().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    eprintln!("peak connections with every entity at --concurrency 1: {peak}");
    assert!(peak >= 1, "the watcher saw the run");
    assert!(peak <= 1 + 4, "{peak} connections for --concurrency 1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrapped_record_without_an_inner_object_is_a_typed_error_naming_entity_and_page() {
    let (out, _, _h, db) = run_hostile(
        Mode::WrappedWithoutInner,
        &["--entity", "recurring_transactions"],
    )
    .await;
    assert_fails_with(
        &out,
        &[
            "recurring_transactions, page 1",
            "RecurringTransaction record wraps no object",
        ],
    );
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM raw.qb_recurring_transactions")
        .fetch_one(&db.pool().await)
        .await
        .unwrap();
    assert_eq!(rows, 0, "the bad page is not written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exchange_rate_missing_a_key_part_is_a_typed_error_naming_entity_and_page() {
    let (out, ..) = run_hostile(
        Mode::ExchangeRateMissingPart,
        &["--entity", "exchange_rates"],
    )
    .await;
    assert_fails_with(
        &out,
        &[
            "exchange_rates, page 1",
            "ExchangeRate record has no TargetCurrencyCode",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entity_the_company_lacks_is_skipped_with_a_note_and_the_run_succeeds() {
    let (out, _, h, db) = run_hostile(
        Mode::Unavailable("TaxPayment"),
        &["--entity", "tax_payments"],
    )
    .await;
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(
        all.contains("tax_payments skipped: the company does not offer TaxPayment"),
        "{all}"
    );
    let pool = db.pool().await;
    let (status, error): (String, Option<String>) =
        sqlx::query_as("SELECT status, error FROM qbo_pipeline.runs")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((status.as_str(), error), ("succeeded", None));
    let entities: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT entity, status, note FROM qbo_pipeline.run_entities ORDER BY entity",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(entities.len(), 2, "{entities:?}");
    assert_eq!(
        (entities[0].0.as_str(), entities[0].1.as_str()),
        ("customers", "succeeded")
    );
    assert_eq!(
        (entities[1].0.as_str(), entities[1].1.as_str()),
        ("tax_payments", "skipped")
    );
    let note = entities[1].2.as_deref().unwrap_or_default();
    assert!(
        note.contains("invalid context declaration: TaxPayment"),
        "{note}"
    );
    let rows: (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM raw.qb_customers), (SELECT count(*) FROM raw.qb_tax_payments)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(rows, (3, 0));
    // `runs show` prints the note.
    let dir = tempfile::tempdir().unwrap();
    let shown = command(dir.path())
        .env("DATABASE_URL", &db.url)
        .args(["runs", "show", "1"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&shown.stdout)
            .contains("skipped    the company does not offer TaxPayment"),
        "{}",
        text(&shown)
    );
    drop(h);

    // The same answer for an entity every company has is a failure, not a skip.
    let (out, ..) = run_hostile(Mode::Unavailable("Invoice"), &["--entity", "invoices"]).await;
    assert_fails_with(&out, &["invalid context declaration: Invoice"]);
}
