//! The last 15 minutes of a server's work, kept in memory for the console:
//! every [`INTERVAL`], one [`Sample`] of commands per second, the p50 and
//! p99 of a command's latency (as its HTTP caller saw it), the streams per
//! commit and the guest time per command. At most [`SAMPLES`] are kept;
//! nothing is written anywhere.
//!
//! Latencies are counted in quarter-octave buckets (each about 19% wide),
//! one atomic increment per command, so a percentile is exact to a
//! bucket; the host's own metrics give the rest.

use eshost::Host;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often a sample is taken.
pub const INTERVAL: Duration = Duration::from_secs(10);

/// How many samples are kept: 15 minutes.
pub const SAMPLES: usize = 90;

/// Buckets of the latency counts: bucket `i` holds latencies up to
/// `2^(i/4)` microseconds; the last one everything longer (about 17 min).
const BUCKETS: usize = 120;

/// One interval's figures.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Sample {
    /// The interval's end, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    pub commands_per_second: f64,
    /// Of the commands answered over HTTP in the interval; 0 with none.
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Streams per commit (group commit), on average.
    pub commit_streams: f64,
    /// Guest time per command, on average, in milliseconds.
    pub guest_ms_per_command: f64,
}

/// The samples, and the counts of the interval under way.
#[derive(Debug)]
pub struct History {
    samples: Mutex<VecDeque<Sample>>,
    latencies: [AtomicU64; BUCKETS],
}

impl Default for History {
    fn default() -> Self {
        Self {
            samples: Mutex::new(VecDeque::with_capacity(SAMPLES)),
            latencies: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// Totals of the host's counters at one moment: a sample is the
/// difference of two.
#[derive(Debug, Clone, Copy, Default)]
struct Totals {
    commands: u64,
    commits: u64,
    commit_streams: f64,
    guest_seconds: f64,
}

impl History {
    /// Counts one command's latency.
    pub fn record(&self, took: Duration) {
        let micros = took.as_secs_f64() * 1e6;
        let bucket = if micros <= 1.0 {
            0
        } else {
            ((micros.log2() * 4.0).ceil() as usize).min(BUCKETS - 1)
        };
        self.latencies[bucket].fetch_add(1, Ordering::Relaxed);
    }

    /// The samples kept, oldest first.
    pub fn samples(&self) -> Vec<Sample> {
        let samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        samples.iter().copied().collect()
    }

    /// Takes a sample every [`INTERVAL`] until `stop` is cancelled.
    pub async fn run(self: std::sync::Arc<Self>, host: Host, stop: CancellationToken) {
        let mut ticks = tokio::time::interval(INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick comes at once: the first sample one interval on.
        ticks.tick().await;
        let mut last = (std::time::Instant::now(), totals(&host));
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let now = (std::time::Instant::now(), totals(&host));
            let seconds = now.0.duration_since(last.0).as_secs_f64();
            self.push(self.sample(seconds, &last.1, &now.1));
            last = now;
        }
    }

    fn push(&self, sample: Sample) {
        let mut samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        if samples.len() == SAMPLES {
            samples.pop_front();
        }
        samples.push_back(sample);
    }

    /// The sample of an interval of `seconds` from `then` to `now`; takes
    /// (and clears) the latencies counted meanwhile.
    fn sample(&self, seconds: f64, then: &Totals, now: &Totals) -> Sample {
        let counts: Vec<u64> = self
            .latencies
            .iter()
            .map(|c| c.swap(0, Ordering::Relaxed))
            .collect();
        let per = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        let commands = now.commands.saturating_sub(then.commands) as f64;
        let commits = now.commits.saturating_sub(then.commits) as f64;
        Sample {
            at_ms: u64::try_from(eshost_core::now_ms()).unwrap_or(0),
            commands_per_second: per(commands, seconds),
            p50_ms: percentile(&counts, 0.50),
            p99_ms: percentile(&counts, 0.99),
            commit_streams: per(now.commit_streams - then.commit_streams, commits),
            guest_ms_per_command: per((now.guest_seconds - then.guest_seconds) * 1e3, commands),
        }
    }
}

/// The latency, in milliseconds, below which `share` of the counts lie:
/// the upper bound of the bucket that reaches it.
fn percentile(counts: &[u64], share: f64) -> f64 {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return 0.0;
    }
    let wanted = ((total as f64) * share).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (bucket, count) in counts.iter().enumerate() {
        seen += count;
        if seen >= wanted {
            return 2f64.powf(bucket as f64 / 4.0) / 1e3;
        }
    }
    0.0
}

/// The host's counters now, summed over its aggregates: read from its
/// metrics text (the client library exposes no histogram sums), once an
/// interval.
fn totals(host: &Host) -> Totals {
    let text = host.render_metrics();
    let sum = |name: &str| -> f64 {
        text.lines()
            .filter(|line| {
                line.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
            })
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    Totals {
        commands: sum("eshost_command_seconds_count") as u64,
        commits: sum("eshost_commits_total") as u64,
        commit_streams: sum("eshost_commit_streams_sum"),
        guest_seconds: sum("eshost_guest_call_seconds_sum"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_fall_in_the_bucket_that_holds_them() {
        let history = History::default();
        for _ in 0..98 {
            history.record(Duration::from_micros(1_000));
        }
        history.record(Duration::from_millis(50));
        history.record(Duration::from_millis(50));
        let sample = history.sample(10.0, &Totals::default(), &Totals::default());
        // 1 ms lies in the bucket up to 2^(40/4) us = 1.024 ms.
        assert!((sample.p50_ms - 1.024).abs() < 1e-9, "{sample:?}");
        // 50 ms in the one up to 2^(63/4) us, about 55 ms.
        assert!(sample.p99_ms > 50.0 && sample.p99_ms < 60.0, "{sample:?}");
        // Taken: the next interval starts empty.
        let next = history.sample(10.0, &Totals::default(), &Totals::default());
        assert_eq!(next.p99_ms, 0.0);
    }
}
