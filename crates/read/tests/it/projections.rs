//! Projections: the sales-summary guest builds its view from the global log
//! exactly once, whether two runners race or the process restarts; an event
//! the guest fails stops it there, visibly, and is never skipped; a rebuild
//! is never seen half built.

use crate::util::*;
use eshost::store::DeployAction;
use eshost::store::{EventStore, ViewId};
use eshost::wasm::{LoadedProjection, Runtime};
use eshost_read::deployed::{self, DeployError};
use eshost_read::projector::{self, Projector, ProjectorError};
use eshost_read::supervisor::Supervisor;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const PROJECTION: &str = "sales-summary";

crate::conformance!(
    runners_racing_apply_every_event_once,
    an_event_the_guest_fails_stops_the_projection_there,
    readers_never_see_a_rebuild_half_built,
    a_watched_directory_seeds_and_the_store_decides_what_runs,
    an_id_of_the_full_length_is_projected_under_its_stored_key,
);

async fn open(db: &TestDb) -> Arc<dyn EventStore> {
    eshost::store::open(&db.url).await.unwrap()
}

/// Four runners of the live view follow the log while eight writers sell.
/// Each commit moves the checkpoint only from where its runner found it, so
/// whichever loses a race starts again from the winner's checkpoint: every
/// purchase is counted once (the summary adds, so a repeat would show).
async fn runners_racing_apply_every_event_once(db: &TestDb) {
    const WRITERS: usize = 8;
    const ITEMS: usize = 3;
    const PURCHASES: usize = 10;
    const RUNNERS: usize = 4;
    let store = open(db).await;
    let stop = CancellationToken::new();
    let runners: Vec<_> = (0..RUNNERS)
        .map(|_| {
            let store = store.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut projector = Projector::live(store, sales_summary()).await?;
                projector.run(stop.cancelled()).await?;
                Ok::<_, ProjectorError>(projector.progress())
            })
        })
        .collect();
    let host = db.host(eshost::RetryPolicy::default()).await;
    let item = |w: usize, i: usize| format!("item-{w}-{i}");
    sell_concurrently(host, WRITERS, ITEMS, PURCHASES, item).await;

    let last = head(&*store).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let record = store
            .views()
            .projections()
            .await
            .unwrap()
            .into_iter()
            .find(|r| r.name == PROJECTION);
        if record.is_some_and(|r| r.position == last) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the runners did not reach position {last}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    let mut projected = 0;
    for runner in runners {
        projected += runner.await.unwrap().unwrap().projected;
    }
    let events = (WRITERS * ITEMS * (1 + PURCHASES)) as u64;
    assert!(
        projected >= events,
        "{projected} of {events} events projected"
    );
    assert_view(
        &documents(&*store).await,
        &expected_view(WRITERS, ITEMS, PURCHASES as u64, item),
    );
}

/// An event whose payload the guest cannot read stops the projection at
/// that event: the events before it are in the view, the ones after are
/// not, the status says which event and why, and running it again stops at
/// the same event rather than skip it.
async fn an_event_the_guest_fails_stops_the_projection_there(db: &TestDb) {
    let store = open(db).await;
    let host = db.host(eshost::RetryPolicy::default()).await;
    sales_with_an_unreadable_event(&host, &*store).await;
    let log = store.log().read_all(0, None, 10).await.unwrap();
    let (created_a, bad) = (log[0].position, log[1].position);

    for _ in 0..2 {
        let mut projector = Projector::live(store.clone(), sales_summary())
            .await
            .unwrap();
        match projector.catch_up().await {
            Err(ProjectorError::Stopped {
                position, event, ..
            }) => {
                assert_eq!(position, bad);
                assert!(event.contains("ItemPurchased"), "{event}");
            }
            other => panic!("expected the projection to stop, got {other:?}"),
        }
        let record = store.views().projections().await.unwrap().remove(0);
        assert_eq!(
            (record.status.as_str(), record.position),
            ("failed", created_a)
        );
        let error = record.error.unwrap();
        assert!(
            error.contains(&bad.to_string()) && error.contains("\"two\""),
            "{error}"
        );
        let view = documents(&*store).await;
        assert!(
            view.contains_key("item:a") && !view.contains_key("item:b"),
            "{view:?}"
        );
    }
}

