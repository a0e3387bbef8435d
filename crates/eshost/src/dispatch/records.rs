//! The event store as the write side uses it: every read ridden through
//! transient database errors (see [`StoreError::is_transient`]), with their
//! own limit apart from conflicts; appends grouped into shared transactions
//! ([`GroupCommit`]); and the records of commands, looked up to answer a
//! repeat ([`idempotency`](super::idempotency)) or to settle an unknown
//! outcome ([`settle`](super::settle)).

use crate::error::StoreError;
use crate::group_commit::GroupCommit;
use crate::metrics::Metrics;
use eshost_store::EventStore;
use std::future::Future;
use std::sync::Arc;
use tokio::time::Instant;
use tracing::warn;

use super::RetryPolicy;

pub(super) struct Records {
    pub store: Arc<dyn EventStore>,
    /// Every append goes through here, grouped with other streams' appends
    /// ready at the same moment.
    pub commits: GroupCommit,
    pub retry: RetryPolicy,
    pub metrics: Arc<Metrics>,
}

impl Records {
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
        let mut budget = Budget::new(self, None);
        loop {
            match call().await {
                Err(error) if error.is_transient() => {
                    if budget.wait(what, &error).await.is_err() {
                        return Err(error);
                    }
                }
                result => return result,
            }
        }
    }
}

/// The transient retries a store call (or an append and its settling) may
/// still make, and by when.
pub(super) struct Budget<'a> {
    records: &'a Records,
    deadline: Option<Instant>,
    retries: u32,
}

impl<'a> Budget<'a> {
    pub(super) fn new(records: &'a Records, deadline: Option<Instant>) -> Self {
        Self {
            records,
            deadline,
            retries: 0,
        }
    }

    /// Waits before the next try, or says there is none: the retries are
    /// spent, or the wait would end past the deadline.
    pub(super) async fn wait(&mut self, what: &'static str, error: &StoreError) -> Result<(), ()> {
        let policy = &self.records.retry;
        // The pool's own wait was the retry: another would only keep the
        // caller longer (see eshost_store's POOL_WAIT).
        if self.retries >= policy.max_transient_retries || error.pool_exhausted() {
            return Err(());
        }
        self.retries += 1;
        let delay = policy.transient_backoff(self.retries);
        let past_deadline = self
            .deadline
            .is_some_and(|deadline| Instant::now() + delay >= deadline);
        if past_deadline {
            return Err(());
        }
        warn!(what, attempt = self.retries, ?delay, %error, "transient database error; retrying");
        self.records.metrics.transient_retries.inc();
        tokio::time::sleep(delay).await;
        Ok(())
    }
}
