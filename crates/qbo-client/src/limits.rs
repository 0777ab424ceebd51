//! Per-realm limits shared by everything a process runs.

use crate::settings::HttpSettings;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::Semaphore;

/// Rate limiter and in-flight cap for one realm, shared process-wide.
pub struct RealmLimits {
    pub(crate) limiter: DefaultDirectRateLimiter,
    /// QBO's own per-minute limit on batch requests (they also count against `limiter`);
    /// checked, never waited for: without budget the queries go on their own.
    pub(crate) batch_limiter: DefaultDirectRateLimiter,
    pub(crate) in_flight: Semaphore,
}

impl RealmLimits {
    fn new(settings: &HttpSettings) -> Self {
        let rpm = settings.requests_per_minute.max(1);
        let period = Duration::from_micros(60_000_000 / u64::from(rpm));
        let quota = Quota::with_period(period)
            .expect("period is positive")
            .allow_burst(NonZeroU32::MIN);
        // Batches come in bursts (the counts of every entity at the start of a run): a burst
        // of a quarter of the budget, refilled at the rest, so no 60 seconds ever hold more
        // than `batch_per_minute` batches.
        let batch_rpm = settings.batch_per_minute.max(2);
        let burst = (batch_rpm / 4).max(1);
        let batch_quota = Quota::with_period(Duration::from_micros(
            60_000_000 / u64::from(batch_rpm - burst),
        ))
        .expect("period is positive")
        .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN));
        RealmLimits {
            limiter: RateLimiter::direct(quota),
            batch_limiter: RateLimiter::direct(batch_quota),
            in_flight: Semaphore::new(settings.max_in_flight.max(1) as usize),
        }
    }

    /// The limits of `realm` in this process, created on first use with `settings`.
    pub fn for_realm(realm: &str, settings: &HttpSettings) -> Arc<RealmLimits> {
        type Registry = Mutex<HashMap<(String, u32, u32, u32), Arc<RealmLimits>>>;
        static REGISTRY: OnceLock<Registry> = OnceLock::new();
        let key = (
            realm.to_string(),
            settings.requests_per_minute,
            settings.max_in_flight,
            settings.batch_per_minute,
        );
        let mut map = REGISTRY
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        map.entry(key)
            .or_insert_with(|| Arc::new(RealmLimits::new(settings)))
            .clone()
    }
}
