//! One hydrated aggregate: the guest-held `state` resource, in an instance
//! of its component that it may share with other aggregates (see
//! [`shared_instance`](super::shared_instance)), plus the stream version it
//! reflects.
//!
//! After a trap the aggregate's instance is lost: methods fail with the
//! trap's [`GuestError`], and every later call on any aggregate of that
//! instance fails with [`GuestError::InstanceLost`]. Callers drop such an
//! aggregate and rebuild it from the store.

use super::LoadedComponent;
use super::contract::{ApplyEvent, Guest};
use super::sandbox;
use super::shared_instance::SharedInstance;
use crate::error::{ApplyFailure, GuestError, Refusal};
use eshost_core::{RecordedEvent, Snapshot};
use std::sync::Arc;
use wasmtime::component::ResourceAny;

/// The most event bytes (names and payloads) one `apply` call lowers into
/// guest memory when replaying a stream: far below the default 64 MiB guest
/// memory limit, and large enough that a call's fixed cost vanishes.
pub const APPLY_CHUNK_BYTES: usize = 1 << 20;

/// Times a new state is placed again when the instance it was placed in
/// is lost before the state could be made (another aggregate trapped).
const PLACEMENT_ATTEMPTS: usize = 3;

/// A guest-decided event, checked against the manifest, not yet recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecidedEvent {
    pub name: String,
    /// JSON text.
    pub payload: String,
}

pub struct Hydrated {
    pub component: Arc<LoadedComponent>,
    pub id: String,
    /// The sequence number of the last event applied; 0 for a new stream.
    pub version: u64,
    /// When what it holds began to be read from the store (when it was
    /// made, unless its maker says earlier): a state from before a data
    /// subject's erasure may hold their data.
    pub since: std::time::Instant,
    instance: Arc<SharedInstance>,
    state: ResourceAny,
}

impl Drop for Hydrated {
    fn drop(&mut self) {
        self.instance.release(self.state);
    }
}

impl Hydrated {
    /// A fresh state of `component` for aggregate `id`, at version 0.
    pub fn new(component: Arc<LoadedComponent>, id: &str) -> Result<Self, GuestError> {
        let aggregate = component.name.clone();
        let made = Self::make(component, id, 0, "constructor", |store, guest| {
            guest.construct(store, id).map(Ok)
        })?;
        // The constructor cannot refuse; `make` only shares its shape with restore.
        made.map_err(|reason| GuestError::Trap {
            aggregate,
            call: "constructor",
            message: reason,
        })
    }

    /// A state of `component` for aggregate `id` restored from a snapshot,
    /// at the snapshot's version.
    pub fn restore(
        component: Arc<LoadedComponent>,
        id: &str,
        snapshot: &Snapshot,
    ) -> Result<Self, GuestError> {
        let aggregate = component.name.clone();
        let made = Self::make(
            component,
            id,
            snapshot.version,
            "restore",
            |store, guest| guest.restore(store, id, &snapshot.state),
        )?;
        made.map_err(|reason| GuestError::SnapshotRefused {
            aggregate,
            id: id.to_string(),
            version: snapshot.version,
            reason,
        })
    }

