//! Test worlds: a fresh database and a sandbox per test, and helpers to run backfills.

use qbo_pipeline::app;
use qbo_pipeline::backfill::{BackfillOptions, BackfillReport, StopSignal};
use qbo_pipeline::config::{DbSettings, HttpSettings, QboSettings, RealmId};
use qbo_pipeline::entity::Entity;
use qbo_pipeline::window::{ChunkSize, Window, parse_day};
use qbo_sandbox::{RunningSandbox, SandboxConfig};
use secrecy::SecretString;
use sqlx::{Connection, PgConnection, PgPool};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// The server URL tests create their databases on.
pub fn admin_url() -> String {
    std::env::var("DATABASE_URL").expect(
        "DATABASE_URL must point at a PostgreSQL server where databases can be created \
         (e.g. postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable); see README 'Tests'",
    )
}

fn with_database(url: &str, db: &str) -> String {
    let mut u = url::Url::parse(url).expect("DATABASE_URL is a URL");
    u.set_path(db);
    u.to_string()
}

/// A fresh, empty database, dropped when the test ends.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub async fn create() -> TestDb {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "qbo_it_{}_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            rand::random::<u32>()
        );
        let admin = admin_url();
        let mut conn = PgConnection::connect(&admin)
            .await
            .expect("connect to DATABASE_URL");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut conn)
            .await
            .expect("create test database");
        conn.close().await.ok();
        TestDb {
            url: with_database(&admin, &name),
            name,
        }
    }

    pub fn settings(&self) -> DbSettings {
        DbSettings::from_url(&self.url).expect("valid url")
    }

    pub async fn pool(&self) -> PgPool {
        PgPool::connect(&self.url)
            .await
            .expect("connect to test database")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        let admin = admin_url();
        // Drop from a separate thread with its own runtime: Drop cannot await.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                if let Ok(mut conn) = PgConnection::connect(&admin).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                    )))
                    .execute(&mut conn)
                    .await;
                }
            });
        })
        .join();
    }
}

/// The entities the generated sandbox company holds records of (the others are empty).
pub const GENERATED: [Entity; 3] = [Entity::CUSTOMER, Entity::INVOICE, Entity::ITEM];

/// A small sandbox company: enough records for several pages per chunk.
pub fn small_company() -> SandboxConfig {
    SandboxConfig {
        seed: 7,
        customers: 120,
        invoices: 900,
        items: 60,
        ..SandboxConfig::default()
    }
}

pub async fn sandbox(config: SandboxConfig) -> RunningSandbox {
    qbo_sandbox::spawn(config, ([127, 0, 0, 1], 0).into())
        .await
        .expect("sandbox starts")
}

pub fn qbo_settings(sb: &RunningSandbox) -> QboSettings {
    QboSettings {
        client_id: sb.client_id().to_string(),
        client_secret: SecretString::from(sb.client_secret().to_string()),
        realm_id: RealmId::parse(sb.realm_id()).expect("sandbox realm"),
        seed: Some(SecretString::from(sb.refresh_token().to_string())),
        api_base: url::Url::parse(&sb.base_url()).expect("url"),
        token_url: url::Url::parse(&sb.token_url()).expect("url"),
        token_key: None,
    }
}

/// Fast retries for tests: the behaviour is the same, the waits are short.
pub fn fast_http() -> HttpSettings {
    HttpSettings {
        requests_per_minute: 60_000 / 6, // effectively unlimited here
        throttle_wait: Duration::from_millis(20),
        min_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(50),
        max_retries: 30,
        request_timeout: Duration::from_secs(10),
        ..HttpSettings::default()
    }
}

pub fn window(from: &str, to: &str) -> Window {
    Window::new(parse_day(from).unwrap(), parse_day(to).unwrap()).unwrap()
}

pub fn full_window() -> Window {
    window("2014-01-01", "2025-12-31")
}

pub fn options(entities: &[Entity], window: Window) -> BackfillOptions {
    BackfillOptions {
        entities: entities.to_vec(),
        window,
        chunk: ChunkSize::Year,
        page_size: 1000,
        restart: false,
        concurrency: 4,
        pipeline: None,
        trigger: None,
        progress: false,
        realm_lock_held: false,
    }
}

pub async fn backfill(
    sb: &RunningSandbox,
    db: &TestDb,
    http: &HttpSettings,
    opts: &BackfillOptions,
) -> BackfillReport {
    app::backfill(
        &qbo_settings(sb),
        &db.settings(),
        http,
        opts,
        &StopSignal::default(),
    )
    .await
    .expect("backfill runs")
}

