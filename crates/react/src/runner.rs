//! One reactor, run in passes (decision record 0055). A pass:
//!
//! 1. takes or renews the reactor's lease (a busy runner renews it once a
//!    second, not every pass); without it, does nothing (another runner is
//!    active);
//! 2. performs what earlier passes left pending in the outbox, up to
//!    [`PERFORMING`] at once (one stream's commands in order): a command
//!    through the host under the action's id (so a repeat is answered with
//!    the first outcome), a delivery to its sink with the id as
//!    `Idempotency-Key`; and meanwhile
//! 3. reads a page of the global log after the reactor's checkpoint, reacts
//!    to each event the reactor receives, in the sandbox, on a blocking
//!    thread, and records the page's actions with the checkpoint (an event
//!    refused, or whose guest call fails, is parked with the reason; under
//!    the `stop` policy the page ends there and the reactor reads no
//!    further until that event is retried): performed by the next pass,
//!    which a busy runner starts at once;
//! 4. after the page (which may have cancelled a timer), reacts again to
//!    the parked events someone asked to retry and fires the timers that
//!    are due, each into the outbox under its id: on every pass that found
//!    nothing else to do, and on a busy runner every [`SWEEP_EVERY`].
//!
//! A command its aggregate refuses is that action's outcome (`refused`),
//! never retried. A store or sink that fails for now is tried again later,
//! with backoff; a delivery still failing after [`MAX_DELIVERY_ATTEMPTS`]
//! is parked.

use crate::sinks::{Delivered, Sinks};
use eshost::dispatch::Host;
use eshost::error::CommandError;
use eshost_core::{Action, CommandRequest, RecordedEvent};
use eshost_store::reactions::{
    ActionStatus, Checkpoint, OnFailure, OutboxEntry, Reaction, ReactionPage, Settlement,
};
use eshost_store::{EventStore, StoreError};
use eshost_wasm::{LoadedReactor, ReactorInstance};
use futures_util::StreamExt;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long a lease lasts unless renewed: another runner takes over a
/// reactor this long after its runner stopped renewing.
pub const LEASE: Duration = Duration::from_secs(5);

/// How long after taking or renewing its lease a busy runner renews it
/// again: well within [`LEASE`], so another runner finds it held.
pub const RENEW_AFTER: Duration = Duration::from_secs(1);

/// Events read, timers fired and actions performed per pass, at most.
pub const PAGE: u64 = 500;

/// How often a busy runner looks for timers due and parked events someone
/// asked to retry: each look is a query that mostly finds nothing, so a
/// pass that found other work looks only if this long has passed since the
/// last look. A pass with nothing else to do always looks, so a timer
/// fires at most this much later than on an idle runner.
pub const SWEEP_EVERY: Duration = Duration::from_millis(100);

/// Pending actions performed at once, at most: each waits on a commit or a
/// sink, and one after another would leave the write path's group commit
/// with one command to write.
pub const PERFORMING: usize = 64;

/// The longest a running reactor waits between passes when idle: a timer
/// fires at most about this late, and the lease is renewed well within
/// [`LEASE`].
pub const IDLE_WAIT: Duration = Duration::from_secs(1);

/// The longest a running reactor waits after its store failed for now.
const MAX_ERROR_BACKOFF: Duration = Duration::from_secs(30);

/// Attempts at a delivery before it is parked.
pub const MAX_DELIVERY_ATTEMPTS: i64 = 8;

/// Milliseconds since the Unix epoch; a test gives its own.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The system's clock.
pub fn system_clock() -> Clock {
    Arc::new(eshost_core::now_ms)
}

/// Why a pass stopped short.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{reactor}: a guest call panicked: {reason}")]
    Panicked { reactor: String, reason: String },
}

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pass {
    /// This runner holds the lease.
    pub leased: bool,
    /// Events reacted to (received and recorded), and of those parked.
    pub reacted: usize,
    pub parked: usize,
    /// Parked events retried (whatever they came to).
    pub retried: usize,
    /// Timers fired.
    pub fired: usize,
    /// Actions performed, whatever their outcome.
    pub performed: usize,
}

impl Pass {
    /// Whether it did anything, so the next pass may find more at once.
    pub fn busy(&self) -> bool {
        self.reacted + self.retried + self.fired + self.performed > 0
    }
}

/// Runs one reactor.
pub struct Runner {
    store: Arc<dyn EventStore>,
    reactor: Arc<LoadedReactor>,
    performer: Arc<Performer>,
    holder: String,
    clock: Clock,
    instance: Option<ReactorInstance>,
    /// When this runner last took or renewed the lease, while it holds it.
    leased_at: Option<i64>,
    /// Whether this runner has registered its version in the store.
    registered: bool,
    /// When this runner last looked for timers due and retries asked for.
    swept_at: Option<i64>,
}

