//! [`SandboxState`]: everything a running sandbox shares between requests — the record
//! [`Store`], the OAuth [`AuthStore`], the current [`Faults`], the clock, the rate-limit
//! windows, [`Stats`] and the request log — and the synchronous methods tests use to change
//! the books while the server runs (create, update, deactivate, delete, move a record's time).
//!
//! Locks are short: queries hold the store's read lock only while selecting a page's rows;
//! payloads are written after it is released.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Instant;

use anyhow::Context;
use chrono::{DateTime, FixedOffset, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::clock::Clock;
use crate::config::{Endpoint, FaultAction, Faults, SandboxConfig};
use crate::oauth::AuthStore;
use crate::store::Store;

/// Counters since start (or the last [`SandboxState::reset_stats`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Stats {
    pub requests_total: u64,
    /// By endpoint: `query`, `read`, `cdc`, `token`, `admin`, `other`.
    pub requests_by_endpoint: BTreeMap<String, u64>,
    pub query_pages: u64,
    pub records_served: u64,
    pub throttled_429: u64,
    pub server_errors_5xx: u64,
    pub unauthorized_401: u64,
    pub dropped: u64,
    pub token_refreshes: u64,
    pub token_failures: u64,
    /// Highest number of API requests in flight at once (per realm).
    pub in_flight_max: u64,
    pub in_flight_now: u64,
}

/// One request as logged: never a token, header or body other than the query text.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LogEntry {
    pub method: String,
    pub path: String,
    /// The QBO query text (`/query`), if any.
    pub query: Option<String>,
    pub status: u16,
    pub intuit_tid: String,
    pub endpoint: Endpoint,
}

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

/// Per-realm limiter state.
#[derive(Debug, Default)]
pub(crate) struct Limits {
    /// Admission instants in the last 60 s, per realm.
    pub window: HashMap<String, VecDeque<Instant>>,
    /// Admission instants in the last second, per realm.
    pub second: HashMap<String, VecDeque<Instant>>,
    pub in_flight: HashMap<String, u32>,
}

/// The shared state of one sandbox.
pub struct SandboxState {
    pub(crate) config: SandboxConfig,
    store: RwLock<Store>,
    auth: Mutex<AuthStore>,
    faults: Mutex<Faults>,
    pub(crate) clock: Clock,
    pub(crate) limits: Mutex<Limits>,
    counters: Counters,
    by_endpoint: Mutex<BTreeMap<String, u64>>,
    log: Mutex<VecDeque<LogEntry>>,
}

