//! Write an eshost reactor as plain Rust.
//!
//! A reactor answers recorded events with actions the host performs, each
//! exactly once: send a command, schedule one for later under a key, cancel
//! a scheduled one, deliver a message to a named sink. The guest computes;
//! the host acts.
//!
//! Declare the events it reads as a serde enum tagged
//! `#[serde(tag = "name", content = "payload")]`, as an aggregate declares
//! its own; the commands it sends as serde enums tagged the same way. Then
//! implement [`Reactor`] and call [`export_reactor!`] once. The logic stays
//! plain Rust and is unit-tested natively: [`Reactor::react`] takes an
//! [`Event`] and fills [`Actions`].
//!
//! ```
//! use eshost_reactor::{Actions, Event, Reactor, Subscription};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Deserialize)]
//! #[serde(tag = "name", content = "payload")]
//! pub enum Seen { AccountOpened { owner: String } }
//!
//! #[derive(Serialize)]
//! #[serde(tag = "name", content = "payload")]
//! pub enum Welcome { SendWelcome { owner: String } }
//!
//! pub struct Greeter;
//!
//! impl Reactor for Greeter {
//!     const NAME: &'static str = "greeter";
//!     const VERSION: &'static str = "0.1.0";
//!     const SUBSCRIPTIONS: &'static [Subscription] =
//!         &[Subscription { aggregate: "Account", events: &["AccountOpened"] }];
//!     type Event = Seen;
//!
//!     fn react(event: &Event, seen: Seen, actions: &mut Actions) -> Result<(), String> {
//!         match seen {
//!             Seen::AccountOpened { owner } => {
//!                 actions.send("Mailbox", &event.id, &Welcome::SendWelcome { owner })?;
//!             }
//!         }
//!         Ok(())
//!     }
//! }
//!
//! eshost_reactor::export_reactor!(Greeter);
//! ```

use serde::Serialize;
use serde::de::DeserializeOwned;

/// One event as the store recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Global position: increasing across all streams, sparse.
    pub position: i64,
    pub aggregate: String,
    pub id: String,
    /// 1-based, gapless within the stream.
    pub sequence: u64,
    pub name: String,
    /// JSON text.
    pub payload: String,
    /// JSON text: `commandId`, `correlationId`, `causationId`, ...
    pub metadata: String,
    /// When it was recorded, in milliseconds since the Unix epoch (UTC).
    pub recorded_at_ms: i64,
}

impl Event {
    /// The event as `E`, a serde enum tagged
    /// `#[serde(tag = "name", content = "payload")]`; the error names it.
    pub fn typed<E: DeserializeOwned>(&self) -> Result<E, String> {
        let payload: serde_json::Value = serde_json::from_str(&self.payload)
            .map_err(|e| format!("{} {} #{}: {e}", self.aggregate, self.name, self.sequence))?;
        serde_json::from_value(serde_json::json!({ "name": self.name, "payload": payload }))
            .map_err(|e| format!("{} {} #{}: {e}", self.aggregate, self.name, self.sequence))
    }

    /// The correlation id the command that recorded it carried.
    pub fn correlation_id(&self) -> Option<String> {
        let metadata: serde_json::Value = serde_json::from_str(&self.metadata).ok()?;
        Some(metadata.get("correlationId")?.as_str()?.to_owned())
    }
}

/// Events of one aggregate type a reactor receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subscription {
    pub aggregate: &'static str,
    /// Event names; empty for every event of the aggregate.
    pub events: &'static [&'static str],
}

/// A command for an aggregate, as the host sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub aggregate: String,
    pub id: String,
    pub name: String,
    /// JSON text.
    pub payload: String,
    /// Carried into the metadata of the events the command records; none:
    /// the reacted-to event's own.
    pub correlation_id: Option<String>,
}

/// When a scheduled command is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// At this time, in milliseconds since the Unix epoch (UTC).
    At(i64),
    /// This many milliseconds after the event was recorded.
    After(u64),
}