impl Runner {
    /// A runner of `reactor` sending its commands through `host` (on the
    /// same store), delivering to `sinks`, holding the lease as `holder`.
    pub fn new(host: Host, reactor: Arc<LoadedReactor>, sinks: Sinks, holder: String) -> Self {
        Self {
            store: host.store().clone(),
            reactor,
            performer: Arc::new(Performer { host, sinks }),
            holder,
            clock: system_clock(),
            instance: None,
            leased_at: None,
            registered: false,
            swept_at: None,
        }
    }

    /// Reads the time from `clock` (for tests of timers).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Runs passes until `stop` is cancelled: at once while there is work,
    /// else when an event is appended or [`IDLE_WAIT`] has passed. A store
    /// that fails for now is tried again with backoff; anything else ends
    /// the run.
    pub async fn run(mut self, stop: CancellationToken) -> Result<(), RunError> {
        let mut signal = self.store.log().append_signal().await;
        let mut backoff = IDLE_WAIT;
        while !stop.is_cancelled() {
            let wait = match self.pass().await {
                Ok(pass) if pass.busy() => continue,
                Ok(_) => {
                    backoff = IDLE_WAIT;
                    IDLE_WAIT
                }
                Err(RunError::Store(e)) if e.is_transient() => {
                    tracing::warn!(reactor = %self.reactor.name, error = %e,
                        "a pass failed; trying again");
                    backoff = (backoff * 2).min(MAX_ERROR_BACKOFF);
                    backoff
                }
                Err(e) => return Err(e),
            };
            tokio::select! {
                () = signal.wait(wait) => {}
                () = stop.cancelled() => {}
            }
        }
        Ok(())
    }

    /// One pass (see the module doc).
    pub async fn pass(&mut self) -> Result<Pass, RunError> {
        let name = self.reactor.name.clone();
        let store = self.store.clone();
        let reactions = store.reactions();
        let now = (self.clock)();
        let lease = i64::try_from(LEASE.as_millis()).unwrap_or(i64::MAX);
        let renew_after = i64::try_from(RENEW_AFTER.as_millis()).unwrap_or(i64::MAX);
        // A lease renewed less than RENEW_AFTER ago still runs for most of
        // LEASE: not writing it again on every busy pass saves a commit.
        let fresh = self
            .leased_at
            .is_some_and(|at| (0..renew_after).contains(&now.saturating_sub(at)));
        let mut pass = Pass {
            leased: fresh
                || reactions
                    .take_lease(&name, &self.holder, now, lease)
                    .await?,
            ..Pass::default()
        };
        if !pass.leased {
            self.leased_at = None;
            return Ok(pass);
        }
        if !fresh {
            self.leased_at = Some(now);
        }
        // Registered once per runner; then only read.
        let read = match self.registered {
            true => reactions.read_checkpoint(&name).await?,
            false => None,
        };
        let checkpoint = match read {
            Some(checkpoint) => checkpoint,
            None => {
                let checkpoint = reactions
                    .reactor_checkpoint(&name, &self.reactor.version, &self.reactor.digest, now)
                    .await?;
                self.registered = true;
                checkpoint
            }
        };
        // What earlier passes recorded is performed while this pass reacts
        // to the next page: the commands and deliveries wait on commits and
        // sinks, the reactions on the sandbox.
        let pending = reactions.pending_actions(&name, now, PAGE).await?;
        pass.performed = pending.len();
        let performer = self.performer.clone();
        let (reacted, performed) = tokio::join!(
            self.react_to_page(&checkpoint, now),
            performer.perform_all(pending, now)
        );
        (pass.reacted, pass.parked) = reacted?;
        performed?;
        let sweep_every = i64::try_from(SWEEP_EVERY.as_millis()).unwrap_or(i64::MAX);
        let swept_lately = self
            .swept_at
            .is_some_and(|at| (0..sweep_every).contains(&now.saturating_sub(at)));
        if swept_lately && pass.reacted + pass.performed > 0 {
            return Ok(pass);
        }
        self.swept_at = Some(now);
        pass.retried = self.retry_parked(now).await?;
        // After the page: an event in it may have cancelled a timer that
        // is due. A fired timer's command is performed next pass.
        for timer in reactions.due_timers(&name, now, PAGE).await? {
            if reactions.fire_timer(&timer).await? {
                pass.fired += 1;
            }
        }
        Ok(pass)
    }

