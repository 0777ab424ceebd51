//! Page sources: where a chunk's pages come from, and how each advances its checkpoint.
//!
//! A source asks QBO for one page at a time and says what writing it means for the chunk's
//! checkpoint ([`Page::cursor`], [`Page::done`]); the engine ([`super::Engine::drive`]) writes
//! each page with its checkpoint in one transaction while the source fetches the next one.
//! - [`Keyset`]: pages of a time range by `LastUpdatedTime >= cursor` (with offset pages
//!   through a second that fills a whole page), for entities QBO can filter by time;
//! - [`Whole`]: offset pages of everything, proved complete by QBO's count, for singletons
//!   and entities QBO cannot filter.

use super::{ChunkError, Engine, EntityRun, MAX_WHOLE_RECORDS, WHOLE_READ_ATTEMPTS};
use crate::events;
use crate::extract::{self, PageError, PageStep, Record};
use crate::window::{Chunk, Window};
use std::collections::HashSet;

/// One page to write, with what it does to the chunk's checkpoint.
pub(crate) struct Page {
    pub records: Vec<Record>,
    /// The keyset cursor to store with the page (`None`: keep the stored one).
    pub cursor: Option<String>,
    /// The chunk is complete once this page is written.
    pub done: bool,
}

impl Page {
    /// The chunk's last page: its newest record becomes the cursor, and the chunk is done.
    fn last(records: Vec<Record>) -> Page {
        let cursor = records.last().map(|r| r.last_updated_text.clone());
        Page {
            records,
            cursor,
            done: true,
        }
    }
}

/// Where a chunk's pages come from.
pub(crate) trait PageSource: Send {
    /// The next page to write, fetched as the chunk's page number `page`; `None` when the
    /// chunk has no more.
    fn next_page(
        &mut self,
        page: i32,
    ) -> impl std::future::Future<Output = Result<Option<Page>, ChunkError>> + Send;
}

enum Fetch {
    Keyset(String),
    Tie {
        second: String,
        after: String,
        position: u64,
        /// Ids read so far at this second (a page with none new is no progress).
        seen: HashSet<String>,
    },
}

/// Keyset pages of one chunk's time range.
pub(crate) struct Keyset<'a> {
    engine: &'a Engine,
    run: &'a EntityRun,
    chunk: Chunk,
    page_size: u32,
    next: Option<Fetch>,
    known: Option<KnownCount>,
}

/// QBO's count of a chunk whose range had closed when it was taken, and the distinct records
/// read since the chunk's start. No record can enter a closed range (a change moves a record
/// to the present), so the records read are a subset of those counted: once as many distinct
/// records have been read as were counted, every one has been, and the chunk ends without
/// asking for the page after (which would hold only the re-read of the last second, or
/// nothing when the count is a multiple of the page size).
struct KnownCount {
    count: u64,
    distinct: u64,
    /// The previous page's last second and the Ids read at it: a keyset page starts at that
    /// second again (`>=`), so those records are on it a second time.
    last_second: Option<chrono::DateTime<chrono::Utc>>,
    last_ids: HashSet<String>,
}

impl KnownCount {
    /// Counts a keyset page's records not read before; `true` once every counted record has
    /// been read.
    fn add(&mut self, records: &[Record]) -> bool {
        let repeated = match self.last_second {
            Some(second) => records
                .iter()
                .take_while(|r| r.last_updated == second)
                .filter(|r| self.last_ids.contains(&r.id))
                .count(),
            None => 0,
        };
        self.distinct += (records.len() - repeated) as u64;
        if let Some(last) = records.last() {
            self.last_second = Some(last.last_updated);
            self.last_ids = records
                .iter()
                .rev()
                .take_while(|r| r.last_updated == last.last_updated)
                .map(|r| r.id.clone())
                .collect();
        }
        self.distinct >= self.count
    }
}

impl<'a> Keyset<'a> {
    /// From the stored cursor, else from the chunk's start.
    pub fn new(
        engine: &'a Engine,
        run: &'a EntityRun,
        chunk: Chunk,
        page_size: u32,
        cursor: String,
    ) -> Self {
        Keyset {
            engine,
            run,
            chunk,
            page_size,
            next: Some(Fetch::Keyset(cursor)),
            known: None,
        }
    }