/// One thing the host is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Send(Command),
    Schedule {
        key: String,
        due: Due,
        command: Command,
    },
    Cancel(String),
    Deliver {
        sink: String,
        /// JSON text.
        body: String,
    },
}

/// The actions one event calls for, in the order the host performs them.
#[derive(Debug, Default)]
pub struct Actions {
    actions: Vec<Action>,
    correlation_id: Option<String>,
}

impl Actions {
    pub fn new() -> Self {
        Self::default()
    }

    /// The correlation id the commands added from now on carry.
    pub fn correlate(&mut self, correlation_id: impl Into<String>) -> &mut Self {
        self.correlation_id = Some(correlation_id.into());
        self
    }

    /// Sends `command`, a serde enum tagged
    /// `#[serde(tag = "name", content = "payload")]`, to the aggregate
    /// `aggregate` `id`.
    pub fn send<C: Serialize>(
        &mut self,
        aggregate: &str,
        id: &str,
        command: &C,
    ) -> Result<&mut Self, String> {
        let command = self.command(aggregate, id, command)?;
        self.actions.push(Action::Send(command));
        Ok(self)
    }

    /// Sends `command` to `aggregate` `id` when `due`, unless the timer
    /// under `key` is cancelled first. Scheduling a key again replaces its
    /// timer.
    pub fn schedule<C: Serialize>(
        &mut self,
        key: &str,
        due: Due,
        aggregate: &str,
        id: &str,
        command: &C,
    ) -> Result<&mut Self, String> {
        let command = self.command(aggregate, id, command)?;
        self.actions.push(Action::Schedule {
            key: key.to_owned(),
            due,
            command,
        });
        Ok(self)
    }

    /// Cancels the timer under `key`, if there is one.
    pub fn cancel(&mut self, key: &str) -> &mut Self {
        self.actions.push(Action::Cancel(key.to_owned()));
        self
    }

    /// Delivers `body` (as JSON) to the sink named `sink`; the operator
    /// maps it to a URL.
    pub fn deliver(&mut self, sink: &str, body: &impl Serialize) -> Result<&mut Self, String> {
        let body = serde_json::to_string(body).map_err(|e| format!("a delivery to {sink}: {e}"))?;
        self.actions.push(Action::Deliver {
            sink: sink.to_owned(),
            body,
        });
        Ok(self)
    }

    /// The actions added, in order.
    pub fn into_actions(self) -> Vec<Action> {
        self.actions
    }

    fn command<C: Serialize>(
        &self,
        aggregate: &str,
        id: &str,
        command: &C,
    ) -> Result<Command, String> {
        let mut tagged = serde_json::to_value(command).map_err(|e| e.to_string())?;
        let name = tagged
            .get("name")
            .and_then(|n| n.as_str())
            .map(str::to_owned)
            .ok_or("a command must serialize as {\"name\": ..., \"payload\": ...}: tag its enum #[serde(tag = \"name\", content = \"payload\")]")?;
        let payload = match tagged.get_mut("payload").map(serde_json::Value::take) {
            Some(payload) => payload,
            // A unit variant has no payload.
            None => serde_json::json!({}),
        };
        Ok(Command {
            aggregate: aggregate.to_owned(),
            id: id.to_owned(),
            name,
            payload: payload.to_string(),
            correlation_id: self.correlation_id.clone(),
        })
    }
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

/// Writes a line to the host's log, tagged there with the reactor.
/// Outside wasm32 (native unit tests) it writes to stderr.
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

/// One reactor's logic: events in, actions out.
///
/// `react` must depend on nothing but the event: the host may react to an
/// event again after a crash, and performs only what the first reaction
/// asked for, by the ids it derives from the reactor, the event and each
/// action's place in the list.
pub trait Reactor: 'static {
    /// The reactor's name: unique among the host's reactors.
    const NAME: &'static str;
    /// The version of this logic.
    const VERSION: &'static str;
    /// What it receives.
    const SUBSCRIPTIONS: &'static [Subscription];
    /// The outbound sinks it delivers to, by name.
    const SINKS: &'static [&'static str] = &[];
    /// The events it reads: a serde enum tagged
    /// `#[serde(tag = "name", content = "payload")]`.
    type Event: DeserializeOwned;

    /// The actions `event` (read as `typed`) calls for. An error refuses
    /// the event: it is parked with the reason and nothing of it is done.
    fn react(event: &Event, typed: Self::Event, actions: &mut Actions) -> Result<(), String>;
}