    /// Reads the page of the log after `checkpoint`, reacts to the events
    /// the reactor receives, and records the reactions with the checkpoint
    /// moved: how many were recorded, and of those parked.
    async fn react_to_page(
        &mut self,
        checkpoint: &Checkpoint,
        now: i64,
    ) -> Result<(usize, usize), RunError> {
        let store = self.store.clone();
        let name = self.reactor.name.clone();
        let stopped = checkpoint.on_failure == OnFailure::Stop && checkpoint.stopped_at.is_some();
        let from = checkpoint.position;
        let events = match stopped {
            // Stopped at a parked event: nothing new until it is retried.
            true => Vec::new(),
            false => store.log().read_all(from, None, PAGE).await?,
        };
        let Some(last) = events.last() else {
            return Ok((0, 0));
        };
        let mut to = last.position;
        let received: Vec<RecordedEvent> = events
            .into_iter()
            .filter(|e| self.reactor.receives(&e.aggregate, &e.name))
            .collect();
        let mut reacted = self.react(received).await?;
        if checkpoint.on_failure == OnFailure::Stop
            && let Some(failed) = reacted.iter().position(|r| r.outcome.is_err())
        {
            // Record what came before it, park it, and stop there: the
            // checkpoint stays just before it.
            reacted.truncate(failed + 1);
            to = reacted[failed].position - 1;
        }
        let page = ReactionPage {
            reactor: &name,
            version: &self.reactor.version,
            digest: &self.reactor.digest,
            from,
            to,
            reactions: &reacted,
            now_ms: now,
        };
        // Lost to another runner: it recorded these; nothing to do.
        if !store.reactions().record_reactions(&page).await? {
            return Ok((0, 0));
        }
        let parked: Vec<&Reaction> = reacted.iter().filter(|r| r.outcome.is_err()).collect();
        for parked in &parked {
            tracing::warn!(reactor = %name, position = parked.position, event = %parked.event,
                reason = parked.outcome.as_ref().err().map(String::as_str).unwrap_or_default(),
                "parked an event");
        }
        Ok((reacted.len(), parked.len()))
    }

    /// Reacts again to the parked events someone asked to retry, with the
    /// version this runner runs, and records what that came to.
    async fn retry_parked(&mut self, now: i64) -> Result<usize, RunError> {
        let store = self.store.clone();
        let reactions = store.reactions();
        let requested = reactions
            .retries_requested(&self.reactor.name, PAGE)
            .await?;
        let mut retried = 0;
        for parked in requested {
            let found = self
                .store
                .log()
                .read_all(parked.position - 1, None, 1)
                .await?
                .pop()
                .filter(|event| event.position == parked.position);
            let reaction = match found {
                Some(event) => self.react(vec![event]).await?.pop(),
                None => None,
            }
            .unwrap_or_else(|| Reaction {
                position: parked.position,
                recorded_at_ms: 0,
                event: parked.event.clone(),
                outcome: Err(format!(
                    "the event at position {} is not in the log",
                    parked.position
                )),
            });
            match &reaction.outcome {
                Ok(_) => tracing::info!(reactor = %self.reactor.name, position = parked.position,
                    event = %parked.event, "retried a parked event"),
                Err(reason) => {
                    tracing::warn!(reactor = %self.reactor.name, position = parked.position,
                    event = %parked.event, %reason, "a retried event failed again")
                }
            }
            if reactions
                .record_retry(&self.reactor.name, &reaction, now)
                .await?
            {
                retried += 1;
            }
        }
        Ok(retried)
    }

    /// Each event's reaction, in the sandbox, on a blocking thread.
    async fn react(&mut self, events: Vec<RecordedEvent>) -> Result<Vec<Reaction>, RunError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let instance = self.instance.take();
        let reactor = self.reactor.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let mut instance = instance;
            let mut reactions = Vec::with_capacity(events.len());
            for event in events {
                let outcome = match instance.as_mut() {
                    Some(instance) => instance.react(&event),
                    None => ReactorInstance::new(reactor.clone()).and_then(|mut fresh| {
                        let outcome = fresh.react(&event);
                        instance = Some(fresh);
                        outcome
                    }),
                };
                if outcome.is_err() {
                    // A failed call may leave the instance broken (a trap):
                    // the next event gets a new one.
                    instance = None;
                }
                reactions.push(Reaction {
                    position: event.position,
                    recorded_at_ms: event.recorded_at_ms().unwrap_or_default(),
                    event: format!(
                        "{} {} {} #{}",
                        event.aggregate, event.id, event.name, event.sequence
                    ),
                    outcome: outcome.map_err(|e| e.to_string()),
                });
            }
            (instance, reactions)
        })
        .await
        .map_err(|e| RunError::Panicked {
            reactor: self.reactor.name.clone(),
            reason: e.to_string(),
        })?;
        let (instance, reactions) = joined;
        self.instance = instance;
        Ok(reactions)
    }
}

