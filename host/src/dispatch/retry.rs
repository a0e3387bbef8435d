//! How long to wait between optimistic retries: exponential backoff with full
//! jitter (a uniform delay in `0..=min(max_delay, base_delay * 2^attempt)`), so
//! writers that collided once spread out instead of colliding again in step.

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
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 5,
            base_delay: Duration::from_millis(4),
            max_delay: Duration::from_millis(250),
        }
    }
}

impl RetryPolicy {
    /// The delay before retry number `retry` (1-based).
    pub fn backoff(&self, retry: u32) -> Duration {
        let ceiling = self
            .base_delay
            .saturating_mul(1u32 << retry.saturating_sub(1).min(20))
            .min(self.max_delay);
        let micros = u64::try_from(ceiling.as_micros()).unwrap_or(u64::MAX);
        Duration::from_micros(rand::rng().random_range(0..=micros))
    }
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
