//! Planner statistics kept fresh while a company's rows pour in.
//!
//! Each page's upsert first looks its records up by `realm_id = $1 AND id = ANY($2)`. With
//! statistics taken before a company's rows arrived (a new company loaded next to others in
//! one database; or autovacuum off, or not due yet: it waits for 10 % of a big table to
//! change), PostgreSQL believes that company has no rows and reads the lookup through the
//! `(realm_id, source_last_updated_utc)` index, filtering every row of the company already
//! stored: seconds a page, and slower with every page (seen in `scripts/bench-web`: 885,000
//! rows filtered for one lookup). [`TableStats`] is a bus sink that counts the rows this
//! process writes per table and runs `ANALYZE` on the table (in the background, one at a
//! time per table) after the first [`FIRST`] rows and then every [`EVERY`] more.

use crate::events::{Event, Sink};
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Rows written to a table before its first `ANALYZE` by this process.
pub const FIRST: u64 = 20_000;
/// Rows written between two later ones.
pub const EVERY: u64 = 500_000;

#[derive(Default)]
struct Table {
    written: u64,
    next_at: u64,
    running: bool,
}

pub struct TableStats {
    pool: PgPool,
    tables: Arc<Mutex<HashMap<&'static str, Table>>>,
}

impl TableStats {
    pub fn new(pool: PgPool) -> TableStats {
        TableStats {
            pool,
            tables: Arc::default(),
        }
    }
}

impl Sink for TableStats {
    fn on(&self, event: &Event) {
        let Event::PageCommitted(p) = event else {
            return;
        };
        let table = p.entity.table();
        {
            let mut tables = self.tables.lock().unwrap_or_else(|e| e.into_inner());
            let t = tables.entry(table).or_insert_with(|| Table {
                next_at: FIRST,
                ..Table::default()
            });
            t.written += p.rows_written;
            if t.running || t.written < t.next_at {
                return;
            }
            t.running = true;
            t.next_at = t.written + EVERY;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            if let Some(t) = self
                .tables
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_mut(table)
            {
                t.running = false;
            }
            return;
        };
        let (pool, tables) = (self.pool.clone(), self.tables.clone());
        handle.spawn(async move {
            let outcome = sqlx::query(sqlx::AssertSqlSafe(format!("ANALYZE {table}")))
                .execute(&pool)
                .await;
            match outcome {
                Ok(_) => tracing::debug!(table, "planner statistics refreshed"),
                Err(e) => tracing::warn!(table, error = %e, "could not ANALYZE; page lookups may slow until autovacuum does"),
            }
            if let Some(t) = tables
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_mut(table)
            {
                t.running = false;
            }
        });
    }
}