impl std::fmt::Debug for SandboxState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxState")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl SandboxState {
    /// Builds the store (generated, or from `config.data_file`) and the token state.
    pub fn new(config: SandboxConfig) -> anyhow::Result<SandboxState> {
        config.validate().context("invalid sandbox configuration")?;
        let store = match &config.data_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading data file {}", path.display()))?;
                Store::from_data(&text)
                    .with_context(|| format!("loading {}", path.display()))?
                    .with_features(config.features.clone())
            }
            None => Store::generated(config.generator()?),
        };
        Ok(Self::with_store(config, store))
    }

    /// A state over records given as a JSON text (the `--data` format), for tests.
    pub fn from_data_text(config: SandboxConfig, data: &str) -> anyhow::Result<SandboxState> {
        config.validate().context("invalid sandbox configuration")?;
        let store = Store::from_data(data)?.with_features(config.features.clone());
        Ok(Self::with_store(config, store))
    }

    fn with_store(config: SandboxConfig, store: Store) -> SandboxState {
        let auth = AuthStore::new(
            &config.client_id,
            &config.client_secret,
            &config.refresh_token,
            config.access_token_ttl,
            config.refresh_token_ttl,
            config.rotation,
            config.refresh_grace,
            Instant::now(),
        );
        SandboxState {
            faults: Mutex::new(config.faults.clone()),
            config,
            store: RwLock::new(store),
            auth: Mutex::new(auth),
            clock: Clock::default(),
            limits: Mutex::new(Limits::default()),
            counters: Counters::default(),
            by_endpoint: Mutex::new(BTreeMap::new()),
            log: Mutex::new(VecDeque::new()),
        }
    }

    pub fn config(&self) -> &SandboxConfig {
        &self.config
    }

    pub fn realm_id(&self) -> &str {
        &self.config.realm_id
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
        lock(&self.faults)
            .scripted
            .push(crate::config::ScriptedFault {
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
        let in_flight_now = lock(&self.limits)
            .in_flight
            .values()
            .map(|v| u64::from(*v))
            .sum();
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
            in_flight_now,
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
        self.counters
            .records_served
            .fetch_add(records as u64, Ordering::Relaxed);
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
        if log.len() >= self.config.request_log_capacity.max(1) {
            log.pop_front();
        }
        log.push_back(entry);
    }

    // ----- tokens -----

    /// Every access token handed out so far is expired from now on.
    pub fn expire_access_tokens(&self) {
        self.with_auth(|a| a.expire_access_tokens(Instant::now()));
    }

    /// Every refresh token handed out so far (the first one included) stops working.
    pub fn revoke_refresh_tokens(&self) {
        self.with_auth(|a| a.revoke_refresh_tokens());
    }

    // ----- clock -----

    /// Pins the sandbox clock (`None` = real time). It stamps edits and anchors the CDC horizon.
    pub fn set_clock(&self, now: Option<DateTime<Utc>>) {
        self.clock.set(now);
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    // ----- records -----

    fn parse_id(id: &str) -> anyhow::Result<u64> {
        id.trim()
            .parse::<u64>()
            .with_context(|| format!("record id must be a number, got {id:?}"))
    }

    /// Every current record of `entity`, inactive included (deleted transactions excluded),
    /// exactly as served, by numeric Id. Materialises every payload: meant for test-sized
    /// books, not a million invoices (use [`SandboxState::count`] there).
    pub fn all_records(&self, entity: &str) -> Vec<Value> {
        self.store().all_values(entity)
    }

    /// One current record.
    pub fn record(&self, entity: &str, id: &str) -> anyhow::Result<Value> {
        let id = Self::parse_id(id)?;
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

    /// Adds a record (Id assigned, SyncToken 0, times = the sandbox clock's now).
    pub fn create(&self, entity: &str, record: Value) -> anyhow::Result<Value> {
        let now = self.now().timestamp();
        Ok(self.store_mut().create(entity, record, now)?)
    }

    /// Merge patch; bumps SyncToken and LastUpdatedTime.
    pub fn update(&self, entity: &str, id: &str, patch: Value) -> anyhow::Result<Value> {
        let id = Self::parse_id(id)?;
        let now = self.now().timestamp();
        Ok(self.store_mut().update(entity, id, patch, now)?)
    }

    /// `Active = false`; bumps SyncToken and LastUpdatedTime.
    pub fn deactivate(&self, entity: &str, id: &str) -> anyhow::Result<Value> {
        let id = Self::parse_id(id)?;
        let now = self.now().timestamp();
        Ok(self.store_mut().deactivate(entity, id, now)?)
    }

    /// QBO's delete: name lists go inactive with ` (deleted)` names; transactions disappear
    /// from queries and reads and show in CDC as `status: Deleted`.
    pub fn delete(&self, entity: &str, id: &str) -> anyhow::Result<()> {
        let id = Self::parse_id(id)?;
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
        let id = Self::parse_id(id)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ScriptedFault;

    fn state() -> SandboxState {
        SandboxState::new(SandboxConfig {
            customers: 10,
            items: 5,
            invoices: 50,
            ..SandboxConfig::default()
        })
        .unwrap()
    }

    #[test]
    fn scripted_faults_are_consumed_in_order() {
        let s = state();
        s.set_faults(Faults {
            scripted: vec![
                ScriptedFault {
                    endpoint: Endpoint::Query,
                    count: 2,
                    action: FaultAction::Status(503),
                },
                ScriptedFault {
                    endpoint: Endpoint::Any,
                    count: 1,
                    action: FaultAction::Drop,
                },
            ],
            ..Faults::default()
        });
        assert_eq!(s.take_scripted(Endpoint::Read), Some(FaultAction::Drop));
        assert_eq!(s.take_scripted(Endpoint::Read), None);
        assert_eq!(
            s.take_scripted(Endpoint::Query),
            Some(FaultAction::Status(503))
        );
        assert_eq!(
            s.take_scripted(Endpoint::Query),
            Some(FaultAction::Status(503))
        );
        assert_eq!(s.take_scripted(Endpoint::Query), None);
        assert!(s.faults().scripted.is_empty());
    }

    #[test]
    fn log_is_bounded() {
        let s = SandboxState::new(SandboxConfig {
            customers: 1,
            items: 1,
            invoices: 1,
            request_log_capacity: 3,
            ..SandboxConfig::default()
        })
        .unwrap();
        for i in 0..5 {
            s.log_request(LogEntry {
                method: "GET".into(),
                path: format!("/{i}"),
                query: None,
                status: 200,
                intuit_tid: "t".into(),
                endpoint: Endpoint::Other,
            });
        }
        let log = s.request_log();
        assert_eq!(log.len(), 3);
        assert_eq!(log[0].path, "/2");
    }

    #[test]
    fn record_methods_use_the_clock() {
        let s = state();
        let t = DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z")
            .unwrap()
            .with_timezone(&Utc);
        s.set_clock(Some(t));
        let created = s
            .create("Customer", serde_json::json!({"DisplayName": "New Co"}))
            .unwrap();
        assert_eq!(created["Id"], "11");
        assert_eq!(
            created["MetaData"]["CreateTime"],
            "2026-01-01T19:04:05-08:00"
        );
        assert_eq!(s.count("Customer", Some(t), Some(t)), 1);
        let edge = DateTime::parse_from_rfc3339("2016-03-01T00:00:00Z").unwrap();
        s.set_record_time("Invoice", "3", edge).unwrap();
        assert_eq!(
            s.record("Invoice", "3").unwrap()["MetaData"]["LastUpdatedTime"],
            "2016-02-29T16:00:00-08:00"
        );
        assert!(s.record("Invoice", "x").is_err());
        assert!(s.deactivate("Invoice", "3").is_err());
    }
}
