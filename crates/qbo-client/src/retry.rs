//! The one retry decision: which failures are retried, and how long to wait.

use crate::error::QboError;
use crate::settings::HttpSettings;
use std::time::Duration;

/// What to do about a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryClass {
    /// 429: wait (the given `Retry-After`, else the configured throttle wait), then retry.
    Throttled(Option<Duration>),
    /// 5xx, timeouts, dropped connections: back off exponentially, then retry.
    Transient,
    /// 401: refresh the access token and retry once.
    Unauthorized,
    /// Anything else: fail now.
    Fatal,
}

/// The one place that decides whether a failure is retried.
pub fn classify(err: &QboError) -> RetryClass {
    match err {
        QboError::Fault {
            status,
            retry_after,
            code,
            ..
        } => match *status {
            429 => RetryClass::Throttled(*retry_after),
            // 2016-era throttling came back as 403 with code 3001.
            403 if code.as_deref() == Some("3001") || code.as_deref() == Some("003001") => {
                RetryClass::Throttled(*retry_after)
            }
            401 => RetryClass::Unauthorized,
            500..=599 => RetryClass::Transient,
            // A SystemFault (code 10000) inside an HTTP 200 is a server-side failure.
            200 if code.as_deref() == Some("10000") => RetryClass::Transient,
            _ => RetryClass::Fatal,
        },
        QboError::Network(_) => RetryClass::Transient,
        // A truncated body is a dropped connection in disguise.
        QboError::Decode { .. } => RetryClass::Transient,
        QboError::Auth(e) if e.is_transient() => RetryClass::Transient,
        QboError::Auth(_)
        | QboError::Exhausted { .. }
        | QboError::TooLarge { .. }
        | QboError::Stopped
        | QboError::Refused(_) => RetryClass::Fatal,
    }
}

/// What the retry loop does next about a failure ([`Retry::next`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Refresh the access token (forget the refused one), then retry at once.
    Refresh,
    /// QBO throttled the request: wait this long, then retry.
    Throttle(Duration),
    /// A transient failure: back off this long, then retry.
    Backoff(Duration),
    /// Fail with this error as it is.
    Fail,
    /// Retryable, but the retries are spent: fail with [`QboError::Exhausted`].
    Exhausted,
}

impl Step {
    /// The wait before the next attempt, when there is one.
    pub fn wait(&self) -> Option<Duration> {
        match self {
            Step::Refresh => Some(Duration::ZERO),
            Step::Throttle(d) | Step::Backoff(d) => Some(*d),
            Step::Fail | Step::Exhausted => None,
        }
    }
}

/// The retry state of one request: attempts made, whether the token was refreshed already,
/// and the exponential back-off (with jitter) of its transient failures. Used by every path
/// that sends: a query, a batch, and (through [`QboError::Auth`]) the token refresh.
pub struct Retry {
    backoff: backon::ExponentialBackoff,
    max_retries: u32,
    throttle_wait: Duration,
    max_backoff: Duration,
    attempts: u32,
    refreshed: bool,
}

impl Retry {
    pub fn new(settings: &HttpSettings) -> Self {
        use backon::BackoffBuilder;
        Retry {
            backoff: backon::ExponentialBuilder::new()
                .with_min_delay(settings.min_backoff)
                .with_max_delay(settings.max_backoff)
                .with_factor(2.0)
                .with_jitter()
                .with_max_times(usize::MAX)
                .build(),
            max_retries: settings.max_retries,
            throttle_wait: settings.throttle_wait,
            max_backoff: settings.max_backoff,
            attempts: 0,
            refreshed: false,
        }
    }

    /// Counts an attempt about to be made; returns its number (1 for the first).
    pub fn begin(&mut self) -> u32 {
        self.attempts += 1;
        self.attempts
    }

    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The decision about the failure of the attempt just made.
    pub fn next(&mut self, err: &QboError) -> Step {
        let retries_left = self.attempts <= self.max_retries;
        match classify(err) {
            RetryClass::Unauthorized if !self.refreshed => {
                self.refreshed = true;
                Step::Refresh
            }
            RetryClass::Throttled(after) if retries_left => {
                Step::Throttle(after.unwrap_or(self.throttle_wait))
            }
            RetryClass::Transient if retries_left => {
                Step::Backoff(self.backoff.next().unwrap_or(self.max_backoff))
            }
            RetryClass::Fatal | RetryClass::Unauthorized => Step::Fail,
            RetryClass::Throttled(_) | RetryClass::Transient => Step::Exhausted,
        }
    }
}
