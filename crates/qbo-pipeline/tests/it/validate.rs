//! `validate`: checks, reconciliation with the sandbox's own counts, evidence, exit codes.

use crate::support::*;
use chrono::{TimeZone, Utc};
use qbo_pipeline::app;
use qbo_pipeline::entity::Entity;
use qbo_pipeline::validate::{Report, ValidateOptions, validate};
use std::process::Stdio;

async fn loaded() -> (qbo_sandbox::RunningSandbox, TestDb) {
    let sb = sandbox(small_company()).await;
    let db = TestDb::create().await;
    let report = backfill(
        &sb,
        &db,
        &fast_http(),
        &options(&Entity::ALL, full_window()),
    )
    .await;
    assert!(report.succeeded(), "{}", report.table());
    (sb, db)
}

async fn run_validate(sb: &qbo_sandbox::RunningSandbox, db: &TestDb, deep: bool) -> Report {
    let pool = db.pool().await;
    let engine = app::engine(pool.clone(), &qbo_settings(sb), &fast_http()).unwrap();
    validate(
        &pool,
        Some((engine.client.as_ref(), sb.realm_id())),
        &ValidateOptions {
            entities: Entity::ALL.to_vec(),
            window: None,
            deep,
        },
    )
    .await
    .unwrap()
}

fn failed<'a>(r: &'a Report, name: &str) -> Vec<&'a qbo_pipeline::validate::Check> {
    r.checks
        .iter()
        .filter(|c| !c.passed && c.name == name)
        .collect()
}

#[tokio::test]
async fn a_clean_load_passes_every_check_with_stable_json() {
    let (sb, db) = loaded().await;
    let report = run_validate(&sb, &db, true).await;
    assert!(report.passed, "{}", report.text());
    assert!(
        report
            .checks
            .iter()
            .any(|c| c.name == "reconciliation with QBO")
    );
    // Snapshot of the JSON report, minus what changes between runs (times, realm).
    let mut v = serde_json::to_value(&report).unwrap();
    v["generated_at"] = "<time>".into();
    v["realm_id"] = "<realm>".into();
    v["last_successful_run"] = "<run>".into();
    for w in v["windows"].as_array_mut().unwrap() {
        w["first_ingested"] = "<time>".into();
        w["last_ingested"] = "<time>".into();
    }
    let text = serde_json::to_string_pretty(&v).unwrap() + "\n";
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/it/snapshots/validate_clean.json");
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, &text).unwrap();
    }
    let want = std::fs::read_to_string(&path)
        .expect("snapshot exists (UPDATE_SNAPSHOTS=1 writes it; review and commit it)");
    assert_eq!(
        text, want,
        "validate --format json changed; if intended, UPDATE_SNAPSHOTS=1 and review"
    );
}

