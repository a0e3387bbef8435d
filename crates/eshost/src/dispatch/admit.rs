//! Stage 1, admission: what can be checked of a command without the guest.
//! The aggregate is loaded and declares the command; the payload is within
//! the component's limit and is JSON the store can hold; the ids are within
//! what every store can key on. An admitted command carries the component
//! it was accepted with (a reload meanwhile does not change it), its
//! metadata and its fingerprint.

use crate::error::{CommandError, Refusal};
use eshost_core::{CommandId, CommandRequest};
use eshost_store::{EventStore, NewCommand, NewEvent, StreamId};
use eshost_wasm::instance::DecidedEvent;
use eshost_wasm::{LoadedComponent, Modules};
use std::sync::{Arc, RwLock};
use tracing::Span;

/// The longest aggregate, command, correlation or causation id accepted, in
/// bytes. Ids are part of unique keys, and PostgreSQL caps a key's size.
pub const MAX_ID_BYTES: usize = 1024;

/// The loaded components, and the checks a command passes before a guest
/// sees it.
pub(super) struct Admission {
    /// Replaced whole on a reload; a command holds the component it was
    /// accepted with.
    modules: RwLock<Arc<Modules>>,
}

/// A command that passed admission, ready to decide.
pub(super) struct Admitted {
    pub component: Arc<LoadedComponent>,
    pub stream: StreamId,
    pub command: String,
    pub payload: String,
    pub command_id: CommandId,
    /// See [`NewCommand::fingerprint`].
    pub fingerprint: String,
    pub correlation_id: String,
    pub causation_id: String,
    /// The span current when the command was submitted, if it belongs to
    /// a sampled trace (else none): the parent of the spans the engine
    /// opens for it (see [`crate::trace`]).
    pub caller: Span,
    /// Its W3C `traceparent`, when it has one.
    pub traceparent: Option<String>,
}

impl Admission {
    pub(super) fn new(modules: Modules) -> Self {
        Self {
            modules: RwLock::new(Arc::new(modules)),
        }
    }

