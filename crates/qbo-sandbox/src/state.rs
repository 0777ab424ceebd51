//! [`SandboxState`]: everything a running sandbox shares between requests — its companies
//! ([`Realm`]s: records, token chains, faults and limits, clocks, stats and request logs) and
//! the config they were built from — and the synchronous methods tests use to change the books
//! while the server runs. Methods without a realm act on realm 1 (`config.realm_id`), so a
//! single-company sandbox reads as before; [`SandboxState::realm`] reaches the others.
//!
//! One token endpoint serves every company (one Intuit app): a refresh token identifies its
//! company ([`SandboxState::realm_of_refresh_token`]), and an access token works only on the
//! company it was issued for ([`SandboxState::check_access`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use chrono::{DateTime, FixedOffset, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::{Endpoint, FaultAction, Faults, SandboxConfig};
use crate::generate::Generator;
use crate::oauth::{BearerError, bearer_token};
use crate::realm::Realm;
use crate::store::Store;

/// Counters of one company since start (or the last [`Realm::reset_stats`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Stats {
    pub requests_total: u64,
    /// By endpoint: `query`, `read`, `write`, `cdc`, `batch`, `token`, `admin`, `other`.
    pub requests_by_endpoint: BTreeMap<String, u64>,
    pub query_pages: u64,
    pub records_served: u64,
    pub throttled_429: u64,
    pub server_errors_5xx: u64,
    pub unauthorized_401: u64,
    pub dropped: u64,
    pub token_refreshes: u64,
    pub token_failures: u64,
    /// Highest number of API requests in flight at once.
    pub in_flight_max: u64,
    pub in_flight_now: u64,
}

/// One request as logged: never a token, header or body other than the query text.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LogEntry {
    pub method: String,
    pub path: String,
    /// The QBO query text (`/query`; a batch's queries one per line), if any.
    pub query: Option<String>,
    pub status: u16,
    pub intuit_tid: String,
    pub endpoint: Endpoint,
}

/// Why a bearer token may not be used on a company's path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AccessError {
    /// 401: missing, unknown or expired.
    Bearer(BearerError),
    /// 403: a live token of another company (or a path naming no known company).
    OtherRealm,
}

/// The shared state of one sandbox.
pub struct SandboxState {
    pub(crate) config: SandboxConfig,
    realms: Vec<Arc<Realm>>,
    by_id: HashMap<String, usize>,
    /// Authorization codes issued by the consent endpoint, not yet exchanged.
    pub(crate) codes: std::sync::Mutex<HashMap<String, crate::oauth::IssuedCode>>,
}

impl std::fmt::Debug for SandboxState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxState")
            .field("config", &self.config)
            .field("realms", &self.realms.len())
            .finish_non_exhaustive()
    }
}

impl SandboxState {
    /// Builds every company's store (generated with its own seed, or each a copy of
    /// `config.data_file`) and token state.
    pub fn new(config: SandboxConfig) -> anyhow::Result<SandboxState> {
        config.validate().context("invalid sandbox configuration")?;
        match &config.data_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading data file {}", path.display()))?;
                let stores = (0..config.realms)
                    .map(|_| {
                        Store::from_data(&text).map(|s| s.with_features(config.features.clone()))
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .with_context(|| format!("loading {}", path.display()))?;
                Ok(Self::with_stores(config, stores))
            }
            None => {
                // Every company: the same sizes and features, its own seed.
                let base = config.generator()?;
                let stores = config
                    .realm_specs()
                    .iter()
                    .map(|spec| {
                        Store::generated(Generator {
                            seed: spec.seed,
                            ..base.clone()
                        })
                    })
                    .collect();
                Ok(Self::with_stores(config, stores))
            }
        }
    }

