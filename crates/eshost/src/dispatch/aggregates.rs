//! The aggregates stage 3 decides on: an instance of the guest holding one
//! aggregate's state, current with its stream. From the cache when it is
//! there and of the component deciding; else hydrated, from the latest
//! snapshot that component wrote plus the events after it, read a page at
//! a time while the guest applies the page before. After an append, a
//! snapshot when one is due. The calls into the guest themselves are in
//! [`guest`](super::guest).

use super::REPLAY_PAGE;
use super::cache::AggregateCache;
use super::records::Records;
use crate::error::{CommandError, GuestError};
use crate::metrics::Metrics;
use eshost_store::StreamId;
use eshost_wasm::instance::DecidedEvent;
use eshost_wasm::{GuestPool, Hydrated, LoadedComponent};
use std::sync::Arc;
use tracing::{Instrument, Span, debug_span, warn};

/// The hydrated aggregates, and what it takes to make more.
pub(super) struct Aggregates {
    pub records: Arc<Records>,
    pub cache: AggregateCache,
    /// Where guest calls run.
    pub guests: GuestPool,
    /// A snapshot every this many events; 0 for never.
    pub snapshot_every: u64,
    pub metrics: Arc<Metrics>,
}

impl Aggregates {
    /// An instance brought up to the latest stream: the cached one caught up,
    /// or a new one hydrated.
    pub(super) async fn current(
        &self,
        component: &Arc<LoadedComponent>,
        stream: &StreamId,
    ) -> Result<Hydrated, CommandError> {
        match self.cached(component, stream) {
            Some(cached) => Ok(self.catch_up(cached, stream).await?.0),
            None => self.hydrate(component, stream).await,
        }
    }

    /// The cached instance of a stream, if there is one of this very
    /// component that can still be used (one of a replaced version, or in
    /// an instance lost to a trap, is dropped).
    pub(super) fn cached(
        &self,
        component: &LoadedComponent,
        stream: &StreamId,
    ) -> Option<Hydrated> {
        let cached = self
            .cache
            .take(stream)
            .filter(|cached| cached.component.digest == component.digest && !cached.is_lost());
        match cached {
            Some(_) => self.metrics.cache_hits.inc(),
            None => self.metrics.cache_misses.inc(),
        };
        cached
    }

    /// The instance to decide with: `held` (one the caller kept), else the
    /// cached one, else one hydrated now. The flag is true only for the
    /// last, the one known to be current.
    pub(super) async fn checkout(
        &self,
        component: &Arc<LoadedComponent>,
        stream: &StreamId,
        held: Option<Hydrated>,
    ) -> Result<(Hydrated, bool), CommandError> {
        match held.or_else(|| self.cached(component, stream)) {
            Some(aggregate) => Ok((aggregate, false)),
            None => Ok((self.hydrate(component, stream).await?, true)),
        }
    }

    /// A new instance with the whole stream applied: from the latest usable
    /// snapshot this component wrote, plus the events after it.
    pub(super) async fn hydrate(
        &self,
        component: &Arc<LoadedComponent>,
        stream: &StreamId,
    ) -> Result<Hydrated, CommandError> {
        let started = std::time::Instant::now();
        let snapshot = self.latest_snapshot(component, stream).await;
        let mut hydrated = self.instantiate(component, &stream.id, snapshot).await?;
        hydrated.since = started;
        Ok(self.catch_up(hydrated, stream).await?.0)
    }

    /// The latest snapshot this component wrote of the stream, if snapshots
    /// are on and it can be read. One that cannot only costs a full replay.
    pub(super) async fn latest_snapshot(
        &self,
        component: &LoadedComponent,
        stream: &StreamId,
    ) -> Option<eshost_store::Snapshot> {
        if self.snapshot_every == 0 {
            return None;
        }
        let load = || {
            self.records
                .store
                .streams()
                .load_snapshot(stream, &component.digest)
        };
        match self.records.patiently("load snapshot", load).await {
            Ok(snapshot) => snapshot,
            Err(e) => {
                warn!(%stream, error = %e, "reading the snapshot failed; replaying the stream");
                None
            }
        }
    }

    /// After an append took the stream from `before` to `aggregate.version`:
    /// snapshots the state if that crossed a multiple of `snapshot_every`.
    /// An error means the guest failed and the instance is gone; a store
    /// failure only costs a later replay and is logged. A snapshot taken is
    /// a `snapshot` span under `caller` (the last command's).
    pub(super) async fn maybe_snapshot(
        &self,
        aggregate: Hydrated,
        stream: &StreamId,
        before: u64,
        caller: &Span,
    ) -> Result<Hydrated, CommandError> {
        let every = self.snapshot_every;
        if every == 0 || aggregate.version / every == before / every {
            return Ok(aggregate);
        }
        // A state from before an erasure of its stream may hold the
        // forgotten subject's data: it is not written down again.
        if self.cache.erased_since(stream, aggregate.since) {
            return Ok(aggregate);
        }
        let version = aggregate.version;
        let span = crate::trace::child_of(
            caller,
            || debug_span!(parent: caller, "snapshot", %stream, version),
        );
        async {
            let (aggregate, snapshot) = self.take_snapshot(aggregate).await?;
            let digest = &aggregate.component.digest;
            if let Err(e) = self
                .records
                .store
                .streams()
                .save_snapshot(stream, digest, &snapshot)
                .await
            {
                warn!(%stream, error = %e, "saving a snapshot failed");
            }
            Ok::<Hydrated, CommandError>(aggregate)
        }
        .instrument(span)
        .await
    }

