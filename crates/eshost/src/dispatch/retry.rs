//! How often and how long to wait before trying again, for the two kinds of
//! failure that are worth it: a conflict (another writer appended first) and
//! a transient database error (a dropped connection, a restart, a
//! serialization failure, a pool timeout). Each has its own limit. Both back
//! off exponentially with full jitter (a uniform delay in
//! `0..=min(max, base * 2^attempt)`), so writers that collided once spread
//! out instead of colliding again in step. One deadline bounds a command's
//! appends and their settling, whatever the counts allow.

use rand::Rng;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Conflicts tolerated per command before it fails with `RetriesExhausted`.
    pub max_retries: u32,
    /// The backoff ceiling before the first retry; it doubles each retry.
    pub base_delay: Duration,
    /// The backoff ceiling never grows past this.
    pub max_delay: Duration,
    /// Transient database errors tolerated per store call before the error
    /// is returned.
    pub max_transient_retries: u32,
    /// The first transient retry's backoff ceiling; it doubles each retry.
    pub transient_base_delay: Duration,
    /// The transient backoff ceiling never grows past this.
    pub transient_max_delay: Duration,
    /// How long one command may spend on its appends: attempts after
    /// transient errors and the lookups that settle an unknown outcome
    /// (optimistic mode: from the command's start, across its conflict
    /// rounds; queued mode: from when its batch is appended). The retry
    /// count above bounds the same waiting; whichever ends first ends it.
    pub command_deadline: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 5,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(250),
            // Up to about 11 s of waiting in all: enough to ride out a
            // database restart.
            max_transient_retries: 10,
            transient_base_delay: Duration::from_millis(50),
            transient_max_delay: Duration::from_secs(2),
            command_deadline: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The delay before conflict retry number `retry` (1-based).
    pub fn backoff(&self, retry: u32) -> Duration {
        full_jitter(self.base_delay, self.max_delay, retry)
    }

    /// The delay before transient retry number `retry` (1-based).
    pub fn transient_backoff(&self, retry: u32) -> Duration {
        full_jitter(self.transient_base_delay, self.transient_max_delay, retry)
    }
}

fn full_jitter(base: Duration, max: Duration, retry: u32) -> Duration {
    let ceiling = base
        .saturating_mul(1u32 << retry.saturating_sub(1).min(20))
        .min(max);
    let micros = u64::try_from(ceiling.as_micros()).unwrap_or(u64::MAX);
    Duration::from_micros(rand::rng().random_range(0..=micros))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_stays_under_a_doubling_ceiling() {
        let policy = RetryPolicy::default();
        for retry in 1..=10 {
            let ceiling = (policy.base_delay * (1 << (retry - 1))).min(policy.max_delay);
            for _ in 0..100 {
                assert!(policy.backoff(retry) <= ceiling);
            }
        }
        // Full jitter: the delays are spread, not all at the ceiling.
        let delays: std::collections::HashSet<_> = (0..50).map(|_| policy.backoff(3)).collect();
        assert!(delays.len() > 10);
    }
}
