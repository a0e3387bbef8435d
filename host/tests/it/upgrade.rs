//! `eshost upgrade check` as a library: new versions of the flash-sale guest
//! (built from `fixtures/`) checked against streams the current one wrote.

use crate::util::*;
use eshost::Host;
use eshost::runtime::Runtime;
use eshost::upgrade::{Report, Selection, UpgradeCheck};
use std::sync::Arc;

fn fixture(name: &str) -> Arc<eshost::LoadedComponent> {
    Arc::new(Runtime::new().load(&upgrade_fixture(name)).unwrap())
}

fn current() -> Arc<eshost::LoadedComponent> {
    modules().get(FLASH_SALE).unwrap().clone()
}

/// Three streams by the current version: `bought` (a purchase),
/// `rejected` (a purchase and a rejection) and `quiet` (created only).
async fn recorded_streams(host: &Host) {
    for (id, stock) in [("bought", 5), ("rejected", 1), ("quiet", 5)] {
        host.execute(&create(id, stock)).await.unwrap();
    }
    host.execute(&purchase("bought", "ann", 1)).await.unwrap();
    host.execute(&purchase("rejected", "bob", 1)).await.unwrap();
    host.execute(&purchase("rejected", "cy", 1)).await.unwrap();
}

async fn check(
    db: &TestDb,
    candidate: Arc<eshost::LoadedComponent>,
    selection: Selection,
) -> Report {
    let store = eshost::store::open(&db.url).await.unwrap();
    let check = UpgradeCheck::new(store, Some(current()), candidate)
        .await
        .unwrap();
    let mut seen = Vec::new();
    let report = check.run(&selection, |done| seen.push(done)).await.unwrap();
    assert_eq!(
        seen,
        (1..=report.streams_checked).collect::<Vec<_>>(),
        "progress after each stream"
    );
    report
}

/// The loaded version itself: every stream replays to the same state.
async fn the_same_version_passes_unchanged(db: &TestDb) {
    recorded_streams(&db.default_host().await).await;
    let report = check(db, current(), Selection::All).await;
    assert!(report.passed, "{report:?}");
    assert_eq!(report.streams_checked, 3);
    assert_eq!((report.failed_count, report.changed_count), (0, 0));
}

/// 0.2.0 also counts rejections: it passes, and every stream's state gains
/// that field, shown as a patch from the current state.
async fn a_state_change_is_reported_as_a_diff(db: &TestDb) {
    recorded_streams(&db.default_host().await).await;
    let report = check(db, fixture("flash-sale-v2.wasm"), Selection::All).await;
    assert!(report.passed, "{report:?}");
    assert_eq!(report.candidate_version, "0.2.0");
    assert_eq!(report.changed_count, 3);
    let rejected = report.changed.iter().find(|c| c.id == "rejected").unwrap();
    assert_eq!(rejected.version, 3);
    assert_eq!(
        rejected.patch,
        [serde_json::json!({"op": "add", "path": "/rejections", "value": 1})]
    );
}

/// 0.2.0 renamed ItemPurchased: the recorded name is reported undeclared
/// before any replay, and exactly the streams holding a purchase fail,
/// each naming the event.
async fn a_renamed_event_fails_naming_the_stream_and_the_event(db: &TestDb) {
    recorded_streams(&db.default_host().await).await;
    let report = check(db, fixture("flash-sale-renamed.wasm"), Selection::All).await;
    assert!(!report.passed);
    assert_eq!(report.undeclared_events, ["ItemPurchased"]);
    let mut failed: Vec<&str> = report.failed.iter().map(|f| f.id.as_str()).collect();
    failed.sort();
    assert_eq!(failed, ["bought", "rejected"]);
    for stream in &report.failed {
        assert!(
            stream.error.ends_with(
                "cannot be loaded by FlashSaleItem 0.2.0: event 2 (ItemPurchased): this version does not declare the event"
            ),
            "{}",
            stream.error
        );
    }
    assert_eq!(report.changed_count, 0, "quiet replays to the same state");
}

/// One stream, a sample, and every stream past one page of ids.
async fn selections_cover_what_they_name(db: &TestDb) {
    let host = db.default_host().await;
    let streams = 1_050;
    for n in 0..streams {
        let created = format!(r#"{{"itemId":"item-{n}","initialStock":1}}"#);
        let (store, id) = (host.store().as_ref(), format!("item-{n}"));
        append_raw(store, &id, 0, vec![("FlashSaleCreated", created)]).await;
    }
    let v2 = || fixture("flash-sale-v2.wasm");
    let one = check(db, v2(), Selection::Stream("item-7".into())).await;
    assert_eq!(
        (one.streams_checked, one.changed[0].id.as_str()),
        (1, "item-7")
    );
    let sample = check(db, v2(), Selection::Sample(25)).await;
    assert_eq!(sample.streams_checked, 25);
    let all = check(db, v2(), Selection::All).await;
    assert_eq!((all.streams_checked, all.changed_count), (streams, streams));
}

crate::conformance!(
    the_same_version_passes_unchanged,
    a_state_change_is_reported_as_a_diff,
    a_renamed_event_fails_naming_the_stream_and_the_event,
    selections_cover_what_they_name,
);
