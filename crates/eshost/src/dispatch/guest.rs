//! Stage 3, deciding in the guest: every call into an aggregate's instance
//! (instantiating, from a snapshot or fresh; applying events; deciding;
//! snapshotting; rendering state), each run through the host's
//! [`GuestPool`](eshost_wasm::GuestPool), so that no guest call holds an
//! async worker thread past an epoch tick.
//!
//! Each call first waits, asynchronously, for its turn in the instance its
//! aggregate shares, so no permit of the pool is held waiting for another
//! aggregate's call. An aggregate moves into the pool for the call and
//! comes back with the result, unless the call failed in the guest: an instance that trapped is
//! never used again, so the aggregate is dropped there. An aggregate whose
//! shared instance another aggregate's trap lost is rebuilt from the store
//! at the version it was at, and the call is made again: a command never
//! fails for a neighbour's fault.

use super::aggregates::Aggregates;
use crate::error::{CommandError, GuestError, Refusal};
use crate::trace;
use eshost_store::{RecordedEvent, Snapshot, StreamId};
use eshost_wasm::instance::DecidedEvent;
use eshost_wasm::{Hydrated, LoadedComponent};
use std::sync::Arc;
use tracing::{Span, debug, debug_span, field, warn};

/// Times one call rebuilds its aggregate after losing the instance before
/// the call gives up (each loss is another aggregate's trap).
const MAX_REBUILDS: usize = 3;

/// A guest's decision on one command: its events, or its refusal.
pub(super) type Decided = Result<Vec<DecidedEvent>, Refusal>;

/// A command for [`Aggregates::decide_batch`]: its name and payload, and
/// the span it was submitted under (its `decide` span's parent).
pub(super) struct ToDecide {
    pub command: String,
    pub payload: String,
    pub caller: Span,
}

/// A batch decided one command after another, each against the state the
/// previous left (its events applied tentatively).
pub(super) struct BatchDecision {
    /// One decision per command, in order, up to the first failure.
    pub decided: Vec<Decided>,
    /// The guest failed on command number `decided.len()`: that command
    /// fails, and the instance is gone.
    pub failure: Option<CommandError>,
}

impl Aggregates {
    /// Runs `call` with `aggregate` on the guest pool. The aggregate comes
    /// back unless the call failed. `call` must be safe to run again on
    /// the aggregate rebuilt at the version it had (it is, when it applies
    /// recorded events by sequence number and decides without recording).
    pub(super) async fn with_instance<T, F>(
        &self,
        mut aggregate: Hydrated,
        call: F,
    ) -> Result<(Hydrated, T), CommandError>
    where
        T: Send + 'static,
        F: Fn(&mut Hydrated) -> Result<T, GuestError> + Send + Sync + 'static,
    {
        let call = Arc::new(call);
        let lineage = Lineage::of(&aggregate);
        let mut rebuilds = 0;
        loop {
            let run = call.clone();
            let ran = self
                .in_turn(aggregate, &lineage.component.name, move |mut aggregate| {
                    run(&mut aggregate).map(|value| (aggregate, value))
                })
                .await;
            match ran {
                Err(GuestError::InstanceLost { .. }) if rebuilds < MAX_REBUILDS => {
                    rebuilds += 1;
                    aggregate = Box::pin(self.rebuild(&lineage)).await?;
                }
                done => return Ok(done?),
            }
        }
    }

    /// An aggregate whose instance was lost, made again in another at the
    /// version it had: from a snapshot at or below it and the events after.
    async fn rebuild(&self, lineage: &Lineage) -> Result<Hydrated, CommandError> {
        let Lineage {
            component,
            id,
            version,
        } = lineage;
        let version = *version;
        debug!(aggregate = %component.name, %id, version, "instance lost; rebuilding from the store");
        self.metrics.aggregates_rebuilt.inc();
        let stream = StreamId::new(&component.name, id);
        let snapshot = self
            .latest_snapshot(component, &stream)
            .await
            .filter(|snapshot| snapshot.version <= version);
        let fresh = self.instantiate(component, id, snapshot).await?;
        let (rebuilt, _) = self.replay(fresh, &stream, version).await?;
        if rebuilt.version != version {
            // The lost instance held events not (or no longer) recorded.
            return Err(GuestError::InstanceLost {
                aggregate: component.name.clone(),
            }
            .into());
        }
        Ok(rebuilt)
    }

    /// Runs `call` with `aggregate` on the guest pool once the aggregate's
    /// shared instance gives it the turn (waited for here, asynchronously,
    /// so a waiting call holds no permit), and counts the call.
    async fn in_turn<T, F>(&self, aggregate: Hydrated, name: &str, call: F) -> Result<T, GuestError>
    where
        T: Send + 'static,
        F: FnOnce(Hydrated) -> Result<T, GuestError> + Send + 'static,
    {
        let turn = aggregate.turn().await;
        let budget = aggregate.component.limits.budget;
        let ran = self
            .guests
            .run_here(budget, move || {
                let _turn = turn;
                call(aggregate)
            })
            .await;
        self.count_guest_call(ran, name)
    }

    /// Counts a pool run and turns a host panic into a guest failure (the
    /// instance, moved into the call, is gone either way).
    fn count_guest_call<T>(
        &self,
        ran: Result<(Result<T, GuestError>, std::time::Duration), eshost_wasm::PoolPanic>,
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
        // On a blocking thread: placing a state in a shared instance takes
        // no turn, so it may wait on the instance's lock.
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
    ) -> Result<Hydrated, CommandError> {
        if events.is_empty() {
            return Ok(aggregate);
        }
        let (aggregate, ()) = self
            .with_instance(aggregate, move |a| a.apply_recorded(&events))
            .await?;
        Ok(aggregate)
    }