/// Reacts as the host does: the event read as the reactor's type, then its
/// actions. For native tests, and the glue.
pub fn react<R: Reactor>(event: &Event) -> Result<Vec<Action>, String> {
    let typed: R::Event = event.typed()?;
    let mut actions = Actions::new();
    R::react(event, typed, &mut actions)?;
    Ok(actions.into_actions())
}

#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "reactor-guest",
        pub_export_macro: true,
        export_macro_name: "__export_reactor_guest",
        default_bindings_module: "eshost_reactor::bindings",
    });
}

#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod glue {
    use super::bindings::exports::eshost::aggregate::reactor::{
        Action, Command, Delivery, Due, Guest, Manifest, RecordedEvent, Schedule, Subscription,
    };
    use super::{Event, Reactor};
    use std::marker::PhantomData;

    pub struct Component<R>(PhantomData<R>);

    /// A panic aborts the guest and the host sees only a trap, so the hook
    /// sends the message to the host's log first, where the host picks it
    /// up to explain the trap.
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

    fn command(command: super::Command) -> Command {
        Command {
            aggregate: command.aggregate,
            id: command.id,
            name: command.name,
            payload: command.payload,
            correlation_id: command.correlation_id,
        }
    }

    impl<R: Reactor> Guest for Component<R> {
        fn describe() -> Manifest {
            Manifest {
                name: R::NAME.into(),
                version: R::VERSION.into(),
                subscriptions: R::SUBSCRIPTIONS
                    .iter()
                    .map(|s| Subscription {
                        aggregate: s.aggregate.into(),
                        events: s.events.iter().map(|e| e.to_string()).collect(),
                    })
                    .collect(),
                sinks: R::SINKS.iter().map(|s| s.to_string()).collect(),
            }
        }

        fn react(event: RecordedEvent) -> Result<Vec<Action>, String> {
            install_panic_hook();
            let event = Event {
                position: event.position,
                aggregate: event.aggregate,
                id: event.id,
                sequence: event.sequence,
                name: event.name,
                payload: event.payload,
                metadata: event.metadata,
                recorded_at_ms: event.recorded_at,
            };
            Ok(super::react::<R>(&event)?
                .into_iter()
                .map(|action| match action {
                    super::Action::Send(c) => Action::Send(command(c)),
                    super::Action::Schedule {
                        key,
                        due,
                        command: c,
                    } => Action::Schedule(Schedule {
                        key,
                        due: match due {
                            super::Due::At(at) => Due::At(at),
                            super::Due::After(after) => Due::After(after),
                        },
                        command: command(c),
                    }),
                    super::Action::Cancel(key) => Action::Cancel(key),
                    super::Action::Deliver { sink, body } => {
                        Action::Deliver(Delivery { sink, body })
                    }
                })
                .collect())
        }
    }
}

/// Exports a [`Reactor`] implementation as the guest's component. Call it
/// once, in the guest crate's root. Does nothing outside wasm32.
#[macro_export]
macro_rules! export_reactor {
    ($reactor:ty) => {
        #[cfg(target_arch = "wasm32")]
        type EshostReactorComponent = $crate::glue::Component<$reactor>;
        #[cfg(target_arch = "wasm32")]
        $crate::bindings::__export_reactor_guest!(EshostReactorComponent with_types_in $crate::bindings);
    };
}