/// Readers scan the whole view again and again while it is rebuilt from
/// the first event (in more than one commit: the log is longer than a page):
/// every read is the complete view, never the new generation part-built.
/// Then the new generation is live and equal to the old.
async fn readers_never_see_a_rebuild_half_built(db: &TestDb) {
    const WRITERS: usize = 10;
    const ITEMS: usize = 20;
    const PURCHASES: usize = 9;
    let store = open(db).await;
    let host = db.host(eshost::RetryPolicy::default()).await;
    let item = |w: usize, i: usize| format!("r-{w}-{i}");
    sell_concurrently(host, WRITERS, ITEMS, PURCHASES, item).await;
    let mut live = Projector::live(store.clone(), sales_summary())
        .await
        .unwrap();
    live.catch_up().await.unwrap();
    let before = documents(&*store).await;
    assert_view(
        &before,
        &expected_view(WRITERS, ITEMS, PURCHASES as u64, item),
    );

    let rebuilding = Arc::new(AtomicBool::new(false));
    let reads_during_rebuild = Arc::new(AtomicU64::new(0));
    let stop = CancellationToken::new();
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let (store, before, stop) = (store.clone(), before.clone(), stop.clone());
            let (rebuilding, reads) = (rebuilding.clone(), reads_during_rebuild.clone());
            tokio::spawn(async move {
                while !stop.is_cancelled() {
                    let during = rebuilding.load(Ordering::SeqCst);
                    let view = documents(&*store).await;
                    assert!(
                        view == before,
                        "a reader saw {} documents, total {:?}",
                        view.len(),
                        view.get("total")
                    );
                    if during && rebuilding.load(Ordering::SeqCst) {
                        reads.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    rebuilding.store(true, Ordering::SeqCst);
    let (view, progress) = projector::rebuild(store.clone(), sales_summary())
        .await
        .unwrap();
    rebuilding.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(50)).await;
    stop.cancel();
    for reader in readers {
        reader.await.unwrap();
    }
    let events = (WRITERS * ITEMS * (1 + PURCHASES)) as u64;
    assert_eq!(
        view,
        ViewId {
            projection: PROJECTION.into(),
            generation: 2
        }
    );
    assert_eq!(
        (progress.projected, progress.position),
        (events, head(&*store).await)
    );
    assert!(
        reads_during_rebuild.load(Ordering::SeqCst) > 0,
        "no read overlapped the rebuild"
    );
    assert_eq!(documents(&*store).await, before);
    let record = store.views().projections().await.unwrap().remove(0);
    assert_eq!((record.generation, record.status.as_str()), (2, "ok"));
}

/// `eshost projection run`'s supervisor on a watched directory, from empty:
/// a new file is deployed and starts its projection; a file that does not
/// load changes nothing; a changed file replaces the running version, which
/// goes on from the same checkpoint; a removed file changes nothing; a
/// version deployed in the store (no file) takes over, and a rollback
/// brings the earlier one back; another supervisor, with an empty
/// directory, runs what the first seeded; a projection stopped by an event
/// it fails is started again when another version goes live, and stops at
/// the same event.
async fn a_watched_directory_seeds_and_the_store_decides_what_runs(db: &TestDb) {
    let store = open(db).await;
    let host = db.host(eshost::RetryPolicy::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let original = std::fs::read(projections_dir().join("sales-summary.wasm")).unwrap();
    let supervisor = Supervisor::new(
        store.clone(),
        Runtime::new(),
        dir.path().to_path_buf(),
        Vec::new(),
        false,
    );
    let stop = CancellationToken::new();
    let running = tokio::spawn(supervisor.run(Vec::new(), true, stop.clone()));
    let has = |key: &'static str| {
        let store = store.clone();
        async move || documents(&*store).await.contains_key(key).then_some(())
    };
    let digest_is = |digest: String| {
        let store = store.clone();
        async move || {
            let record = store.views().projections().await.unwrap().pop()?;
            (record.digest == format!("sha256:{digest}")).then_some(record)
        }
    };
    let sha = |bytes: &[u8]| hex::encode(<sha2::Sha256 as sha2::Digest>::digest(bytes));

    host.execute(&create("a", 5)).await.unwrap();
    drop_in(dir.path(), "sales-summary.wasm", &original);
    poll("the new file to start its projection", has("item:a")).await;

    drop_in(dir.path(), "broken.wasm", b"not a component");
    host.execute(&create("b", 5)).await.unwrap();
    poll("the projection to go on past a broken file", has("item:b")).await;
    std::fs::remove_file(dir.path().join("broken.wasm")).unwrap();

    let second = new_version(&original, "second");
    drop_in(dir.path(), "sales-summary.wasm", &second);
    let record = poll("the changed file to take over", digest_is(sha(&second))).await;
    assert_eq!(
        record.generation, 1,
        "a new version goes on in the same view"
    );
    host.execute(&create("c", 5)).await.unwrap();
    poll("the new version to project", has("item:c")).await;

    std::fs::remove_file(dir.path().join("sales-summary.wasm")).unwrap();
    // The watcher waits for quiet: give it time (generous, for a loaded
    // machine) to stop the projection if it were going to.
    tokio::time::sleep(eshost::wasm::watch::QUIET * 8).await;
    host.execute(&create("d", 5)).await.unwrap();
    poll("a removed file to change nothing", has("item:d")).await;

    let runtime = Runtime::new();
    let third = new_version(&original, "third");
    let answer = deployed::deploy::<LoadedProjection>(
        &*store,
        &runtime,
        PROJECTION,
        third.clone(),
        Some("ops".into()),
    )
    .await
    .unwrap();
    assert_eq!(
        answer.deployment.map(|d| (d.action, d.by)),
        Some((DeployAction::Deployed, Some("ops".into())))
    );
    poll("the deployed version to take over", digest_is(sha(&third))).await;
    let answer = deployed::rollback::<LoadedProjection>(&*store, &runtime, PROJECTION, None)
        .await
        .unwrap();
    assert_eq!(answer.component.digest, sha(&second));
    poll(
        "the rollback to bring the second back",
        digest_is(sha(&second)),
    )
    .await;
    let error =
        deployed::deploy::<LoadedProjection>(&*store, &runtime, "other", third.clone(), None)
            .await
            .unwrap_err();
    assert!(
        matches!(&error, DeployError::InvalidComponent(m) if m.contains("not other")),
        "{error}"
    );

    // A process with nothing in its directory runs what is deployed.
    let empty = tempfile::tempdir().unwrap();
    let elsewhere = Supervisor::new(
        store.clone(),
        Runtime::new(),
        empty.path().to_path_buf(),
        Vec::new(),
        false,
    );
    let mut running_there = elsewhere.running();
    let stop_there = CancellationToken::new();
    let there = tokio::spawn(elsewhere.run(Vec::new(), false, stop_there.clone()));
    let runs = tokio::time::timeout(
        Duration::from_secs(30),
        running_there.wait_for(|running| running.iter().any(|p| p.name == PROJECTION)),
    )
    .await
    .expect("the other supervisor runs the deployed projection")
    .unwrap()
    .clone();
    assert_eq!(runs[0].digest, sha(&second));
    stop_there.cancel();
    there.await.unwrap();

    append_raw(
        &*store,
        "a",
        1,
        vec![("ItemPurchased", r#"{"quantity":"two"}"#.into())],
    )
    .await;
    let bad = head(&*store).await;
    poll("the bad event to stop the projection", async || {
        let record = store.views().projections().await.unwrap().pop()?;
        (record.status == "failed").then_some(())
    })
    .await;
    let fourth = new_version(&original, "fourth");
    drop_in(dir.path(), "sales-summary.wasm", &fourth);
    poll("the changed file to start again", digest_is(sha(&fourth))).await;
    // Started is not yet stopped at the bad event: wait for that before
    // stopping the supervisor, or a loaded machine stops it first.
    let fourth_digest = format!("sha256:{}", sha(&fourth));
    poll("the fourth version to stop at the bad event", async || {
        let record = store.views().projections().await.unwrap().pop()?;
        (record.digest == fourth_digest && record.status == "failed").then_some(())
    })
    .await;

    stop.cancel();
    let outcomes = tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the supervisor stops when told")
        .unwrap();
    assert_eq!(outcomes.len(), 1, "{outcomes:?}");
    assert_eq!(outcomes[0].digest, sha(&fourth));
    match &outcomes[0].error {
        Some(ProjectorError::Stopped { position, .. }) => {
            assert_eq!(*position, bad, "{outcomes:?}")
        }
        other => panic!("expected the fourth version to stop at the bad event: {other:?}"),
    }
}

/// Each kind of guest is refused where another is expected, saying why
/// in one line.
#[test]
fn each_kind_of_guest_is_refused_where_another_is_expected() {
    let runtime = eshost::wasm::Runtime::new();
    let aggregate = modules_dir().join("flash-sale.wasm");
    let error = runtime.load_projection(&aggregate).unwrap_err().to_string();
    assert!(error.contains("not an eshost projection guest"), "{error}");
    let projection = projections_dir().join("sales-summary.wasm");
    let error = runtime.load(&projection).unwrap_err().to_string();
    assert!(error.contains("eshost:aggregate/view@0.1.0"), "{error}");
    assert_eq!(error.lines().count(), 1, "{error}");

    // Reactors likewise, both ways.
    let reactor = reactors_dir().join("checkout.wasm");
    let loaded = runtime.load_reactor(&reactor).unwrap();
    assert_eq!(
        (loaded.name.as_str(), loaded.sinks.as_slice()),
        ("checkout", &["confirmations".to_string()][..])
    );
    assert!(loaded.receives("Order", "OrderPlaced") && !loaded.receives("Order", "OrderPaid"));
    for (path, expected) in [
        (&aggregate, "not an eshost reactor guest"),
        (&projection, "eshost:aggregate/view@0.1.0"),
    ] {
        let error = runtime.load_reactor(path).unwrap_err().to_string();
        assert!(error.contains(expected), "{error}");
        assert_eq!(error.lines().count(), 1, "{error}");
    }
    for error in [
        runtime.load(&reactor).unwrap_err().to_string(),
        runtime.load_projection(&reactor).unwrap_err().to_string(),
    ] {
        assert!(error.contains("not an eshost"), "{error}");
        assert_eq!(error.lines().count(), 1, "{error}");
    }
}

/// An aggregate id of the full 1,024 bytes makes the sample's key
/// `item:{id}` longer than a view stores: the projection stores it under
/// its stored form, reads it back there (the purchase finds the stock the
/// creation wrote), and goes on. (It stopped: "document key ... is not 1
/// to 1024 bytes".)
async fn an_id_of_the_full_length_is_projected_under_its_stored_key(db: &TestDb) {
    let store = open(db).await;
    let host = db.host(eshost::RetryPolicy::default()).await;
    let id = "x".repeat(1024);
    host.execute(&create(&id, 5)).await.unwrap();
    host.execute(&purchase(&id, "ann", 2)).await.unwrap();
    let mut projector = Projector::live(store.clone(), sales_summary())
        .await
        .unwrap();
    let progress = projector.catch_up().await.expect("the projection goes on");
    assert_eq!(progress.projected, 2);
    let key = eshost_core::view::stored_key(&format!("item:{id}")).into_owned();
    assert!(key.len() <= eshost_core::view::MAX_KEY_BYTES);
    let document = store
        .views()
        .view_document(PROJECTION, &key)
        .await
        .unwrap()
        .expect("the item's document, under its stored key");
    let item = document.to_value();
    assert_eq!(
        (&item["stock"], &item["sold"]),
        (&3.into(), &2.into()),
        "{item}"
    );
}