    /// Applies `unseen` recorded events (if any), then decides one command
    /// (in a `decide` span under `caller`): one hop to the pool for both,
    /// so a retry after a conflict costs one.
    pub(super) async fn decide(
        &self,
        aggregate: Hydrated,
        unseen: Vec<RecordedEvent>,
        command: &str,
        payload: &str,
        caller: &Span,
    ) -> Result<(Hydrated, Decided), CommandError> {
        let (command, payload) = (command.to_string(), payload.to_string());
        let caller = caller.clone();
        self.with_instance(aggregate, move |a| {
            a.apply_recorded(&unseen)?;
            let span = decide_span(&caller, &a.component.name, &command);
            let _deciding = span.enter();
            a.decide(&command, &payload)
        })
        .await
    }

    /// Decides `commands` one after another, applying each
    /// command's events before deciding the next, until the events decided
    /// reach `max_bytes` (the rest are left undecided). The aggregate comes
    /// back unless the guest failed on one of them.
    ///
    /// An instance lost to another aggregate's trap before the first
    /// decision is rebuilt and the batch decided again; lost later, the
    /// decisions so far stand (they were made before the loss) and the
    /// rest of the batch is left undecided, with no failure.
    pub(super) async fn decide_batch(
        &self,
        mut aggregate: Hydrated,
        commands: Vec<ToDecide>,
        max_bytes: usize,
    ) -> (Option<Hydrated>, BatchDecision) {
        let commands = Arc::new(commands);
        let lineage = Lineage::of(&aggregate);
        let mut rebuilds = 0;
        loop {
            let batch = commands.clone();
            let ran = self
                .in_turn(aggregate, &lineage.component.name, move |aggregate| {
                    Ok(decide_in_turn(aggregate, &batch, max_bytes))
                })
                .await;
            let (kept, mut decision) = match ran {
                Ok(done) => done,
                Err(failure) => (None, BatchDecision::failed(failure.into())),
            };
            let lost = matches!(
                decision.failure,
                Some(CommandError::Guest(GuestError::InstanceLost { .. }))
            );
            if !lost {
                return (kept, decision);
            }
            if !decision.decided.is_empty() {
                decision.failure = None;
                return (None, decision);
            }
            if rebuilds == MAX_REBUILDS {
                return (None, decision);
            }
            rebuilds += 1;
            match self.rebuild(&lineage).await {
                Ok(rebuilt) => aggregate = rebuilt,
                Err(e) => return (None, BatchDecision::failed(e)),
            }
        }
    }

    /// Applies events the instance itself just decided and that are now recorded.
    pub(super) async fn apply_decided(
        &self,
        aggregate: Hydrated,
        events: Vec<DecidedEvent>,
    ) -> Result<Hydrated, CommandError> {
        let (aggregate, ()) = self
            .with_instance(aggregate, move |a| a.apply_decided(&events))
            .await?;
        Ok(aggregate)
    }

    /// The guest's snapshot of its state.
    pub(super) async fn take_snapshot(
        &self,
        aggregate: Hydrated,
    ) -> Result<(Hydrated, Snapshot), CommandError> {
        self.with_instance(aggregate, |a| a.snapshot()).await
    }

    /// The state as the guest renders it, as JSON text.
    pub(super) async fn render(
        &self,
        aggregate: Hydrated,
    ) -> Result<(Hydrated, String), CommandError> {
        self.with_instance(aggregate, |a| a.to_json()).await
    }
}

/// Which aggregate a call was made on, at which version: what rebuilding
/// it takes if its instance is lost.
struct Lineage {
    component: Arc<LoadedComponent>,
    id: String,
    version: u64,
}

impl Lineage {
    fn of(aggregate: &Hydrated) -> Self {
        Self {
            component: aggregate.component.clone(),
            id: aggregate.id.clone(),
            version: aggregate.version,
        }
    }
}

impl BatchDecision {
    fn failed(failure: CommandError) -> Self {
        Self {
            decided: Vec::new(),
            failure: Some(failure),
        }
    }
}

/// [`Aggregates::decide_batch`]'s work, inside one guest call. Stops early, with
/// the rest undecided, once the events decided reach `max_bytes`.
fn decide_in_turn(
    mut aggregate: Hydrated,
    commands: &[ToDecide],
    max_bytes: usize,
) -> (Option<Hydrated>, BatchDecision) {
    let mut decision = BatchDecision {
        decided: Vec::with_capacity(commands.len()),
        failure: None,
    };
    let mut bytes = 0;
    for ToDecide {
        command,
        payload,
        caller,
    } in commands
    {
        if bytes >= max_bytes {
            break;
        }
        let span = decide_span(caller, &aggregate.component.name, command);
        let deciding = span.enter();
        let decided = aggregate.decide(command, payload);
        drop(deciding);
        let decided = decided.and_then(|d| match d {
            Ok(events) => aggregate.apply_decided(&events).map(|()| Ok(events)),
            Err(refusal) => Ok(Err(refusal)),
        });
        match decided {
            Ok(decided) => {
                if let Ok(events) = &decided {
                    bytes += events
                        .iter()
                        .map(|e| e.name.len() + e.payload.len())
                        .sum::<usize>();
                }
                decision.decided.push(decided);
            }
            Err(e) => {
                decision.failure = Some(e.into());
                return (None, decision);
            }
        }
    }
    (Some(aggregate), decision)
}

/// The `decide` span of one command (see [`crate::trace`]); the sandbox
/// records `fuel` on it when calls run on a fuel budget.
fn decide_span(caller: &Span, aggregate: &str, command: &str) -> Span {
    trace::child_of(
        caller,
        || debug_span!(parent: caller, "decide", aggregate, command, fuel = field::Empty),
    )
}
