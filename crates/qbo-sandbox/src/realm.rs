//! [`Realm`]: one simulated QuickBooks company — its records ([`Store`]), its OAuth token chain
//! ([`AuthStore`]: rotation, grace, revocation, expiry), its [`Faults`] and QBO limits (the
//! per-minute, per-second, batch and in-flight windows are per company in QBO), its clock, its
//! [`Stats`] and its request log. A sandbox holds one or more ([`crate::SandboxState`]).
//!
//! The synchronous methods here are the ones tests use to change a company's books while the
//! server runs (create, update, deactivate, delete, move a record's time) and to inspect it.
//! Locks are short: queries hold the store's read lock only while selecting a page's rows.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Instant;

use anyhow::Context;
use chrono::{DateTime, FixedOffset, Utc};
use serde_json::Value;

use crate::clock::Clock;
use crate::config::{Endpoint, FaultAction, Faults, RealmSpec, SandboxConfig, ScriptedFault};
use crate::oauth::AuthStore;
use crate::state::{LogEntry, Stats};
use crate::store::Store;

#[derive(Debug, Default)]
struct Counters {
    requests_total: AtomicU64,
    query_pages: AtomicU64,
    records_served: AtomicU64,
    throttled: AtomicU64,
    server_errors: AtomicU64,
    unauthorized: AtomicU64,
    dropped: AtomicU64,
    token_refreshes: AtomicU64,
    token_failures: AtomicU64,
    in_flight_max: AtomicU64,
}

/// A company's limiter state: admission instants of the windows, and requests in flight.
#[derive(Debug, Default)]
pub(crate) struct Limits {
    /// Admitted API requests in the last 60 s.
    pub minute: VecDeque<Instant>,
    /// Admitted API requests in the last second.
    pub second: VecDeque<Instant>,
    /// Admitted batch requests in the last 60 s.
    pub batch_minute: VecDeque<Instant>,
    pub in_flight: u32,
}

/// One company of the sandbox.
pub struct Realm {
    id: String,
    first_refresh_token: String,
    store: RwLock<Store>,
    auth: Mutex<AuthStore>,
    faults: Mutex<Faults>,
    clock: Clock,
    pub(crate) limits: Mutex<Limits>,
    counters: Counters,
    by_endpoint: Mutex<BTreeMap<String, u64>>,
    log: Mutex<VecDeque<LogEntry>>,
    log_capacity: usize,
}

impl std::fmt::Debug for Realm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Realm")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn parse_id(id: &str) -> anyhow::Result<u64> {
    id.trim()
        .parse::<u64>()
        .with_context(|| format!("record id must be a number, got {id:?}"))
}

impl Realm {
    /// A company `spec` of a sandbox built from `config`, holding `store`.
    pub(crate) fn new(spec: &RealmSpec, config: &SandboxConfig, store: Store) -> Realm {
        let auth = AuthStore::new(
            &config.client_id,
            &config.client_secret,
            &spec.refresh_token,
            config.access_token_ttl,
            config.refresh_token_ttl,
            config.rotation,
            config.refresh_grace,
            Instant::now(),
        );
        Realm {
            id: spec.realm_id.clone(),
            first_refresh_token: spec.refresh_token.clone(),
            store: RwLock::new(store),
            auth: Mutex::new(auth),
            faults: Mutex::new(config.faults.clone()),
            clock: Clock::default(),
            limits: Mutex::new(Limits::default()),
            counters: Counters::default(),
            by_endpoint: Mutex::new(BTreeMap::new()),
            log: Mutex::new(VecDeque::new()),
            log_capacity: config.request_log_capacity.max(1),
        }
    }

    /// The realm id (company id) in `/v3/company/{realm}/...`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The first refresh token the token endpoint accepts for this company.
    pub fn refresh_token(&self) -> &str {
        &self.first_refresh_token
    }

    pub(crate) fn store(&self) -> RwLockReadGuard<'_, Store> {
        self.store.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn store_mut(&self) -> RwLockWriteGuard<'_, Store> {
        self.store.write().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn with_auth<R>(&self, f: impl FnOnce(&mut AuthStore) -> R) -> R {
        f(&mut lock(&self.auth))
    }

    // ----- faults -----

    pub fn set_faults(&self, faults: Faults) {
        *lock(&self.faults) = faults;
    }