    /// Applies the events recorded after the instance's version; returns the
    /// instance and how many there were. On an error the instance is gone.
    ///
    /// The stream is read [`REPLAY_PAGE`] events at a time, the next page
    /// loading while the guest applies this one: memory stays bounded by
    /// the page, not the stream, and a long replay costs about the larger of
    /// reading and applying, not their sum.
    pub(super) async fn catch_up(
        &self,
        aggregate: Hydrated,
        stream: &StreamId,
    ) -> Result<(Hydrated, usize), CommandError> {
        let component = aggregate.component.clone();
        match self.replay(aggregate, stream, u64::MAX).await {
            Err(CommandError::Guest(GuestError::ApplyFailed(refused)))
                if refused.first < refused.last =>
            {
                let span = (refused.first, refused.last);
                let refused = GuestError::ApplyFailed(refused);
                Err(self
                    .locate_refused_event(&component, stream, span, refused)
                    .await)
            }
            replayed => replayed,
        }
    }

    /// Names the event that an `apply` call of several refused (the 0.1.0
    /// contract does not say which): replays the stream again, this time
    /// with the refused span one event per call. Only on the failure path,
    /// and only as far as the span; a deterministic guest fails again at
    /// the same event. Any other failure on the way is reported instead.
    async fn locate_refused_event(
        &self,
        component: &Arc<LoadedComponent>,
        stream: &StreamId,
        (first, last): (u64, u64),
        refused: GuestError,
    ) -> CommandError {
        let located = async {
            let snapshot = self
                .latest_snapshot(component, stream)
                .await
                .filter(|s| s.version < first);
            let aggregate = self.instantiate(component, &stream.id, snapshot).await?;
            let (aggregate, _) = self.replay(aggregate, stream, first - 1).await?;
            let load = || {
                self.records
                    .store
                    .streams()
                    .load_page(stream, first - 1, Some(last - first + 1))
            };
            let span = self.records.patiently("load", load).await?;
            self.with_instance(aggregate, move |a| a.apply_recorded_in_chunks(&span, 0))
                .await?;
            Ok::<_, CommandError>(())
        };
        match located.await {
            Err(error) => error,
            // The guest applied the span one by one: it is not deterministic.
            Ok(()) => refused.into(),
        }
    }

    /// [`catch_up`](Self::catch_up)'s replay: the events after the
    /// instance's version up to sequence `through`, page by page.
    pub(super) async fn replay(
        &self,
        mut aggregate: Hydrated,
        stream: &StreamId,
        through: u64,
    ) -> Result<(Hydrated, usize), CommandError> {
        let page_size = |after: u64| REPLAY_PAGE.min(through.saturating_sub(after));
        let load_page = |after: u64| {
            self.records.patiently("load", move || {
                self.records
                    .store
                    .streams()
                    .load_page(stream, after, Some(page_size(after)))
            })
        };
        let mut after = aggregate.version;
        let mut page = load_page(after).await?;
        let mut count = 0;
        loop {
            count += page.len();
            let last = match page.last() {
                Some(last) if page.len() as u64 == page_size(after) && last.sequence < through => {
                    last.sequence
                }
                // A short page is the end of the stream (or of the replay).
                _ => return Ok((self.apply_events(aggregate, page).await?, count)),
            };
            after = last;
            let (applied, next) = tokio::join!(self.apply_events(aggregate, page), load_page(last));
            aggregate = applied?;
            page = next?;
        }
    }

    /// After an append: the instance applies its own events (and takes a
    /// snapshot when one is due) and goes back to the cache. The events are
    /// recorded whatever happens here; a guest that cannot apply them loses
    /// its cache entry, and the next command meets the failure on replay.
    pub(super) async fn keep_after_append(
        &self,
        aggregate: Hydrated,
        events: Vec<DecidedEvent>,
        stream: &StreamId,
        base: u64,
        caller: &Span,
    ) {
        let kept = match self.apply_decided(aggregate, events).await {
            Ok(aggregate) => self.maybe_snapshot(aggregate, stream, base, caller).await,
            Err(e) => Err(e),
        };
        match kept {
            Ok(aggregate) => self.cache.put(stream.clone(), aggregate),
            Err(e) => warn!(%stream, error = %e, "instance dropped after append"),
        }
    }
}
