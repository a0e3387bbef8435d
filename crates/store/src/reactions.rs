//! What reactors need kept (decision record 0055): each reactor's
//! checkpoint; the outbox of actions its reactions call for, written in the
//! transaction that moves the checkpoint; its durable timers; the events it
//! parked; and the lease of the one runner active for it.
//!
//! Every action is keyed by the id the host derives for it
//! ([`eshost_core::action_id`]): recording a reaction again, or firing a
//! timer twice, adds nothing. Times are milliseconds since the Unix epoch,
//! given by the caller, so the store's clock plays no part.
//!
//! The SQL is the same on both stores: [`sql`] implements the role for
//! each, and [`rows`] reads what it selects.

use crate::error::StoreError;
use async_trait::async_trait;
use eshost_core::{Action, ReactionCommand};

pub use eshost_core::OnFailure;

pub(crate) mod rows;
pub(crate) mod sql;
pub(crate) use sql::impl_reactions;

/// The reactions to a page of events, to record with the checkpoint.
#[derive(Debug, Clone, Copy)]
pub struct ReactionPage<'a> {
    pub reactor: &'a str,
    pub version: &'a str,
    pub digest: &'a str,
    /// The checkpoint the page was read from: nothing is recorded if it
    /// has moved since.
    pub from: i64,
    /// The position the checkpoint moves to: the page's last event.
    pub to: i64,
    /// In position order.
    pub reactions: &'a [Reaction],
    /// Now, for the parked events' time.
    pub now_ms: i64,
}

/// One event's reaction.
#[derive(Debug, Clone, PartialEq)]
pub struct Reaction {
    pub position: i64,
    /// When the event was recorded: a timer's "after" counts from it.
    pub recorded_at_ms: i64,
    /// The event, for people: `Order o1 OrderPlaced`.
    pub event: String,
    /// Its actions, or why it is parked.
    pub outcome: Result<Vec<Action>, String>,
}

/// Where an action in the outbox stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionStatus {
    /// To perform (again, from `next_at_ms`).
    Pending,
    /// Performed: the command recorded its events, or the sink took the
    /// message.
    Done,
    /// Performed, and refused: the command's aggregate said no. Its
    /// outcome, not a failure.
    Refused,
    /// Given up on (a delivery past its deadline): listed, retried by hand.
    Parked,
}

impl ActionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ActionStatus::Pending => "pending",
            ActionStatus::Done => "done",
            ActionStatus::Refused => "refused",
            ActionStatus::Parked => "parked",
        }
    }
}

/// An action in the outbox: a command to send or a message to deliver.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEntry {
    /// The command id, or the delivery's Idempotency-Key.
    pub id: String,
    pub reactor: String,
    pub position: i64,
    pub action: Action,
    pub attempts: i64,
}

/// What performing an action came to, to record.
#[derive(Debug, Clone, PartialEq)]
pub struct Settlement {
    pub id: String,
    pub status: ActionStatus,
    pub outcome: String,
    /// With [`ActionStatus::Pending`]: when to try again.
    pub retry_at_ms: i64,
}

/// A scheduled command.
#[derive(Debug, Clone, PartialEq)]
pub struct Timer {
    pub reactor: String,
    pub key: String,
    /// The id of the action that scheduled it: the command's id when it fires.
    pub id: String,
    /// The position of the event whose reaction scheduled it.
    pub position: i64,
    pub due_at_ms: i64,
    pub command: ReactionCommand,
}

/// An event a reactor parked.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ParkedEvent {
    pub reactor: String,
    pub position: i64,
    /// The event, for people: `Order o1 OrderPlaced #1`.
    pub event: String,
    pub reason: String,
    pub at_ms: i64,
    /// When a retry was asked for, if one is waiting.
    pub retry_requested_at_ms: Option<i64>,
}

/// Where a reactor stands, as its runner reads it at the start of a pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    /// The last event it reacted to, or passed over.
    pub position: i64,
    pub on_failure: OnFailure,
    /// The parked event it stopped at (after `position`), if it did.
    pub stopped_at: Option<i64>,
}

/// How much a reactor has waiting, counted in the store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReactorCounts {
    /// Events it parked.
    pub parked: u64,
    /// Timers that have not fired.
    pub timers: u64,
    /// Actions in the outbox not yet performed (or to try again).
    pub pending: u64,
}

/// A reactor's checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ReactorRecord {
    pub name: String,
    pub version: String,
    pub digest: String,
    pub position: i64,
    pub updated_at_ms: i64,
    pub on_failure: OnFailure,
}

