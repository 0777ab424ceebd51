//! Benchmark baseline: the best raw batch-insert rate of the rows a backfill loaded, into the
//! same PostgreSQL, with no HTTP, no JSON parsing and no checkpoints.
//!
//! Reads up to `--rows N` rows of `raw.<table>` (default `qb_invoices`), then inserts them into
//! a scratch copy of the table twice — multi-row `INSERT … SELECT FROM UNNEST` and `COPY`,
//! 1000 rows per transaction, one connection — and prints `baseline_rows_per_sec=<best>`.
//! Used by `scripts/bench`; run by hand with
//! `DATABASE_URL=... cargo run --release --example insert_baseline -- --rows 200000`.

use sqlx::{Connection, PgConnection};
use std::time::Instant;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut rows_wanted: i64 = 200_000;
    let mut table = "qb_invoices".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--rows" => rows_wanted = args.next().unwrap_or_default().parse()?,
            "--table" => table = args.next().unwrap_or_default(),
            other => anyhow::bail!("unknown argument {other}: use --rows N --table qb_invoices"),
        }
    }
    anyhow::ensure!(
        table.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
        "bad table name"
    );
    let url = std::env::var("DATABASE_URL")?;
    let mut conn = PgConnection::connect(&url).await?;
    type Row = (
        String,
        String,
        String,
        Option<chrono::DateTime<chrono::Utc>>,
        Option<i64>,
    );
    let rows: Vec<Row> =
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT realm_id, id, payload::text, source_last_updated_utc, sync_token FROM raw.{table} LIMIT $1"
        )))
        .bind(rows_wanted)
        .fetch_all(&mut conn)
        .await?;
    anyhow::ensure!(
        !rows.is_empty(),
        "raw.{table} is empty: run a backfill first"
    );
    let bytes: usize = rows.iter().map(|r| r.2.len()).sum();
    println!(
        "baseline_rows={} avg_payload_bytes={}",
        rows.len(),
        bytes / rows.len()
    );

    let mut best = 0f64;
    for method in ["unnest", "copy"] {
        sqlx::query("DROP TABLE IF EXISTS public.bench_baseline")
            .execute(&mut conn)
            .await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE TABLE public.bench_baseline (LIKE raw.{table} INCLUDING ALL)"
        )))
        .execute(&mut conn)
        .await?;
        let started = Instant::now();
        for batch in rows.chunks(1000) {
            let mut tx = conn.begin().await?;
            if method == "unnest" {
                let realm: Vec<&str> = batch.iter().map(|r| r.0.as_str()).collect();
                let ids: Vec<&str> = batch.iter().map(|r| r.1.as_str()).collect();
                let payloads: Vec<&str> = batch.iter().map(|r| r.2.as_str()).collect();
                let lu: Vec<Option<chrono::DateTime<chrono::Utc>>> =
                    batch.iter().map(|r| r.3).collect();
                let st: Vec<Option<i64>> = batch.iter().map(|r| r.4).collect();
                sqlx::query(
                    "INSERT INTO public.bench_baseline (realm_id, id, payload, ingested_at_utc, source_last_updated_utc, sync_token)
                     SELECT r, i, p::jsonb, now() AT TIME ZONE 'UTC', l, s
                     FROM UNNEST($1::text[], $2::varchar[], $3::text[], $4::timestamptz[], $5::bigint[]) AS u(r, i, p, l, s)
                     ON CONFLICT (realm_id, id) DO NOTHING",
                )
                .bind(&realm)
                .bind(&ids)
                .bind(&payloads)
                .bind(&lu)
                .bind(&st)
                .execute(&mut *tx)
                .await?;
            } else {
                let mut copy = tx
                    .copy_in_raw(
                        "COPY public.bench_baseline (realm_id, id, payload, ingested_at_utc, sync_token) FROM STDIN WITH (FORMAT text)",
                    )
                    .await?;
                let mut buf = String::with_capacity(batch.len() * 3000);
                let now = chrono::Utc::now().naive_utc().to_string();
                for r in batch {
                    buf.push_str(&escape(&r.0));
                    buf.push('\t');
                    buf.push_str(&escape(&r.1));
                    buf.push('\t');
                    buf.push_str(&escape(&r.2));
                    buf.push('\t');
                    buf.push_str(&now);
                    buf.push('\t');
                    buf.push_str(&r.4.map(|v| v.to_string()).unwrap_or_else(|| "\\N".into()));
                    buf.push('\n');
                }
                copy.send(buf.as_bytes()).await?;
                copy.finish().await?;
            }
            tx.commit().await?;
        }
        let rate = rows.len() as f64 / started.elapsed().as_secs_f64();
        println!("baseline_{method}_rows_per_sec={rate:.0}");
        best = best.max(rate);
    }
    sqlx::query("DROP TABLE IF EXISTS public.bench_baseline")
        .execute(&mut conn)
        .await?;
    println!("baseline_rows_per_sec={best:.0}");
    Ok(())
}

/// COPY text-format escaping.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out
}
