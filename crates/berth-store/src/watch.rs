//! Watches: replay from a past revision, then live changes, one revision per batch.
//!
//! Invariant: a watcher delivers every revision that touched its prefix, from its start
//! revision on, in order, each revision whole and exactly once. A watcher that falls more than
//! `StoreOptions::watch_buffer` revisions behind is cut off with `WatcherTooSlow` instead of
//! slowing the writer or other watchers: the writer only ever `try_send`s.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::mpsc;

use crate::engine::Engine;
use crate::{Event, StoreError};

/// Every change of one revision under a watcher's prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchBatch {
    pub revision: u64,
    pub events: Vec<Event>,
}

pub(crate) struct Slot {
    prefix: Vec<u8>,
    tx: mpsc::Sender<Arc<WatchBatch>>,
    cut: Arc<AtomicBool>,
}

#[derive(Default)]
pub(crate) struct Hub {
    pub(crate) slots: HashMap<u64, Slot>,
    next_id: u64,
}

impl Hub {
    /// Hands a committed revision to every watcher whose prefix it touches.
    pub(crate) fn publish(&mut self, batch: &Arc<WatchBatch>) {
        self.slots.retain(|_, s| {
            if !batch.events.iter().any(|e| e.kv.key.starts_with(&s.prefix)) {
                return true;
            }
            match s.tx.try_send(batch.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    s.cut.store(true, Ordering::Release);
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
    }
}

/// A stream of revisions under one prefix.
pub struct Watcher {
    engine: Arc<Engine>,
    id: u64,
    prefix: Vec<u8>,
    /// The next revision this watcher may deliver.
    next_rev: u64,
    /// Replay from the snapshot covers revisions up to here; live batches cover the rest.
    replay_until: u64,
    snapshot: Option<redb::ReadTransaction>,
    rx: mpsc::Receiver<Arc<WatchBatch>>,
    cut: Arc<AtomicBool>,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher")
            .field("id", &self.id)
            .field("next_rev", &self.next_rev)
            .finish()
    }
}

impl Watcher {
    pub(crate) fn start(
        engine: Arc<Engine>,
        prefix: Vec<u8>,
        start: u64,
    ) -> Result<Watcher, StoreError> {
        let (tx, rx) = mpsc::channel(engine.options.watch_buffer.max(1));
        let cut = Arc::new(AtomicBool::new(false));
        let mut hub = engine.hub.lock().map_err(|_| StoreError::Closed)?;
        let published = engine.published_revision();
        let compacted = engine.compacted_revision();
        if start != 0 && start < compacted {
            return Err(StoreError::Compacted {
                requested: start,
                compacted,
            });
        }
        let next_rev = if start == 0 { published + 1 } else { start };
        // Taken under the hub lock: the snapshot holds every revision up to `published`.
        let snapshot = if next_rev <= published {
            Some(engine.snapshot()?)
        } else {
            None
        };
        let id = hub.next_id;
        hub.next_id += 1;
        hub.slots.insert(
            id,
            Slot {
                prefix: prefix.clone(),
                tx,
                cut: cut.clone(),
            },
        );
        drop(hub);
        Ok(Watcher {
            engine,
            id,
            prefix,
            next_rev,
            replay_until: published,
            snapshot,
            rx,
            cut,
        })
    }

    /// The next revision with changes under the prefix. `Ok(None)` when the store closed.
    /// Live batches are shared between the watchers they concern (no copy per watcher).
    pub async fn next(&mut self) -> Result<Option<Arc<WatchBatch>>, StoreError> {
        while let Some(snap) = &self.snapshot {
            if self.next_rev > self.replay_until {
                self.snapshot = None;
                break;
            }
            let rev = self.next_rev;
            let events = self.engine.read_revision(snap, rev, &self.prefix)?;
            self.next_rev += 1;
            if !events.is_empty() {
                return Ok(Some(Arc::new(WatchBatch {
                    revision: rev,
                    events,
                })));
            }
        }
        loop {
            match self.rx.recv().await {
                Some(b) => {
                    if b.revision < self.next_rev {
                        continue;
                    }
                    self.next_rev = b.revision + 1;
                    let matching = b
                        .events
                        .iter()
                        .filter(|e| e.kv.key.starts_with(&self.prefix))
                        .count();
                    if matching == b.events.len() {
                        return Ok(Some(b));
                    }
                    if matching > 0 {
                        let events: Vec<Event> = b
                            .events
                            .iter()
                            .filter(|e| e.kv.key.starts_with(&self.prefix))
                            .cloned()
                            .collect();
                        return Ok(Some(Arc::new(WatchBatch {
                            revision: b.revision,
                            events,
                        })));
                    }
                }
                None if self.cut.load(Ordering::Acquire) => {
                    return Err(StoreError::WatcherTooSlow(self.engine.options.watch_buffer));
                }
                None => return Ok(None),
            }
        }
    }

    /// A revision up to which everything has been delivered, when nothing is waiting: what a
    /// bookmark may report. `None` while there is still something to deliver.
    pub fn progress(&self) -> Option<u64> {
        if self.snapshot.is_some() {
            return None;
        }
        // Read the published revision first: every batch at or below it was queued before it
        // was published, so an empty queue means all of them were delivered.
        let published = self.engine.published_revision();
        self.rx
            .is_empty()
            .then_some(published.max(self.next_rev.saturating_sub(1)))
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if let Ok(mut hub) = self.engine.hub.lock() {
            hub.slots.remove(&self.id);
        }
    }
}
