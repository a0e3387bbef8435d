//! The dispatcher's calls into guests, each run on the host's
//! [`GuestPool`](crate::runtime::GuestPool) so that no guest call ever runs
//! on an async worker thread: instantiating (from a snapshot or fresh),
//! applying events, deciding, snapshotting, rendering state.
//!
//! An instance moves into the pool for the call and comes back with the
//! result, unless the call failed in the guest: an instance that trapped is
//! never used again, so it is dropped there.

use super::Shared;
use crate::error::{GuestError, Refusal};
use crate::runtime::instance::DecidedEvent;
use crate::runtime::{Hydrated, LoadedComponent};
use crate::store::{RecordedEvent, Snapshot};
use std::sync::Arc;
use tracing::warn;

/// A guest's decision on one command: its events, or its refusal.
pub(super) type Decided = Result<Vec<DecidedEvent>, Refusal>;

/// A batch decided one command after another, each against the state the
/// previous left (its events applied tentatively).
pub(super) struct BatchDecision {
    /// One decision per command, in order, up to the first failure.
    pub decided: Vec<Decided>,
    /// The guest failed on command number `decided.len()`: that command
    /// fails, and the instance is gone.
    pub failure: Option<GuestError>,
}

impl Shared {
    /// Runs `call` with `aggregate` on the guest pool. The instance comes
    /// back unless the call failed.
    pub(super) async fn with_instance<T, F>(
        &self,
        mut aggregate: Hydrated,
        call: F,
    ) -> Result<(Hydrated, T), GuestError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Hydrated) -> Result<T, GuestError> + Send + 'static,
    {
        let name = aggregate.component.name.clone();
        let ran = self
            .guests
            .run(move || call(&mut aggregate).map(|value| (aggregate, value)))
            .await;
        self.count_guest_call(ran, &name)
    }

    /// Counts a pool run and turns a host panic into a guest failure (the
    /// instance, moved into the call, is gone either way).
    fn count_guest_call<T>(
        &self,
        ran: Result<(Result<T, GuestError>, std::time::Duration), crate::runtime::PoolPanic>,
        aggregate: &str,
    ) -> Result<T, GuestError> {
        match ran {
            Ok((result, took)) => {
                self.metrics
                    .guest_call_seconds
                    .get_or_create(&crate::metrics::AggregateLabel {
                        aggregate: aggregate.to_string(),
                    })
                    .observe(took.as_secs_f64());
                result
            }
            Err(panic) => Err(GuestError::Trap {
                aggregate: aggregate.to_string(),
                call: "host",
                message: panic.to_string(),
            }),
        }
    }

    /// A new instance of `component` for aggregate `id`: restored from
    /// `snapshot` when there is one and the guest accepts it, else fresh. A
    /// snapshot the guest refuses only costs a full replay (the version says
    /// which happened).
    pub(super) async fn instantiate(
        &self,
        component: &Arc<LoadedComponent>,
        id: &str,
        snapshot: Option<Snapshot>,
    ) -> Result<Hydrated, GuestError> {
        let (component, id) = (component.clone(), id.to_string());
        let name = component.name.clone();
        let ran = self
            .guests
            .run(move || {
                if let Some(snapshot) = snapshot {
                    match Hydrated::restore(component.clone(), &id, &snapshot) {
                        Ok(restored) => return Ok(restored),
                        Err(e) => warn!(aggregate = %component.name, %id, error = %e,
                            "snapshot unusable; replaying the stream"),
                    }
                }
                Hydrated::new(component, &id)
            })
            .await;
        self.count_guest_call(ran, &name)
    }

    /// Applies recorded events (those past the instance's version).
    pub(super) async fn apply_events(
        &self,
        aggregate: Hydrated,
        events: Vec<RecordedEvent>,
    ) -> Result<Hydrated, GuestError> {
        if events.is_empty() {
            return Ok(aggregate);
        }
        let (aggregate, ()) = self
            .with_instance(aggregate, move |a| a.apply_recorded(&events))
            .await?;
        Ok(aggregate)
    }

    /// Applies `unseen` recorded events (if any), then decides one command:
    /// one hop to the pool for both, so a retry after a conflict costs one.
    pub(super) async fn decide(
        &self,
        aggregate: Hydrated,
        unseen: Vec<RecordedEvent>,
        command: &str,
        payload: &str,
    ) -> Result<(Hydrated, Decided), GuestError> {
        let (command, payload) = (command.to_string(), payload.to_string());
        self.with_instance(aggregate, move |a| {
            a.apply_recorded(&unseen)?;
            a.decide(&command, &payload)
        })
        .await
    }

    /// Decides `commands` (name, payload) one after another, applying each
    /// command's events before deciding the next. The instance comes back
    /// unless the guest failed on one of them.
    pub(super) async fn decide_batch(
        &self,
        mut aggregate: Hydrated,
        commands: Vec<(String, String)>,
    ) -> (Option<Hydrated>, BatchDecision) {
        let name = aggregate.component.name.clone();
        let ran = self
            .guests
            .run(move || {
                let mut decision = BatchDecision {
                    decided: Vec::with_capacity(commands.len()),
                    failure: None,
                };
                for (command, payload) in &commands {
                    let decided = aggregate.decide(command, payload).and_then(|d| match d {
                        Ok(events) => aggregate.apply_decided(&events).map(|()| Ok(events)),
                        Err(refusal) => Ok(Err(refusal)),
                    });
                    match decided {
                        Ok(decided) => decision.decided.push(decided),
                        Err(e) => {
                            decision.failure = Some(e);
                            return Ok((None, decision));
                        }
                    }
                }
                Ok((Some(aggregate), decision))
            })
            .await;
        match self.count_guest_call(ran, &name) {
            Ok(done) => done,
            Err(failure) => (
                None,
                BatchDecision {
                    decided: Vec::new(),
                    failure: Some(failure),
                },
            ),
        }
    }

    /// Applies events the instance itself just decided and that are now recorded.
    pub(super) async fn apply_decided(
        &self,
        aggregate: Hydrated,
        events: Vec<DecidedEvent>,
    ) -> Result<Hydrated, GuestError> {
        let (aggregate, ()) = self
            .with_instance(aggregate, move |a| a.apply_decided(&events))
            .await?;
        Ok(aggregate)
    }

    /// The guest's snapshot of its state.
    pub(super) async fn take_snapshot(
        &self,
        aggregate: Hydrated,
    ) -> Result<(Hydrated, Snapshot), GuestError> {
        self.with_instance(aggregate, |a| a.snapshot()).await
    }

    /// The state as the guest renders it, as JSON text.
    pub(super) async fn render(
        &self,
        aggregate: Hydrated,
    ) -> Result<(Hydrated, String), GuestError> {
        self.with_instance(aggregate, |a| a.to_json()).await
    }
}
