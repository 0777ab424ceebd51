//! Typed events: one struct per thing that happens in a run, published on the runtime's
//! [`EventBus`].
//!
//! The engine says *what happened* (a page committed, a chunk proved unchanged, an entity
//! skipped) and nothing else; what is done about it lives in the consumers:
//! - **sinks** ([`Sink`]) are called in order, synchronously, for every event: the log lines
//!   ([`LogSink`], always attached) and the progress bars ([`crate::progress`]). A sink must
//!   be quick and must not block (no I/O beyond a log write);
//! - **subscribers** ([`EventBus::subscribe`]) receive every event on a bounded broadcast
//!   channel, for consumers that run on their own (metrics, a dashboard). A subscriber that
//!   falls behind loses the oldest events (it is told how many), never slows a run and never
//!   grows memory.
//!
//! The ledger is not fed from here: it is written in the engine's own transactions (a row
//! must exist before its run does anything), and the events repeat what it records.

use crate::entity::Entity;
use crate::ledger::{EntityStatus, RunStatus};
use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use std::sync::{Arc, RwLock};
use tokio::sync::broadcast;

/// Events kept for a subscriber that has not read them yet.
pub const SUBSCRIBER_BACKLOG: usize = 4096;

/// Which run an event belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunRef {
    pub run_id: i64,
    pub realm: Arc<str>,
}

/// A run began (its ledger row exists, the company's lock is held).
#[derive(Debug, Clone, Serialize)]
pub struct RunStarted {
    pub run: RunRef,
    pub pipeline: String,
    pub trigger: Option<String>,
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub entities: Vec<Entity>,
}

/// A sync run started (`qbo-pipeline sync`, pipelines `qb_sync` / `qb_<entity>_sync`).
#[derive(Debug, Clone, Serialize)]
pub struct SyncStarted {
    pub run: RunRef,
    pub pipeline: String,
    pub trigger: Option<String>,
    pub entities: Vec<Entity>,
}

/// What a sync did to one entity: its figures as the sync's report gives them.
#[derive(Debug, Clone, Serialize)]
pub struct SyncEntityFinished {
    pub run: RunRef,
    #[serde(flatten)]
    pub entity: crate::sync::EntitySync,
}

/// An entity's work is planned: QBO's count and the chunks (some may be done already).
#[derive(Debug, Clone, Serialize)]
pub struct EntityPlanned {
    pub run: RunRef,
    pub entity: Entity,
    /// QBO's count of the window (of everything for an entity read whole), when readable.
    pub expected: Option<u64>,
    pub chunks: usize,
    /// Chunks an interrupted earlier run finished (not read again).
    pub chunks_done: usize,
    /// Records those finished chunks hold.
    pub records_done: u64,
    /// The job existed: this run resumes it.
    pub resumed: bool,
    pub whole: bool,
    pub chunking: String,
}

/// A page was written with its checkpoint (one transaction, committed).
#[derive(Debug, Clone, Serialize)]
pub struct PageCommitted {
    pub run: RunRef,
    pub entity: Entity,
    pub chunk_start: DateTime<Utc>,
    /// The chunk's page number.
    pub page: i32,
    pub records: u64,
    pub rows_written: u64,
    pub sanitised: u64,
}

/// A chunk was proved unchanged since its last complete load by QBO's count, and not read.
#[derive(Debug, Clone, Serialize)]
pub struct ChunkVerified {
    pub run: RunRef,
    pub entity: Entity,
    pub chunk_start: DateTime<Utc>,
    pub records: u64,
}

/// A chunk loaded before has changed (QBO's count differs from the stored rows): read again.
#[derive(Debug, Clone, Serialize)]
pub struct ChunkChanged {
    pub run: RunRef,
    pub entity: Entity,
    pub chunk_start: DateTime<Utc>,
    pub in_qbo: u64,
    pub stored: u64,
}