/// What reactors need kept.
#[async_trait]
pub trait Reactions: Send + Sync {
    /// The reactor's checkpoint, policy and whether it stopped, recording
    /// the version (and digest) that runs it: registered at 0 if it has
    /// none.
    async fn reactor_checkpoint(
        &self,
        reactor: &str,
        version: &str,
        digest: &str,
        now_ms: i64,
    ) -> Result<Checkpoint, StoreError>;

    /// The reactor's checkpoint, policy and whether it stopped, read only
    /// (see [`reactor_checkpoint`](Reactions::reactor_checkpoint), which
    /// registers it); `None` if it was never registered.
    async fn read_checkpoint(&self, reactor: &str) -> Result<Option<Checkpoint>, StoreError>;

    /// Sets what `reactor` does with an event it fails (registering it if
    /// it has never run).
    async fn set_on_failure(
        &self,
        reactor: &str,
        on_failure: OnFailure,
        now_ms: i64,
    ) -> Result<(), StoreError>;

    /// Asks for the parked event at `position` of `reactor` (every one, if
    /// none) to be retried; how many were.
    async fn request_retry(
        &self,
        reactor: &str,
        position: Option<i64>,
        now_ms: i64,
    ) -> Result<u64, StoreError>;

    /// Parked events of `reactor` waiting to be retried, in position order.
    async fn retries_requested(
        &self,
        reactor: &str,
        limit: u64,
    ) -> Result<Vec<ParkedEvent>, StoreError>;

    /// Records a retried event's reaction, in one transaction: its actions
    /// as [`record_reactions`](Reactions::record_reactions) does, the event
    /// no longer parked, and the checkpoint moved up to it if it stopped
    /// there; or, failed again, the new reason, no retry waiting. `false`
    /// (nothing recorded) if no retry of it was waiting.
    async fn record_retry(
        &self,
        reactor: &str,
        reaction: &Reaction,
        now_ms: i64,
    ) -> Result<bool, StoreError>;

    /// In one transaction: moves the checkpoint from `page.from` to
    /// `page.to`, puts each reaction's commands and deliveries in the
    /// outbox, schedules and cancels its timers in order, and parks the
    /// events refused. `false` (nothing recorded) if the checkpoint was
    /// not at `page.from`: another runner got there first.
    async fn record_reactions(&self, page: &ReactionPage<'_>) -> Result<bool, StoreError>;

    /// Pending actions of `reactor` due by `now_ms`, oldest first.
    async fn pending_actions(
        &self,
        reactor: &str,
        now_ms: i64,
        limit: u64,
    ) -> Result<Vec<OutboxEntry>, StoreError>;

    /// Records what performing actions came to, in one transaction (one
    /// commit for a pass's actions, not one each). `Pending` with
    /// `retry_at_ms`: tried and to be tried again then.
    async fn settle_actions(&self, settled: &[Settlement]) -> Result<(), StoreError>;

    /// Records what performing one action came to (see
    /// [`settle_actions`](Reactions::settle_actions)).
    async fn settle_action(
        &self,
        id: &str,
        status: ActionStatus,
        outcome: &str,
        retry_at_ms: i64,
    ) -> Result<(), StoreError> {
        self.settle_actions(&[Settlement {
            id: id.to_owned(),
            status,
            outcome: outcome.to_owned(),
            retry_at_ms,
        }])
        .await
    }

    /// An action by its id, with its status and outcome.
    async fn action(
        &self,
        id: &str,
    ) -> Result<Option<(OutboxEntry, ActionStatus, Option<String>)>, StoreError>;

    /// Timers of `reactor` due by `now_ms`, soonest first.
    async fn due_timers(
        &self,
        reactor: &str,
        now_ms: i64,
        limit: u64,
    ) -> Result<Vec<Timer>, StoreError>;

    /// Fires a timer: in one transaction it leaves the timers and its
    /// command enters the outbox under the timer's id. `false` if it was
    /// cancelled or replaced meanwhile (nothing fires).
    async fn fire_timer(&self, timer: &Timer) -> Result<bool, StoreError>;

    /// The timers of `reactor`, soonest first.
    async fn timers(&self, reactor: &str) -> Result<Vec<Timer>, StoreError>;

    /// The events `reactor` parked, in position order.
    async fn parked_events(&self, reactor: &str) -> Result<Vec<ParkedEvent>, StoreError>;

    /// Takes or renews the lease on `reactor` for `holder` until
    /// `now_ms + ttl_ms`; `false` if another holder's has not lapsed.
    async fn take_lease(
        &self,
        reactor: &str,
        holder: &str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<bool, StoreError>;

    /// Every reactor's checkpoint, by name.
    async fn reactors(&self) -> Result<Vec<ReactorRecord>, StoreError>;

    /// How much `reactor` has waiting: parked events, timers, pending
    /// actions.
    async fn reactor_counts(&self, reactor: &str) -> Result<ReactorCounts, StoreError>;
}
