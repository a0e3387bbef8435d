//! Personal data that can be forgotten (decision record 0056). A guest
//! declares, per event, the field that names the data subject and the
//! fields that hold their personal data ([`Declarations`]).
//! [`PersonalStore`] wraps the event store: as it appends, it replaces the
//! subject's id by a random pseudonym and seals the other fields under the
//! subject's own key; as it reads, it opens them again, or gives a
//! tombstone once the subject's key is gone. Keys are wrapped by the
//! operator's master key ([`Keyring`]), which the store never sees, and
//! [`rotate`] moves them to a new one. Snapshots of aggregates that
//! declare personal data are sealed under a key every forget replaces
//! ([`snapshots`]).

mod declare;
mod keys;
pub mod payload;
mod rotate;
pub mod snapshots;
mod store;

pub use declare::{Declarations, PersonalEvent};
pub use keys::{KeyError, Keyring, MasterKey};
pub use rotate::{Rotation, rotate};
pub use store::{KEY_TTL, PersonalStore};
