//! Optimistic mode: each command loads (or takes the cached instance),
//! decides and appends at the expected version on its own. On a conflict it
//! catches up on the new events only, decides again and appends again, up to
//! `max_retries`, with backoff.

use super::guest::Decided;
use super::{CommandOutcome, Prepared, Shared, to_new_command};
use crate::error::{CommandError, StoreError};
use eshost_store::{RecordedEvent, StreamId};
use eshost_wasm::Hydrated;
use eshost_wasm::instance::DecidedEvent;
use tracing::{debug, warn};

impl Shared {
    pub(super) async fn execute_optimistic(
        &self,
        prepared: Prepared,
    ) -> Result<CommandOutcome, CommandError> {
        let stream = &prepared.stream;
        let deadline = tokio::time::Instant::now() + self.retry.command_deadline;
        let (mut aggregate, mut up_to_date) = self.checkout(&prepared).await?;
        let mut retries = 0;
        // Events recorded since the instance's version, applied with the
        // next decision.
        let mut unseen = Vec::new();
        loop {
            // A guest error means the instance may have trapped: it is
            // dropped, never cached.
            let decided;
            let applying = std::mem::take(&mut unseen);
            (aggregate, decided) = self
                .decide(aggregate, applying, &prepared.command, &prepared.payload)
                .await?;
            // An outcome that records nothing is not guarded by the unique key,
            // so it must be decided against the latest stream: a cached
            // instance catches up first and decides again if it was behind.
            let records_nothing = !matches!(&decided, Ok(events) if !events.is_empty());
            if records_nothing && !up_to_date {
                up_to_date = true;
                let caught_up;
                (aggregate, caught_up) = self.catch_up(aggregate, stream).await?;
                if caught_up > 0 {
                    continue;
                }
            }
            let events = match decided {
                Ok(events) if !events.is_empty() => events,
                nothing => {
                    self.cache.put(stream.clone(), aggregate);
                    return self.answer_unrecorded(&prepared, nothing, retries).await;
                }
            };
            let new_command = to_new_command(&prepared, &prepared.component, &events);
            self.metrics.appends.inc();
            self.metrics.batch_commands.observe(1.0);
            let base = aggregate.version;
            match self
                .append_settled(stream, base, vec![new_command], deadline)
                .await
            {
                Ok(recorded) => {
                    self.keep_after_append(aggregate, events, stream, base)
                        .await;
                    return Ok(CommandOutcome {
                        command_id: prepared.command_id,
                        events: recorded,
                        retries,
                        replayed: false,
                    });
                }
                Err(error @ StoreError::DuplicateCommand { .. }) => {
                    // A repeat: nothing was applied, the instance is intact.
                    self.cache.put(stream.clone(), aggregate);
                    let mut recorded = self.recorded_answers(&[&prepared]).await?;
                    return recorded
                        .remove(&prepared.command_id)
                        .unwrap_or(Err(error.into()));
                }
                Err(StoreError::Conflict { .. }) => {
                    unseen = self
                        .after_conflict(&prepared, aggregate.version, retries)
                        .await?;
                    retries += 1;
                    up_to_date = true;
                }
                Err(other) => {
                    // The instance is intact (nothing was applied): keep it.
                    self.cache.put(stream.clone(), aggregate);
                    return Err(other.into());
                }
            }
        }
    }

    /// After a conflict, the `retries`th: the events recorded since
    /// `version`, to decide again with, once the backoff has passed. An
    /// error once the retries are spent.
    async fn after_conflict(
        &self,
        prepared: &Prepared,
        version: u64,
        retries: u32,
    ) -> Result<Vec<RecordedEvent>, CommandError> {
        let stream = &prepared.stream;
        self.metrics.conflicts.inc();
        if retries >= self.retry.max_retries {
            warn!(%stream, retries, "retries exhausted");
            return Err(Self::exhausted(prepared, retries));
        }
        let delay = self.retry.backoff(retries + 1);
        debug!(%stream, retries = retries + 1, ?delay, "conflict; retrying");
        tokio::time::sleep(delay).await;
        let unseen = self
            .patiently("load", || self.store.load(stream, version))
            .await?;
        Ok(unseen)
    }

    /// The answer to a command that decided to record nothing (no events,
    /// or a refusal). Nothing appended, the key on command ids did not
    /// guard it: a repeat is found by looking its id up.
    async fn answer_unrecorded(
        &self,
        prepared: &Prepared,
        decided: Decided,
        retries: u32,
    ) -> Result<CommandOutcome, CommandError> {
        let answer = match decided {
            Ok(_) => Ok(CommandOutcome {
                command_id: prepared.command_id.clone(),
                events: Vec::new(),
                retries,
                replayed: false,
            }),
            Err(refusal) => Err(Self::refused(prepared, refusal)),
        };
        let mut answers = self.unless_recorded(vec![(prepared, answer)]).await;
        answers.remove(0)
    }

    /// After an append: the instance applies its own events (and takes a
    /// snapshot when one is due) and goes back to the cache. The events are
    /// recorded whatever happens here; a guest that cannot apply them loses
    /// its cache entry, and the next command meets the failure on replay.
    async fn keep_after_append(
        &self,
        aggregate: Hydrated,
        events: Vec<DecidedEvent>,
        stream: &StreamId,
        base: u64,
    ) {
        let kept = match self.apply_decided(aggregate, events).await {
            Ok(aggregate) => self.maybe_snapshot(aggregate, stream, base).await,
            Err(e) => Err(e),
        };
        match kept {
            Ok(aggregate) => self.cache.put(stream.clone(), aggregate),
            Err(e) => warn!(%stream, error = %e, "instance dropped after append"),
        }
    }
}