    /// From the chunk's start, knowing QBO's count of its range taken after the range had
    /// closed (see [`KnownCount`]): the read ends as soon as that many distinct records have
    /// been read.
    pub fn from_start_counted(
        engine: &'a Engine,
        run: &'a EntityRun,
        chunk: Chunk,
        page_size: u32,
        count: u64,
    ) -> Self {
        let mut source = Self::new(
            engine,
            run,
            chunk,
            page_size,
            crate::window::qbo_literal(chunk.start),
        );
        source.known = Some(KnownCount {
            count,
            distinct: 0,
            last_second: None,
            last_ids: HashSet::new(),
        });
        source
    }
}

impl PageSource for Keyset<'_> {
    async fn next_page(&mut self, page: i32) -> Result<Option<Page>, ChunkError> {
        let (run, chunk, page_size) = (self.run, &self.chunk, self.page_size);
        let bad_page = |source: PageError| ChunkError::BadPage {
            entity: run.entity,
            page,
            chunk_start: chunk.start_rfc3339(),
            source,
        };
        // A page of one second is not written as such: that second is read by offset next.
        loop {
            let Some(plan) = self.next.take() else {
                return Ok(None);
            };
            let query = match &plan {
                Fetch::Keyset(cursor) => {
                    extract::keyset_query(run.entity, chunk, cursor, page_size)
                }
                Fetch::Tie {
                    second, position, ..
                } => extract::tie_query(run.entity, second, *position, page_size),
            };
            let records = self.engine.fetch_query(run, query, chunk, page).await?;
            let (page, following) = match plan {
                Fetch::Keyset(cursor) => match extract::next_step(
                    &records,
                    page_size,
                    extract::cursor_time(&cursor).map_err(bad_page)?,
                )
                .map_err(bad_page)?
                {
                    // Every record QBO counted in the closed range is read: no page after.
                    PageStep::Next(_) if self.known.as_mut().is_some_and(|k| k.add(&records)) => {
                        self.engine.events.emit(events::ChunkCountReached {
                            run: run.run.clone(),
                            entity: run.entity,
                            chunk_start: chunk.start,
                            records: self.known.as_ref().map_or(0, |k| k.count),
                        });
                        (Some(Page::last(records)), None)
                    }
                    PageStep::Done => (Some(Page::last(records)), None),
                    PageStep::Next(cursor) => (
                        Some(Page {
                            records,
                            cursor: Some(cursor.clone()),
                            done: false,
                        }),
                        Some(Fetch::Keyset(cursor)),
                    ),
                    PageStep::TieSecond { second, after } => {
                        // A second read by offset is not tracked: the read ends on its own.
                        self.known = None;
                        self.engine.events.emit(events::TieSecond {
                            run: run.run.clone(),
                            entity: run.entity,
                            second: second.clone(),
                        });
                        (
                            None,
                            Some(Fetch::Tie {
                                second,
                                after,
                                position: 1,
                                seen: Default::default(),
                            }),
                        )
                    }
                },
                Fetch::Tie {
                    second,
                    after,
                    position,
                    mut seen,
                } => {
                    let full = extract::tie_page_full(
                        &records,
                        page_size,
                        extract::cursor_time(&second).map_err(bad_page)?,
                        position,
                        &mut seen,
                    )
                    .map_err(bad_page)?;
                    let following = if full {
                        Fetch::Tie {
                            second,
                            after,
                            position: position + u64::from(page_size),
                            seen,
                        }
                    } else {
                        Fetch::Keyset(after)
                    };
                    (
                        Some(Page {
                            records,
                            cursor: None,
                            done: false,
                        }),
                        Some(following),
                    )
                }
            };
            self.next = following;
            if page.is_some() {
                return Ok(page);
            }
        }
    }
}

/// Offset pages of everything an entity holds. The last page completes the chunk only when
/// the distinct records read equal QBO's count; otherwise the entity is counted and read
/// again, up to [`WHOLE_READ_ATTEMPTS`] times. Re-writing pages read before is a no-op
/// (newer wins).
pub(crate) struct Whole<'a> {
    engine: &'a Engine,
    run: &'a EntityRun,
    chunk: Chunk,
    window: Window,
    page_size: u32,
    expected: Option<u64>,
    attempt: u32,
    seen: HashSet<String>,
    position: u64,
    /// The last page of an attempt that did not add up was handed out: count and start over.
    again: bool,
    finished: bool,
}

impl<'a> Whole<'a> {
    pub fn new(
        engine: &'a Engine,
        run: &'a EntityRun,
        chunk: Chunk,
        window: Window,
        page_size: u32,
        expected: Option<u64>,
    ) -> Self {
        Whole {
            engine,
            run,
            chunk,
            window,
            page_size,
            expected,
            attempt: 1,
            seen: HashSet::new(),
            position: 1,
            again: false,
            finished: false,
        }
    }
}

