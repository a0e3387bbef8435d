//! What guests declare: per aggregate type and event, the field that names
//! the data subject and the other fields that hold their personal data.
//! The host declares each guest's list when it loads the guest.

pub use eshost_core::PersonalEvent;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

type ByEvent = HashMap<String, Arc<PersonalEvent>>;

/// Every loaded guest's declarations, shared by the host (which declares)
/// and the store (which encrypts). Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Declarations(Arc<RwLock<HashMap<String, ByEvent>>>);

impl Declarations {
    /// Replaces what `aggregate` declares (an upgraded guest may declare
    /// more, or less; events recorded before keep how they were stored).
    pub fn declare(&self, aggregate: &str, events: impl IntoIterator<Item = PersonalEvent>) {
        let events: ByEvent = events
            .into_iter()
            .map(|e| (e.event.clone(), Arc::new(e)))
            .collect();
        let mut all = self.0.write().unwrap_or_else(|p| p.into_inner());
        if events.is_empty() {
            all.remove(aggregate);
        } else {
            all.insert(aggregate.to_owned(), events);
        }
    }

    /// What `aggregate`'s `event` declares, if anything.
    pub fn of(&self, aggregate: &str, event: &str) -> Option<Arc<PersonalEvent>> {
        let all = self.0.read().unwrap_or_else(|p| p.into_inner());
        all.get(aggregate)?.get(event).cloned()
    }

    /// True when `aggregate` declares personal data in any event.
    pub fn declares(&self, aggregate: &str) -> bool {
        let all = self.0.read().unwrap_or_else(|p| p.into_inner());
        all.contains_key(aggregate)
    }

    /// True when no aggregate declares anything.
    pub fn is_empty(&self) -> bool {
        self.0.read().unwrap_or_else(|p| p.into_inner()).is_empty()
    }
}
