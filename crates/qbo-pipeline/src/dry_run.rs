//! `backfill --dry-run`: what a backfill would read, from QBO's counts, and what it would
//! cost at the configured limits: records, pages and requests per entity, and the time those
//! requests take at `--requests-per-minute`. No rows, runs or checkpoints are written (the
//! OAuth refresh token QBO rotates is still saved: losing it would lock the company out).

use crate::backfill::{BackfillOptions, Engine, StopSignal};
use crate::entity::Entity;
use crate::extract;
use crate::window::{ChunkSize, plan, plan_auto};
use chrono::Utc;
use qbo_client::RequestStats;

/// One entity's estimate.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EntityEstimate {
    pub entity: Entity,
    /// QBO's count of the window (of everything, for an entity read whole); None when the
    /// company does not offer the entity (`note` says why).
    pub records: Option<u64>,
    pub chunks: usize,
    pub pages: u64,
    /// Requests the backfill would make for it: its count, and a page per chunk at least.
    pub requests: u64,
    pub note: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct DryRun {
    pub realm: String,
    pub entities: Vec<EntityEstimate>,
    pub records: u64,
    pub requests: u64,
    /// At the configured requests per minute (QBO allows 500 per company).
    pub requests_per_minute: u32,
    pub estimated_seconds: f64,
}

impl DryRun {
    pub fn table(&self) -> String {
        let mut out = format!(
            "{:<24} {:>10} {:>7} {:>7} {:>9}\n",
            "entity", "records", "chunks", "pages", "requests"
        );
        for e in &self.entities {
            match (&e.records, &e.note) {
                (Some(n), _) => out.push_str(&format!(
                    "{:<24} {:>10} {:>7} {:>7} {:>9}\n",
                    e.entity.cli_name(),
                    n,
                    e.chunks,
                    e.pages,
                    e.requests
                )),
                (None, note) => out.push_str(&format!(
                    "{:<24} {:>10}   {}\n",
                    e.entity.cli_name(),
                    "-",
                    note.as_deref().unwrap_or("not counted")
                )),
            }
        }
        out.push_str(&format!(
            "realm {}: {} records, about {} requests, about {:.0} s at {} requests/min (dry run: nothing written)\n",
            self.realm, self.records, self.requests, self.estimated_seconds, self.requests_per_minute
        ));
        out
    }
}

impl Engine {
    /// Counts every entity of `opts` in QBO (the counts share batch requests) and estimates
    /// the backfill's pages and requests; writes nothing.
    pub async fn dry_run(
        &self,
        opts: &BackfillOptions,
        requests_per_minute: u32,
        stop: &StopSignal,
    ) -> anyhow::Result<DryRun> {
        let stats = RequestStats::default();
        let counted = futures::future::join_all(opts.entities.iter().map(|&entity| {
            let stats = &stats;
            async move {
                let query = if entity.read_whole() {
                    extract::whole_count_query(entity)
                } else {
                    extract::count_query(entity, opts.window.start(), opts.window.end())
                }
                .to_string();
                (entity, self.client.query_small(&query, stats, stop).await)
            }
        }))
        .await;
        let page = u64::from(opts.page_size.max(1));
        let mut entities = Vec::new();
        for (entity, answer) in counted {
            let estimate = match answer {
                Ok(body) => {
                    let n = if entity.is_singleton() {
                        1
                    } else {
                        extract::parse_count(&body)?
                    };
                    let size = if entity.read_whole() {
                        ChunkSize::Whole
                    } else {
                        opts.chunk
                    };
                    let chunks = match size {
                        ChunkSize::Auto => {
                            plan_auto(opts.window, n, opts.page_size, opts.concurrency, Utc::now())
                        }
                        size => plan(opts.window, size),
                    }
                    .len();
                    let pages = n.div_ceil(page).max(chunks as u64);
                    EntityEstimate {
                        entity,
                        records: Some(n),
                        chunks,
                        pages,
                        requests: pages + 1,
                        note: None,
                    }
                }
                Err(e) => match extract::unavailable(entity, &e) {
                    Some(u) => EntityEstimate {
                        entity,
                        records: None,
                        chunks: 0,
                        pages: 0,
                        requests: 1,
                        note: Some(u.reason),
                    },
                    None => return Err(anyhow::anyhow!("counting {entity}: {e}")),
                },
            };
            entities.push(estimate);
        }
        let records = entities.iter().filter_map(|e| e.records).sum();
        let requests = entities.iter().map(|e| e.requests).sum();
        Ok(DryRun {
            realm: self.realm.clone(),
            entities,
            records,
            requests,
            requests_per_minute,
            estimated_seconds: requests as f64 * 60.0 / f64::from(requests_per_minute.max(1)),
        })
    }
}
