//! Hydrated aggregates kept between commands, so the next command on a stream
//! skips instantiation and replay. Bounded: the least recently used instance
//! is dropped when the cache is full (its stream is simply hydrated again,
//! from its latest snapshot, the next time it is used).
//!
//! Entries are taken out while a command (or a queue worker) works on them (a
//! wasmtime store has one user at a time) and put back when it is done. When
//! two instances of one stream come back, the one that has seen more of the
//! stream stays.

use crate::runtime::Hydrated;
use crate::store::StreamId;
use lru::LruCache;
use std::num::NonZeroUsize;
use std::sync::{Mutex, MutexGuard};

/// Instances kept when no capacity is given.
pub const DEFAULT_CAPACITY: usize = 10_000;

pub struct AggregateCache {
    entries: Mutex<LruCache<StreamId, Hydrated>>,
}

impl Default for AggregateCache {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY)
    }
}

impl AggregateCache {
    /// A cache of at most `capacity` instances (at least one).
    pub fn new(capacity: usize) -> Self {
        let capacity = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        Self {
            entries: Mutex::new(LruCache::new(capacity)),
        }
    }

    pub fn take(&self, stream: &StreamId) -> Option<Hydrated> {
        self.lock().pop(stream)
    }

    pub fn put(&self, stream: StreamId, aggregate: Hydrated) {
        let mut entries = self.lock();
        match entries.peek(&stream) {
            Some(existing) if existing.version >= aggregate.version => {}
            _ => {
                entries.put(stream, aggregate);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, LruCache<StreamId, Hydrated>> {
        // A panic while holding this lock cannot leave the cache half-updated
        // (each operation is a single insert or remove), so poisoning is ignored.
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
