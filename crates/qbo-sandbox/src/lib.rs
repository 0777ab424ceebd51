//! A simulated QuickBooks Online: the OAuth 2.0 token endpoint and the v3 API (query, read,
//! CDC) over deterministic generated books or records loaded from a file, with QBO's response
//! shapes, faults and limits. Behaviour follows `docs/qbo-behaviour.md` (at the repository
//! root); shapes follow the recordings in `crates/qbo-sandbox/tests/fixtures/qbo-recorded`.
//!
//! # Layout
//! - [`config`]: [`SandboxConfig`], [`Rotation`], [`Faults`] (limits and injected failures).
//! - [`clock`]: Pacific-time formatting, the pinnable sandbox clock, `intuit_tid`, JSON text
//!   helpers.
//! - [`catalog`]: entity names, name lists (default `Active = true`), default orders, CDC
//!   support, known properties.
//! - [`generate`]: the seeded generator of Customers, Items and Invoices (payloads on demand).
//! - [`books`]: the generator of every other entity (accounts, vendors, bills, payments, …),
//!   referentially consistent, sizes and company features.
//! - [`store`]: per-entity compact index + override map; query execution and edits.
//! - [`realm`]: [`Realm`], one company: records, token chain, faults and limits, clock,
//!   stats, request log.
//! - [`state`]: [`SandboxState`], shared by handlers and tests: the companies (realm 1 first;
//!   methods without a realm act on it) and the token/realm checks across them.
//! - [`oauth`]: token endpoint and bearer checks.
//! - [`respond`]: QBO envelopes and faults.
//! - [`faults`]: the middleware (tid, log, scripted/random faults, 401/403, 429 limits,
//!   latency, dropped connections).
//! - [`api`]: query / read / write / CDC / batch handlers.
//! - [`admin`]: `/admin/...` JSON API mirroring the state methods.
//! - [`server`]: [`app`], [`spawn`], [`RunningSandbox`].
//! - [`cli`]: [`SandboxArgs`] and [`run_cli`] for `qbo-pipeline sandbox`.

pub mod admin;
pub mod api;
pub mod books;
pub mod catalog;
pub mod cli;
pub mod clock;
pub mod config;
pub mod faults;
pub mod generate;
pub mod oauth;
pub mod realm;
pub mod respond;
pub mod server;
pub mod state;
pub mod store;

pub use cli::{SandboxArgs, run_cli};
pub use config::{
    Endpoint, FaultAction, Faults, MAX_REALMS, RealmSpec, Rotation, SandboxConfig, ScriptedFault,
};
pub use realm::Realm;
pub use server::{RunningSandbox, TOKEN_PATH, app, env_lines, spawn, spawn_with_state};
pub use state::{LogEntry, SandboxState, Stats};