    /// A state over records given as a JSON text (the `--data` format), for tests; every
    /// company starts with its own copy.
    pub fn from_data_text(config: SandboxConfig, data: &str) -> anyhow::Result<SandboxState> {
        config.validate().context("invalid sandbox configuration")?;
        let stores = (0..config.realms)
            .map(|_| Store::from_data(data).map(|s| s.with_features(config.features.clone())))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::with_stores(config, stores))
    }

    fn with_stores(config: SandboxConfig, stores: Vec<Store>) -> SandboxState {
        let realms: Vec<Arc<Realm>> = config
            .realm_specs()
            .iter()
            .zip(stores)
            .map(|(spec, store)| Arc::new(Realm::new(spec, &config, store)))
            .collect();
        let by_id = realms
            .iter()
            .enumerate()
            .map(|(i, r)| (r.id().to_owned(), i))
            .collect();
        SandboxState {
            config,
            realms,
            by_id,
            codes: Default::default(),
        }
    }

    pub fn config(&self) -> &SandboxConfig {
        &self.config
    }

    /// Realm 1's id (`config.realm_id`).
    pub fn realm_id(&self) -> &str {
        self.default_realm().id()
    }

    // ----- companies -----

    /// Every company's realm id, realm 1 first.
    pub fn realm_ids(&self) -> Vec<&str> {
        self.realms.iter().map(|r| r.id()).collect()
    }

    /// Every company, realm 1 first.
    pub fn realms(&self) -> &[Arc<Realm>] {
        &self.realms
    }

    /// The company with this realm id.
    pub fn realm(&self, id: &str) -> Option<&Arc<Realm>> {
        self.by_id.get(id).map(|&i| &self.realms[i])
    }

    /// Realm 1, which the methods without a realm act on.
    pub fn default_realm(&self) -> &Arc<Realm> {
        &self.realms[0]
    }

    /// The first refresh token of the company `realm`.
    pub fn refresh_token_of(&self, realm: &str) -> Option<&str> {
        self.realm(realm).map(|r| r.refresh_token())
    }

    /// The counters of the company `realm`.
    pub fn stats_of(&self, realm: &str) -> Option<Stats> {
        self.realm(realm).map(|r| r.stats())
    }

    /// The company a refresh token (current, superseded or revoked) was issued for.
    pub fn realm_of_refresh_token(&self, token: &str) -> Option<&Arc<Realm>> {
        self.realms
            .iter()
            .find(|r| r.with_auth(|a| a.knows_refresh_token(token)))
    }

    /// Whether the `Authorization` header may be used on the company `realm` (`None`: the
    /// path names no known company). The token is authenticated first (401 when missing,
    /// unknown or expired), then authorised: a live token of another company is refused.
    pub(crate) fn check_access(
        &self,
        header: Option<&str>,
        realm: Option<&Arc<Realm>>,
        now: Instant,
    ) -> Result<(), AccessError> {
        let token = bearer_token(header).map_err(AccessError::Bearer)?;
        if let Some(realm) = realm {
            match realm.with_auth(|a| a.check_access_token(token, now)) {
                Err(BearerError::Unknown) => {}
                other => return other.map_err(AccessError::Bearer),
            }
        }
        for other in &self.realms {
            if realm.is_some_and(|r| Arc::ptr_eq(r, other)) {
                continue;
            }
            match other.with_auth(|a| a.check_access_token(token, now)) {
                Ok(()) => return Err(AccessError::OtherRealm),
                Err(BearerError::Unknown) => {}
                Err(e) => return Err(AccessError::Bearer(e)),
            }
        }
        Err(AccessError::Bearer(BearerError::Unknown))
    }

    // ----- realm 1: faults -----

    pub fn set_faults(&self, faults: Faults) {
        self.default_realm().set_faults(faults);
    }

    pub fn faults(&self) -> Faults {
        self.default_realm().faults()
    }

    /// Adds a scripted fault to realm 1: the next `count` requests to `endpoint` get `action`.
    pub fn script_fault(&self, endpoint: Endpoint, count: u32, action: FaultAction) {
        self.default_realm().script_fault(endpoint, count, action);
    }

    // ----- realm 1: stats and log -----

    pub fn stats(&self) -> Stats {
        self.default_realm().stats()
    }

    pub fn reset_stats(&self) {
        self.default_realm().reset_stats();
    }

    /// Realm 1's most recent requests (and those naming no known company), oldest first.
    pub fn request_log(&self) -> Vec<LogEntry> {
        self.default_realm().request_log()
    }

    // ----- realm 1: tokens -----

    /// Every access token of realm 1 handed out so far is expired from now on.
    pub fn expire_access_tokens(&self) {
        self.default_realm().expire_access_tokens();
    }

    /// Every refresh token of realm 1 handed out so far (the first one included) stops
    /// working.
    pub fn revoke_refresh_tokens(&self) {
        self.default_realm().revoke_refresh_tokens();
    }

    // ----- realm 1: clock -----

    /// Pins realm 1's clock (`None` = real time). It stamps edits and anchors the CDC horizon.
    pub fn set_clock(&self, now: Option<DateTime<Utc>>) {
        self.default_realm().set_clock(now);
    }

    /// Pins realm 1's clock at its current now + `by` ([`Realm::advance_clock`]).
    pub fn advance_clock(&self, by: chrono::Duration) {
        self.default_realm().advance_clock(by);
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.default_realm().now()
    }

    // ----- realm 1: records (see the same methods of [`Realm`]) -----

    /// Every current record of `entity` in realm 1, inactive included (deleted transactions
    /// excluded), exactly as served, by numeric Id. Materialises every payload: meant for
    /// test-sized books, not a million invoices (use [`SandboxState::count`] there).
    pub fn all_records(&self, entity: &str) -> Vec<Value> {
        self.default_realm().all_records(entity)
    }

    /// One current record.
    pub fn record(&self, entity: &str, id: &str) -> anyhow::Result<Value> {
        self.default_realm().record(entity, id)
    }

    /// Records (inactive included, deleted excluded) with LastUpdatedTime in `[from, to]`.
    pub fn count(
        &self,
        entity: &str,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
    ) -> u64 {
        self.default_realm().count(entity, from, to)
    }

    /// Adds a record (Id assigned, SyncToken 0, times = the sandbox clock's now).
    pub fn create(&self, entity: &str, record: Value) -> anyhow::Result<Value> {
        self.default_realm().create(entity, record)
    }

    /// Merge patch; bumps SyncToken and LastUpdatedTime.
    pub fn update(&self, entity: &str, id: &str, patch: Value) -> anyhow::Result<Value> {
        self.default_realm().update(entity, id, patch)
    }

    /// Merge patch leaving SyncToken and LastUpdatedTime unchanged
    /// ([`Realm::update_silently`]).
    pub fn update_silently(&self, entity: &str, id: &str, patch: Value) -> anyhow::Result<Value> {
        self.default_realm().update_silently(entity, id, patch)
    }

    /// The Ids of realm 1's deleted (tombstoned) records of `entity`, ascending numerically.
    pub fn deleted_ids(&self, entity: &str) -> Vec<String> {
        self.default_realm().deleted_ids(entity)
    }

    /// `Active = false`; bumps SyncToken and LastUpdatedTime.
    pub fn deactivate(&self, entity: &str, id: &str) -> anyhow::Result<Value> {
        self.default_realm().deactivate(entity, id)
    }

    /// QBO's delete: name lists go inactive with ` (deleted)` names; transactions disappear
    /// from queries and reads and show in CDC as `status: Deleted`.
    pub fn delete(&self, entity: &str, id: &str) -> anyhow::Result<()> {
        self.default_realm().delete(entity, id)
    }

    /// Sets a record's LastUpdatedTime exactly (SyncToken unchanged), for window-edge tests.
    pub fn set_record_time(
        &self,
        entity: &str,
        id: &str,
        last_updated: DateTime<FixedOffset>,
    ) -> anyhow::Result<()> {
        self.default_realm()
            .set_record_time(entity, id, last_updated)
    }

    /// Bumps records as an editor would (LastUpdatedTime = now, SyncToken + 1).
    pub fn touch(&self, entity: &str, ids: &[u64]) -> anyhow::Result<()> {
        self.default_realm().touch(entity, ids)
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
        assert_eq!(
            s.default_realm().take_scripted(Endpoint::Read),
            Some(FaultAction::Drop)
        );
        assert_eq!(s.default_realm().take_scripted(Endpoint::Read), None);
        assert_eq!(
            s.default_realm().take_scripted(Endpoint::Query),
            Some(FaultAction::Status(503))
        );
        assert_eq!(
            s.default_realm().take_scripted(Endpoint::Query),
            Some(FaultAction::Status(503))
        );
        assert_eq!(s.default_realm().take_scripted(Endpoint::Query), None);
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
            s.default_realm().log_request(LogEntry {
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

    fn three_realms() -> SandboxState {
        SandboxState::new(SandboxConfig {
            customers: 10,
            items: 5,
            invoices: 50,
            realms: 3,
            ..SandboxConfig::default()
        })
        .unwrap()
    }

    #[test]
    fn realms_have_their_own_ids_tokens_and_data() {
        let s = three_realms();
        let ids = s.realm_ids();
        assert_eq!(ids.len(), 3);
        assert_eq!(ids[0], crate::config::DEFAULT_REALM_ID);
        assert_eq!(s.realm_id(), ids[0]);
        assert_eq!(
            s.refresh_token_of(ids[0]),
            Some(crate::config::DEFAULT_REFRESH_TOKEN)
        );
        assert_ne!(s.refresh_token_of(ids[1]), s.refresh_token_of(ids[2]));
        assert!(s.realm("123").is_none() && s.refresh_token_of("123").is_none());
        // Same sizes, different books; realm 1 equals a one-realm sandbox's.
        let first: Vec<Value> = ids
            .iter()
            .map(|id| s.realm(id).unwrap().record("Customer", "1").unwrap())
            .collect();
        assert_ne!(first[0]["DisplayName"], first[1]["DisplayName"]);
        assert_ne!(first[1]["DisplayName"], first[2]["DisplayName"]);
        assert_eq!(first[0], state().record("Customer", "1").unwrap());
        for id in &ids {
            assert_eq!(s.realm(id).unwrap().count("Invoice", None, None), 50);
        }
        // Refresh tokens identify their company.
        for id in &ids {
            let token = s.refresh_token_of(id).unwrap();
            assert_eq!(s.realm_of_refresh_token(token).unwrap().id(), *id);
        }
        assert!(s.realm_of_refresh_token("AB11nope").is_none());
    }

    #[test]
    fn edits_faults_and_clocks_stay_in_their_realm() {
        let s = three_realms();
        let ids = s.realm_ids();
        let two = s.realm(ids[1]).unwrap();
        two.deactivate("Customer", "1").unwrap();
        assert_eq!(two.record("Customer", "1").unwrap()["Active"], false);
        assert_eq!(s.record("Customer", "1").unwrap()["Active"], true);
        two.script_fault(Endpoint::Query, 1, FaultAction::Status(503));
        assert!(s.faults().scripted.is_empty());
        assert_eq!(two.faults().scripted.len(), 1);
        let t = DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z")
            .unwrap()
            .with_timezone(&Utc);
        s.set_clock(Some(t));
        assert_eq!(s.now(), t);
        assert_ne!(two.now(), t);
    }

    #[test]
    fn an_access_token_works_only_on_its_realm() {
        let s = three_realms();
        let ids = s.realm_ids();
        let (one, two) = (s.realm(ids[0]).unwrap(), s.realm(ids[1]).unwrap());
        let now = Instant::now();
        let issued = two
            .with_auth(|a| a.refresh(two.refresh_token(), now))
            .unwrap();
        let header = format!("Bearer {}", issued.access_token);
        assert_eq!(s.check_access(Some(&header), Some(two), now), Ok(()));
        assert_eq!(
            s.check_access(Some(&header), Some(one), now),
            Err(AccessError::OtherRealm)
        );
        assert_eq!(
            s.check_access(Some(&header), None, now),
            Err(AccessError::OtherRealm)
        );
        assert_eq!(
            s.check_access(Some("Bearer nope"), Some(one), now),
            Err(AccessError::Bearer(BearerError::Unknown))
        );
        assert_eq!(
            s.check_access(None, Some(one), now),
            Err(AccessError::Bearer(BearerError::Missing))
        );
        two.expire_access_tokens();
        assert_eq!(
            s.check_access(Some(&header), Some(one), Instant::now()),
            Err(AccessError::Bearer(BearerError::Expired))
        );
    }
}