    pub fn faults(&self) -> Faults {
        lock(&self.faults).clone()
    }

    /// Adds a scripted fault: the next `count` requests to `endpoint` get `action`.
    pub fn script_fault(&self, endpoint: Endpoint, count: u32, action: FaultAction) {
        lock(&self.faults).scripted.push(ScriptedFault {
            endpoint,
            count,
            action,
        });
    }

    /// Takes one use of the first scripted fault covering `endpoint`.
    pub(crate) fn take_scripted(&self, endpoint: Endpoint) -> Option<FaultAction> {
        let mut faults = lock(&self.faults);
        let index = faults
            .scripted
            .iter()
            .position(|s| s.count > 0 && s.endpoint.covers(endpoint))?;
        let entry = &mut faults.scripted[index];
        entry.count -= 1;
        let action = entry.action;
        if entry.count == 0 {
            faults.scripted.remove(index);
        }
        Some(action)
    }

    // ----- stats and log -----

    pub fn stats(&self) -> Stats {
        let c = &self.counters;
        Stats {
            requests_total: c.requests_total.load(Ordering::Relaxed),
            requests_by_endpoint: lock(&self.by_endpoint).clone(),
            query_pages: c.query_pages.load(Ordering::Relaxed),
            records_served: c.records_served.load(Ordering::Relaxed),
            throttled_429: c.throttled.load(Ordering::Relaxed),
            server_errors_5xx: c.server_errors.load(Ordering::Relaxed),
            unauthorized_401: c.unauthorized.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            token_refreshes: c.token_refreshes.load(Ordering::Relaxed),
            token_failures: c.token_failures.load(Ordering::Relaxed),
            in_flight_max: c.in_flight_max.load(Ordering::Relaxed),
            in_flight_now: u64::from(lock(&self.limits).in_flight),
        }
    }

    pub fn reset_stats(&self) {
        let c = &self.counters;
        for counter in [
            &c.requests_total,
            &c.query_pages,
            &c.records_served,
            &c.throttled,
            &c.server_errors,
            &c.unauthorized,
            &c.dropped,
            &c.token_refreshes,
            &c.token_failures,
            &c.in_flight_max,
        ] {
            counter.store(0, Ordering::Relaxed);
        }
        lock(&self.by_endpoint).clear();
        lock(&self.log).clear();
    }

    /// The most recent requests, oldest first.
    pub fn request_log(&self) -> Vec<LogEntry> {
        lock(&self.log).iter().cloned().collect()
    }

    pub(crate) fn note_request(&self, endpoint: Endpoint) {
        self.counters.requests_total.fetch_add(1, Ordering::Relaxed);
        *lock(&self.by_endpoint)
            .entry(endpoint.as_str().to_owned())
            .or_insert(0) += 1;
    }