/// Every (id, payload) of a destination table, payloads parsed.
pub async fn table_rows(pool: &PgPool, entity: Entity) -> Vec<(String, serde_json::Value)> {
    let rows: Vec<(String, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT id, payload::text FROM {} ORDER BY id",
        entity.table()
    )))
    .fetch_all(pool)
    .await
    .expect("read table");
    rows.into_iter()
        .map(|(id, p)| (id, serde_json::from_str(&p).expect("payload is JSON")))
        .collect()
}

/// The sandbox's records of `entity` in `window` (inactive included), by Id.
pub fn sandbox_records(
    sb: &RunningSandbox,
    entity: Entity,
    window: Window,
) -> std::collections::BTreeMap<String, serde_json::Value> {
    sb.state()
        .all_records(entity.qbo_name())
        .into_iter()
        .filter(|r| {
            let t = r
                .pointer("/MetaData/LastUpdatedTime")
                .and_then(|v| v.as_str())
                .and_then(qbo_query::eval::parse_datetime)
                .expect("record has LastUpdatedTime");
            t >= window.start() && t <= window.end()
        })
        .map(|r| (r["Id"].as_str().expect("Id").to_string(), r))
        .collect()
}

/// Asserts the table holds exactly the sandbox's records of the window, payloads equal.
pub async fn assert_table_equals_sandbox(
    pool: &PgPool,
    sb: &RunningSandbox,
    entity: Entity,
    window: Window,
) {
    let want = sandbox_records(sb, entity, window);
    let got: std::collections::BTreeMap<String, serde_json::Value> =
        table_rows(pool, entity).await.into_iter().collect();
    let missing: Vec<&String> = want.keys().filter(|k| !got.contains_key(*k)).collect();
    let extra: Vec<&String> = got.keys().filter(|k| !want.contains_key(*k)).collect();
    assert!(
        missing.is_empty(),
        "{entity}: {} missing, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert!(
        extra.is_empty(),
        "{entity}: {} extra, e.g. {:?}",
        extra.len(),
        &extra[..extra.len().min(5)]
    );
    for (id, record) in &want {
        assert_eq!(&got[id], record, "{entity} {id}: payload differs");
    }
}

// ---- Running the binary ----

pub const BIN: &str = env!("CARGO_BIN_EXE_qbo-pipeline");

/// A command with a clean environment: nothing from the developer's shell or `.env` leaks in.
pub fn command(dir: &std::path::Path) -> Command {
    let mut c = Command::new(BIN);
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(dir)
        .stdin(Stdio::null());
    c
}

pub fn with_sandbox(c: &mut Command, sb: &qbo_sandbox::RunningSandbox, db: &TestDb) {
    c.env("QBO_API_BASE_URL", sb.base_url())
        .env("QBO_TOKEN_URL", sb.token_url())
        .env("QBO_CLIENT_ID", sb.client_id())
        .env("QBO_CLIENT_SECRET", sb.client_secret())
        .env("QBO_REALM_ID", sb.realm_id())
        .env("QBO_REFRESH_TOKEN", sb.refresh_token())
        .env("DATABASE_URL", &db.url);
}

pub fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub async fn schemas(db: &TestDb) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT nspname::text FROM pg_namespace WHERE nspname IN ('raw', 'qbo_pipeline') ORDER BY 1",
    )
    .fetch_all(&db.pool().await)
    .await
    .unwrap()
}

/// Runs `cmd` to completion (killing it after `timeout`), capturing its output, and returns
/// the output with the child's peak resident memory in KiB.
///
/// The peak is the program's own `VmHWM` (its high-water mark since `exec`), read from
/// `/proc` every 5 ms while it runs; growth in its last few milliseconds can be missed, which
/// a generous bound absorbs. (`wait4`'s `ru_maxrss` would count the test binary's own size,
/// inherited at fork.)
pub fn run_measured(mut cmd: Command, timeout: Duration) -> (Output, u64) {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let pid = child.id();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut peak = 0u64;
            let path = format!("/proc/{pid}/status");
            while !done.load(Ordering::Relaxed) {
                if let Ok(status) = std::fs::read_to_string(&path)
                    && let Some(kb) = status
                        .lines()
                        .find_map(|l| l.strip_prefix("VmHWM:"))
                        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                {
                    peak = peak.max(kb);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            peak
        })
    };
    let waiter = std::thread::spawn(move || child.wait_with_output());
    let started = std::time::Instant::now();
    while !waiter.is_finished() {
        if started.elapsed() > timeout {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            panic!("the binary did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = waiter.join().unwrap().expect("the binary's output");
    done.store(true, Ordering::Relaxed);
    (output, sampler.join().unwrap())
}