/// Performs a reactor's actions: apart from the runner, so that it can
/// perform one pass's actions while the runner reacts to the next page.
struct Performer {
    host: Host,
    sinks: Sinks,
}

impl Performer {
    /// Performs pending actions, up to [`PERFORMING`] at once. The commands
    /// to one stream go one after another, in the order they were
    /// recorded, so a stream receives a reactor's commands in the order it
    /// sent them; deliveries carry no order (a retried one arrives after
    /// later ones anyway), so each goes on its own.
    async fn perform_all(&self, pending: Vec<OutboxEntry>, now: i64) -> Result<(), RunError> {
        let mut lanes: Vec<Vec<OutboxEntry>> = Vec::new();
        let mut lane_of_stream: HashMap<(String, String), usize> = HashMap::new();
        for entry in pending {
            let Action::Send(command) = &entry.action else {
                lanes.push(vec![entry]);
                continue;
            };
            let stream = (command.aggregate.clone(), command.id.clone());
            match lane_of_stream.get(&stream) {
                Some(&lane) => lanes[lane].push(entry),
                None => {
                    lane_of_stream.insert(stream, lanes.len());
                    lanes.push(vec![entry]);
                }
            }
        }
        let mut performing = futures_util::stream::iter(lanes)
            .map(|lane| async move {
                let mut settled = Vec::with_capacity(lane.len());
                for entry in &lane {
                    settled.push(self.perform(entry, now).await);
                }
                settled
            })
            .buffer_unordered(PERFORMING);
        let mut settled = Vec::new();
        while let Some(lane) = performing.next().await {
            settled.extend(lane);
        }
        // Recorded together: one commit for the pass's actions. A runner
        // stopped before this performs them again, which repeats nothing
        // (each goes under its id).
        self.host
            .store()
            .reactions()
            .settle_actions(&settled)
            .await?;
        Ok(())
    }

    /// Performs one pending action: what it came to, to record.
    async fn perform(&self, entry: &OutboxEntry, now: i64) -> Settlement {
        let retry_at = |attempts: i64| {
            // 1 s, 2 s, 4 s ... up to a minute.
            let backoff = 1_000_i64.saturating_mul(1 << attempts.clamp(0, 6));
            now.saturating_add(backoff)
        };
        let (status, outcome, retry_at_ms) = match &entry.action {
            Action::Send(command) => {
                let mut request = CommandRequest::new(
                    &command.aggregate,
                    &command.id,
                    &command.command,
                    command.payload.as_str(),
                )
                .with_command_id(Some(entry.id.clone()));
                request.correlation_id = command.correlation_id.clone();
                request.causation_id = Some(format!("{}:{}", entry.reactor, entry.position));
                match self.host.execute(&request).await {
                    Ok(outcome) => (
                        ActionStatus::Done,
                        format!("{} event(s)", outcome.events.len()),
                        0,
                    ),
                    Err(CommandError::Store(e)) if e.is_transient() => (
                        ActionStatus::Pending,
                        e.to_string(),
                        retry_at(entry.attempts),
                    ),
                    Err(e @ (CommandError::Overloaded { .. } | CommandError::ShuttingDown)) => (
                        ActionStatus::Pending,
                        e.to_string(),
                        retry_at(entry.attempts),
                    ),
                    // Refused by the aggregate, or not a command the host
                    // can run: the reaction's outcome, not retried.
                    Err(e) => (ActionStatus::Refused, e.to_string(), 0),
                }
            }
            Action::Deliver(delivery) => {
                let delivered = self
                    .sinks
                    .deliver(&delivery.sink, &entry.id, delivery.body.as_str())
                    .await;
                match delivered {
                    Delivered::Taken(code) => (ActionStatus::Done, format!("{code}"), 0),
                    Delivered::Refused(why) => (ActionStatus::Parked, why, 0),
                    Delivered::Later(why) if entry.attempts + 1 >= MAX_DELIVERY_ATTEMPTS => {
                        (ActionStatus::Parked, why, 0)
                    }
                    Delivered::Later(why) => (ActionStatus::Pending, why, retry_at(entry.attempts)),
                }
            }
            // The store keeps only sends and deliveries in the outbox.
            Action::Schedule(_) | Action::Cancel(_) => {
                (ActionStatus::Parked, "not an outbox action".to_owned(), 0)
            }
        };
        Settlement {
            id: entry.id.clone(),
            status,
            outcome,
            retry_at_ms,
        }
    }
}