    pub(crate) fn note_status(&self, status: u16) {
        let c = &self.counters;
        match status {
            429 => c.throttled.fetch_add(1, Ordering::Relaxed),
            401 => c.unauthorized.fetch_add(1, Ordering::Relaxed),
            500..=599 => c.server_errors.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
    }

    pub(crate) fn note_dropped(&self) {
        self.counters.dropped.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn note_page(&self, records: usize) {
        self.counters.query_pages.fetch_add(1, Ordering::Relaxed);
        self.note_records(records);
    }

    pub(crate) fn note_records(&self, records: usize) {
        self.counters
            .records_served
            .fetch_add(records as u64, Ordering::Relaxed);
    }

    pub(crate) fn note_in_flight(&self, now: u32) {
        self.counters
            .in_flight_max
            .fetch_max(u64::from(now), Ordering::Relaxed);
    }

    pub(crate) fn note_token_refresh(&self) {
        self.counters
            .token_refreshes
            .fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn note_token_failure(&self) {
        self.counters.token_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn log_request(&self, entry: LogEntry) {
        let mut log = lock(&self.log);
        if log.len() >= self.log_capacity {
            log.pop_front();
        }
        log.push_back(entry);
    }

    // ----- tokens -----

    /// Every access token handed out for this company so far is expired from now on.
    pub fn expire_access_tokens(&self) {
        self.with_auth(|a| a.expire_access_tokens(Instant::now()));
    }

    /// Every refresh token of this company handed out so far (the first one included) stops
    /// working.
    pub fn revoke_refresh_tokens(&self) {
        self.with_auth(|a| a.revoke_refresh_tokens());
    }

    // ----- clock -----

    /// Pins this company's clock (`None` = real time). It stamps edits, anchors the CDC
    /// horizon and writes envelope times.
    pub fn set_clock(&self, now: Option<DateTime<Utc>>) {
        self.clock.set(now);
    }

    /// Pins this company's clock at its current now + `by`: a pinned clock moves from its
    /// pin, a real-time one from real time (and stays pinned there).
    pub fn advance_clock(&self, by: chrono::Duration) {
        self.clock.advance(by);
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    // ----- records -----

    /// Every current record of `entity`, inactive included (deleted transactions excluded),
    /// exactly as served, by numeric Id. Materialises every payload: meant for test-sized
    /// books, not a million invoices (use [`Realm::count`] there).
    pub fn all_records(&self, entity: &str) -> Vec<Value> {
        self.store().all_values(entity)
    }

    /// One current record.
    pub fn record(&self, entity: &str, id: &str) -> anyhow::Result<Value> {
        let id = parse_id(id)?;
        Ok(self.store().get_value(entity, id)?)
    }

    /// Records (inactive included, deleted excluded) with LastUpdatedTime in `[from, to]`.
    pub fn count(
        &self,
        entity: &str,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
    ) -> u64 {
        self.store().count(
            entity,
            from.map(|t| t.timestamp()),
            to.map(|t| t.timestamp()),
        )
    }

    /// Adds a record (Id assigned, SyncToken 0, times = the company clock's now).
    pub fn create(&self, entity: &str, record: Value) -> anyhow::Result<Value> {
        let now = self.now().timestamp();
        Ok(self.store_mut().create(entity, record, now)?)
    }

    /// Merge patch; bumps SyncToken and LastUpdatedTime.
    pub fn update(&self, entity: &str, id: &str, patch: Value) -> anyhow::Result<Value> {
        let id = parse_id(id)?;
        let now = self.now().timestamp();
        Ok(self.store_mut().update(entity, id, patch, now)?)
    }

    /// Merge patch like [`Realm::update`] that leaves SyncToken and `MetaData.LastUpdatedTime`
    /// unchanged (QBO has had such bugs): invisible to CDC and to LastUpdatedTime queries,
    /// visible in the record when read or queried.
    pub fn update_silently(&self, entity: &str, id: &str, patch: Value) -> anyhow::Result<Value> {
        let id = parse_id(id)?;
        Ok(self.store_mut().update_silently(entity, id, patch)?)
    }

    /// The Ids of the entity's deleted (tombstoned) transactions, ascending numerically.
    pub fn deleted_ids(&self, entity: &str) -> Vec<String> {
        self.store()
            .deleted_ids(entity)
            .into_iter()
            .map(|id| id.to_string())
            .collect()
    }

    /// `Active = false`; bumps SyncToken and LastUpdatedTime.
    pub fn deactivate(&self, entity: &str, id: &str) -> anyhow::Result<Value> {
        let id = parse_id(id)?;
        let now = self.now().timestamp();
        Ok(self.store_mut().deactivate(entity, id, now)?)
    }

    /// QBO's delete: name lists go inactive with ` (deleted)` names; transactions disappear
    /// from queries and reads and show in CDC as `status: Deleted`.
    pub fn delete(&self, entity: &str, id: &str) -> anyhow::Result<()> {
        let id = parse_id(id)?;
        let now = self.now().timestamp();
        Ok(self.store_mut().delete(entity, id, now)?)
    }

    /// Sets a record's LastUpdatedTime exactly (SyncToken unchanged), for window-edge tests.
    pub fn set_record_time(
        &self,
        entity: &str,
        id: &str,
        last_updated: DateTime<FixedOffset>,
    ) -> anyhow::Result<()> {
        let id = parse_id(id)?;
        Ok(self
            .store_mut()
            .touch(entity, id, last_updated.timestamp(), false)?)
    }

    /// Bumps records as an editor would (LastUpdatedTime = now, SyncToken + 1).
    pub fn touch(&self, entity: &str, ids: &[u64]) -> anyhow::Result<()> {
        let now = self.now().timestamp();
        let mut store = self.store_mut();
        for id in ids {
            store.touch(entity, *id, now, true)?;
        }
        Ok(())
    }
}
