//! API usage: every request counted per realm, endpoint and outcome (aggregated), the
//! `usage` report, and the monthly call budget that stops a run before it is exceeded.

use crate::support::*;

fn sandbox_counts(sb: &qbo_sandbox::RunningSandbox) -> std::collections::BTreeMap<String, u64> {
    sb.state()
        .stats()
        .requests_by_endpoint
        .into_iter()
        .filter(|(k, _)| k != "admin")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_is_counted_by_endpoint_and_outcome() {
    let sb = sandbox(small_company()).await;
    // Two throttled queries among them (told to wait a second, not QBO's 60).
    let mut f = sb.state().faults();
    f.retry_after_secs = Some(1);
    sb.state().set_faults(f);
    sb.state().script_fault(
        qbo_sandbox::config::Endpoint::Query,
        2,
        qbo_sandbox::config::FaultAction::Status(429),
    );
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = command(dir.path());
    with_sandbox(&mut c, &sb, &db);
    let out = c
        .args([
            "sync",
            "--entity",
            "customers,invoices,time_activities",
            "--no-progress",
        ])
        .args(["--max-retries", "5"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let served = sandbox_counts(&sb);
    let mut c = command(dir.path());
    with_sandbox(&mut c, &sb, &db);
    let out = c.args(["usage", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let realm = &report[0];
    assert_eq!(realm["realm_id"], sb.realm_id());
    let mut counted = std::collections::BTreeMap::<String, u64>::new();
    for e in realm["by_endpoint"].as_array().unwrap() {
        *counted
            .entry(e["endpoint"].as_str().unwrap().to_string())
            .or_default() += e["requests"].as_u64().unwrap();
    }
    assert_eq!(counted, served, "{report}");
    assert_eq!(realm["throttled_this_month"], 2, "{report}");
    let calls: u64 = served
        .iter()
        .filter(|(k, _)| k.as_str() != "token")
        .map(|(_, v)| v)
        .sum();
    assert_eq!(realm["calls_this_month"], calls);
    assert_eq!(realm["calls_today"], calls);
    // Aggregated: a handful of rows, not one per request.
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM qbo_pipeline.api_usage")
        .fetch_one(&db.pool().await)
        .await
        .unwrap();
    assert!(rows <= 8, "{rows}");
    // The text report names the month's figures.
    let mut c = command(dir.path());
    with_sandbox(&mut c, &sb, &db);
    let out = c.args(["usage"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("{calls} API calls this month")),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_monthly_budget_stops_the_run_before_it_is_exceeded() {
    let sb = sandbox(small_company()).await;
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let run = |budget: &str| {
        let mut c = command(dir.path());
        with_sandbox(&mut c, &sb, &db);
        c.env("QBO_MONTHLY_CALL_BUDGET", budget)
            .args([
                "sync",
                "--entity",
                "customers,invoices,items",
                "--no-progress",
            ])
            .output()
            .unwrap()
    };
    let out = run("3");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("monthly call budget of realm"),
        "{}",
        text(&out)
    );
    let calls = |sb: &qbo_sandbox::RunningSandbox| -> u64 {
        sandbox_counts(sb)
            .iter()
            .filter(|(k, _)| k.as_str() != "token")
            .map(|(_, v)| v)
            .sum()
    };
    assert!(calls(&sb) <= 3, "{:?}", sandbox_counts(&sb));
    // The budget is per month and counts what earlier runs used: a second run with the
    // same budget sends nothing.
    let before = calls(&sb);
    let out = run("3");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(calls(&sb), before);
    // Raised, the same command completes what was left.
    let out = run("1000");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = {
        let mut c = command(dir.path());
        with_sandbox(&mut c, &sb, &db);
        c.env("QBO_MONTHLY_CALL_BUDGET", "1000")
            .args(["usage", "--json"])
            .output()
            .unwrap()
    };
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report[0]["monthly_budget"], 1000);
    assert_eq!(
        report[0]["budget_left"].as_u64().unwrap(),
        1000 - calls(&sb),
        "{report}"
    );
    // A budget that is not a number is bad input.
    let out = run("lots");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("QBO_MONTHLY_CALL_BUDGET 'lots'"),
        "{}",
        text(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_counts_and_estimates_and_writes_no_rows_runs_or_checkpoints() {
    let sb = sandbox(small_company()).await;
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = command(dir.path());
    with_sandbox(&mut c, &sb, &db);
    let out = c
        .args([
            "backfill",
            "--entity",
            "all",
            "--from",
            "2014-01-01",
            "--to",
            "2025-12-31",
            "--page-size",
            "100",
            "--dry-run",
            "--json",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let reports: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let report = &reports[0];
    let entities = report["entities"].as_array().unwrap();
    assert_eq!(entities.len(), 40);
    let invoices = entities.iter().find(|e| e["entity"] == "invoices").unwrap();
    assert_eq!(invoices["records"], 900);
    assert!(invoices["pages"].as_u64().unwrap() >= 9, "{invoices}");
    let customers = entities
        .iter()
        .find(|e| e["entity"] == "customers")
        .unwrap();
    assert_eq!(
        customers["records"].as_u64().unwrap(),
        sb.state().all_records("Customer").len() as u64,
        "inactive customers counted"
    );
    let skipped = entities
        .iter()
        .find(|e| e["entity"] == "journal_codes")
        .unwrap();
    assert!(
        skipped["records"].is_null() && skipped["note"].is_string(),
        "{skipped}"
    );
    assert!(report["requests"].as_u64().unwrap() > 40);
    assert!(report["estimated_seconds"].as_f64().unwrap() > 0.0);
    let pool = db.pool().await;
    for table in [
        "qbo_pipeline.runs",
        "qbo_pipeline.checkpoints",
        "qbo_pipeline.backfill_jobs",
    ] {
        let n: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(n, 0, "{table}");
    }
    for e in qbo_pipeline::entity::Entity::all() {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM {}",
            e.table()
        )))
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(n, 0, "{e}");
    }
}
