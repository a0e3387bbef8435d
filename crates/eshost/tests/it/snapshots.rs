//! Snapshots: written every N events, keyed by component digest, used when
//! hydrating, and never trusted blindly.

use crate::util::*;
use eshost::{Concurrency, EventStore, Host, HostOptions, Snapshot, StreamId};
use std::sync::Arc;

async fn host_with(db: &TestDb, snapshot_every: u64, concurrency: Concurrency) -> Arc<Host> {
    let store = eshost::store::open(&db.url).await.unwrap();
    let options = HostOptions {
        concurrency,
        snapshot_every,
        ..HostOptions::default()
    };
    Arc::new(Host::with_options(modules(), store, options))
}

async fn snapshots_are_written_every_n_events_and_used(db: &TestDb) {
    for (id, mode) in [
        ("opt", Concurrency::Optimistic),
        ("queued", Concurrency::Queued),
    ] {
        let host = host_with(db, 10, mode).await;
        host.execute(&create(id, 100)).await.unwrap();
        for n in 0..24 {
            host.execute(&purchase(id, &format!("b{n}"), 1))
                .await
                .unwrap();
        }
        let stream = StreamId::new(FLASH_SALE, id);
        let digest = &modules().get(FLASH_SALE).unwrap().digest.clone();
        let snapshot = host
            .store()
            .streams()
            .load_snapshot(&stream, digest)
            .await
            .unwrap();
        let snapshot = snapshot.unwrap_or_else(|| panic!("{id}: no snapshot after 25 events"));
        assert_eq!(snapshot.version, 20, "{id}");
        // Another component version never sees it.
        assert_eq!(
            host.store()
                .streams()
                .load_snapshot(&stream, "0000")
                .await
                .unwrap(),
            None
        );

        // A fresh host (empty cache) hydrates from it and the events after it.
        let fresh = host_with(db, 10, mode).await;
        let state = fresh.state(FLASH_SALE, id).await.unwrap();
        assert_eq!(
            (state["stock"].as_u64(), state["sold"].as_u64()),
            (Some(76), Some(24)),
            "{id}"
        );
        assert_eq!(state["buyers"].as_array().unwrap().len(), 24);
    }
}

async fn a_bad_snapshot_costs_a_replay_not_a_wrong_state(db: &TestDb) {
    let host = host_with(db, 5, Concurrency::Queued).await;
    host.execute(&create("bad", 10)).await.unwrap();
    for n in 0..6 {
        host.execute(&purchase("bad", &format!("b{n}"), 1))
            .await
            .unwrap();
    }
    // Overwrite the snapshot with garbage at a later version.
    let stream = StreamId::new(FLASH_SALE, "bad");
    let digest = modules().get(FLASH_SALE).unwrap().digest.clone();
    let garbage = Snapshot {
        version: 6,
        state: b"not json".to_vec(),
    };
    let stored = save_and_read_back(host.store(), &stream, &digest, &garbage).await;
    assert_eq!(stored.state, b"not json");

    let fresh = host_with(db, 5, Concurrency::Queued).await;
    let state = fresh.state(FLASH_SALE, "bad").await.unwrap();
    assert_eq!(
        (state["stock"].as_u64(), state["sold"].as_u64()),
        (Some(4), Some(6))
    );
    // An older snapshot never replaces a newer one.
    let older = Snapshot {
        version: 1,
        state: b"{}".to_vec(),
    };
    let stored = save_and_read_back(host.store(), &stream, &digest, &older).await;
    assert_eq!(stored.version, 6);
}

/// Saves `snapshot`, then returns the one the store now holds.
async fn save_and_read_back(
    store: &Arc<dyn EventStore>,
    stream: &StreamId,
    digest: &str,
    snapshot: &Snapshot,
) -> Snapshot {
    store
        .streams()
        .save_snapshot(stream, digest, snapshot)
        .await
        .unwrap();
    store
        .streams()
        .load_snapshot(stream, digest)
        .await
        .unwrap()
        .unwrap()
}

/// A snapshot by one component version supersedes the other versions' ones
/// at or below its version (after an upgrade they would never be read
/// again); another version's newer snapshot stays (a rollback may want it).
async fn a_new_versions_snapshot_prunes_the_old_ones(db: &TestDb) {
    let store = eshost::store::open(&db.url).await.unwrap();
    let stream = StreamId::new(FLASH_SALE, "pruned");
    let other = StreamId::new(FLASH_SALE, "untouched");
    let at = |version: u64| Snapshot {
        version,
        state: vec![version as u8],
    };
    let version_of = |stream: StreamId, digest: &'static str| {
        let store = store.clone();
        async move {
            let found = store
                .streams()
                .load_snapshot(&stream, digest)
                .await
                .unwrap();
            found.map(|s| s.version)
        }
    };
    store
        .streams()
        .save_snapshot(&stream, "old", &at(5))
        .await
        .unwrap();
    store
        .streams()
        .save_snapshot(&other, "old", &at(5))
        .await
        .unwrap();
    // Behind the old version's snapshot: both stay.
    store
        .streams()
        .save_snapshot(&stream, "new", &at(3))
        .await
        .unwrap();
    assert_eq!(version_of(stream.clone(), "old").await, Some(5));
    assert_eq!(version_of(stream.clone(), "new").await, Some(3));
    // At or past it: the old one goes, on this stream only.
    store
        .streams()
        .save_snapshot(&stream, "new", &at(5))
        .await
        .unwrap();
    assert_eq!(version_of(stream.clone(), "old").await, None);
    assert_eq!(version_of(stream.clone(), "new").await, Some(5));
    assert_eq!(version_of(other.clone(), "old").await, Some(5));
}

crate::conformance!(
    snapshots_are_written_every_n_events_and_used,
    a_bad_snapshot_costs_a_replay_not_a_wrong_state,
    a_new_versions_snapshot_prunes_the_old_ones,
);

/// The cache keeps at most its capacity; an evicted aggregate is simply
/// hydrated again.
#[tokio::test]
async fn the_aggregate_cache_is_bounded() {
    let db = TestDb::sqlite().await;
    let store = eshost::store::open(&db.url).await.unwrap();
    let options = HostOptions {
        concurrency: Concurrency::Optimistic,
        cache_capacity: 2,
        ..HostOptions::default()
    };
    let host = Host::with_options(modules(), store, options);
    for id in ["a", "b", "c"] {
        host.execute(&create(id, 3)).await.unwrap();
    }
    assert_eq!(host.cached_aggregates(), 2);
    for id in ["a", "b", "c"] {
        host.execute(&purchase(id, "x", 1)).await.unwrap();
        assert_eq!(host.state(FLASH_SALE, id).await.unwrap()["stock"], 2);
    }
    assert_eq!(host.cached_aggregates(), 2);
    db.cleanup().await;
}
