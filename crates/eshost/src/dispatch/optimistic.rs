//! Stage 2, optimistic mode: each command loads (or takes the cached
//! instance), decides and appends at the expected version on its own. On a
//! conflict it catches up on the new events only, decides again and appends
//! again, up to `max_retries`, with backoff.

use super::admit::Admitted;
use super::guest::Decided;
use super::{Answer, CommandOutcome, Stages};
use crate::error::{CommandError, StoreError};
use eshost_store::RecordedEvent;
use tracing::{debug, warn};

/// Runs one admitted command to its answer.
pub(super) async fn execute(stages: &Stages, admitted: Admitted) -> Answer {
    let (aggregates, records) = (&stages.aggregates, &stages.records);
    let stream = &admitted.stream;
    let deadline = tokio::time::Instant::now() + records.retry.command_deadline;
    let (mut aggregate, mut up_to_date) = aggregates
        .checkout(&admitted.component, stream, None)
        .await?;
    let mut retries = 0;
    // Events recorded since the instance's version, applied with the
    // next decision.
    let mut unseen = Vec::new();
    loop {
        // A guest error means the instance may have trapped: it is
        // dropped, never cached.
        let decided;
        let applying = std::mem::take(&mut unseen);
        (aggregate, decided) = aggregates
            .decide(
                aggregate,
                applying,
                &admitted.command,
                &admitted.payload,
                &admitted.caller,
            )
            .await?;
        // An outcome that records nothing is not guarded by the unique key,
        // so it must be decided against the latest stream: a cached
        // instance catches up first and decides again if it was behind.
        let records_nothing = !matches!(&decided, Ok(events) if !events.is_empty());
        if records_nothing && !up_to_date {
            up_to_date = true;
            let caught_up;
            (aggregate, caught_up) = aggregates.catch_up(aggregate, stream).await?;
            if caught_up > 0 {
                continue;
            }
        }
        let events = match decided {
            Ok(events) if !events.is_empty() => events,
            nothing => {
                aggregates.cache.put(stream.clone(), aggregate);
                return answer_unrecorded(stages, &admitted, nothing, retries).await;
            }
        };
        let new_command = admitted.to_new_command(&admitted.component, &events);
        stages.metrics.appends.inc();
        stages.metrics.batch_commands.observe(1.0);
        let base = aggregate.version;
        match records
            .append_settled(
                stream,
                base,
                vec![new_command],
                deadline,
                [&admitted.caller],
            )
            .await
        {
            Ok(recorded) => {
                aggregates
                    .keep_after_append(aggregate, events, stream, base, &admitted.caller)
                    .await;
                return Ok(CommandOutcome {
                    command_id: admitted.command_id.to_string(),
                    events: recorded,
                    retries,
                    replayed: false,
                });
            }
            Err(error @ StoreError::DuplicateCommand { .. }) => {
                // A repeat: nothing was applied, the instance is intact.
                aggregates.cache.put(stream.clone(), aggregate);
                let mut recorded = records.recorded_answers(&[&admitted]).await?;
                return recorded
                    .remove(admitted.command_id.as_str())
                    .unwrap_or(Err(error.into()));
            }
            Err(StoreError::Conflict { .. }) => {
                unseen = after_conflict(stages, &admitted, aggregate.version, retries).await?;
                retries += 1;
                up_to_date = true;
            }
            Err(other) => {
                // The instance is intact (nothing was applied): keep it.
                aggregates.cache.put(stream.clone(), aggregate);
                return Err(other.into());
            }
        }
    }
}

/// After a conflict, the `retries`th: the events recorded since `version`,
/// to decide again with, once the backoff has passed. An error once the
/// retries are spent.
async fn after_conflict(
    stages: &Stages,
    admitted: &Admitted,
    version: u64,
    retries: u32,
) -> Result<Vec<RecordedEvent>, CommandError> {
    let (stream, records) = (&admitted.stream, &stages.records);
    stages.metrics.conflicts.inc();
    if retries >= records.retry.max_retries {
        warn!(%stream, retries, "retries exhausted");
        return Err(admitted.exhausted(retries));
    }
    let delay = records.retry.backoff(retries + 1);
    debug!(%stream, retries = retries + 1, ?delay, "conflict; retrying");
    tokio::time::sleep(delay).await;
    let unseen = records
        .patiently("load", || records.store.streams().load(stream, version))
        .await?;
    Ok(unseen)
}

/// The answer to a command that decided to record nothing (no events, or
/// a refusal). Nothing appended, the key on command ids did not guard it:
/// a repeat is found by looking its id up.
async fn answer_unrecorded(
    stages: &Stages,
    admitted: &Admitted,
    decided: Decided,
    retries: u32,
) -> Answer {
    let answer = match decided {
        Ok(_) => Ok(CommandOutcome {
            command_id: admitted.command_id.to_string(),
            events: Vec::new(),
            retries,
            replayed: false,
        }),
        Err(refusal) => Err(admitted.refused(refusal)),
    };
    let mut answers = stages
        .records
        .unless_recorded(vec![(admitted, answer)])
        .await;
    answers.remove(0)
}
