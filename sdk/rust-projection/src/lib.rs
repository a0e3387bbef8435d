//! Write an eshost projection as plain Rust.
//!
//! Implement [`Projection`] (`project`: one recorded event in, changes to the
//! view out, through [`View`]), then call [`export_projection!`] once. The
//! macro does the WIT glue: it exports the `projection-guest` world and reads
//! documents through the host's `view.get`. The logic stays plain Rust and
//! can be unit-tested natively with [`View::over`].
//!
//! ```ignore
//! impl eshost_projection::Projection for Summary { /* NAME, project ... */ }
//! eshost_projection::export_projection!(Summary);
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
    /// JSON text.
    pub metadata: String,
}

impl Event {
    /// The payload parsed as `T`; the error names the event.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, String> {
        serde_json::from_str(&self.payload)
            .map_err(|e| format!("{} {} #{}: {e}", self.aggregate, self.name, self.sequence))
    }

    /// The pseudonym of the data subject this event holds personal data
    /// of, when its guest declares some and the host encrypts it. A view
    /// that derives personal data from the event keeps it findable by this
    /// pseudonym, so that it can scrub it on the subject's [`erasure`](Self::erasure).
    pub fn subject(&self) -> Option<String> {
        let metadata: serde_json::Value = serde_json::from_str(&self.metadata).ok()?;
        Some(
            metadata
                .get("personal")?
                .get("subject")?
                .as_str()?
                .to_owned(),
        )
    }

    /// The erasure of a data subject this event records, if it is one. A
    /// projection receives erasures when it reads every aggregate, or lists
    /// [`ERASURES`] among its `AGGREGATES`.
    pub fn erasure(&self) -> Option<Erasure> {
        if self.aggregate != ERASURES || self.name != "SubjectForgotten" {
            return None;
        }
        serde_json::from_str(&self.payload).ok()
    }
}

/// The aggregate type of the host's erasure events: list it among a
/// projection's `AGGREGATES` to receive them.
pub const ERASURES: &str = "$subjects";

/// A data subject was forgotten: every declared field of theirs reads as
/// `{"$forgotten": subject}` from now on, and the view should forget what
/// it derived of them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Erasure {
    /// The pseudonym that stood for them ([`Event::subject`]).
    pub subject: String,
    /// The streams they appeared in.
    pub streams: Vec<ErasedStream>,
}

/// A stream named in an [`Erasure`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct ErasedStream {
    pub aggregate: String,
    pub id: String,
}

/// One change to the view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Store this JSON text under the key.
    Upsert { key: String, body: String },
    /// Remove the document under the key.
    Delete(String),
}

/// The projection's view as one event sees it: reads go to the changes
/// this event has made so far, then to the documents the host holds.
pub struct View<'a> {
    read: &'a dyn Fn(&str) -> Option<String>,
    changes: Vec<Change>,
}

impl<'a> View<'a> {
    /// A view whose stored documents `read` returns. In a guest the macro
    /// passes the host's `view.get`; in a native test, a map lookup.
    pub fn over(read: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Self {
            read,
            changes: Vec::new(),
        }
    }

    /// The document under `key`, parsed as `T`; `None` if there is none.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, String> {
        let latest = self.changes.iter().rev().find_map(|change| match change {
            Change::Upsert { key: k, body } if k == key => Some(Some(body.clone())),
            Change::Delete(k) if k == key => Some(None),
            _ => None,
        });
        match latest.unwrap_or_else(|| (self.read)(key)) {
            Some(body) => serde_json::from_str(&body)
                .map(Some)
                .map_err(|e| format!("document {key:?}: {e}")),
            None => Ok(None),
        }
    }

    /// Stores `document` (as JSON) under `key`.
    pub fn put(&mut self, key: &str, document: &impl Serialize) {
        self.changes.push(Change::Upsert {
            key: key.to_owned(),
            // Serialising plain data structs to JSON does not fail.
            body: serde_json::to_string(document).unwrap_or_default(),
        });
    }

    /// Removes the document under `key`.
    pub fn delete(&mut self, key: &str) {
        self.changes.push(Change::Delete(key.to_owned()));
    }

    /// The changes made, in order.
    pub fn into_changes(self) -> Vec<Change> {
        self.changes
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

/// Writes a line to the host's log, tagged there with the projection.
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

/// One projection's logic: a read model built from recorded events.
///
/// `project` must depend on nothing but the event and the view: a rebuild
/// projects the same events again and must build the same view.
pub trait Projection: 'static {
    /// The projection's name, and so its view's: unique among the host's
    /// projections.
    const NAME: &'static str;
    /// The version of this logic.
    const VERSION: &'static str;
    /// The aggregate types whose events it receives; empty for all.
    const AGGREGATES: &'static [&'static str];

    /// Records what one event changes in the view. An error stops the
    /// projection at this event, with nothing of it applied.
    fn project(event: &Event, view: &mut View<'_>) -> Result<(), String>;
}

#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "projection-guest",
        pub_export_macro: true,
        export_macro_name: "__export_projection_guest",
        default_bindings_module: "eshost_projection::bindings",
    });
}

#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod glue {
    use super::bindings::eshost::aggregate::view;
    use super::bindings::exports::eshost::aggregate::projection::{
        Change, Document, Guest, Manifest, RecordedEvent,
    };
    use super::{Event, Projection, View};
    use std::marker::PhantomData;

    pub struct Component<P>(PhantomData<P>);

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

    impl<P: Projection> Guest for Component<P> {
        fn describe() -> Manifest {
            Manifest {
                name: P::NAME.into(),
                version: P::VERSION.into(),
                aggregates: P::AGGREGATES.iter().map(|a| a.to_string()).collect(),
            }
        }

        fn project(event: RecordedEvent) -> Result<Vec<Change>, String> {
            install_panic_hook();
            let event = Event {
                position: event.position,
                aggregate: event.aggregate,
                id: event.id,
                sequence: event.sequence,
                name: event.name,
                payload: event.payload,
                metadata: event.metadata,
            };
            let read = |key: &str| view::get(key);
            let mut view = View::over(&read);
            P::project(&event, &mut view)?;
            Ok(view
                .into_changes()
                .into_iter()
                .map(|change| match change {
                    super::Change::Upsert { key, body } => Change::Upsert(Document { key, body }),
                    super::Change::Delete(key) => Change::Delete(key),
                })
                .collect())
        }
    }
}

/// Exports a [`Projection`] implementation as the guest's component.
/// Call it once, in the guest crate's root. Does nothing outside wasm32.
#[macro_export]
macro_rules! export_projection {
    ($projection:ty) => {
        #[cfg(target_arch = "wasm32")]
        type EshostProjectionComponent = $crate::glue::Component<$projection>;
        #[cfg(target_arch = "wasm32")]
        $crate::bindings::__export_projection_guest!(EshostProjectionComponent with_types_in $crate::bindings);
    };
}
