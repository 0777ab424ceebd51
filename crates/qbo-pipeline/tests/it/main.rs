//! The pipeline's integration tests: ONE test binary, real PostgreSQL (a fresh database per
//! test) and the sandbox over real HTTP on 127.0.0.1:0.
//!
//! Needs `DATABASE_URL` pointing at a server where the user may create databases (the
//! README's test command sets it). Without it every test fails loudly: no silent skips.

mod support;

// Full load equals the sandbox; inactive records; payloads byte-exact; idempotent re-runs.
mod load;
// Window edges, ties at page boundaries, edits while paging.
mod paging;
// 429 storms, 5xx, dropped connections, slow answers, token expiry and rotation.
mod resilience;
// The binary: bad input (exit 2, nothing written), kill -9 and resume, two processes,
// secrets never printed, runs ledger.
mod cli;
// Triggers and the scheduler: one-time life, retries, racing schedulers, catch-up, SIGTERM,
// `trigger apply` idempotence, bad input.
mod scheduler;
// Validation: clean loads pass; deleted, tampered, added and never-seen records are caught;
// evidence files; stable JSON (snapshot); exit codes.
mod validate;
// The private throwaway PostgreSQL behind the zero-configuration demo.
mod pgtemp;
// A misbehaving QBO look-alike (one mode per misbehaviour) for the hardening tests.
mod hostile;
// Hostile answers, careless values, concurrent processes: clear errors, bounded memory and
// time, nothing lost.
mod hardening;
// Companies as data: realm add/list/remove, --realm/--all-realms, one process per company.
mod realms;
// Every entity of the catalogue: each shape loads exactly, whole reads, re-runs, tables.
mod entities;
// QBO's budget across 40 entities: counts share batch requests.
mod budget;
// The event bus: a run's events add up to its report and its rows.
mod events;
// Incremental sync: CDC, its cap and horizon, deletions, count proofs, re-reads, kill -9.
mod sync;
// API usage per realm, endpoint and outcome; the monthly call budget.
mod usage;
// The web server: health, Prometheus metrics, the runs API, its token.
mod web;
// Connecting a company through the consent page (authorization code).
mod connect;
// The dashboard: login and cookie, pages and their JSON, CSRF, triggers, validation,
// connecting a company, bad input, no secret in any answer; the router without a socket.
mod dashboard;
