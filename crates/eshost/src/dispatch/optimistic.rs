//! Optimistic mode: each command loads (or takes the cached instance),
//! decides and appends at the expected version on its own. On a conflict it
//! catches up on the new events only, decides again and appends again, up to
//! `max_retries`, with backoff.

use super::{CommandOutcome, Prepared, Shared, to_new_command};
use crate::error::{CommandError, StoreError};
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
                // Recording nothing, this command is not guarded by the key
                // on command ids: a repeat is found by looking it up.
                nothing => {
                    self.cache.put(stream.clone(), aggregate);
                    let answer = match nothing {
                        Ok(_) => Ok(CommandOutcome {
                            command_id: prepared.command_id.clone(),
                            events: Vec::new(),
                            retries,
                            replayed: false,
                        }),
                        Err(refusal) => Err(Self::refused(&prepared, refusal)),
                    };
                    let mut answers = self.unless_recorded(vec![(&prepared, answer)]).await;
                    return answers.remove(0);
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
                    // The events are recorded whatever happens next; a guest
                    // that cannot apply its own events (or snapshot them) loses
                    // its cache entry, and the next command meets the failure
                    // on replay.
                    let kept = match self.apply_decided(aggregate, events).await {
                        Ok(aggregate) => self.maybe_snapshot(aggregate, stream, base).await,
                        Err(e) => Err(e),
                    };
                    match kept {
                        Ok(aggregate) => self.cache.put(stream.clone(), aggregate),
                        Err(e) => warn!(%stream, error = %e, "instance dropped after append"),
                    }
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
                    self.metrics.conflicts.inc();
                    if retries >= self.retry.max_retries {
                        warn!(%stream, retries, "retries exhausted");
                        return Err(Self::exhausted(&prepared, retries));
                    }
                    retries += 1;
                    let delay = self.retry.backoff(retries);
                    debug!(%stream, retries, ?delay, "conflict; retrying");
                    tokio::time::sleep(delay).await;
                    let after = aggregate.version;
                    unseen = self
                        .patiently("load", || self.store.load(stream, after))
                        .await?;
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
}
