//! What a sandbox is built from: [`SandboxConfig`] (data size, credentials, token lifetimes,
//! CDC horizon, number of companies) and [`Faults`] (limits and injected failures, also
//! changeable at run time, per company).
//!
//! With `realms = N` the sandbox serves N companies ([`SandboxConfig::realm_specs`]): realm 1
//! is `realm_id` with `refresh_token` and `seed` exactly as given; realm k > 1 gets the id
//! `realm_id + (k - 1)` (decimal, digits only), the first refresh token `refresh_token`
//! followed by `k` in four digits, and its own generator seed.
//!
//! In: values from the CLI ([`crate::cli`]) or from tests. Out: a validated config consumed by
//! [`crate::state::SandboxState::new`]. `Debug` never prints the client secret or tokens.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use qbo_entities::Feature;
use serde::{Deserialize, Serialize};

/// The sandbox company's fixed credentials (sandbox values, not secrets).
pub const DEFAULT_REALM_ID: &str = "9130357766910250";
pub const DEFAULT_CLIENT_ID: &str = "ABsandboxClientId0qbo0pipeline0000000000000000000";
pub const DEFAULT_CLIENT_SECRET: &str = "sandboxClientSecret00000000000000000000";
pub const DEFAULT_REFRESH_TOKEN: &str = "AB11sandboxRefreshToken000000000000000000000000";

/// Everything a sandbox is built from.
#[derive(Clone)]
pub struct SandboxConfig {
    /// Seed of the deterministic data generator.
    pub seed: u64,
    pub customers: u64,
    pub invoices: u64,
    pub items: u64,
    /// Record counts of other entities by QBO name (`{"Vendor": 12, "Bill": 0}`); unnamed
    /// ones get the defaults of `crate::books` (fixed small lists, transactions scaled from
    /// `invoices`). `Customer`/`Item`/`Invoice` here override the fields above.
    pub counts: BTreeMap<String, u64>,
    /// The company's features ([`default_features`]: a US Plus company with multicurrency);
    /// entities that need a missing one answer QBO's permission fault (5020).
    pub features: BTreeSet<Feature>,
    /// Load records from this JSON file (`{"Customer":[...],...}`) instead of generating.
    pub data_file: Option<PathBuf>,
    pub realm_id: String,
    pub client_id: String,
    pub client_secret: String,
    /// The first refresh token the token endpoint accepts.
    pub refresh_token: String,
    /// `expires_in` of access tokens.
    pub access_token_ttl: Duration,
    /// `x_refresh_token_expires_in`: rolling lifetime of a refresh token.
    pub refresh_token_ttl: Duration,
    pub rotation: Rotation,
    /// How long a superseded refresh token keeps working (QBO: 24 h).
    pub refresh_grace: Duration,
    pub faults: Faults,
    /// CDC rejects `changedSince` older than this (QBO: 30 days); `None` disables the check.
    pub cdc_horizon: Option<Duration>,
    /// Most objects one CDC response carries (QBO: 1000, across all requested entities).
    pub cdc_max_objects: usize,
    /// Entries kept in the request log (oldest dropped first), per realm.
    pub request_log_capacity: usize,
    /// How many companies (realms) the sandbox serves, 1 to 1000; see [`RealmSpec`].
    pub realms: u32,
    /// Most items one batch request may hold (QBO: 30).
    pub batch_max_items: usize,
}

/// The most companies one sandbox serves.
pub const MAX_REALMS: u32 = 1000;

/// One company of a sandbox: its id, first refresh token and generator seed. `Debug` hides
/// the token.
#[derive(Clone, PartialEq, Eq)]
pub struct RealmSpec {
    pub realm_id: String,
    pub refresh_token: String,
    pub seed: u64,
}

impl fmt::Debug for RealmSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RealmSpec")
            .field("realm_id", &self.realm_id)
            .field("refresh_token", &"<redacted>")
            .field("seed", &self.seed)
            .finish()
    }
}

