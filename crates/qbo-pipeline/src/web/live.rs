//! What the dashboard shows "now" that the ledger does not hold: this process's requests of
//! the last minute per realm (against QBO's 500 per minute) and its 429s, gathered from the
//! runtime's bus. Bounded: a realm keeps at most [`KEEP`] timestamps, and realms are only
//! those this process has talked to.

use crate::events::{Event, Sink};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Timestamps kept per realm (QBO allows 500 a minute; more than this in a minute is shown as
/// "at least").
pub const KEEP: usize = 2_000;
const WINDOW: Duration = Duration::from_secs(60);

#[derive(Default)]
struct RealmRecent {
    at: VecDeque<Instant>,
    throttled: VecDeque<Instant>,
}

#[derive(Default)]
pub struct Recent {
    realms: Mutex<HashMap<String, RealmRecent>>,
}

/// One realm's last minute.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct LastMinute {
    pub requests: usize,
    pub throttled: usize,
}

fn trim(q: &mut VecDeque<Instant>, now: Instant) {
    while q.front().is_some_and(|t| now.duration_since(*t) > WINDOW) {
        q.pop_front();
    }
}

impl Sink for Recent {
    fn on(&self, event: &Event) {
        let Event::RequestFinished(r) = event else {
            return;
        };
        if matches!(r.endpoint, qbo_client::Endpoint::Token) {
            return;
        }
        let now = Instant::now();
        let mut realms = self.realms.lock().unwrap_or_else(|p| p.into_inner());
        let entry = realms.entry(r.realm.to_string()).or_default();
        trim(&mut entry.at, now);
        if entry.at.len() >= KEEP {
            entry.at.pop_front();
        }
        entry.at.push_back(now);
        if r.throttled() {
            trim(&mut entry.throttled, now);
            if entry.throttled.len() >= KEEP {
                entry.throttled.pop_front();
            }
            entry.throttled.push_back(now);
        }
    }
}

impl Recent {
    pub fn last_minute(&self, realm: &str) -> LastMinute {
        let now = Instant::now();
        let mut realms = self.realms.lock().unwrap_or_else(|p| p.into_inner());
        match realms.get_mut(realm) {
            None => LastMinute::default(),
            Some(r) => {
                trim(&mut r.at, now);
                trim(&mut r.throttled, now);
                LastMinute {
                    requests: r.at.len(),
                    throttled: r.throttled.len(),
                }
            }
        }
    }
}
