//! Serving benchmark and memory check for the sandbox.
//!
//! `cargo run --release -p qbo-sandbox --example bench_serve -- [INVOICES] [RECORDS] [STREAMS]`
//! (defaults 1,000,000 invoices, 200,000 records read, 1 and 2 streams).
//!
//! Builds a sandbox with INVOICES generated invoices (reporting start-up time and RSS from
//! `/proc/self/status`), then pages invoices the way the pipeline does — keyset windows
//! `MetaData.LastUpdatedTime >= cursor AND <= end ORDERBY MetaData.LastUpdatedTime
//! STARTPOSITION 1 MAXRESULTS 1000` — and prints records/s and MB/s. Exits non-zero if RSS
//! goes over 400 MB or throughput is under 50,000 records/s.

use std::time::{Duration, Instant};

use qbo_sandbox::SandboxConfig;
use qbo_sandbox::clock::pacific_secs;

const RSS_LIMIT_MB: u64 = 400;
const MIN_RECORDS_PER_SEC: f64 = 50_000.0;

fn rss_mb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|kb| kb.parse::<u64>().ok())
            })
        })
        .map(|kb| kb / 1024)
        .unwrap_or(0)
}

/// Epoch seconds of the last `LastUpdatedTime` in a page (the last record's).
fn last_lut(body: &str) -> Option<i64> {
    let key = "\"LastUpdatedTime\":\"";
    let at = body.rfind(key)? + key.len();
    let end = body[at..].find('"')? + at;
    qbo_query::parse_datetime(&body[at..end]).map(|t| t.timestamp())
}

fn rows_in(body: &str) -> u64 {
    let key = "\"maxResults\":";
    body.rfind(key)
        .and_then(|at| {
            let rest = &body[at + key.len()..];
            let end = rest.find(|c: char| !c.is_ascii_digit())?;
            rest[..end].parse().ok()
        })
        .unwrap_or(0)
}

struct Stream {
    records: u64,
    bytes: u64,
}

/// Keyset-pages invoices in `[from, to]` until `limit` records (or the window) are read.
async fn page_window(
    http: reqwest::Client,
    url: String,
    token: String,
    from: i64,
    to: i64,
    limit: u64,
) -> anyhow::Result<Stream> {
    let mut cursor = from;
    let mut records = 0;
    let mut bytes = 0;
    while records < limit {
        let q = format!(
            "SELECT * FROM Invoice WHERE MetaData.LastUpdatedTime >= '{}' AND MetaData.LastUpdatedTime <= '{}' ORDERBY MetaData.LastUpdatedTime STARTPOSITION 1 MAXRESULTS 1000",
            pacific_secs(cursor),
            pacific_secs(to)
        );
        let response = http
            .post(&url)
            .bearer_auth(&token)
            .header("Content-Type", "application/text")
            .body(q)
            .send()
            .await?;
        anyhow::ensure!(
            response.status().is_success(),
            "status {}",
            response.status()
        );
        let body = response.text().await?;
        bytes += body.len() as u64;
        let n = rows_in(&body);
        records += n;
        if n < 1000 {
            break;
        }
        // Next window from the last second seen (+1: the bench skips ties across pages, which
        // is fine for throughput and keeps the loop simple).
        cursor = last_lut(&body).ok_or_else(|| anyhow::anyhow!("no LastUpdatedTime"))? + 1;
    }
    Ok(Stream { records, bytes })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let invoices = args.first().copied().unwrap_or(1_000_000);
    let limit = args.get(1).copied().unwrap_or(200_000);
    println!("rss before start: {} MB", rss_mb());
    let started = Instant::now();
    let sandbox = qbo_sandbox::spawn(
        SandboxConfig {
            invoices,
            customers: 5_000,
            items: 500,
            ..SandboxConfig::default()
        },
        "127.0.0.1:0".parse()?,
    )
    .await?;
    let rss_started = rss_mb();
    println!(
        "started {invoices} invoices in {:.2} s; rss {rss_started} MB",
        started.elapsed().as_secs_f64()
    );
    let http = reqwest::Client::builder().build()?;
    let token: serde_json::Value = http
        .post(sandbox.token_url())
        .basic_auth(sandbox.client_id(), Some(sandbox.client_secret()))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", sandbox.refresh_token()),
        ])
        .send()
        .await?
        .json()
        .await?;
    let token = token["access_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let url = format!(
        "{}/v3/company/{}/query",
        sandbox.base_url(),
        sandbox.realm_id()
    );
    let (start, end) = (qbo_sandbox::generate::START, qbo_sandbox::generate::END);
    let mut worst: f64 = f64::MAX;
    for streams in [1u64, 2] {
        let span = (end - start) / streams as i64;
        let began = Instant::now();
        let tasks: Vec<_> = (0..streams)
            .map(|i| {
                let from = start + span * i as i64;
                tokio::spawn(page_window(
                    http.clone(),
                    url.clone(),
                    token.clone(),
                    from,
                    from + span,
                    limit / streams,
                ))
            })
            .collect();
        let mut records = 0;
        let mut bytes = 0;
        for task in tasks {
            let s = task.await??;
            records += s.records;
            bytes += s.bytes;
        }
        let secs = began.elapsed().max(Duration::from_millis(1)).as_secs_f64();
        let rate = records as f64 / secs;
        worst = worst.min(rate);
        println!(
            "{streams} stream(s): {records} invoices in {secs:.2} s = {rate:.0} records/s, {:.1} MB/s, {:.0} bytes/invoice",
            bytes as f64 / secs / 1e6,
            bytes as f64 / records.max(1) as f64
        );
    }
    for q in [
        "SELECT COUNT(*) FROM Invoice WHERE MetaData.LastUpdatedTime >= '2015-01-01' AND MetaData.LastUpdatedTime <= '2020-12-31'",
        "SELECT * FROM Customer MAXRESULTS 1000",
        "SELECT * FROM Invoice WHERE DocNumber = '1000500'",
    ] {
        let began = Instant::now();
        let response = http
            .post(&url)
            .bearer_auth(&token)
            .header("Content-Type", "application/text")
            .body(q)
            .send()
            .await?;
        let status = response.status();
        let len = response.text().await?.len();
        println!(
            "{:>7.1} ms  {status} {len:>9} bytes  {q}",
            began.elapsed().as_secs_f64() * 1000.0
        );
    }
    let rss_end = rss_mb();
    println!("rss after serving: {rss_end} MB");
    let stats = sandbox.state().stats();
    println!(
        "server stats: {} pages, {} records",
        stats.query_pages, stats.records_served
    );
    sandbox.shutdown().await;
    anyhow::ensure!(
        rss_started.max(rss_end) < RSS_LIMIT_MB,
        "RSS over {RSS_LIMIT_MB} MB"
    );
    anyhow::ensure!(
        worst >= MIN_RECORDS_PER_SEC,
        "throughput {worst:.0} records/s is under {MIN_RECORDS_PER_SEC}"
    );
    println!("OK: rss < {RSS_LIMIT_MB} MB, >= {MIN_RECORDS_PER_SEC} records/s");
    Ok(())
}
