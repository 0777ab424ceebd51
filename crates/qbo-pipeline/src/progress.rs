//! Progress bars (interactive terminals only), drawn from the event bus: one bar per entity
//! of one run, sized by QBO's count, moved by committed pages and proved-unchanged chunks.

use crate::entity::Entity;
use crate::events::{Event, Sink};
use std::collections::HashMap;
use std::sync::Mutex;

/// The bars of one run (events of other runs on the same bus are ignored).
pub struct ProgressSink {
    run_id: i64,
    bars: indicatif::MultiProgress,
    by_entity: Mutex<HashMap<Entity, indicatif::ProgressBar>>,
}

impl ProgressSink {
    /// `None` unless stderr is a terminal.
    pub fn for_terminal(run_id: i64) -> Option<ProgressSink> {
        std::io::IsTerminal::is_terminal(&std::io::stderr()).then(|| ProgressSink {
            run_id,
            bars: indicatif::MultiProgress::new(),
            by_entity: Mutex::new(HashMap::new()),
        })
    }

    fn with_bar(&self, entity: Entity, f: impl FnOnce(&indicatif::ProgressBar)) {
        let bars = self.by_entity.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(bar) = bars.get(&entity) {
            f(bar);
        }
    }
}

impl Sink for ProgressSink {
    fn on(&self, event: &Event) {
        if event.run().is_none_or(|r| r.run_id != self.run_id) {
            return;
        }
        match event {
            Event::EntityPlanned(e) => {
                let bar = self
                    .bars
                    .add(indicatif::ProgressBar::new(e.expected.unwrap_or(0)));
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{prefix:>10} [{bar:30}] {pos}/{len} records {per_sec} eta {eta}",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
                bar.set_prefix(e.entity.cli_name());
                bar.set_position(e.records_done);
                self.by_entity
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(e.entity, bar);
            }
            Event::PageCommitted(e) => self.with_bar(e.entity, |b| b.inc(e.records)),
            Event::ChunkVerified(e) => self.with_bar(e.entity, |b| b.inc(e.records)),
            Event::EntityFinished(e) => self.with_bar(e.entity, |b| b.abandon()),
            _ => {}
        }
    }
}
