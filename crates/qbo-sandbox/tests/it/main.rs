//! Integration tests: real HTTP against sandboxes on 127.0.0.1:0 (one binary, see `Cargo.toml`).
//!
//! Modules:
mod batch; // POST /batch: queries and counts in order, per-item faults, 30-item cap, batch limit
mod books; // every catalogue entity: sizes, references, balances, quirks, features, CDC
mod faults; // 429 (rpm, in-flight), 500/503, dropped connections, latency, scripted faults, stats
mod mutation; // admin API edits, mutate-during-paging shifting offset pages, determinism
mod oauth; // token endpoint: rotation, grace, invalid_client/grant, expiry → 401, 403
mod query; // query endpoint: shapes, errors, Active filter, COUNT, keyset/offset paging
mod read_cdc; // read-by-id errors and CDC (horizon, cap, deleted shape, unsupported entities)
mod realms; // several companies: own books, tokens, chains, limits, faults, stats; 403 across
mod replay; // every recorded QBO exchange replayed against a sandbox holding its records
mod support; // World: spawn a sandbox, get a token, send queries