/// A chunk was read to its end.
#[derive(Debug, Clone, Serialize)]
pub struct ChunkFinished {
    pub run: RunRef,
    pub entity: Entity,
    pub chunk_start: DateTime<Utc>,
    pub pages: i32,
}

/// QBO answered a count without a readable number.
#[derive(Debug, Clone, Serialize)]
pub struct CountUnreadable {
    pub run: RunRef,
    pub entity: Entity,
    /// The chunk whose count it was; `None` for the entity's count.
    pub chunk_start: Option<DateTime<Utc>>,
    pub error: String,
}

/// A whole page of records shares one `LastUpdatedTime` second: that second is read by offset.
#[derive(Debug, Clone, Serialize)]
pub struct TieSecond {
    pub run: RunRef,
    pub entity: Entity,
    pub second: String,
}

/// A chunk's read ended on QBO's count: as many distinct records were read as QBO counted in
/// its closed range, so the page after was not asked for.
#[derive(Debug, Clone, Serialize)]
pub struct ChunkCountReached {
    pub run: RunRef,
    pub entity: Entity,
    pub chunk_start: DateTime<Utc>,
    pub records: u64,
}

/// Reading an entity whole found another number of records than QBO counts.
#[derive(Debug, Clone, Serialize)]
pub struct WholeReadMismatch {
    pub run: RunRef,
    pub entity: Entity,
    pub read: u64,
    pub expected: Option<u64>,
    pub attempt: u32,
    /// Another attempt follows.
    pub retrying: bool,
}

/// An entity was read whole without a usable count: its completeness is not proved.
#[derive(Debug, Clone, Serialize)]
pub struct WholeReadUnproved {
    pub run: RunRef,
    pub entity: Entity,
    pub records: u64,
}

/// An entity's part of a run ended.
#[derive(Debug, Clone, Serialize)]
pub struct EntityFinished {
    pub run: RunRef,
    pub entity: Entity,
    pub status: EntityStatus,
    pub records: u64,
    pub rows_written: u64,
    pub requests: u64,
    pub retries: u64,
    pub throttled: u64,
    pub seconds: f64,
    /// Why it was skipped.
    pub note: Option<String>,
    pub error: Option<String>,
}

/// A run ended (its outcome is recorded in the ledger).
#[derive(Debug, Clone, Serialize)]
pub struct RunFinished {
    pub run: RunRef,
    pub status: RunStatus,
    pub interrupted: bool,
    pub seconds: f64,
    pub error: Option<String>,
}

/// One HTTP request a realm's client made (query, batch, token, ...), as it finished. Not
/// part of a run: a realm's client is shared by every run of the process.
#[derive(Debug, Clone, Serialize)]
pub struct RequestFinished {
    pub realm: Arc<str>,
    pub endpoint: qbo_client::Endpoint,
    pub outcome: qbo_client::Outcome,
    /// The attempt number of the logical request (1 for the first).
    pub attempt: u32,
    /// The client sends it again (after a refresh, a throttle wait or a back-off).
    pub retried: bool,
    pub retry_after_ms: Option<u64>,
    pub duration_ms: f64,
}

impl RequestFinished {
    /// QBO throttled it (429).
    pub fn throttled(&self) -> bool {
        self.outcome.is_throttled()
    }
}

/// Publishes every request of a client on a bus as [`RequestFinished`].
pub struct BusObserver(pub EventBus);

impl qbo_client::RequestObserver for BusObserver {
    fn request_finished(&self, r: &qbo_client::RequestRecord<'_>) {
        self.0.emit(RequestFinished {
            realm: r.realm.into(),
            endpoint: r.endpoint,
            outcome: r.outcome.clone(),
            attempt: r.attempt,
            retried: r.retried,
            retry_after_ms: r.retry_after.map(|d| d.as_millis() as u64),
            duration_ms: r.duration.as_secs_f64() * 1000.0,
        });
    }
}

