//! Watches the read side, so an operator sees it stop before a user does:
//! the global log's horizon and each projection's status, position and
//! lag, as metrics, log lines and (if asked) readiness.
//!
//! A reader of the log sees events only below the oldest transaction
//! still writing (see [`eshost_store::GlobalLog::read_all`]), so one
//! transaction left open, in eshost or anything else on the same
//! PostgreSQL, stops every follower and projection while commands go on
//! succeeding. Every [`ServerConfig::read_side_check`] the server asks
//! the store who holds the horizon and where each projection stands, sets
//! the gauges, and logs a warning once a transaction has held the
//! horizon longer than [`HELD_TOO_LONG`] (naming its backend's pid; again
//! each minute it stays held). What it found is also in `/readyz`, which
//! answers 503 for it only with [`ServerConfig::ready_requires_read_side`]:
//! by default a read-side problem does not take a host out of its load
//! balancer, since its commands still work.
//!
//! [`ServerConfig::read_side_check`]: crate::ServerConfig::read_side_check
//! [`ServerConfig::ready_requires_read_side`]: crate::ServerConfig::ready_requires_read_side

use eshost_core::view::STATUS_FAILED;
use eshost_store::{EventStore, HorizonHolder, ViewStore};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long a transaction may hold the horizon before it is a problem.
pub const HELD_TOO_LONG: Duration = Duration::from_secs(5);

/// How often a holder that stays is logged again.
const WARN_AGAIN: Duration = Duration::from_secs(60);

/// The most events counted as one reader's lag, each check.
const MAX_LAG_COUNTED: u64 = 100_000;