/// `digits + n` in decimal, keeping at least the width of `digits` (`"0099" + 1` is
/// `"0100"`, `"99" + 1` is `"100"`). A byte that is not a digit counts as 0 (validated
/// configs have none).
fn add_decimal(digits: &str, n: u64) -> String {
    let mut out: Vec<u8> = digits.bytes().collect();
    let mut carry = n;
    for b in out.iter_mut().rev() {
        if carry == 0 {
            break;
        }
        let digit = b.checked_sub(b'0').filter(|d| *d < 10).unwrap_or(0);
        let sum = u64::from(digit) + carry % 10;
        carry = carry / 10 + sum / 10;
        *b = b'0' + (sum % 10) as u8;
    }
    let mut text = String::from_utf8(out).unwrap_or_default();
    if carry > 0 {
        text.insert_str(0, &carry.to_string());
    }
    text
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            seed: 1,
            customers: 200,
            invoices: 2000,
            items: 100,
            counts: BTreeMap::new(),
            features: default_features(),
            data_file: None,
            realm_id: DEFAULT_REALM_ID.to_owned(),
            client_id: DEFAULT_CLIENT_ID.to_owned(),
            client_secret: DEFAULT_CLIENT_SECRET.to_owned(),
            refresh_token: DEFAULT_REFRESH_TOKEN.to_owned(),
            access_token_ttl: Duration::from_secs(3600),
            refresh_token_ttl: Duration::from_secs(8_726_400),
            rotation: Rotation::EveryRefresh,
            refresh_grace: Duration::from_secs(24 * 3600),
            faults: Faults::default(),
            cdc_horizon: Some(Duration::from_secs(30 * 24 * 3600)),
            cdc_max_objects: 1000,
            request_log_capacity: 10_000,
            realms: 1,
            batch_max_items: 30,
        }
    }
}

impl fmt::Debug for SandboxConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SandboxConfig")
            .field("seed", &self.seed)
            .field("customers", &self.customers)
            .field("invoices", &self.invoices)
            .field("items", &self.items)
            .field("counts", &self.counts)
            .field("features", &self.features)
            .field("data_file", &self.data_file)
            .field("realm_id", &self.realm_id)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("refresh_token", &"<redacted>")
            .field("access_token_ttl", &self.access_token_ttl)
            .field("rotation", &self.rotation)
            .field("refresh_grace", &self.refresh_grace)
            .field("faults", &self.faults)
            .field("cdc_horizon", &self.cdc_horizon)
            .field("realms", &self.realms)
            .field("batch_max_items", &self.batch_max_items)
            .finish_non_exhaustive()
    }
}