    pub(super) fn modules(&self) -> Arc<Modules> {
        self.modules
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(super) fn replace(&self, modules: Modules) {
        let mut current = self.modules.write().unwrap_or_else(|p| p.into_inner());
        *current = Arc::new(modules);
    }

    /// The component loaded now for `aggregate`.
    pub(super) fn component(&self, aggregate: &str) -> Result<Arc<LoadedComponent>, CommandError> {
        let modules = self.modules();
        modules
            .get(aggregate)
            .cloned()
            .ok_or_else(|| CommandError::UnknownAggregate {
                name: aggregate.to_string(),
                loaded: modules.names().collect::<Vec<_>>().join(", "),
            })
    }

    /// True if a loaded component declares `command` for `aggregate`: only
    /// such names label metrics (what a client typed could grow the label
    /// sets without end).
    pub(super) fn knows(&self, aggregate: &str, command: &str) -> bool {
        self.modules()
            .get(aggregate)
            .is_some_and(|c| c.accepts(command))
    }

    /// Checks what can be checked without the guest, and settles the
    /// metadata, and the fingerprint `store` records the command under.
    pub(super) fn admit(
        &self,
        request: &CommandRequest,
        store: &dyn EventStore,
    ) -> Result<Admitted, CommandError> {
        let component = self.component(&request.aggregate)?;
        if !component.accepts(&request.command) {
            return Err(CommandError::UnknownCommand {
                aggregate: request.aggregate.clone(),
                command: request.command.clone(),
                accepted: component.commands.join(", "),
            });
        }
        let max_payload = component.limits.max_payload_bytes;
        if request.payload.len() > max_payload {
            return Err(CommandError::PayloadTooLarge {
                command: request.command.clone(),
                size: request.payload.len(),
                limit: max_payload,
            });
        }
        if let Err(reason) = eshost_store::storable_json(&request.payload) {
            return Err(CommandError::PayloadNotJson {
                command: request.command.clone(),
                reason,
            });
        }
        check_aggregate_id(&request.id)?;
        check_id("command id", request.command_id.as_str())?;
        for (what, id) in [
            ("correlation id", &request.correlation_id),
            ("causation id", &request.causation_id),
        ] {
            if let Some(id) = id {
                check_id(what, id)?;
            }
        }
        let or_command_id = |id: &Option<String>| {
            id.clone()
                .unwrap_or_else(|| request.command_id.as_str().to_string())
        };
        let current = Span::current();
        let traceparent = crate::trace::traceparent(&current);
        Ok(Admitted {
            caller: match traceparent {
                Some(_) => current,
                None => Span::none(),
            },
            traceparent,
            correlation_id: or_command_id(&request.correlation_id),
            causation_id: or_command_id(&request.causation_id),
            component,
            stream: StreamId::new(&request.aggregate, &request.id),
            command: request.command.clone(),
            payload: request.payload.clone(),
            command_id: request.command_id.clone(),
            fingerprint: store.command_fingerprint(
                &request.aggregate,
                &request.command,
                &request.payload,
            ),
        })
    }
}

impl Admitted {
    /// The command's decided events, ready to append under its id. The
    /// metadata names the component that decided them, and carries the
    /// command's trace when it has one.
    pub(super) fn to_new_command(
        &self,
        decided_by: &LoadedComponent,
        events: &[DecidedEvent],
    ) -> NewCommand {
        let mut metadata = serde_json::json!({
            "commandId": self.command_id.as_str(),
            (eshost_core::event::CORRELATION_ID): self.correlation_id,
            "causationId": self.causation_id,
            "aggregateVersion": decided_by.version,
            "componentDigest": decided_by.digest,
        });
        if let Some(traceparent) = &self.traceparent {
            metadata[eshost_core::event::TRACEPARENT] = traceparent.as_str().into();
        }
        let metadata = metadata.to_string();
        NewCommand {
            command_id: self.command_id.to_string(),
            name: self.command.clone(),
            fingerprint: self.fingerprint.clone(),
            events: events
                .iter()
                .map(|e| NewEvent {
                    name: e.name.clone(),
                    payload: e.payload.clone(),
                    metadata: metadata.clone(),
                    subject: None,
                })
                .collect(),
        }
    }

    /// The guest refused this command.
    pub(super) fn refused(&self, refusal: Refusal) -> CommandError {
        CommandError::Refused {
            aggregate: self.stream.aggregate.clone(),
            id: self.stream.id.clone(),
            command: self.command.clone(),
            refusal,
        }
    }

    /// Conflicts sent this command round `retries` times, the most allowed.
    pub(super) fn exhausted(&self, retries: u32) -> CommandError {
        CommandError::RetriesExhausted {
            aggregate: self.stream.aggregate.clone(),
            id: self.stream.id.clone(),
            retries,
        }
    }
}

/// An aggregate id: an id ([`check_id`]) that a URL path can also carry,
/// so it is served over HTTP as it is here. No URL parser keeps a path
/// segment of `.` or `..`, escaped or not.
pub(super) fn check_aggregate_id(id: &str) -> Result<(), CommandError> {
    if matches!(id, "." | "..") {
        return Err(CommandError::InvalidId {
            what: "aggregate id",
            reason: "must not be . or .. (a URL path cannot carry it)".into(),
        });
    }
    check_id("aggregate id", id)
}

/// Ids are stored exactly as given, within limits every store can key on.
fn check_id(what: &'static str, id: &str) -> Result<(), CommandError> {
    let reason = if id.is_empty() {
        "must not be empty".to_string()
    } else if id.len() > MAX_ID_BYTES {
        format!("is {} bytes; the limit is {MAX_ID_BYTES}", id.len())
    } else if id.contains('\0') {
        "must not contain a NUL character".to_string()
    } else {
        return Ok(());
    };
    Err(CommandError::InvalidId { what, reason })
}