/// How many events a reader at `position` of the aggregate types `reads`
/// has yet to read, counting at most [`MAX_LAG_COUNTED`]; `None` when what
/// it reads is not known here.
pub(crate) async fn lag_of(
    views: &dyn ViewStore,
    position: i64,
    reads: Option<&Vec<String>>,
) -> Result<Option<u64>, eshost_store::StoreError> {
    match reads {
        Some(aggregates) => views
            .events_after(position, aggregates, MAX_LAG_COUNTED)
            .await
            .map(Some),
        None => Ok(None),
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProjectionLabels {
    projection: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReactorLabels {
    reactor: String,
}

/// The reactors' gauges.
#[derive(Default)]
struct ReactorGauges {
    position: Family<ReactorLabels, Gauge>,
    lag: Family<ReactorLabels, Gauge>,
    parked: Family<ReactorLabels, Gauge>,
    timers: Family<ReactorLabels, Gauge>,
    pending: Family<ReactorLabels, Gauge>,
}

/// The read side's gauges, and the problems the last check found.
pub struct ReadSide {
    horizon_held: Gauge<f64, AtomicU64>,
    position: Family<ProjectionLabels, Gauge>,
    failed: Family<ProjectionLabels, Gauge>,
    lag: Family<ProjectionLabels, Gauge>,
    reactors: ReactorGauges,
    problems: Mutex<Vec<String>>,
}

impl std::fmt::Debug for ReadSide {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadSide").finish_non_exhaustive()
    }
}

impl ReadSide {
    /// The gauges go into `registry`.
    pub(crate) fn new(registry: &mut Registry) -> Self {
        let read_side = Self {
            horizon_held: Gauge::default(),
            position: Family::default(),
            failed: Family::default(),
            lag: Family::default(),
            reactors: ReactorGauges::default(),
            problems: Mutex::default(),
        };
        let eshost = registry.sub_registry_with_prefix("eshost");
        eshost.register(
            "log_horizon_held_seconds",
            "How long the oldest transaction still writing has held the global log's horizon (0: none)",
            read_side.horizon_held.clone(),
        );
        eshost.register(
            "projection_position",
            "The position of the last event a projection's live view includes",
            read_side.position.clone(),
        );
        eshost.register(
            "projection_failed",
            "1 while an event its guest failed has stopped the projection, else 0",
            read_side.failed.clone(),
        );
        eshost.register(
            "projection_lag_events",
            "Events of the types a projection reads, not yet in its view (counted to 100000; projections this server runs)",
            read_side.lag.clone(),
        );
        let reactors = &read_side.reactors;
        for (name, help, family) in [
            (
                "reactor_position",
                "The position of the last event a reactor reacted to, or passed over",
                &reactors.position,
            ),
            (
                "reactor_lag_events",
                "Events of the aggregates a reactor subscribes to after its position (counted to 100000; reactors this server runs)",
                &reactors.lag,
            ),
            (
                "reactor_parked_events",
                "Events a reactor parked (refused or failed), waiting to be retried",
                &reactors.parked,
            ),
            (
                "reactor_timers",
                "Timers a reactor scheduled that have not fired",
                &reactors.timers,
            ),
            (
                "reactor_pending_actions",
                "Actions a reactor's reactions recorded and not yet performed",
                &reactors.pending,
            ),
        ] {
            eshost.register(name, help, family.clone());
        }
        read_side
    }

    /// What the last check found wrong, one line each.
    pub fn problems(&self) -> Vec<String> {
        self.problems
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// One check; returns the holder of the horizon, if any. `reads`: the
    /// aggregate types each projection this server runs reads, by name:
    /// its lag is counted among their events. Others have no lag gauge
    /// (their reader is elsewhere, and events of types they do not read
    /// would count).
    async fn check(
        &self,
        store: &dyn EventStore,
        reads: &BTreeMap<String, Vec<String>>,
        reactor_reads: &BTreeMap<String, Vec<String>>,
    ) -> Option<HorizonHolder> {
        let mut problems = Vec::new();
        let holder = match store.log().horizon_holder().await {
            Ok(holder) => holder,
            Err(e) => {
                tracing::debug!(error = %e, "cannot ask who holds the log's horizon");
                None
            }
        };
        self.horizon_held
            .set(holder.as_ref().map_or(0.0, |h| h.held_seconds));
        if let Some(h) = holder.as_ref().filter(|h| held_too_long(h)) {
            problems.push(format!(
                "the global log's horizon has been held {:.0} s by PostgreSQL backend {} ({})",
                h.held_seconds, h.pid, h.state
            ));
        }
        match store.views().projections().await {
            Ok(records) => {
                for record in records {
                    let labels = ProjectionLabels {
                        projection: record.name.clone(),
                    };
                    self.position.get_or_create(&labels).set(record.position);
                    let failed = record.status == STATUS_FAILED;
                    self.failed.get_or_create(&labels).set(i64::from(failed));
                    if failed {
                        problems.push(format!(
                            "projection {} stopped: {}",
                            record.name,
                            record.error.as_deref().unwrap_or("(no reason recorded)")
                        ));
                    }
                    match lag_of(store.views(), record.position, reads.get(&record.name)).await {
                        Ok(Some(lag)) => {
                            let lag = i64::try_from(lag).unwrap_or(i64::MAX);
                            self.lag.get_or_create(&labels).set(lag);
                        }
                        Ok(None) => {}
                        Err(e) => {
                            tracing::debug!(error = %e, projection = %record.name, "cannot count a projection's lag")
                        }
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "cannot read the projections' records"),
        }
        self.check_reactors(store, reactor_reads, &mut problems)
            .await;
        *self.problems.lock().unwrap_or_else(|p| p.into_inner()) = problems;
        holder
    }

    /// The reactors' gauges; a reactor stopped at a parked event is a
    /// problem.
    async fn check_reactors(
        &self,
        store: &dyn EventStore,
        reads: &BTreeMap<String, Vec<String>>,
        problems: &mut Vec<String>,
    ) {
        let reactions = store.reactions();
        let records = match reactions.reactors().await {
            Ok(records) => records,
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the reactors' records");
                return;
            }
        };
        let gauges = &self.reactors;
        let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        for record in records {
            let labels = ReactorLabels {
                reactor: record.name.clone(),
            };
            gauges.position.get_or_create(&labels).set(record.position);
            match reactions.reactor_counts(&record.name).await {
                Ok(counts) => {
                    gauges
                        .parked
                        .get_or_create(&labels)
                        .set(count(counts.parked));
                    gauges
                        .timers
                        .get_or_create(&labels)
                        .set(count(counts.timers));
                    gauges
                        .pending
                        .get_or_create(&labels)
                        .set(count(counts.pending));
                    if record.on_failure == eshost_core::OnFailure::Stop && counts.parked > 0 {
                        let stopped =
                            reactions
                                .parked_events(&record.name)
                                .await
                                .ok()
                                .and_then(|parked| {
                                    parked.into_iter().find(|p| p.position > record.position)
                                });
                        if let Some(event) = stopped {
                            problems.push(format!(
                                "reactor {} stopped at {} (position {}): {}",
                                record.name, event.event, event.position, event.reason
                            ));
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, reactor = %record.name, "cannot count a reactor's work")
                }
            }
            match lag_of(store.views(), record.position, reads.get(&record.name)).await {
                Ok(Some(lag)) => {
                    gauges.lag.get_or_create(&labels).set(count(lag));
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(error = %e, reactor = %record.name, "cannot count a reactor's lag")
                }
            }
        }
    }
}

fn held_too_long(holder: &HorizonHolder) -> bool {
    holder.held_seconds >= HELD_TOO_LONG.as_secs_f64()
}

/// Runs until `stop`: a check each `every`, each bounded by it (at least
/// a second): a store that does not answer leaves the gauges as they were.
pub(crate) async fn watch(app: crate::App, every: Duration, stop: CancellationToken) {
    let (store, read_side) = (app.host.store().clone(), app.read_side.clone());
    // The holder last warned about, and when.
    let mut warned: Option<(i32, Instant)> = None;
    loop {
        let reads = app.projection_reads();
        let reactor_reads = app.reactor_reads();
        let checked = tokio::time::timeout(
            every.max(Duration::from_secs(1)),
            read_side.check(&*store, &reads, &reactor_reads),
        );
        let holder = tokio::select! {
            checked = checked => checked.ok().flatten(),
            () = stop.cancelled() => return,
        };
        match holder.filter(held_too_long) {
            None => warned = None,
            Some(holder) => {
                let due = match warned {
                    Some((pid, at)) => pid != holder.pid || at.elapsed() >= WARN_AGAIN,
                    None => true,
                };
                if due {
                    tracing::warn!(
                        pid = holder.pid,
                        held_seconds = holder.held_seconds.round(),
                        state = %holder.state,
                        application = %holder.application,
                        "a transaction has held the global log's horizon for over {} s: followers and projections see no event committed since it began until it ends (see pg_stat_activity by pid)",
                        HELD_TOO_LONG.as_secs()
                    );
                    warned = Some((holder.pid, Instant::now()));
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = stop.cancelled() => return,
        }
    }
}