/// Why a config cannot be used.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("{0} must not be empty")]
    Empty(&'static str),
    #[error("realm id must be digits only, got {0:?}")]
    RealmId(String),
    #[error("invoices need at least one customer and one item (--customers, --items)")]
    InvoicesNeedRefs,
    #[error("{name} must be between 0 and 1, got {value}")]
    Rate { name: &'static str, value: f64 },
    #[error("access token lifetime must be 1 second to 1 year")]
    AccessTtl,
    #[error("{0} must be at most {1} seconds")]
    TooLong(&'static str, u64),
    #[error("cdc_max_objects must be at least 1")]
    CdcMax,
    #[error("realms must be between 1 and {MAX_REALMS}, got {0}")]
    Realms(u32),
    #[error("batch_max_items must be at least 1")]
    BatchMax,
    #[error("{0}")]
    Counts(String),
}

/// A US QuickBooks Online Plus company with multicurrency turned on: every feature but
/// journal codes (French companies) and tax payments (companies outside the US).
pub fn default_features() -> BTreeSet<Feature> {
    Feature::OPTIONAL
        .into_iter()
        .filter(|f| !matches!(f, Feature::JournalCodes | Feature::TaxPayments))
        .collect()
}

impl SandboxConfig {
    /// Customers, items and invoices, `counts` overriding the fields.
    pub fn base_counts(&self) -> (u64, u64, u64) {
        let get = |name: &str, field: u64| {
            self.counts
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map_or(field, |(_, n)| *n)
        };
        (
            get("Customer", self.customers),
            get("Item", self.items),
            get("Invoice", self.invoices),
        )
    }

    /// Every generated entity's size (see [`crate::books::resolve_sizes`]).
    pub fn sizes(&self) -> Result<[u64; 40], ConfigError> {
        let (customers, items, invoices) = self.base_counts();
        let mut counts = BTreeMap::new();
        for (name, n) in &self.counts {
            let canonical = qbo_entities::by_qbo_name(name)
                .map(|e| e.qbo_name.to_owned())
                .ok_or_else(|| {
                    ConfigError::Counts(format!("--count {name}={n}: no such entity"))
                })?;
            counts.insert(canonical, *n);
        }
        crate::books::resolve_sizes(customers, items, invoices, &counts, &self.features)
            .map_err(ConfigError::Counts)
    }

    /// The generator these settings describe.
    pub fn generator(&self) -> Result<crate::generate::Generator, ConfigError> {
        let (customers, items, invoices) = self.base_counts();
        Ok(crate::generate::Generator {
            seed: self.seed,
            customers,
            items,
            invoices,
            sizes: self.sizes()?,
            features: self.features.clone(),
        })
    }

    /// Cheap checks with no I/O (the data file is read later).
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (name, value) in [
            ("realm id", &self.realm_id),
            ("client id", &self.client_id),
            ("client secret", &self.client_secret),
            ("refresh token", &self.refresh_token),
        ] {
            if value.is_empty() {
                return Err(ConfigError::Empty(name));
            }
        }
        if !self.realm_id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ConfigError::RealmId(self.realm_id.clone()));
        }
        let (customers, items, invoices) = self.base_counts();
        if self.data_file.is_none() && invoices > 0 && (customers == 0 || items == 0) {
            return Err(ConfigError::InvoicesNeedRefs);
        }
        self.sizes()?;
        const YEAR: u64 = 31_536_000;
        if self.access_token_ttl < Duration::from_secs(1)
            || self.access_token_ttl > Duration::from_secs(YEAR)
        {
            return Err(ConfigError::AccessTtl);
        }
        // Lifetimes are added to clocks: bounded, so no addition can overflow.
        if self.refresh_grace > Duration::from_secs(YEAR) {
            return Err(ConfigError::TooLong("refresh grace", YEAR));
        }
        if self
            .cdc_horizon
            .is_some_and(|h| h > Duration::from_secs(10 * YEAR))
        {
            return Err(ConfigError::TooLong("CDC horizon", 10 * YEAR));
        }
        if self.cdc_max_objects == 0 {
            return Err(ConfigError::CdcMax);
        }
        if !(1..=MAX_REALMS).contains(&self.realms) {
            return Err(ConfigError::Realms(self.realms));
        }
        if self.batch_max_items == 0 {
            return Err(ConfigError::BatchMax);
        }
        self.faults.validate()
    }

    /// The companies this config describes, realm 1 first: realm 1 is `realm_id`,
    /// `refresh_token` and `seed` unchanged; realm k > 1 is `realm_id + (k - 1)`,
    /// `refresh_token` followed by `k` in four digits, and a seed derived from `seed` and `k`.
    /// All ids and first tokens are distinct.
    pub fn realm_specs(&self) -> Vec<RealmSpec> {
        (1..=u64::from(self.realms.clamp(1, MAX_REALMS)))
            .map(|k| {
                if k == 1 {
                    RealmSpec {
                        realm_id: self.realm_id.clone(),
                        refresh_token: self.refresh_token.clone(),
                        seed: self.seed,
                    }
                } else {
                    RealmSpec {
                        realm_id: add_decimal(&self.realm_id, k - 1),
                        refresh_token: format!("{}{k:04}", self.refresh_token),
                        seed: self
                            .seed
                            .wrapping_add((k - 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
                    }
                }
            })
            .collect()
    }
}

/// When the token endpoint hands out a new refresh token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotation {
    /// Always answer with the same refresh token.
    Never,
    /// A new refresh token on every refresh; the old one works for the grace period.
    EveryRefresh,
    /// A new refresh token once the current one is older than this.
    Interval(Duration),
}

impl FromStr for Rotation {
    type Err = String;

    /// `never`, `every`, or a number of seconds.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "never" => Ok(Rotation::Never),
            "every" | "every-refresh" | "always" => Ok(Rotation::EveryRefresh),
            other => other
                .parse::<u64>()
                .map(|secs| Rotation::Interval(Duration::from_secs(secs)))
                .map_err(|_| {
                    format!("rotation must be never, every or a number of seconds, got {s:?}")
                }),
        }
    }
}