#[tokio::test]
async fn deleted_tampered_added_and_unseen_records_are_caught_with_their_ids() {
    let (sb, db) = loaded().await;
    let pool = db.pool().await;
    // 1. A row deleted from the database.
    let deleted: String = sqlx::query_scalar(
        "DELETE FROM raw.qb_invoices WHERE id = (SELECT min(id) FROM raw.qb_invoices) RETURNING id",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    // 2. A payload whose Id was tampered with.
    let tampered: String = sqlx::query_scalar(
        "UPDATE raw.qb_items SET payload = jsonb_set(payload, '{Id}', '\"99999\"')
         WHERE id = (SELECT min(id) FROM raw.qb_items) RETURNING id",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    // 3. A record added in QBO after the load, inside the window.
    let added = sb
        .state()
        .create(
            "Customer",
            serde_json::json!({"DisplayName": "Added After Load"}),
        )
        .unwrap();
    let added_id = added["Id"].as_str().unwrap().to_string();
    let at = Utc.with_ymd_and_hms(2024, 5, 5, 12, 0, 0).unwrap();
    sb.state()
        .set_record_time(
            "Customer",
            &added_id,
            at.with_timezone(&chrono_tz::America::Los_Angeles)
                .fixed_offset(),
        )
        .unwrap();
    // 4. A record the loader never saw: an existing one moved into an earlier year.
    let item = sb.state().all_records("Item").last().unwrap()["Id"]
        .as_str()
        .unwrap()
        .to_string();
    sqlx::query("DELETE FROM raw.qb_items WHERE id = $1")
        .bind(&item)
        .execute(&pool)
        .await
        .unwrap();

    let report = run_validate(&sb, &db, true).await;
    assert!(!report.passed);
    let ids = failed(&report, "payload Id equals id");
    assert_eq!(ids.len(), 1, "{}", report.text());
    assert!(ids[0].detail.contains(&tampered), "{}", ids[0].detail);

    let recon = failed(&report, "reconciliation with QBO");
    let text: String = recon
        .iter()
        .map(|c| format!("{} {}\n", c.entity.clone().unwrap_or_default(), c.detail))
        .collect();
    let missing_of = |entity: &str| -> Vec<String> {
        recon
            .iter()
            .filter(|c| c.entity.as_deref() == Some(entity))
            .flat_map(|c| {
                c.figures["missing_ids"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    assert!(missing_of("invoices").contains(&deleted), "{text}");
    assert!(missing_of("customers").contains(&added_id), "{text}");
    assert!(missing_of("items").contains(&item), "{text}");
    let window_2024 = recon.iter().any(|c| {
        c.entity.as_deref() == Some("customers")
            && c.window
                .as_deref()
                .unwrap_or_default()
                .starts_with("2024-01-01")
            && c.figures["qbo_count"].as_i64().unwrap()
                == c.figures["db_rows"].as_i64().unwrap() + 1
    });
    assert!(
        window_2024,
        "the count check alone catches the added customer in 2024: {text}"
    );
}

#[tokio::test]
async fn the_binary_archives_evidence_and_exits_by_verdict() {
    let (sb, db) = loaded().await;
    let dir = tempfile::tempdir().unwrap();
    let evidence = dir.path().join("evidencias");
    let run = |args: Vec<String>| {
        let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_qbo-pipeline"));
        c.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("QBO_API_BASE_URL", sb.base_url())
            .env("QBO_TOKEN_URL", sb.token_url())
            .env("QBO_CLIENT_ID", sb.client_id())
            .env("QBO_CLIENT_SECRET", sb.client_secret())
            .env("QBO_REALM_ID", sb.realm_id())
            .env("QBO_REFRESH_TOKEN", sb.refresh_token())
            .env("DATABASE_URL", &db.url)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .args(args);
        async move { c.output().await.unwrap() }
    };
    let out = run(vec![
        "validate".into(),
        "--deep".into(),
        "--evidence-dir".into(),
        evidence.display().to_string(),
    ])
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("validation PASSED"), "{stdout}");
    let folders: Vec<_> = std::fs::read_dir(&evidence)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(folders.len(), 1);
    let folder = &folders[0];
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(folder), 0o700, "evidence is the owner's alone");
    for f in ["report.md", "report.json", "report.html", "queries.sql"] {
        assert!(folder.join(f).is_file(), "{f}");
        assert_eq!(mode(&folder.join(f)), 0o600, "{f}");
    }
    let html = std::fs::read_to_string(folder.join("report.html")).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>") && html.trim_end().ends_with("</html>"));
    assert!(html.contains("<svg") && html.contains("Rows per entity") && html.contains("PASSED"));
    for external in ["<script", "src=", "href=", "@import", "url("] {
        assert!(!html.contains(external), "self-contained: no {external}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(folder.join("report.json")).unwrap())
            .unwrap();
    let rows = json["rows_per_entity"].as_array().unwrap();
    for r in rows {
        let figure = r[1].as_i64().unwrap().to_string();
        assert!(html.contains(&figure), "the HTML holds {figure}");
    }
    let sql = std::fs::read_to_string(folder.join("queries.sql")).unwrap();
    assert!(sql.contains("SELECT count(*) FROM raw.qb_invoices") && sql.contains("QBO: "));
    let everything = [
        html,
        sql,
        std::fs::read_to_string(folder.join("report.md")).unwrap(),
        stdout,
    ]
    .concat();
    for secret in [sb.client_secret(), sb.refresh_token()] {
        assert!(!everything.contains(secret), "no secret in the evidence");
    }
    // Listed by `runs` next to the run it checked.
    let out = run(vec!["runs".into(), "list".into(), "--json".into()]).await;
    let runs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(runs[0]["validation_passed"], serde_json::json!(true));
    assert!(
        runs[0]["validation_evidence"]
            .as_str()
            .unwrap()
            .contains("evidencias")
    );

    // A failing check: exit 1; markdown format.
    sqlx::query("UPDATE raw.qb_customers SET page_number = NULL WHERE id = (SELECT min(id) FROM raw.qb_customers)")
        .execute(&db.pool().await)
        .await
        .unwrap();
    let out = run(vec![
        "validate".into(),
        "--format".into(),
        "markdown".into(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("| **FAIL** | metadata columns complete | customers")
    );
    // Bad input: exit 2.
    let out = run(vec![
        "validate".into(),
        "--from".into(),
        "2020-01-01".into(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("both --from and --to"));
}

/// Regression: validate counted rows across every company in the database, so a second
/// company's rows failed (or falsely balanced) the first one's reconciliation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_covers_the_validated_company_only() {
    let db = TestDb::create().await;
    let mut other = small_company();
    other.realm_id = "2222222222".into();
    other.seed = 99;
    let (a, b) = (sandbox(small_company()).await, sandbox(other).await);
    for sb in [&a, &b] {
        let report = backfill(sb, &db, &fast_http(), &options(&Entity::ALL, full_window())).await;
        assert!(report.succeeded(), "{}", report.table());
    }
    for sb in [&a, &b] {
        let report = run_validate(sb, &db, true).await;
        assert!(report.passed, "{}", report.text());
        let rows: i64 = report.rows_per_entity.iter().map(|(_, n)| n).sum();
        let expected: u64 = Entity::ALL
            .iter()
            .map(|e| sb.state().count(e.qbo_name(), None, None))
            .sum();
        assert_eq!(rows as u64, expected, "only {}'s rows", sb.realm_id());
    }
}
