//! `serve` over real HTTP: `/healthz`, `/metrics` (Prometheus text from the ledger, moving
//! when a sync runs), `/api/runs`; the bearer token, bad input, a non-loopback address
//! without a token, security headers, no secret in any answer.

use crate::support::*;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

const TOKEN: &str = "test-web-token-0123456789abcdef";

fn serve(sb: &qbo_sandbox::RunningSandbox, db: &TestDb, dir: &std::path::Path) -> WebServer {
    let mut c = command(dir);
    with_sandbox(&mut c, sb, db);
    c.env("QBO_WEB_TOKEN", TOKEN)
        .args(["serve", "--listen", "127.0.0.1:0", "--no-scheduler"]);
    start_serve(c, dir)
}

async fn get(url: &str, token: Option<&str>) -> (u16, reqwest::header::HeaderMap, String) {
    let client = qbo_client::http_client(&fast_http()).expect("an HTTP client");
    let mut r = client.get(url);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let a = r.send().await.unwrap();
    let status = a.status().as_u16();
    let headers = a.headers().clone();
    (status, headers, a.text().await.unwrap())
}

/// `name{labels} value` lines of Prometheus text, by sample name.
fn samples(text: &str) -> Vec<(String, String, f64)> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (head, value) = line.rsplit_once(' ').expect("sample has a value");
        let value: f64 = value.parse().expect("sample value is a number");
        let (name, labels) = match head.split_once('{') {
            Some((n, l)) => (n.to_string(), l.trim_end_matches('}').to_string()),
            None => (head.to_string(), String::new()),
        };
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "metric name {name}"
        );
        out.push((name, labels, value));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_answers_health_metrics_and_runs_behind_its_token() {
    let sb = sandbox(small_company()).await;
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let sync = |dir: &std::path::Path| {
        let mut c = command(dir);
        with_sandbox(&mut c, &sb, &db);
        let out = c
            .args(["sync", "--entity", "customers,invoices", "--no-progress"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    };
    sync(dir.path());
    let server = serve(&sb, &db, dir.path());
    let base = server.url.clone();
    let mut bodies = Vec::new();

    let (status, headers, body) = get(&format!("{base}/healthz"), None).await;
    assert_eq!(status, 200, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["database"], "reachable");
    assert_eq!(health["scheduler"], "off");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(headers["x-frame-options"], "DENY");
    bodies.push(body);

    // No token, a wrong token: 401 on the API and the metrics.
    for path in ["/metrics", "/api/runs"] {
        for token in [None, Some("wrong-token-wrong-token-wrong")] {
            let (status, _, body) = get(&format!("{base}{path}"), token).await;
            assert_eq!(status, 401, "{path} {token:?}: {body}");
            bodies.push(body);
        }
    }

    let (status, _, metrics) = get(&format!("{base}/metrics"), Some(TOKEN)).await;
    assert_eq!(status, 200, "{metrics}");
    let parsed = samples(&metrics);
    for family in [
        "qbo_records_written_total",
        "qbo_records_deleted_total",
        "qbo_api_requests_total",
        "qbo_runs_total",
        "qbo_sync_lag_seconds",
        "qbo_refresh_token_expiry_seconds",
    ] {
        assert!(
            parsed.iter().any(|(n, ..)| n == family),
            "{family} in\n{metrics}"
        );
    }
    let value = |name: &str, labels: &[&str]| -> f64 {
        parsed
            .iter()
            .filter(|(n, l, _)| n == name && labels.iter().all(|x| l.contains(x)))
            .map(|(.., v)| v)
            .sum()
    };
    assert_eq!(
        value("qbo_records_written_total", &["entity=\"invoices\""]),
        900.0
    );
    assert_eq!(
        value("qbo_records_deleted_total", &["entity=\"invoices\""]),
        0.0
    );
    assert_eq!(
        value(
            "qbo_runs_total",
            &["pipeline=\"qb_sync\"", "outcome=\"succeeded\""]
        ),
        1.0
    );
    let requests_before = value("qbo_api_requests_total", &[]);
    assert!(requests_before > 0.0);
    bodies.push(metrics);

    // A sync with a deletion moves the figures (metrics come from the ledger, so another
    // process's work shows).
    sb.state().delete("Invoice", "8").unwrap();
    sync(dir.path());
    let (_, _, metrics) = get(&format!("{base}/metrics"), Some(TOKEN)).await;
    let parsed = samples(&metrics);
    let value = |name: &str, labels: &[&str]| -> f64 {
        parsed
            .iter()
            .filter(|(n, l, _)| n == name && labels.iter().all(|x| l.contains(x)))
            .map(|(.., v)| v)
            .sum()
    };
    assert_eq!(
        value("qbo_records_deleted_total", &["entity=\"invoices\""]),
        1.0
    );
    assert_eq!(value("qbo_runs_total", &["pipeline=\"qb_sync\""]), 2.0);
    assert!(value("qbo_api_requests_total", &[]) > requests_before);
    bodies.push(metrics);

    let (status, _, body) = get(&format!("{base}/api/runs?limit=1"), Some(TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    let runs: serde_json::Value = serde_json::from_str(&body).unwrap();
    let runs = runs.as_array().unwrap();
    assert_eq!(runs.len(), 1);
    for key in [
        "id",
        "pipeline",
        "realm_id",
        "status",
        "started_at",
        "finished_at",
    ] {
        assert!(runs[0].get(key).is_some(), "{key} in {body}");
    }
    assert_eq!(runs[0]["pipeline"], "qb_sync");
    bodies.push(body);
    let (_, _, body) = get(&format!("{base}/api/runs?status=failed"), Some(TOKEN)).await;
    assert_eq!(body, "[]");

    // Bad input: a clear 4xx.
    for (path, want) in [
        ("/api/runs?limit=0", "limit must be"),
        ("/api/runs?limit=abc", "limit must be"),
        ("/api/runs?status=weird", "status must be one of"),
    ] {
        let (status, _, body) = get(&format!("{base}{path}"), Some(TOKEN)).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body.contains(want), "{path}: {body}");
        bodies.push(body);
    }
    let (status, _, body) = get(&format!("{base}/nothing/here"), Some(TOKEN)).await;
    assert_eq!(status, 404, "{body}");

    // No secret in any answer.
    for body in &bodies {
        for secret in [sb.client_secret(), sb.refresh_token(), TOKEN] {
            assert!(!body.contains(secret), "a secret in an answer: {body}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_a_reachable_address_without_a_token_and_bad_settings() {
    let sb = sandbox(small_company()).await;
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str], token: Option<&str>| {
        let mut c = command(dir.path());
        with_sandbox(&mut c, &sb, &db);
        if let Some(t) = token {
            c.env("QBO_WEB_TOKEN", t);
        }
        c.arg("serve").args(args).output().unwrap()
    };
    let out = run(&["--listen", "0.0.0.0:0"], None);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("without QBO_WEB_TOKEN"),
        "{}",
        text(&out)
    );
    let out = run(&["--listen", "127.0.0.1:0"], Some("short"));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("QBO_WEB_TOKEN is too short"),
        "{}",
        text(&out)
    );
    let out = run(&["--listen", "localhost"], None);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("--listen 'localhost'"),
        "{}",
        text(&out)
    );
    assert!(
        schemas(&db).await.iter().all(|s| s != "qbo_pipeline"),
        "nothing written"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_the_ledger_never_writes_it() {
    let sb = sandbox(small_company()).await;
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let pool = qbo_pipeline::app::open_database(&db.settings(), 2)
        .await
        .unwrap();
    // A run whose process died without recording an outcome (no liveness lock held).
    let run_id: i64 = sqlx::query_scalar(
        "INSERT INTO qbo_pipeline.runs (pipeline, realm_id, params, status)
         VALUES ('qb_sync', $1, '{}', 'running') RETURNING run_id",
    )
    .bind(sb.realm_id())
    .fetch_one(&pool)
    .await
    .unwrap();
    let status = || async {
        sqlx::query_scalar::<_, String>("SELECT status FROM qbo_pipeline.runs WHERE run_id = $1")
            .bind(run_id)
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    for args in [
        vec!["runs", "list", "--json"],
        vec!["runs", "show", &run_id.to_string(), "--json"],
    ] {
        let mut c = command(dir.path());
        with_sandbox(&mut c, &sb, &db);
        let out = c.args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("\"abandoned\""),
            "{args:?} shows the dead run abandoned: {}",
            text(&out)
        );
    }
    let server = serve(&sb, &db, dir.path());
    let (_, _, body) = get(&format!("{}/api/runs", server.url), Some(TOKEN)).await;
    assert!(body.contains("\"abandoned\""), "{body}");
    assert_eq!(status().await, "running", "nothing was written by reading");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_serve_keeps_the_dashboard_up_on_two_synced_companies() {
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let mut child = command(dir.path())
        .env("DATABASE_URL", &db.url)
        .env("QBO_WEB_TOKEN", TOKEN)
        .args([
            "demo",
            "--serve",
            "--listen",
            "127.0.0.1:0",
            "--no-progress",
            "--customers",
            "4",
            "--invoices",
            "12",
            "--items",
            "3",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    // Reads every line (the pipe never fills), handing them over.
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut printed = Vec::new();
    let url = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(180))
            .expect("demo --serve prints its URL");
        if let Some(url) = line.strip_prefix("QBO_WEB_URL=") {
            break url.to_string();
        }
        printed.push(line);
    };
    let server = WebServer {
        child,
        url,
        log: dir.path().join("no-log"),
    };
    let printed = printed.join("\n");
    assert!(
        printed.contains("== second sync: what changed"),
        "{printed}"
    );
    assert!(
        printed.contains("invoices 5 written, 3 deleted"),
        "the second sync names what changed: {printed}"
    );

    let (status, _, body) = get(&format!("{}/healthz", server.url), None).await;
    assert_eq!(status, 200, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["scheduler"], "running", "{body}");
    let (status, _, body) = get(&format!("{}/api/runs", server.url), Some(TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    let runs: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    let realms: std::collections::BTreeSet<&str> = runs
        .iter()
        .map(|r| r["realm_id"].as_str().unwrap())
        .collect();
    assert_eq!(realms.len(), 2, "two companies: {body}");
    assert_eq!(
        runs.len(),
        4,
        "a full sync and a second sync of each: {body}"
    );
    assert!(
        runs.iter()
            .all(|r| r["pipeline"] == "qb_sync" && r["status"] == "succeeded"),
        "{body}"
    );

    let pool = db.pool().await;
    // The second syncs (the newest run of each company) marked the deletions.
    let deleted: Vec<(String, i64)> = sqlx::query_as(
        "SELECT r.realm_id, sum(e.rows_deleted)::bigint FROM qbo_pipeline.runs r
           JOIN qbo_pipeline.run_entities e USING (run_id)
          WHERE r.run_id IN (SELECT max(run_id) FROM qbo_pipeline.runs GROUP BY realm_id)
          GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        deleted.iter().map(|d| d.1).collect::<Vec<_>>(),
        vec![3, 2],
        "{deleted:?}"
    );
    let marked: i64 =
        sqlx::query_scalar("SELECT count(*) FROM raw.qb_invoices WHERE deleted_at_utc IS NOT NULL")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(marked, 5);
    let triggers: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT realm_id, cron, status FROM qbo_pipeline.triggers WHERE pipeline = 'qb_sync' ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(triggers.len(), 2, "{triggers:?}");
    assert!(
        triggers
            .iter()
            .all(|t| t.1 == "*/15 * * * *" && t.2 == "active"),
        "{triggers:?}"
    );
    assert_eq!(
        triggers.iter().map(|t| t.0.as_str()).collect::<Vec<_>>(),
        realms.iter().copied().collect::<Vec<_>>()
    );
    pool.close().await;

    let mut server = server;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "demo --serve did not stop on SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_listen_needs_serve_and_a_reachable_address_needs_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let out = command(dir.path())
        .args(["demo", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--serve"), "{}", text(&out));
    let out = command(dir.path())
        .args(["demo", "--serve", "--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("QBO_WEB_TOKEN"), "{}", text(&out));
}

/// (company, entity) pairs whose `entity_totals` differ from the sums of `run_entities`.
async fn totals_off_the_ledger(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM (
             SELECT r.realm_id, e.entity, sum(coalesce(e.rows_written, 0))::bigint AS w,
                    sum(coalesce(e.rows_deleted, 0))::bigint AS d
               FROM qbo_pipeline.run_entities e JOIN qbo_pipeline.runs r USING (run_id) GROUP BY 1, 2
         ) a FULL JOIN qbo_pipeline.entity_totals t USING (realm_id, entity)
         WHERE a.w IS DISTINCT FROM t.rows_written OR a.d IS DISTINCT FROM t.rows_deleted",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Migration 0012 sums the ledger it finds, then its trigger follows every insert and update
/// of `run_entities`, zero rows included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entity_totals_start_from_the_ledger_and_follow_it() {
    use std::borrow::Cow;
    let db = TestDb::create().await;
    let pool = db.pool().await;
    let full = &qbo_pipeline::db::MIGRATOR;
    let before = sqlx::migrate::Migrator {
        migrations: Cow::Owned(
            full.migrations
                .iter()
                .filter(|m| m.version < 12)
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
    let run = |realm: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "INSERT INTO qbo_pipeline.runs (pipeline, realm_id, params, status)
                 VALUES ('qb_sync', $1, '{}', 'succeeded') RETURNING run_id",
            )
            .bind(realm)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    let (a, b) = (run("1111111111").await, run("2222222222").await);
    sqlx::query(
        "INSERT INTO qbo_pipeline.run_entities (run_id, entity, rows_written, rows_deleted)
         VALUES ($1, 'invoices', 10, 1), ($1, 'customers', 3, NULL), ($2, 'invoices', 7, 0)",
    )
    .bind(a)
    .bind(b)
    .execute(&pool)
    .await
    .unwrap();
    full.run(&pool).await.unwrap();
    assert_eq!(totals_off_the_ledger(&pool).await, 0);

    // New runs, page by page (updates), a zero row, a status-only update.
    let c = run("1111111111").await;
    sqlx::query(
        "INSERT INTO qbo_pipeline.run_entities (run_id, entity) VALUES ($1, 'invoices'), ($1, 'items')",
    )
    .bind(c)
    .execute(&pool)
    .await
    .unwrap();
    for _ in 0..3 {
        sqlx::query(
            "UPDATE qbo_pipeline.run_entities SET rows_written = rows_written + 100,
                    rows_deleted = coalesce(rows_deleted, 0) + 2
              WHERE run_id = $1 AND entity = 'invoices'",
        )
        .bind(c)
        .execute(&pool)
        .await
        .unwrap();
    }
    sqlx::query("UPDATE qbo_pipeline.run_entities SET status = 'succeeded' WHERE run_id = $1")
        .bind(c)
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(totals_off_the_ledger(&pool).await, 0);
    let invoices: (i64, i64) = sqlx::query_as(
        "SELECT rows_written, rows_deleted FROM qbo_pipeline.entity_totals
          WHERE realm_id = '1111111111' AND entity = 'invoices'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(invoices, (310, 7));
    let items: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM qbo_pipeline.entity_totals WHERE entity = 'items'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(items, 1, "a zero row has its series");
    pool.close().await;
}