/// Limits and injected failures. Off by default; settable at run time
/// ([`crate::state::SandboxState::set_faults`], `PUT /admin/faults`). Applies to the `/v3` API.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Requests per minute per realm (QBO: 500), sliding 60 s window; over it → 429.
    pub rpm_limit: Option<u32>,
    /// Requests per second per realm (QBO: 10 per realm and app), sliding 1 s window;
    /// over it → 429.
    pub rps_limit: Option<u32>,
    /// Requests in flight per realm (QBO: 10); over it → 429.
    pub max_in_flight: Option<u32>,
    /// Batch requests per minute per realm (QBO: 40 per realm and app), sliding 60 s window;
    /// over it → 429. A batch also counts once towards `rpm_limit`, `rps_limit` and
    /// `max_in_flight`.
    pub batch_rpm_limit: Option<u32>,
    /// Share of requests answered 500 or 503 (SystemFault 10000).
    pub error_rate: f64,
    /// Share of requests answered 429 at random (independent of the limits).
    pub throttle_rate: f64,
    /// Added to every request before it is answered.
    #[serde(with = "duration_ms")]
    pub latency: Duration,
    /// Share of requests whose TCP connection is closed without any HTTP response.
    pub drop_rate: f64,
    /// After each query page: this many records sorting before the page's end get
    /// `LastUpdatedTime` = now and `SyncToken` + 1.
    pub mutate_during_paging: u32,
    /// Send `Retry-After: N` with 429s (QBO sends none).
    pub retry_after_secs: Option<u64>,
    /// Deterministic faults, consumed in order: "the next N requests to X answer Y".
    pub scripted: Vec<ScriptedFault>,
}

impl Faults {
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (name, value) in [
            ("error_rate", self.error_rate),
            ("throttle_rate", self.throttle_rate),
            ("drop_rate", self.drop_rate),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err(ConfigError::Rate { name, value });
            }
        }
        Ok(())
    }
}

/// "The next `count` requests to `endpoint` answer `action`".
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ScriptedFault {
    pub endpoint: Endpoint,
    pub count: u32,
    pub action: FaultAction,
}

/// What a scripted fault does to a request.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FaultAction {
    /// Answer with this status in QBO's form for it (401, 403, 429, 500, 503, other → SystemFault).
    Status(u16),
    /// Close the connection without a response.
    Drop,
    /// Wait this long, then answer normally.
    DelayMs(u64),
}

/// The endpoints faults and stats distinguish.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    Query,
    Read,
    /// `POST /v3/company/{realm}/{entity}` (create, update, delete, void).
    Write,
    Cdc,
    /// `POST /v3/company/{realm}/batch`.
    Batch,
    Token,
    Admin,
    Other,
    /// Matches every API endpoint (query, read, write, cdc, batch) in a scripted fault.
    Any,
}

impl Endpoint {
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Query => "query",
            Endpoint::Read => "read",
            Endpoint::Write => "write",
            Endpoint::Cdc => "cdc",
            Endpoint::Batch => "batch",
            Endpoint::Token => "token",
            Endpoint::Admin => "admin",
            Endpoint::Other => "other",
            Endpoint::Any => "any",
        }
    }

    /// Whether a scripted fault for `self` applies to a request to `actual`.
    pub fn covers(self, actual: Endpoint) -> bool {
        self == actual
            || (self == Endpoint::Any
                && matches!(
                    actual,
                    Endpoint::Query
                        | Endpoint::Read
                        | Endpoint::Write
                        | Endpoint::Cdc
                        | Endpoint::Batch
                ))
    }
}

