//! Write an eshost aggregate as plain Rust.
//!
//! Declare the commands and events as serde enums tagged
//! `#[serde(tag = "name", content = "payload")]`, implement [`Aggregate`]
//! (`decide` and `evolve` over those types), then call [`export_aggregate!`]
//! once. The SDK does the rest: it tells the host the command and event names
//! (read from the enums, so there is no list to keep), parses each payload
//! (a bad one is refused as `invalid-payload`, an unknown name as
//! `unknown-command`), writes the events back, exports the `eshost:aggregate`
//! world and holds each hydrated aggregate in guest memory. The rules stay
//! plain Rust and are unit-tested natively; the glue is compiled for wasm32
//! only.
//!
//! ```
//! use eshost_guest::{Aggregate, Refusal};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Default, Serialize, Deserialize)]
//! pub struct Counter { count: u64 }
//!
//! #[derive(Deserialize)]
//! #[serde(tag = "name", content = "payload")]
//! pub enum Command { Increment { by: u64 } }
//!
//! #[derive(Serialize, Deserialize)]
//! #[serde(tag = "name", content = "payload")]
//! pub enum Event { Incremented { by: u64 } }
//!
//! impl Aggregate for Counter {
//!     const NAME: &'static str = "Counter";
//!     const VERSION: &'static str = "0.1.0";
//!     type Command = Command;
//!     type Event = Event;
//!
//!     fn new(_id: String) -> Self { Self::default() }
//!
//!     fn decide(&self, command: Command) -> Result<Vec<Event>, Refusal> {
//!         match command {
//!             Command::Increment { by: 0 } => Err(Refusal::InvalidCommand("by must be at least 1".into())),
//!             Command::Increment { by } => Ok(vec![Event::Incremented { by }]),
//!         }
//!     }
//!
//!     fn evolve(&mut self, event: Event) -> Result<(), String> {
//!         match event {
//!             Event::Incremented { by } => self.count += by,
//!         }
//!         Ok(())
//!     }
//! }
//!
//! eshost_guest::export_aggregate!(Counter);
//! ```
//!
//! A guest that must work on the wire itself (the host's hostile test
//! fixture writes payloads no serde type would) implements
//! [`raw::Aggregate`] and calls [`export_raw_aggregate!`] instead.

pub mod personal;
pub mod raw;
pub mod wire;

pub use personal::{Forgotten, Personal, Subject};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why a command was refused. Nothing is recorded for a refused command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No command of this name.
    UnknownCommand(String),
    /// The payload is not the JSON the command expects.
    InvalidPayload(String),
    /// Well formed, but breaks a rule (e.g. a quantity below 1).
    InvalidCommand(String),
    /// Not allowed in the current state (e.g. creating what already exists).
    PreconditionFailed(String),
}

/// How loud a log line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// Writes a line to the host's log, tagged there with the aggregate. Outside
/// wasm32 (native unit tests) it writes to stderr.
pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    {
        use bindings::eshost::aggregate::host;
        let level = match level {
            Level::Trace => host::Level::Trace,
            Level::Debug => host::Level::Debug,
            Level::Info => host::Level::Info,
            Level::Warn => host::Level::Warn,
            Level::Error => host::Level::Error,
        };
        host::log(level, message);
    }
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("[{level:?}] {message}");
}

/// One aggregate type's domain logic over typed commands and events. The
/// state is serialisable so the host can show it (`eshost state`) and
/// snapshot it.
pub trait Aggregate: Serialize + DeserializeOwned + 'static {
    /// The aggregate type's name, unique among the host's modules.
    const NAME: &'static str;
    /// The version of this logic, recorded with every event.
    const VERSION: &'static str;
    /// The commands `decide` takes: a serde enum tagged
    /// `#[serde(tag = "name", content = "payload")]`. Each variant's name is
    /// a command name, its content the command's JSON payload.
    type Command: DeserializeOwned;
    /// The events `decide` returns and `evolve` applies, tagged the same
    /// way. Keep every variant ever recorded: old streams must still replay.
    type Event: Serialize + DeserializeOwned;

    /// A fresh aggregate with no events applied.
    fn new(id: String) -> Self;

    /// The events a command produces against the current state. Must not
    /// change the state: the host applies the events once they are recorded.
    fn decide(&self, command: Self::Command) -> Result<Vec<Self::Event>, Refusal>;

    /// Applies one recorded event. An error means the stream contradicts the
    /// rules (a corrupt stream); it is never a refusal.
    fn evolve(&mut self, event: Self::Event) -> Result<(), String>;

    /// Event names older versions recorded that no variant of `Event`
    /// reads any more, because [`upcast`](Aggregate::upcast) rewrites them.
    /// The host hands `apply` only names it was told of.
    const OLD_EVENTS: &'static [&'static str] = &[];

    /// Rewrites a recorded event that this version's `Event` cannot read
    /// (a name or shape an older version wrote) into one it can, before it
    /// is parsed: upcasting. `recorded.version` is the version of the guest
    /// that recorded it. `None`, the default, reads it as it is.
    fn upcast(_recorded: &raw::Recorded<'_>) -> Option<raw::Event> {
        None
    }

    /// Sets the id after restoring a snapshot; override if the state keeps one.
    fn set_id(&mut self, _id: String) {}

    /// The state as snapshot bytes. The default is postcard, a compact binary
    /// serde format: restoring a large state from it is several times faster
    /// than from JSON. Postcard does not describe itself, so a state using
    /// `#[serde(flatten)]`, `untagged` or `skip_serializing_if` should
    /// override this pair (with JSON, say). A snapshot that fails to restore
    /// only costs the host a full replay.
    fn to_snapshot(&self) -> Vec<u8> {
        // Serialising plain data into a growable buffer does not fail.
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// The state a [`to_snapshot`](Aggregate::to_snapshot) produced.
    fn from_snapshot(bytes: &[u8]) -> Result<Self, String> {
        postcard::from_bytes(bytes).map_err(|e| e.to_string())
    }
}

