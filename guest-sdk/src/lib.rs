//! Write an eshost aggregate as plain Rust.
//!
//! Implement [`Aggregate`] (`decide` and `evolve` over JSON payloads), then
//! call [`export_aggregate!`] once. The macro does the WIT glue: it exports the
//! `eshost:aggregate` world, holds each hydrated aggregate in guest memory and
//! maps [`Refusal`]s to the WIT `command-error`. The rules stay plain Rust and
//! can be unit-tested natively; the glue is compiled for wasm32 only.
//!
//! ```ignore
//! impl eshost_guest::Aggregate for Account { /* NAME, COMMANDS, decide, evolve ... */ }
//! eshost_guest::export_aggregate!(Account);
//! ```

use serde::Serialize;
use serde::de::DeserializeOwned;

/// An event: a name and its JSON payload text.
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

/// Parses a command payload, refusing it with a message naming the command.
pub fn parse<T: DeserializeOwned>(command: &str, payload: &str) -> Result<T, Refusal> {
    serde_json::from_str(payload).map_err(|e| Refusal::InvalidPayload(format!("{command}: {e}")))
}

/// Parses an event payload; the error names the event.
pub fn parse_event<T: DeserializeOwned>(event: &str, payload: &str) -> Result<T, String> {
    serde_json::from_str(payload).map_err(|e| format!("{event}: {e}"))
}

/// One aggregate type's domain logic. The state is serialisable so the host
/// can show it (`eshost state`) and snapshot it.
pub trait Aggregate: Serialize + DeserializeOwned + 'static {
    /// The aggregate type's name, unique among the host's modules.
    const NAME: &'static str;
    /// The version of this logic, recorded with every event.
    const VERSION: &'static str;
    /// Every command `decide` accepts.
    const COMMANDS: &'static [&'static str];
    /// Every event `decide` may return and `evolve` understands.
    const EVENTS: &'static [&'static str];

    /// A fresh aggregate with no events applied.
    fn new(id: String) -> Self;

    /// The events a command produces against the current state. Must not
    /// change the state: the host applies the events once they are recorded.
    fn decide(&self, command: &str, payload: &str) -> Result<Vec<Event>, Refusal>;

    /// Applies one recorded event.
    fn evolve(&mut self, event: &str, payload: &str) -> Result<(), String>;

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
        path: "../wit",
        world: "aggregate-guest",
        pub_export_macro: true,
        export_macro_name: "__export_aggregate_guest",
        default_bindings_module: "eshost_guest::bindings",
    });
}

#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod glue {
    use super::bindings::exports::eshost::aggregate::aggregate::{
        Command, CommandError, Event, Guest, GuestState, Manifest, State,
    };
    use super::{Aggregate, Refusal};
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
                commands: A::COMMANDS.iter().map(|c| c.to_string()).collect(),
                events: A::EVENTS.iter().map(|e| e.to_string()).collect(),
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

        fn apply(&self, events: Vec<Event>) -> Result<(), String> {
            let mut aggregate = self.0.borrow_mut();
            events
                .iter()
                .try_for_each(|e| aggregate.evolve(&e.name, &e.payload))
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
            serde_json::to_string(&*self.0.borrow()).unwrap_or_default()
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
        #[cfg(target_arch = "wasm32")]
        type EshostGuestComponent = $crate::glue::Component<$aggregate>;
        #[cfg(target_arch = "wasm32")]
        $crate::bindings::__export_aggregate_guest!(EshostGuestComponent with_types_in $crate::bindings);
    };
}