/// `Duration` as whole milliseconds in JSON.
pub mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_parses_names_and_seconds() {
        assert_eq!("never".parse::<Rotation>(), Ok(Rotation::Never));
        assert_eq!("EVERY".parse::<Rotation>(), Ok(Rotation::EveryRefresh));
        assert_eq!(
            "90".parse::<Rotation>(),
            Ok(Rotation::Interval(Duration::from_secs(90)))
        );
        assert!("sometimes".parse::<Rotation>().is_err());
    }

    #[test]
    fn default_config_is_valid_and_debug_hides_secrets() {
        let config = SandboxConfig::default();
        assert_eq!(config.validate(), Ok(()));
        let debug = format!("{config:?}");
        assert!(!debug.contains(DEFAULT_CLIENT_SECRET));
        assert!(!debug.contains(DEFAULT_REFRESH_TOKEN));
        assert!(debug.contains(DEFAULT_CLIENT_ID));
    }

    #[test]
    fn validate_rejects_bad_values() {
        let config = SandboxConfig {
            realm_id: "12a".into(),
            ..SandboxConfig::default()
        };
        assert!(matches!(config.validate(), Err(ConfigError::RealmId(_))));
        let config = SandboxConfig {
            customers: 0,
            ..SandboxConfig::default()
        };
        assert_eq!(config.validate(), Err(ConfigError::InvoicesNeedRefs));
        let mut config = SandboxConfig::default();
        config.faults.error_rate = 1.5;
        assert!(matches!(config.validate(), Err(ConfigError::Rate { .. })));
    }

    #[test]
    fn faults_round_trip_as_json_with_latency_in_ms() {
        let faults = Faults {
            latency: Duration::from_millis(250),
            scripted: vec![ScriptedFault {
                endpoint: Endpoint::Query,
                count: 2,
                action: FaultAction::Status(503),
            }],
            ..Faults::default()
        };
        let json = serde_json::to_value(&faults).unwrap();
        assert_eq!(json["latency"], 250);
        assert_eq!(json["scripted"][0]["action"]["status"], 503);
        let back: Faults = serde_json::from_value(json).unwrap();
        assert_eq!(back, faults);
        let partial: Faults = serde_json::from_str(r#"{"rpm_limit":500}"#).unwrap();
        assert_eq!(partial.rpm_limit, Some(500));
    }

    #[test]
    fn any_endpoint_covers_only_api_endpoints() {
        assert!(Endpoint::Any.covers(Endpoint::Query));
        assert!(Endpoint::Any.covers(Endpoint::Cdc));
        assert!(Endpoint::Any.covers(Endpoint::Batch));
        assert!(!Endpoint::Any.covers(Endpoint::Token));
        assert!(Endpoint::Token.covers(Endpoint::Token));
        assert!(!Endpoint::Query.covers(Endpoint::Read));
    }

    #[test]
    fn decimal_addition_keeps_width_and_carries() {
        assert_eq!(add_decimal("9130357766910250", 1), "9130357766910251");
        assert_eq!(add_decimal("0099", 1), "0100");
        assert_eq!(add_decimal("99", 1), "100");
        assert_eq!(add_decimal("5", 999), "1004");
        assert_eq!(add_decimal("7", 0), "7");
        assert_eq!(
            add_decimal("18446744073709551615", u64::MAX),
            "36893488147419103230"
        );
    }

    #[test]
    fn realm_specs_keep_realm_one_and_derive_distinct_others() {
        let one = SandboxConfig::default().realm_specs();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].realm_id, DEFAULT_REALM_ID);
        assert_eq!(one[0].refresh_token, DEFAULT_REFRESH_TOKEN);
        assert_eq!(one[0].seed, 1);
        let config = SandboxConfig {
            realms: MAX_REALMS,
            ..SandboxConfig::default()
        };
        assert_eq!(config.validate(), Ok(()));
        let specs = config.realm_specs();
        assert_eq!(specs.len(), 1000);
        assert_eq!(specs[0], one[0]);
        assert_eq!(specs[1].realm_id, "9130357766910251");
        assert_eq!(
            specs[1].refresh_token,
            format!("{DEFAULT_REFRESH_TOKEN}0002")
        );
        let ids: std::collections::HashSet<_> = specs.iter().map(|s| &s.realm_id).collect();
        let tokens: std::collections::HashSet<_> = specs.iter().map(|s| &s.refresh_token).collect();
        let seeds: std::collections::HashSet<_> = specs.iter().map(|s| s.seed).collect();
        assert_eq!((ids.len(), tokens.len(), seeds.len()), (1000, 1000, 1000));
        assert!(
            specs
                .iter()
                .all(|s| s.realm_id.bytes().all(|b| b.is_ascii_digit()))
        );
        assert_eq!(config.realm_specs(), specs, "deterministic");
        let debug = format!("{specs:?} {config:?}");
        assert!(!debug.contains("sandboxRefreshToken"), "{debug}");
        for bad in [0, MAX_REALMS + 1] {
            let config = SandboxConfig {
                realms: bad,
                ..SandboxConfig::default()
            };
            assert_eq!(config.validate(), Err(ConfigError::Realms(bad)));
        }
    }
}
