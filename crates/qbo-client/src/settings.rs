//! The client's settings: limits and retry policy, and their validation.

use std::time::Duration;
use url::Url;

/// Client-side limits and retry policy, shared by everything one process runs per realm.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpSettings {
    /// Requests per minute per realm (QBO allows 500; the default keeps 2% headroom).
    pub requests_per_minute: u32,
    /// Requests in flight per realm (QBO allows 10).
    pub max_in_flight: u32,
    /// Batch requests per minute per realm (QBO allows 40; the default keeps headroom). 0
    /// turns batching off: every query is sent on its own.
    pub batch_per_minute: u32,
    /// Retries of one request after 5xx, timeouts, dropped connections and 429s.
    pub max_retries: u32,
    /// Wait after a 429 without `Retry-After` (Intuit: "wait 60 seconds").
    pub throttle_wait: Duration,
    /// First backoff delay after a transient failure; doubles with jitter up to `max_backoff`.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    pub connect_timeout: Duration,
    /// QBO times out queries after 120 s; we give up slightly later.
    pub request_timeout: Duration,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            requests_per_minute: 490,
            max_in_flight: 10,
            batch_per_minute: 36,
            max_retries: 8,
            throttle_wait: Duration::from_secs(60),
            min_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(130),
        }
    }
}

impl HttpSettings {
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !(1..=10_000).contains(&self.requests_per_minute) {
            problems.push(format!(
                "--rpm {} is out of range: use 1..=10000 (QBO allows 500 per minute)",
                self.requests_per_minute
            ));
        }
        if !(1..=100).contains(&self.max_in_flight) {
            problems.push(format!(
                "--max-in-flight {} is out of range: use 1..=100 (QBO allows 10)",
                self.max_in_flight
            ));
        }
        if self.batch_per_minute > 1000 {
            problems.push(format!(
                "--batch-rpm {} is out of range: use 0..=1000 (QBO allows 40 batch requests per minute; 0 turns batching off)",
                self.batch_per_minute
            ));
        }
        problems
    }
}

/// A URL for messages: user name and password removed, query dropped.
pub fn redacted_url(url: &Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.to_string()
}
