//! A job is what one run does to one company: a backfill of a window, or a sync. The CLI
//! commands (`backfill`, `sync`, `run`) and the scheduler build one and run it through a
//! realm's [`Engine`]; its [`Report`] is printed, recorded and judged the same way whatever
//! its kind.

use crate::backfill::{BackfillOptions, BackfillReport, Engine, StopSignal};
use crate::config::Source;
use crate::pipelines::Resolved;
use crate::sync::{SyncOptions, SyncReport};
use chrono::TimeDelta;

#[derive(Debug, Clone)]
pub enum Job {
    Backfill(BackfillOptions),
    Sync(SyncOptions),
}

/// A job's outcome.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(untagged)]
pub enum Report {
    Backfill(BackfillReport),
    Sync(SyncReport),
}

impl Job {
    /// The job a pipeline runs; `trigger` is recorded in the run ledger.
    pub fn from_pipeline(
        run: &Resolved,
        trigger: Option<&str>,
        progress: bool,
        sync: &SyncSettings,
    ) -> Job {
        match run {
            Resolved::Backfill(r) => Job::Backfill(r.backfill_options(trigger, progress)),
            Resolved::Sync(r) => {
                let mut opts = SyncOptions::new(r.entities.clone());
                opts.pipeline = Some(r.pipeline.to_string());
                opts.trigger = trigger.map(str::to_string);
                opts.progress = progress;
                opts.reread_every = sync.reread_every;
                Job::Sync(opts)
            }
        }
    }

    /// The caller holds the realm's lock (a scheduler's claim).
    pub fn hold_realm_lock(&mut self) {
        match self {
            Job::Backfill(o) => o.realm_lock_held = true,
            Job::Sync(o) => o.realm_lock_held = true,
        }
    }

    /// Database connections the job wants.
    pub fn pool_size(&self) -> u32 {
        let concurrency = match self {
            Job::Backfill(o) => o.concurrency,
            Job::Sync(o) => o.concurrency,
        };
        (concurrency + 4) as u32
    }

    pub async fn run(&self, engine: &Engine, stop: &StopSignal) -> anyhow::Result<Report> {
        Ok(match self {
            Job::Backfill(o) => Report::Backfill(engine.backfill(o, stop).await?),
            Job::Sync(o) => Report::Sync(engine.sync(o, stop).await?),
        })
    }
}

impl Report {
    pub fn run_id(&self) -> i64 {
        match self {
            Report::Backfill(r) => r.run_id,
            Report::Sync(r) => r.run_id,
        }
    }
    pub fn error(&self) -> Option<String> {
        match self {
            Report::Backfill(r) => r.error(),
            Report::Sync(r) => r.error(),
        }
    }
    pub fn succeeded(&self) -> bool {
        match self {
            Report::Backfill(r) => r.succeeded(),
            Report::Sync(r) => r.succeeded(),
        }
    }
    pub fn interrupted(&self) -> bool {
        match self {
            Report::Backfill(r) => r.interrupted,
            Report::Sync(r) => r.interrupted,
        }
    }
    pub fn table(&self) -> String {
        match self {
            Report::Backfill(r) => r.table(),
            Report::Sync(r) => r.table(),
        }
    }
}

/// The sync's settings from the environment.
#[derive(Debug, Clone, Copy)]
pub struct SyncSettings {
    /// `QBO_SYNC_REREAD_DAYS`: each entity is re-read whole this often (default 7; 0 never).
    pub reread_every: TimeDelta,
}

impl Default for SyncSettings {
    fn default() -> Self {
        SyncSettings {
            reread_every: crate::sync::DEFAULT_REREAD,
        }
    }
}

impl SyncSettings {
    /// Reads `QBO_SYNC_REREAD_DAYS` (0 to 365 days); a bad value is a problem in `problems`.
    pub fn from_source(source: &impl Source, problems: &mut Vec<String>) -> SyncSettings {
        let mut out = SyncSettings::default();
        if let Some(text) = source.get("QBO_SYNC_REREAD_DAYS") {
            match text.trim().parse::<u32>() {
                Ok(days) if days <= 365 => out.reread_every = TimeDelta::days(i64::from(days)),
                _ => problems.push(format!(
                    "QBO_SYNC_REREAD_DAYS '{}' is not a whole number of days from 0 (never) to 365, e.g. 7",
                    qbo_client::printable(&text, 40)
                )),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Env(HashMap<&'static str, &'static str>);
    impl Source for Env {
        fn get(&self, key: &str) -> Option<String> {
            self.0.get(key).map(|v| v.to_string())
        }
    }

    #[test]
    fn reread_days_are_read_and_checked() {
        let mut problems = Vec::new();
        let s = SyncSettings::from_source(&Env(HashMap::new()), &mut problems);
        assert_eq!(s.reread_every, TimeDelta::days(7));
        let s = SyncSettings::from_source(
            &Env(HashMap::from([("QBO_SYNC_REREAD_DAYS", "0")])),
            &mut problems,
        );
        assert_eq!(s.reread_every, TimeDelta::zero());
        assert!(problems.is_empty());
        SyncSettings::from_source(
            &Env(HashMap::from([("QBO_SYNC_REREAD_DAYS", "weekly")])),
            &mut problems,
        );
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].contains("QBO_SYNC_REREAD_DAYS 'weekly'"),
            "{problems:?}"
        );
    }
}
