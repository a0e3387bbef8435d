//! Stage 4, append and settle: a decided command's events appended at the
//! version they were decided on (grouped with other streams' appends ready
//! at the same moment, see [`crate::group_commit`]), and an outcome left
//! unknown by a transient database error settled before anything else.
//!
//! When the connection drops mid-statement, the append may or may not have
//! committed. The host never guesses: it looks the batch's command ids up.
//! Found, the append committed and those are its events; not found, it did
//! not, and the same append is sent again. Should a lost commit still land
//! later, the unique keys (stream sequence, command id) make the second
//! append fail, never double.

use super::records::{Budget, Records};
use crate::error::StoreError;
use crate::trace::child_of;
use eshost_store::{NewCommand, RecordedEvent, StreamId};
use std::sync::Arc;
use tokio::time::Instant;
use tracing::{Span, debug_span, info};

impl Records {
    /// Appends `commands` at `expected_version` by `deadline` (grouped with
    /// other streams' appends, see [`eshost_store::group`]), settling any
    /// attempt whose outcome a transient error left unknown by looking up
    /// its command ids before anything else is sent.
    ///
    /// - An attempt that never reached the database (no connection in
    ///   time, a refused connection) is sent again with no lookup.
    /// - An attempt whose outcome is unknown is looked up, and looked up
    ///   again after a failed lookup, never sent again blind. Found, those
    ///   are the answers; not found, the same append is sent again.
    /// - Once an outcome was unknown, a later attempt that meets a key (the
    ///   sequence taken, a command id recorded) is looked up too: the
    ///   append it repeats may be the one that took the key, and deciding
    ///   again would answer a recorded command with a conflict or a refusal.
    ///
    /// Appends and lookups share one count of transient retries
    /// (`max_transient_retries`) and the deadline: waiting does not nest.
    /// If either runs out while the outcome is unknown, the answer is
    /// [`StoreError::OutcomeUnknown`]: resend with the same command id.
    ///
    /// Each of `callers` (the spans the batch's commands were submitted
    /// under) gets an `append` span, open until the outcome is settled.
    pub(super) async fn append_settled<'a>(
        &self,
        stream: &StreamId,
        expected_version: u64,
        commands: Vec<NewCommand>,
        deadline: Instant,
        callers: impl IntoIterator<Item = &'a Span>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let commands: Arc<[NewCommand]> = commands.into();
        let appends: Vec<Span> = callers
            .into_iter()
            .map(|caller| child_of(caller, || debug_span!(parent: caller, "append", %stream)))
            .filter(|append| !append.is_disabled())
            .collect();
        let mut budget = Budget::new(self, Some(deadline));
        let mut unsettled = false;
        loop {
            let sent = self.commits.append(
                stream,
                expected_version,
                commands.clone(),
                deadline,
                appends.clone(),
            );
            let error = match sent.await {
                Err(error) if error.outcome_unknown() => {
                    unsettled = true;
                    error
                }
                Err(
                    error @ (StoreError::Conflict { .. } | StoreError::DuplicateCommand { .. }),
                ) if unsettled => error,
                Err(error) if error.is_transient() => {
                    budget.wait("append", &error).await.map_err(|()| error)?;
                    continue;
                }
                result => return result,
            };
            loop {
                match self.committed(stream, expected_version, &commands).await {
                    Ok(Some(events)) => {
                        info!(%stream, %error, "an append's outcome was unknown; its command ids show it committed");
                        return Ok(events);
                    }
                    Ok(None) if error.is_transient() => break,
                    Ok(None) => return Err(error),
                    Err(lookup) if lookup.is_transient() => {
                        if budget.wait("settle", &lookup).await.is_err() {
                            return Err(outcome_unknown(stream, &lookup));
                        }
                    }
                    Err(lookup) => return Err(outcome_unknown(stream, &lookup)),
                }
            }
            // Not committed: the same append is sent again.
            if budget.wait("append", &error).await.is_err() {
                return Err(error);
            }
        }
    }

    /// The events of this very append, if it committed: every one of its
    /// command ids recorded on this stream, at exactly its sequence numbers.
    async fn committed(
        &self,
        stream: &StreamId,
        expected_version: u64,
        commands: &[NewCommand],
    ) -> Result<Option<Vec<RecordedEvent>>, StoreError> {
        let ids: Vec<&str> = commands
            .iter()
            .filter(|c| !c.events.is_empty())
            .map(|c| c.command_id.as_str())
            .collect();
        let found = self.store.streams().find_commands(&ids).await?;
        let mut events: Vec<RecordedEvent> = found
            .into_iter()
            .filter(|c| &c.stream == stream)
            .flat_map(|c| c.events)
            .collect();
        events.sort_by_key(|e| e.sequence);
        let expected: usize = commands.iter().map(|c| c.events.len()).sum();
        let ours = events.len() == expected
            && events
                .iter()
                .zip(expected_version + 1..)
                .all(|(e, sequence)| e.sequence == sequence);
        // Anything else (nothing, or ids recorded by an earlier command) means
        // this append did not commit; sent again, the keys decide.
        Ok(ours.then_some(events))
    }
}

/// The append was sent, and whether it committed could not be found out
/// in time.
fn outcome_unknown(stream: &StreamId, lookup: &StoreError) -> StoreError {
    StoreError::OutcomeUnknown {
        stream: stream.to_string(),
        reason: lookup.to_string(),
    }
}
