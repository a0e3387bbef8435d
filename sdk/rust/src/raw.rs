//! The wire level: an aggregate that reads command and event names and JSON
//! payload texts itself. Every guest is exported through this trait; a typed
//! [`crate::Aggregate`] reaches it through [`Typed`], which parses and writes
//! the payloads. Implement it directly only to write what no serde type
//! would (the host's hostile test fixture does).

use crate::{Refusal, wire};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// An event on the wire: a name and its JSON payload text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub name: String,
    pub payload: String,
}

impl Event {
    /// An event whose payload is `payload` serialised as JSON.
    pub fn new(name: &str, payload: &impl Serialize) -> Self {
        Self {
            name: name.to_owned(),
            // Serialising plain data structs to JSON does not fail.
            payload: serde_json::to_string(payload).unwrap_or_default(),
        }
    }
}

/// An event as recorded, as `evolve` reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorded<'a> {
    pub name: &'a str,
    /// JSON text, exactly as recorded.
    pub payload: &'a str,
    /// Its place in the stream, from 1.
    pub sequence: u64,
    /// The version of the guest that recorded it (empty if unknown).
    pub version: &'a str,
}

/// One aggregate type's domain logic over names and payload texts.
pub trait Aggregate: Serialize + DeserializeOwned + 'static {
    const NAME: &'static str;
    const VERSION: &'static str;

    /// Every command `decide` accepts.
    fn commands() -> &'static [&'static str];
    /// Every event `decide` may return and `evolve` understands.
    fn events() -> &'static [&'static str];
    /// Old event names `evolve` still reads but `decide` never returns.
    fn old_events() -> &'static [&'static str] {
        &[]
    }
    /// The events that hold personal data, and where.
    fn personal() -> Vec<crate::personal::Declaration> {
        Vec::new()
    }

    fn new(id: String) -> Self;
    fn decide(&self, command: &str, payload: &str) -> Result<Vec<Event>, Refusal>;
    fn evolve(&mut self, event: &Recorded<'_>) -> Result<(), String>;
    fn set_id(&mut self, _id: String) {}

    /// The state as JSON, for `eshost state`.
    fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// As [`crate::Aggregate::to_snapshot`].
    fn to_snapshot(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// As [`crate::Aggregate::from_snapshot`].
    fn from_snapshot(bytes: &[u8]) -> Result<Self, String> {
        postcard::from_bytes(bytes).map_err(|e| e.to_string())
    }
}

/// A typed aggregate seen at the wire level.
#[derive(Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Typed<A>(pub A);

/// The enum's names; a type that is not tagged `name`/`payload` is a
/// programming error the guest's first `describe` reports (as a panic, which
/// the host shows when it refuses to load the component).
fn names_of<T: DeserializeOwned>(kind: &str) -> &'static [&'static str] {
    wire::names::<T>().unwrap_or_else(|| {
        panic!(
            "{kind} type {} must be an enum tagged #[serde(tag = \"name\", content = \"payload\")] with no #[serde(other)] variant",
            std::any::type_name::<T>()
        )
    })
}

impl<A: crate::Aggregate> Aggregate for Typed<A> {
    const NAME: &'static str = A::NAME;
    const VERSION: &'static str = A::VERSION;

    fn commands() -> &'static [&'static str] {
        names_of::<A::Command>("the command")
    }

    fn events() -> &'static [&'static str] {
        names_of::<A::Event>("the event")
    }

    fn old_events() -> &'static [&'static str] {
        A::OLD_EVENTS
    }

    fn personal() -> Vec<crate::personal::Declaration> {
        crate::personal::declarations::<A::Event>(Self::events())
    }

    fn new(id: String) -> Self {
        Self(A::new(id))
    }

    fn decide(&self, command: &str, payload: &str) -> Result<Vec<Event>, Refusal> {
        let command = wire::from_pair(command, payload).map_err(|e| match e {
            wire::WireError::UnknownName { name, .. } => {
                Refusal::UnknownCommand(format!("{} has no command {name:?}", A::NAME))
            }
            wire::WireError::Invalid(message) => {
                Refusal::InvalidPayload(format!("{command}: {message}"))
            }
        })?;
        let events = self.0.decide(command)?;
        Ok(events
            .iter()
            .map(|event| {
                // The event type's own Serialize failing (a map with
                // non-string keys, say) is a bug in the guest: it traps, and
                // the host reports a guest fault with this message.
                wire::to_pair(event).unwrap_or_else(|e| panic!("cannot write an event: {e}"))
            })
            .collect())
    }

    fn evolve(&mut self, recorded: &Recorded<'_>) -> Result<(), String> {
        let upcast = A::upcast(recorded);
        let (name, payload) = match &upcast {
            Some(event) => (event.name.as_str(), event.payload.as_str()),
            None => (recorded.name, recorded.payload),
        };
        let typed = wire::from_pair(name, payload).map_err(|e| match e {
            wire::WireError::UnknownName { name, .. } => {
                format!("{} has no event {name:?}", A::NAME)
            }
            wire::WireError::Invalid(message) => format!("{name}: {message}"),
        })?;
        self.0.evolve(typed)
    }

    fn set_id(&mut self, id: String) {
        self.0.set_id(id);
    }

    fn to_snapshot(&self) -> Vec<u8> {
        self.0.to_snapshot()
    }

    fn from_snapshot(bytes: &[u8]) -> Result<Self, String> {
        A::from_snapshot(bytes).map(Self)
    }
}