    /// A state made by `make` in an instance with room for it. The outer
    /// error is the guest failing, the inner one its refusal. An instance
    /// lost before the state was made (another aggregate trapped) costs
    /// another placement.
    fn make(
        component: Arc<LoadedComponent>,
        id: &str,
        version: u64,
        name: &'static str,
        make: impl Fn(
            &mut wasmtime::Store<sandbox::GuestContext>,
            &Guest,
        ) -> wasmtime::Result<Result<ResourceAny, String>>,
    ) -> Result<Result<Self, String>, GuestError> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let instance = component.instances.place(&component)?;
            match instance.call(&component, name, &make) {
                Ok(Ok(state)) => {
                    return Ok(Ok(Self {
                        component,
                        id: id.to_string(),
                        version,
                        since: std::time::Instant::now(),
                        instance,
                        state,
                    }));
                }
                Ok(Err(reason)) => {
                    instance.vacate();
                    return Ok(Err(reason));
                }
                Err(GuestError::InstanceLost { .. }) if attempts < PLACEMENT_ATTEMPTS => {
                    instance.vacate();
                }
                Err(e) => {
                    instance.vacate();
                    return Err(e);
                }
            }
        }
    }

    /// Whether the instance this aggregate lives in was lost to a trap: it
    /// can only be rebuilt.
    pub fn is_lost(&self) -> bool {
        self.instance.is_lost()
    }

    /// Waits for this aggregate's turn in its shared instance (see
    /// [`SharedInstance::turn`]); holding it, a call waits for no other.
    pub async fn turn(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.instance.turn().await
    }

    /// Runs one call on this aggregate's state.
    fn call<T>(
        &self,
        name: &'static str,
        call: impl FnOnce(
            &mut wasmtime::Store<sandbox::GuestContext>,
            &Guest,
            ResourceAny,
        ) -> wasmtime::Result<T>,
    ) -> Result<T, GuestError> {
        let state = self.state;
        self.instance.call(&self.component, name, |store, guest| {
            call(store, guest, state)
        })
    }

    /// The state as bytes for a snapshot, at `self.version`.
    pub fn snapshot(&mut self) -> Result<Snapshot, GuestError> {
        let state = self.call("snapshot", |store, guest, state| {
            guest.snapshot(store, state)
        })?;
        self.within("snapshot", "snapshot size", state.len(), MAX_SNAPSHOT_BYTES)?;
        Ok(Snapshot {
            version: self.version,
            state,
        })
    }

    /// An output of `size` bytes from `call`, or the limit it broke.
    fn within(
        &self,
        call: &'static str,
        limit: &'static str,
        size: usize,
        max: usize,
    ) -> Result<(), GuestError> {
        if size <= max {
            return Ok(());
        }
        Err(GuestError::LimitExceeded {
            aggregate: self.component.name.clone(),
            call,
            limit,
            detail: format!("{call} returned {size} bytes; at most {max} are allowed"),
        })
    }

    /// This aggregate's share of its instance's linear memory (what it
    /// costs to keep).
    pub fn memory_bytes(&self) -> usize {
        self.instance.memory_share()
    }

    /// Applies recorded events that follow `self.version`, in order. Events at
    /// or below the current version are skipped (already applied).
    ///
    /// Events go to the guest in chunks of at most [`APPLY_CHUNK_BYTES`], each
    /// its own call with its own budget: what one call lowers into guest
    /// memory, and the work it does, stay bounded however long the stream.
    /// An event whose name this version does not declare is refused here,
    /// by name and sequence, before the guest sees it.
    pub fn apply_recorded(&mut self, events: &[RecordedEvent]) -> Result<(), GuestError> {
        self.apply_recorded_in_chunks(events, APPLY_CHUNK_BYTES)
    }

    /// [`apply_recorded`](Self::apply_recorded) with chunks of at most
    /// `chunk_bytes` (an event larger than that goes alone; 0 sends each
    /// event in a call of its own, which names a failing event exactly).
    pub fn apply_recorded_in_chunks(
        &mut self,
        events: &[RecordedEvent],
        chunk_bytes: usize,
    ) -> Result<(), GuestError> {
        let applied = self.version;
        let fresh = events.iter().filter(|e| e.sequence > applied);
        let mut chunk: Vec<ApplyEvent> = Vec::new();
        let (mut size_of_chunk, mut first) = (0, None);
        for event in fresh {
            if !self.component.reads(&event.name) {
                self.apply_chunk(first, &mut chunk)?;
                return Err(self.apply_failed(
                    (event.sequence, event.sequence),
                    Some(event.name.clone()),
                    "this version does not declare the event".to_string(),
                ));
            }
            // The exact text recorded: replay hands the guest what it decided.
            let payload = event.payload.as_str().to_string();
            let size = event.name.len() + payload.len();
            if !chunk.is_empty() && size_of_chunk + size > chunk_bytes {
                self.apply_chunk(first, &mut chunk)?;
                size_of_chunk = 0;
            }
            if chunk.is_empty() {
                first = Some(event.sequence);
            }
            size_of_chunk += size;
            chunk.push(ApplyEvent {
                name: event.name.clone(),
                payload,
                sequence: event.sequence,
                version: recorded_by(event),
            });
        }
        self.apply_chunk(first, &mut chunk)
    }

    /// Applies `chunk` (recorded events from sequence `first` on, which
    /// follow `self.version`) in one call and empties it.
    fn apply_chunk(
        &mut self,
        first: Option<u64>,
        chunk: &mut Vec<ApplyEvent>,
    ) -> Result<(), GuestError> {
        let Some(first) = first.filter(|_| !chunk.is_empty()) else {
            return Ok(());
        };
        self.apply(first, chunk)?;
        self.version = first + chunk.len() as u64 - 1;
        chunk.clear();
        Ok(())
    }

    /// Applies events just decided and recorded as `self.version + 1 ..`.
    pub fn apply_decided(&mut self, events: &[DecidedEvent]) -> Result<(), GuestError> {
        let batch: Vec<ApplyEvent> = (self.version + 1..)
            .zip(events)
            .map(|(sequence, e)| ApplyEvent {
                name: e.name.clone(),
                payload: e.payload.clone(),
                sequence,
                version: self.component.version.clone(),
            })
            .collect();
        self.apply(self.version + 1, &batch)?;
        self.version += events.len() as u64;
        Ok(())
    }

    fn apply(&mut self, first_sequence: u64, batch: &[ApplyEvent]) -> Result<(), GuestError> {
        let result = self.call("apply", |store, guest, state| {
            guest.apply(store, state, batch)
        })?;
        result.map_err(|(refused, reason)| {
            // A 0.2.0 guest names the event it refused. The 0.1.0 contract's
            // `apply` does not; with one event the host knows.
            let refused = refused.and_then(|sequence| {
                let index = sequence.checked_sub(first_sequence)?;
                batch.get(usize::try_from(index).ok()?)
            });
            match (refused, batch) {
                (Some(event), _) | (None, [event]) => self.apply_failed(
                    (event.sequence, event.sequence),
                    Some(event.name.clone()),
                    reason,
                ),
                (None, _) => {
                    let last = first_sequence + batch.len() as u64 - 1;
                    self.apply_failed((first_sequence, last), None, reason)
                }
            }
        })
    }

    fn apply_failed(
        &self,
        (first, last): (u64, u64),
        event: Option<String>,
        reason: String,
    ) -> GuestError {
        GuestError::ApplyFailed(Box::new(ApplyFailure {
            aggregate: self.component.name.clone(),
            version: self.component.version.clone(),
            id: self.id.clone(),
            first,
            last,
            event,
            reason,
        }))
    }

    /// Asks the guest to decide `command` against the current state. The
    /// outer error is the guest misbehaving; the inner one is its refusal.
    pub fn decide(
        &mut self,
        command: &str,
        payload: &str,
    ) -> Result<Result<Vec<DecidedEvent>, Refusal>, GuestError> {
        let decided = self.call("handle", |store, guest, state| {
            guest.handle(store, state, command, payload)
        })?;
        let events = match decided {
            Ok(events) => events,
            Err(refusal) => return Ok(Err(one_line_refusal(refusal))),
        };
        let limits = &self.component.limits;
        if events.len() > limits.max_events_per_command {
            return Err(GuestError::LimitExceeded {
                aggregate: self.component.name.clone(),
                call: "handle",
                limit: "events per command",
                detail: format!(
                    "{} events; at most {} are allowed",
                    events.len(),
                    limits.max_events_per_command
                ),
            });
        }
        events
            .into_iter()
            .map(|e| self.check_event(e))
            .collect::<Result<Vec<_>, _>>()
            .map(Ok)
    }

    /// The contract: only declared events, only JSON payloads, none too large.
    fn check_event(&self, event: DecidedEvent) -> Result<DecidedEvent, GuestError> {
        let aggregate = &self.component.name;
        let max_payload = self.component.limits.max_payload_bytes;
        if event.payload.len() > max_payload {
            return Err(GuestError::LimitExceeded {
                aggregate: aggregate.clone(),
                call: "handle",
                limit: "payload size",
                detail: format!(
                    "event {} has a {} byte payload; at most {max_payload} are allowed",
                    event.name,
                    event.payload.len()
                ),
            });
        }
        if !self.component.events.contains(&event.name) {
            return Err(GuestError::UndeclaredEvent {
                aggregate: aggregate.clone(),
                event: event.name,
            });
        }
        if let Err(reason) = eshost_core::storable_json(&event.payload) {
            return Err(GuestError::EventPayloadNotJson {
                aggregate: aggregate.clone(),
                event: event.name,
                reason,
            });
        }
        Ok(event)
    }

    /// The current state as JSON text, as the guest renders it.
    pub fn to_json(&mut self) -> Result<String, GuestError> {
        let json = self.call("to-json", |store, guest, state| guest.to_json(store, state))?;
        // Checked before anything parses it: a parsed value costs many
        // times its text.
        self.within("to-json", "state size", json.len(), MAX_STATE_JSON_BYTES)?;
        Ok(json)
    }
}

