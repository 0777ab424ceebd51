//! qbo-pipeline: copies QuickBooks Online companies' books (every entity, every company of an
//! Intuit app) into PostgreSQL, completely, resumably and within QBO's limits.
//!
//! # Layout
//! Data flows one way: config → auth → extract → load + checkpoint → run ledger → report.
//!
//! | module | role |
//! |---|---|
//! | [`config`] | environment, `.env` and flags → validated settings; secrets wrapped |
//! | [`entity`] | the closed set of entities: QBO name, table, pipeline name, name-list flag |
//! | [`window`] | UTC day windows, chunk planning, QBO time literals (pure) |
//! | [`db`] | PostgreSQL connection, database creation, migrations |
//! | [`token_store`] | the PostgreSQL token store: rotated refresh tokens persisted under a per-realm lock |
//! | [`extract`] | keyset page queries, page parsing (payloads kept as raw JSON) |
//! | [`load`] | batch upsert of a page + checkpoint advance in one transaction |
//! | [`checkpoint`] | backfill jobs, chunk checkpoints, per-entity advisory lock |
//! | [`ledger`] | the run ledger: runs, per-entity figures, abandoned-run detection |
//! | [`backfill`] | the engine tying the above together, concurrency; publishes its events |
//! | [`sync`] | the incremental sync: full loads, CDC and query changes, deletions, count proofs, re-reads |
//! | [`job`] | a backfill or a sync, and its report: what the commands and the scheduler run |
//! | [`events`] | typed events (one struct per thing that happens), the event bus, the log sink |
//! | [`progress`] | progress bars drawn from a run's events |
//! | [`cli_common`] | flags, signal handling and database target shared by the commands |
//! | [`app`] | the commands (`migrate`, `backfill`, `demo`, `runs`) over validated input |
//! | [`validate`] | data checks, reconciliation with QBO's counts, archived evidence |
//! | [`pgtemp`] | a private throwaway PostgreSQL from the system's binaries (demo) |
//! | [`pipelines`] | pipeline names (`qb_<entity>_backfill`, `qb_<entity>_sync`, `qb_sync`) and variables (pure) |
//! | [`schedule`] | next fire times of one-time and cron triggers, time zones, DST, catch-up, retries (pure) |
//! | [`trigger`] | the trigger store: definitions, YAML apply, lifecycle, claiming with `SKIP LOCKED` |
//! | [`scheduler`] | the scheduler: `try_run_next(now)` step and the long-running loop |
//! | [`shutdown`] | the stop request, and waits (sleeps, throttles) that end when it comes |
//! | [`cli_schedule`] | the `run`, `trigger …` and `scheduler` commands (flags and handlers) |
//! | [`realm`] | companies as data: the realm registry and `--realm`/`--all-realms` selection |
//! | [`runtime`] | what a process builds once: pool, realm registry, one authorised client per realm |
//! | [`cli_realm`] | the `realm add`, `realm list`, `realm remove` commands |
//! | [`table_stats`] | `ANALYZE` of a raw table after a process's first 20,000 rows in it (and every 500,000 more) |
//! | [`run_log`] | a run's log lines from its events, batched into `qbo_pipeline.run_log` |
//! | [`usage`] | API calls counted per realm, endpoint and outcome; the monthly budget |
//! | [`web`] | `serve`: dashboard pages, JSON API, `/metrics`, login and CSRF |
//!
//! The HTTP side (client, token refresh, limits, retries) is the `qbo-client` crate, the
//! simulated QBO the `qbo-sandbox` crate, the query language `qbo-query`.

pub mod app;
pub mod backfill;
pub mod checkpoint;
pub mod cli_common;
pub mod cli_connect;
pub mod cli_demo;
pub mod cli_realm;
pub mod cli_schedule;
pub mod cli_serve;
pub mod config;
pub mod db;
pub mod dry_run;
pub mod entity;
pub mod events;
pub mod extract;
pub mod job;
pub mod ledger;
pub mod load;
pub mod pgtemp;
pub mod pipelines;
pub mod progress;
pub mod realm;
pub mod run_log;
pub mod runtime;
pub mod schedule;
pub mod scheduler;
pub mod shutdown;
pub mod sync;
pub mod table_stats;
pub mod token_store;
pub mod trigger;
pub mod usage;
pub mod validate;
pub mod web;
pub mod window;

pub use qbo_client::install_crypto_provider;