/// Everything that can happen, one variant per event struct.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    RunStarted(RunStarted),
    SyncStarted(SyncStarted),
    SyncEntityFinished(SyncEntityFinished),
    EntityPlanned(EntityPlanned),
    PageCommitted(PageCommitted),
    ChunkVerified(ChunkVerified),
    ChunkChanged(ChunkChanged),
    ChunkFinished(ChunkFinished),
    CountUnreadable(CountUnreadable),
    TieSecond(TieSecond),
    ChunkCountReached(ChunkCountReached),
    WholeReadMismatch(WholeReadMismatch),
    WholeReadUnproved(WholeReadUnproved),
    EntityFinished(EntityFinished),
    RunFinished(RunFinished),
    RequestFinished(RequestFinished),
}

macro_rules! event_from {
    ($($t:ident),*) => {$(
        impl From<$t> for Event {
            fn from(e: $t) -> Event {
                Event::$t(e)
            }
        }
    )*};
}
event_from!(
    RunStarted,
    SyncStarted,
    SyncEntityFinished,
    EntityPlanned,
    PageCommitted,
    ChunkVerified,
    ChunkChanged,
    ChunkFinished,
    CountUnreadable,
    TieSecond,
    ChunkCountReached,
    WholeReadMismatch,
    WholeReadUnproved,
    EntityFinished,
    RunFinished,
    RequestFinished
);

impl Event {
    /// The run the event belongs to; `None` for a request (clients are shared by runs).
    pub fn run(&self) -> Option<&RunRef> {
        Some(match self {
            Event::RunStarted(e) => &e.run,
            Event::SyncStarted(e) => &e.run,
            Event::SyncEntityFinished(e) => &e.run,
            Event::EntityPlanned(e) => &e.run,
            Event::PageCommitted(e) => &e.run,
            Event::ChunkVerified(e) => &e.run,
            Event::ChunkChanged(e) => &e.run,
            Event::ChunkFinished(e) => &e.run,
            Event::CountUnreadable(e) => &e.run,
            Event::TieSecond(e) => &e.run,
            Event::ChunkCountReached(e) => &e.run,
            Event::WholeReadMismatch(e) => &e.run,
            Event::WholeReadUnproved(e) => &e.run,
            Event::EntityFinished(e) => &e.run,
            Event::RunFinished(e) => &e.run,
            Event::RequestFinished(_) => return None,
        })
    }
}

/// A synchronous consumer of every event.
pub trait Sink: Send + Sync {
    fn on(&self, event: &Event);
}

struct Inner {
    sinks: RwLock<Vec<(u64, Arc<dyn Sink>)>>,
    next_id: std::sync::atomic::AtomicU64,
    tx: broadcast::Sender<Arc<Event>>,
}

/// Where events are published. Cloning shares the bus.
#[derive(Clone)]
pub struct EventBus {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for EventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBus")
            .field("sinks", &self.read_sinks().len())
            .field("subscribers", &self.inner.tx.receiver_count())
            .finish()
    }
}

impl Default for EventBus {
    /// A bus with the log sink attached.
    fn default() -> Self {
        let bus = EventBus::empty();
        bus.attach(Arc::new(LogSink)).keep();
        bus
    }
}

impl EventBus {
    /// A bus without any sink.
    pub fn empty() -> EventBus {
        let (tx, _) = broadcast::channel(SUBSCRIBER_BACKLOG);
        EventBus {
            inner: Arc::new(Inner {
                sinks: RwLock::new(Vec::new()),
                next_id: std::sync::atomic::AtomicU64::new(0),
                tx,
            }),
        }
    }

    fn read_sinks(&self) -> std::sync::RwLockReadGuard<'_, Vec<(u64, Arc<dyn Sink>)>> {
        self.inner.sinks.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Publishes an event: every sink in attach order, then every subscriber.
    pub fn emit(&self, event: impl Into<Event>) {
        let event = event.into();
        for (_, sink) in self.read_sinks().iter() {
            sink.on(&event);
        }
        if self.inner.tx.receiver_count() > 0 {
            // Only fails without receivers.
            let _ = self.inner.tx.send(Arc::new(event));
        }
    }

