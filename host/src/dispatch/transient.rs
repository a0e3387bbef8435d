//! Riding out transient database errors (see [`StoreError::is_transient`]),
//! separately from conflicts and with their own limit.
//!
//! A read is simply tried again. An append is different: when the connection
//! drops mid-statement, the append may or may not have committed. The host
//! never guesses: it looks the batch's command ids up. Found, the append
//! committed and those are its events; not found, it did not, and the same
//! append is sent again. Should a lost commit still land later, the unique
//! keys (stream sequence, command id) make the second append fail, never
//! double.

use super::Shared;
use crate::error::StoreError;
use crate::store::{NewCommand, RecordedEvent, StreamId};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use tracing::{info, warn};

impl Shared {
    /// `call`, tried again after a transient error, up to the policy's limit.
    pub(super) async fn patiently<T, F, Fut>(
        &self,
        what: &'static str,
        mut call: F,
    ) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let mut attempt = 0;
        loop {
            match call().await {
                Err(error)
                    if error.is_transient() && attempt < self.retry.max_transient_retries =>
                {
                    attempt += 1;
                    let delay = self.retry.transient_backoff(attempt);
                    warn!(what, attempt, ?delay, %error, "transient database error; retrying");
                    self.metrics.transient_retries.inc();
                    tokio::time::sleep(delay).await;
                }
                result => return result,
            }
        }
    }

    /// Appends `commands` at `expected_version`, settling any attempt whose
    /// outcome a transient error left unknown by looking up its command ids.
    /// An attempt that never reached the database (no connection in time,
    /// a refused connection) is simply sent again.
    ///
    /// Once an attempt's outcome was unknown, a later attempt that meets a
    /// key (the sequence taken, a command id recorded) is settled the same
    /// way before its error goes back: the append it repeats may be the one
    /// that took the key, and deciding again would then answer a recorded
    /// command with a conflict or a refusal. This is what happens when the
    /// settling lookup itself gives up and the append is sent again.
    pub(super) async fn append_settled(
        &self,
        stream: &StreamId,
        expected_version: u64,
        commands: &[NewCommand],
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let unsettled = AtomicBool::new(false);
        self.patiently("append", || async {
            let error = match self.store.append(stream, expected_version, commands).await {
                Err(error) if error.outcome_unknown() => {
                    unsettled.store(true, Ordering::Relaxed);
                    error
                }
                Err(error @ (StoreError::Conflict { .. } | StoreError::DuplicateCommand { .. }))
                    if unsettled.load(Ordering::Relaxed) =>
                {
                    error
                }
                result => return result,
            };
            match self.committed(stream, expected_version, commands).await? {
                Some(events) => {
                    info!(%stream, %error, "an append's outcome was unknown; its command ids show it committed");
                    Ok(events)
                }
                None => Err(error),
            }
        })
        .await
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
        let found = self
            .patiently("settle", || self.store.find_commands(&ids))
            .await?;
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
