//! What guests declare: per aggregate type and event, the field that names
//! the data subject and the other fields that hold their personal data.
//! The host declares each guest's list when it loads the guest.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// One event's personal data: top-level payload fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonalEvent {
    /// The event's name.
    pub event: String,
    /// The field that holds the data subject's id (a string). Personal
    /// data itself: stored as the subject's pseudonym.
    pub subject: String,
    /// The other fields that hold the subject's personal data: stored
    /// encrypted under the subject's key.
    pub fields: Vec<String>,
}

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

    /// True when no aggregate declares anything.
    pub fn is_empty(&self) -> bool {
        self.0.read().unwrap_or_else(|p| p.into_inner()).is_empty()
    }
}