/// The largest state `to-json` may render, in bytes.
pub const MAX_STATE_JSON_BYTES: usize = 16 << 20;

/// The largest snapshot a guest may return, in bytes.
pub const MAX_SNAPSHOT_BYTES: usize = 16 << 20;

/// The longest refusal text a caller is given; longer ones are cut.
pub const MAX_REFUSAL_TEXT: usize = 1024;

/// A guest's refusal, its text made one line of at most
/// [`MAX_REFUSAL_TEXT`] bytes: it ends up in answers and log lines.
fn one_line_refusal(refusal: Refusal) -> Refusal {
    let text = |m: String| sandbox::one_line(&m, MAX_REFUSAL_TEXT);
    match refusal {
        Refusal::UnknownCommand(m) => Refusal::UnknownCommand(text(m)),
        Refusal::InvalidPayload(m) => Refusal::InvalidPayload(text(m)),
        Refusal::InvalidCommand(m) => Refusal::InvalidCommand(text(m)),
        Refusal::PreconditionFailed(m) => Refusal::PreconditionFailed(text(m)),
    }
}

/// The version of the guest that recorded `event`, from its metadata
/// (empty when the metadata does not say: events written before the host
/// recorded it, or by another writer).
fn recorded_by(event: &RecordedEvent) -> String {
    event
        .metadata
        .get("aggregateVersion")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_string()
}