#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        // The contract's 0.3.0: `apply` receives each event's sequence
        // number and the version that recorded it (see `Aggregate::upcast`),
        // and the manifest declares personal data (see `personal`).
        path: "wit/v0.3",
        world: "aggregate-guest",
        pub_export_macro: true,
        export_macro_name: "__export_aggregate_guest",
        default_bindings_module: "eshost_guest::bindings",
    });
}

#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod glue {
    use super::Refusal;
    use super::bindings::exports::eshost::aggregate::aggregate::{
        ApplyError, Command, CommandError, Event, Guest, GuestState, Manifest, PersonalEvent,
        RecordedEvent, State,
    };
    use super::raw::{Aggregate, Recorded};
    use std::cell::RefCell;
    use std::marker::PhantomData;

    pub struct Component<A>(PhantomData<A>);

    /// A panic aborts the guest, and the host sees only a trap; so the hook
    /// sends the message to the host's log first, where the host picks it up
    /// to explain the trap.
    fn install_panic_hook() {
        static HOOK: std::sync::Once = std::sync::Once::new();
        HOOK.call_once(|| {
            std::panic::set_hook(Box::new(|info| {
                let message = info.payload_as_str().unwrap_or("(no message)");
                let location = info
                    .location()
                    .map(|l| format!(" at {}:{}", l.file(), l.line()))
                    .unwrap_or_default();
                crate::log(
                    crate::Level::Error,
                    &format!("panicked{location}: {message}"),
                );
            }))
        });
    }

    impl<A: Aggregate> Guest for Component<A> {
        type State = StateResource<A>;

        fn describe() -> Manifest {
            Manifest {
                name: A::NAME.into(),
                version: A::VERSION.into(),
                commands: A::commands().iter().map(|c| c.to_string()).collect(),
                events: A::events().iter().map(|e| e.to_string()).collect(),
                old_events: A::old_events().iter().map(|e| e.to_string()).collect(),
                personal: A::personal()
                    .into_iter()
                    .map(|p| PersonalEvent {
                        event: p.event.into(),
                        subject: p.subject.into(),
                        fields: p.fields.into_iter().map(String::from).collect(),
                    })
                    .collect(),
            }
        }
    }

    /// Resources are handed out by shared reference, hence the `RefCell`.
    pub struct StateResource<A>(RefCell<A>);

    impl<A: Aggregate> GuestState for StateResource<A> {
        fn new(id: String) -> Self {
            install_panic_hook();
            Self(RefCell::new(A::new(id)))
        }

        fn restore(id: String, snapshot: Vec<u8>) -> Result<State, String> {
            install_panic_hook();
            let mut aggregate =
                A::from_snapshot(&snapshot).map_err(|e| format!("bad snapshot: {e}"))?;
            aggregate.set_id(id);
            Ok(State::new(Self(RefCell::new(aggregate))))
        }

        fn apply(&self, events: Vec<RecordedEvent>) -> Result<(), ApplyError> {
            let mut aggregate = self.0.borrow_mut();
            events.iter().try_for_each(|e| {
                let recorded = Recorded {
                    name: &e.name,
                    payload: &e.payload,
                    sequence: e.sequence,
                    version: &e.version,
                };
                aggregate.evolve(&recorded).map_err(|reason| ApplyError {
                    sequence: e.sequence,
                    reason,
                })
            })
        }

        fn handle(&self, command: Command) -> Result<Vec<Event>, CommandError> {
            match self.0.borrow().decide(&command.name, &command.payload) {
                Ok(events) => Ok(events
                    .into_iter()
                    .map(|e| Event {
                        name: e.name,
                        payload: e.payload,
                    })
                    .collect()),
                Err(Refusal::UnknownCommand(m)) => Err(CommandError::UnknownCommand(m)),
                Err(Refusal::InvalidPayload(m)) => Err(CommandError::InvalidPayload(m)),
                Err(Refusal::InvalidCommand(m)) => Err(CommandError::InvalidCommand(m)),
                Err(Refusal::PreconditionFailed(m)) => Err(CommandError::PreconditionFailed(m)),
            }
        }

        fn to_json(&self) -> String {
            self.0.borrow().to_json()
        }

        fn snapshot(&self) -> Vec<u8> {
            self.0.borrow().to_snapshot()
        }
    }
}

/// Exports an [`Aggregate`] implementation as the guest's component.
/// Call it once, in the guest crate's root. Does nothing outside wasm32.
#[macro_export]
macro_rules! export_aggregate {
    ($aggregate:ty) => {
        $crate::export_raw_aggregate!($crate::raw::Typed<$aggregate>);
    };
}

/// Exports a [`raw::Aggregate`] implementation as the guest's component.
#[macro_export]
macro_rules! export_raw_aggregate {
    ($aggregate:ty) => {
        #[cfg(target_arch = "wasm32")]
        type EshostGuestComponent = $crate::glue::Component<$aggregate>;
        #[cfg(target_arch = "wasm32")]
        $crate::bindings::__export_aggregate_guest!(EshostGuestComponent with_types_in $crate::bindings);
    };
}