impl PageSource for Whole<'_> {
    async fn next_page(&mut self, page: i32) -> Result<Option<Page>, ChunkError> {
        let (run, entity, page_size) = (self.run, self.run.entity, self.page_size);
        if self.finished {
            return Ok(None);
        }
        if self.again {
            if self.attempt >= WHOLE_READ_ATTEMPTS {
                return Err(ChunkError::Incomplete {
                    entity,
                    read: self.seen.len() as u64,
                    expected: self.expected.unwrap_or_default(),
                    attempts: WHOLE_READ_ATTEMPTS,
                });
            }
            self.again = false;
            self.attempt += 1;
            self.expected = self.engine.count(run, self.window).await?;
            self.seen.clear();
            self.position = 1;
        }
        let bad_page = |source: PageError| ChunkError::BadPage {
            entity,
            page,
            chunk_start: self.chunk.start_rfc3339(),
            source,
        };
        let query = extract::whole_query(entity, self.position, page_size);
        let records = self
            .engine
            .fetch_query(run, query, &self.chunk, page)
            .await?;
        let full = !entity.is_singleton() && records.len() >= page_size as usize;
        let before = self.seen.len();
        self.seen.extend(records.iter().map(|r| r.id.clone()));
        if full && self.seen.len() == before {
            return Err(bad_page(PageError::NoProgress(format!(
                "the page at position {} repeats records already read",
                self.position
            ))));
        }
        if full && self.position.saturating_add(u64::from(page_size)) > MAX_WHOLE_RECORDS {
            return Err(bad_page(PageError::NoProgress(format!(
                "more than {MAX_WHOLE_RECORDS} records in an entity read whole"
            ))));
        }
        if full {
            self.position += u64::from(page_size);
            return Ok(Some(Page {
                records,
                cursor: None,
                done: false,
            }));
        }
        let read = self.seen.len() as u64;
        let proved = self.expected.is_none_or(|n| n == read);
        if proved {
            if self.expected.is_none() && !entity.is_singleton() {
                self.engine.events.emit(events::WholeReadUnproved {
                    run: run.run.clone(),
                    entity,
                    records: read,
                });
            }
            self.finished = true;
        } else {
            self.engine.events.emit(events::WholeReadMismatch {
                run: run.run.clone(),
                entity,
                read,
                expected: self.expected,
                attempt: self.attempt,
                retrying: self.attempt < WHOLE_READ_ATTEMPTS,
            });
            self.again = true;
        }
        Ok(Some(Page {
            records,
            cursor: None,
            done: proved,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn record(id: &str, second: u32) -> Record {
        let at = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, second).unwrap();
        Record {
            id: id.into(),
            payload: serde_json::value::RawValue::from_string("{}".into()).unwrap(),
            last_updated_text: at.to_rfc3339(),
            last_updated: at,
            sync_token: 0,
        }
    }

    fn known(count: u64) -> KnownCount {
        KnownCount {
            count,
            distinct: 0,
            last_second: None,
            last_ids: HashSet::new(),
        }
    }

    #[test]
    fn a_known_count_ignores_the_records_a_page_reads_again_at_its_first_second() {
        let mut k = known(7);
        // Page 1 ends with two records at second 3; page 2 starts at second 3 again.
        assert!(!k.add(&[record("1", 1), record("2", 3), record("3", 3)]));
        assert_eq!(k.distinct, 3);
        assert!(!k.add(&[
            record("2", 3),
            record("3", 3),
            record("4", 3),
            record("5", 4)
        ]));
        assert_eq!(
            k.distinct, 5,
            "2 and 3 were read before; 4 is new at the same second"
        );
        assert!(!k.add(&[record("5", 4), record("6", 5)]));
        assert_eq!(k.distinct, 6);
        assert!(k.add(&[record("6", 5), record("7", 6)]), "the seventh of 7");
    }

    #[test]
    fn a_known_count_is_not_reached_while_records_are_missing() {
        // Counted 3, but one record left the range (edited) before it was read: the read
        // never reaches the count and ends on its own, on a short page.
        let mut k = known(3);
        assert!(!k.add(&[record("1", 1), record("2", 2)]));
        assert!(!k.add(&[record("2", 2)]));
        assert_eq!(k.distinct, 2);
    }
}
