//! The stop request shared by everything a process runs, and waits that end when it comes.
//!
//! A [`StopSignal`] is set once (first SIGINT/SIGTERM, a failed sibling chunk, a test) and
//! never cleared. Every wait in the pipeline — a 429's `Retry-After`, a back-off after a 5xx,
//! the rate limiter, a token-endpoint retry, the scheduler's idle sleep — is raced against it
//! with [`StopSignal::sleep`] or [`StopSignal::stopped`], so a stop request is honoured within
//! milliseconds instead of after the longest sleep in flight. Pages already in flight still
//! finish and commit: the engine checks [`StopSignal::is_stopped`] between pages.

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Set to stop gracefully: pages in flight finish and commit, nothing new starts, waits end.
#[derive(Debug, Clone)]
pub struct StopSignal(Arc<watch::Sender<bool>>);

impl Default for StopSignal {
    fn default() -> Self {
        StopSignal(Arc::new(watch::Sender::new(false)))
    }
}

impl StopSignal {
    pub fn stop(&self) {
        self.0.send_replace(true);
    }

    pub fn is_stopped(&self) -> bool {
        *self.0.borrow()
    }

    /// Completes when a stop is requested (at once if it already was).
    pub async fn stopped(&self) {
        let mut rx = self.0.subscribe();
        // The sender lives as long as `self`, so `wait_for` cannot fail while we wait.
        let _ = rx.wait_for(|stopped| *stopped).await;
    }

    /// Sleeps for `wait`, or less if a stop is requested. `true` when the whole wait passed.
    pub async fn sleep(&self, wait: Duration) -> bool {
        if self.is_stopped() {
            return false;
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => true,
            _ = self.stopped() => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stop_ends_a_long_sleep_at_once() {
        let stop = StopSignal::default();
        let waiter = {
            let stop = stop.clone();
            tokio::spawn(async move { stop.sleep(Duration::from_secs(3600)).await })
        };
        tokio::task::yield_now().await;
        stop.stop();
        let finished = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the sleep ended when the stop came")
            .unwrap();
        assert!(
            !finished,
            "an interrupted sleep reports it did not complete"
        );
        assert!(
            !stop.sleep(Duration::from_secs(3600)).await,
            "already stopped"
        );
        assert!(StopSignal::default().sleep(Duration::from_millis(1)).await);
    }
}
