//! Hydrated aggregates kept between commands, so the next command on a stream
//! skips instantiation and replay. Bounded twice: by count, and by the bytes
//! of guest linear memory the instances hold (a big guest, say one built from
//! JavaScript, holds megabytes per instance). The least recently used
//! instances are dropped until both bounds hold (their streams are simply
//! hydrated again, from their latest snapshot, the next time they are used).
//!
//! Entries are taken out while a command (or a queue worker) works on them (a
//! wasmtime store has one user at a time) and put back when it is done. When
//! two instances of one stream come back, the one that has seen more of the
//! stream stays.

use eshost_store::StreamId;
use eshost_wasm::Hydrated;
use lru::LruCache;
use std::num::NonZeroUsize;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

/// Instances kept when no capacity is given.
pub const DEFAULT_CAPACITY: usize = 10_000;

/// Guest memory the cached instances may hold when no bound is given: 2 GiB.
pub const DEFAULT_MEMORY_BYTES: usize = 2 << 30;

pub struct AggregateCache {
    entries: Mutex<Entries>,
    memory_limit: usize,
}

struct Entries {
    lru: LruCache<StreamId, (Hydrated, usize)>,
    /// The sum of the entries' memory bytes, as measured when each was put.
    bytes: usize,
    /// When each stream was last erased, for the most recent ones.
    erased: LruCache<StreamId, Instant>,
}

/// Erased streams remembered: a state held out of the cache across more
/// erasures than this may come back.
const ERASED_STREAMS: usize = 16_384;

impl Entries {
    fn is_erased_since(&self, stream: &StreamId, since: Instant) -> bool {
        self.erased
            .peek(stream)
            .is_some_and(|erased| *erased >= since)
    }
}

impl Default for AggregateCache {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY, DEFAULT_MEMORY_BYTES)
    }
}

impl AggregateCache {
    /// A cache of at most `capacity` instances (at least one) holding at
    /// most `memory_bytes` of guest memory in all. An instance bigger than
    /// the whole bound is not kept.
    pub fn new(capacity: usize, memory_bytes: usize) -> Self {
        let capacity = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        Self {
            entries: Mutex::new(Entries {
                lru: LruCache::new(capacity),
                bytes: 0,
                erased: LruCache::new(
                    NonZeroUsize::new(ERASED_STREAMS).unwrap_or(NonZeroUsize::MIN),
                ),
            }),
            memory_limit: memory_bytes,
        }
    }

    pub fn take(&self, stream: &StreamId) -> Option<Hydrated> {
        let mut entries = self.lock();
        let (aggregate, bytes) = entries.lru.pop(stream)?;
        entries.bytes -= bytes;
        Some(aggregate)
    }

    pub fn put(&self, stream: StreamId, aggregate: Hydrated) {
        let bytes = aggregate.memory_bytes();
        if bytes > self.memory_limit {
            return;
        }
        // Dropped outside the lock: freeing a guest's memory takes a while.
        let mut evicted = Vec::new();
        {
            let mut entries = self.lock();
            if entries.is_erased_since(&stream, aggregate.since) {
                // Dropped after the lock, like the evicted ones.
                drop(entries);
                return;
            }
            if let Some((existing, _)) = entries.lru.peek(&stream)
                && existing.version >= aggregate.version
            {
                return;
            }
            if let Some((_, (old, old_bytes))) = entries.lru.push(stream, (aggregate, bytes)) {
                entries.bytes -= old_bytes;
                evicted.push(old);
            }
            entries.bytes += bytes;
            while entries.bytes > self.memory_limit {
                match entries.lru.pop_lru() {
                    Some((_, (old, old_bytes))) => {
                        entries.bytes -= old_bytes;
                        evicted.push(old);
                    }
                    None => break,
                }
            }
        }
        drop(evicted);
    }

    /// Drops these streams' states: a data subject who appeared in them was
    /// forgotten. A state of one of them made before now is never kept.
    pub fn erase(&self, streams: &[StreamId]) {
        let now = Instant::now();
        let mut dropped = Vec::new();
        {
            let mut entries = self.lock();
            for stream in streams {
                if let Some((old, bytes)) = entries.lru.pop(stream) {
                    entries.bytes -= bytes;
                    dropped.push(old);
                }
                entries.erased.put(stream.clone(), now);
            }
        }
        drop(dropped);
    }

    /// Whether `stream` was erased after `since`.
    pub fn erased_since(&self, stream: &StreamId, since: Instant) -> bool {
        self.lock().is_erased_since(stream, since)
    }

    pub fn len(&self) -> usize {
        self.lock().lru.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of guest memory the cached instances hold.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    fn lock(&self) -> MutexGuard<'_, Entries> {
        // A panic while holding this lock cannot leave the cache half-updated
        // (no operation in it panics between its updates), so poisoning is
        // ignored.
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