    /// Attaches a sink until the returned guard is dropped (or [`Attached::keep`] is called).
    #[must_use = "the sink is detached when the guard is dropped"]
    pub fn attach(&self, sink: Arc<dyn Sink>) -> Attached {
        let id = self
            .inner
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner
            .sinks
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push((id, sink));
        Attached {
            bus: Some(self.clone()),
            id,
        }
    }

    /// A receiver of every event published from now on (bounded: see the module docs).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.inner.tx.subscribe()
    }
}

/// A sink's attachment; dropping it detaches the sink.
pub struct Attached {
    bus: Option<EventBus>,
    id: u64,
}

impl Attached {
    /// Leaves the sink attached for the bus's life.
    pub fn keep(mut self) {
        self.bus = None;
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        if let Some(bus) = self.bus.take() {
            bus.inner
                .sinks
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|(id, _)| *id != self.id);
        }
    }
}

/// Writes the log lines of a run (`tracing`: the format and level come from `QBO_LOG`).
pub struct LogSink;

impl Sink for LogSink {
    fn on(&self, event: &Event) {
        match event {
            Event::RunStarted(e) => tracing::info!(run_id = e.run.run_id, pipeline = %e.pipeline,
                realm = %e.run.realm, from = %e.from, to = %e.to, "backfill started"),
            Event::SyncStarted(e) => tracing::info!(run_id = e.run.run_id, pipeline = %e.pipeline,
                realm = %e.run.realm, entities = e.entities.len(), "sync started"),
            Event::SyncEntityFinished(f) => {
                let e = &f.entity;
                match e.status {
                    EntityStatus::Failed => tracing::error!(entity = %e.entity, mode = %e.mode,
                    error = e.error.as_deref().unwrap_or(""), "entity sync failed"),
                    EntityStatus::Skipped => tracing::info!(entity = %e.entity,
                    reason = e.note.as_deref().unwrap_or(""), "entity not synced: the company does not offer it"),
                    _ => tracing::info!(entity = %e.entity, mode = %e.mode, changes = e.changes,
                    rows_written = e.rows_written, rows_deleted = e.rows_deleted,
                    requests = e.requests, qbo_count = ?e.qbo_count, live_rows = ?e.live_rows,
                    "entity synced"),
                }
            }
            Event::EntityPlanned(e) => {
                if e.resumed {
                    tracing::info!(entity = %e.entity, chunks_done = e.chunks_done, chunks = e.chunks,
                        "resuming an interrupted backfill from its checkpoints");
                }
                tracing::debug!(entity = %e.entity, expected = ?e.expected, chunks = e.chunks,
                    chunking = %e.chunking, whole = e.whole, "planned");
            }
            Event::PageCommitted(e) => tracing::trace!(entity = %e.entity,
                chunk_start = %e.chunk_start, page = e.page, records = e.records, "page committed"),
            Event::ChunkVerified(e) => tracing::debug!(entity = %e.entity,
                chunk_start = %e.chunk_start, records = e.records,
                "chunk unchanged since it was last loaded; not read again"),
            Event::ChunkChanged(e) => tracing::info!(entity = %e.entity,
                chunk_start = %e.chunk_start, in_qbo = e.in_qbo, stored = e.stored,
                "chunk changed since it was last loaded; reading it again"),
            Event::ChunkFinished(e) => tracing::debug!(entity = %e.entity,
                chunk_start = %e.chunk_start, pages = e.pages, "chunk finished"),
            Event::CountUnreadable(e) => match e.chunk_start {
                Some(start) => {
                    tracing::warn!(entity = %e.entity, chunk_start = %start, error = %e.error,
                    "QBO's count of the chunk is unreadable; reading the chunk again")
                }
                None => tracing::warn!(entity = %e.entity, error = %e.error,
                    "QBO's count is unreadable; an auto plan falls back to years, a whole read goes unproved"),
            },
            Event::TieSecond(e) => tracing::info!(entity = %e.entity, second = %e.second,
                "a whole page shares one second; reading that second by offset"),
            Event::ChunkCountReached(e) => tracing::debug!(entity = %e.entity,
                chunk_start = %e.chunk_start, records = e.records,
                "every record QBO counts in the chunk is read; no further page asked for"),
            Event::WholeReadMismatch(e) => tracing::warn!(entity = %e.entity, read = e.read,
                expected = ?e.expected, attempt = e.attempt, retrying = e.retrying,
                "reading it whole found another number of records than QBO counts"),
            Event::WholeReadUnproved(e) => tracing::warn!(entity = %e.entity, records = e.records,
                "read whole without a usable count: completeness not proved"),
            Event::EntityFinished(e) => match e.status {
                EntityStatus::Skipped => tracing::warn!(entity = %e.entity,
                    reason = e.note.as_deref().unwrap_or(""),
                    "entity skipped: the company does not offer it"),
                EntityStatus::Failed => tracing::error!(entity = %e.entity,
                    error = e.error.as_deref().unwrap_or(""), "entity failed"),
                EntityStatus::Succeeded | EntityStatus::Stopped => tracing::debug!(
                    entity = %e.entity, status = %e.status, records = e.records,
                    seconds = e.seconds, "entity finished"),
            },
            // Requests are many: debug level only.
            Event::RequestFinished(e) => tracing::debug!(realm = %e.realm,
                endpoint = e.endpoint.as_str(), outcome = ?e.outcome, attempt = e.attempt,
                retried = e.retried, retry_after_ms = ?e.retry_after_ms,
                duration_ms = e.duration_ms, "request finished"),
            Event::RunFinished(e) => match &e.error {
                None => tracing::info!(run_id = e.run.run_id, seconds = e.seconds, "run succeeded"),
                Some(error) => tracing::error!(run_id = e.run.run_id, error = %error,
                    "run failed; what was committed stays committed, run the same command again to resume"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    struct Recorder(Mutex<Vec<String>>);
    impl Sink for Recorder {
        fn on(&self, event: &Event) {
            let name = serde_json::to_value(event).unwrap()["event"]
                .as_str()
                .unwrap()
                .to_string();
            self.0.lock().unwrap().push(name);
        }
    }

    fn run() -> RunRef {
        RunRef {
            run_id: 7,
            realm: "123".into(),
        }
    }

    fn checked(n: u64) -> ChunkVerified {
        ChunkVerified {
            run: run(),
            entity: Entity::INVOICE,
            chunk_start: Utc::now(),
            records: n,
        }
    }

    #[test]
    fn a_sink_sees_events_while_attached_only() {
        let bus = EventBus::empty();
        let rec = Arc::new(Recorder(Mutex::new(Vec::new())));
        let guard = bus.attach(rec.clone());
        bus.emit(checked(1));
        drop(guard);
        bus.emit(checked(2));
        assert_eq!(*rec.0.lock().unwrap(), vec!["chunk_verified"]);
    }

    #[tokio::test]
    async fn a_slow_subscriber_loses_the_oldest_events_and_never_blocks_the_emitter() {
        let bus = EventBus::empty();
        let mut rx = bus.subscribe();
        let n = SUBSCRIBER_BACKLOG as u64 + 10;
        for i in 0..n {
            bus.emit(checked(i));
        }
        match rx.recv().await {
            Err(broadcast::error::RecvError::Lagged(lost)) => assert_eq!(lost, 10),
            other => panic!("expected a lag report, got {other:?}"),
        }
        match rx.recv().await.unwrap().as_ref() {
            Event::ChunkVerified(e) => assert_eq!(e.records, 10, "the oldest kept event"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn events_serialise_with_their_name_and_run() {
        let v = serde_json::to_value(Event::from(checked(3))).unwrap();
        assert_eq!(v["event"], "chunk_verified");
        assert_eq!(v["run"]["run_id"], 7);
        assert_eq!(v["run"]["realm"], "123");
        assert_eq!(v["entity"], "invoices");
        assert_eq!(v["records"], 3);
    }
}
