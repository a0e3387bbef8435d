//! Hydrated aggregates kept between commands, so the next command on a stream
//! skips instantiation and replay.
//!
//! Entries are taken out while a command works on them (a wasmtime store has
//! one user at a time) and put back when it is done. A command that finds no
//! entry hydrates its own instance from the store; when two come back, the one
//! that has seen more of the stream stays.

use crate::runtime::Hydrated;
use crate::store::StreamId;
use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Default)]
pub struct AggregateCache {
    entries: Mutex<HashMap<StreamId, Hydrated>>,
}

impl AggregateCache {
    pub fn take(&self, stream: &StreamId) -> Option<Hydrated> {
        self.lock().remove(stream)
    }

    pub fn put(&self, stream: StreamId, aggregate: Hydrated) {
        let mut entries = self.lock();
        match entries.get(&stream) {
            Some(existing) if existing.version >= aggregate.version => {}
            _ => {
                entries.insert(stream, aggregate);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<StreamId, Hydrated>> {
        // A panic while holding this lock cannot leave the map half-updated
        // (each operation is a single insert or remove), so poisoning is ignored.
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
