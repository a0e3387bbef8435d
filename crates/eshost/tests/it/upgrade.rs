//! `eshost upgrade check` as a library: new versions of the flash-sale guest
//! (built from `fixtures/`) checked against streams the current one wrote.

use crate::util::*;
use eshost::Host;
use eshost::upgrade::{Report, Selection, UpgradeCheck};
use eshost::wasm::Runtime;
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

/// The upcasting fixture renames ItemPurchased as the renamed one does,
/// but upcasts what a 0.1 guest recorded: the check passes, no recorded
/// name is undeclared (it lists ItemPurchased as an old event), and every
/// stream replays to the state 0.1.0 had.
async fn an_upcast_passes_where_the_rename_failed(db: &TestDb) {
    recorded_streams(&db.default_host().await).await;
    let upcast = fixture("flash-sale-upcast.wasm");
    assert_eq!(upcast.contract(), "0.3.0");
    assert!(upcast.old_events.contains("ItemPurchased"));
    assert!(!upcast.events.contains("ItemPurchased"));
    let report = check(db, upcast, Selection::All).await;
    assert!(report.passed, "{report:?}");
    assert!(report.undeclared_events.is_empty(), "{report:?}");
    assert_eq!(report.streams_checked, 3);
    assert_eq!((report.failed_count, report.changed_count), (0, 0));
}

/// Serving with the upcasting version: an old stream loads and takes new
/// purchases, recorded under the new name. An ItemPurchased whose recorded
/// version is not 0.1 (an import with no metadata) is not upcast: the
/// stream cannot be loaded, and the error names that event, found by the
/// guest inside a many-event `apply` (0.2.0 says which event it refused).
async fn upcasting_reads_what_0_1_recorded_and_only_that(db: &TestDb) {
    let old = db.default_host().await;
    old.execute(&create("old", 5)).await.unwrap();
    old.execute(&purchase("old", "ann", 1)).await.unwrap();
    let imported = vec![
        (
            "FlashSaleCreated",
            r#"{"itemId":"imported","initialStock":5}"#.to_string(),
        ),
        (
            "PurchaseRejected",
            r#"{"buyerId":"x","reason":"insufficient_stock"}"#.to_string(),
        ),
        (
            "ItemPurchased",
            r#"{"buyerId":"bo","quantity":1}"#.to_string(),
        ),
    ];
    append_raw(old.store().as_ref(), "imported", 0, imported).await;

    let mut modules = eshost::Modules::default();
    modules
        .insert_shared(fixture("flash-sale-upcast.wasm"))
        .unwrap();
    let store = eshost::store::open(&db.url).await.unwrap();
    let new = Host::with_options(modules, store, eshost::HostOptions::default());
    let bought = new.execute(&purchase("old", "cy", 2)).await.unwrap();
    assert_eq!(names(&bought.events), ["ItemBought"]);
    let state = new.state(FLASH_SALE, "old").await.unwrap();
    assert_eq!(state["sold"], 3);
    assert_eq!(state["buyers"], serde_json::json!(["ann", "cy"]));

    let refused = new
        .execute(&purchase("imported", "dee", 1))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("event 3 (ItemPurchased)") && refused.contains("has no event"),
        "{refused}"
    );
}

crate::conformance!(
    the_same_version_passes_unchanged,
    a_state_change_is_reported_as_a_diff,
    a_renamed_event_fails_naming_the_stream_and_the_event,
    an_upcast_passes_where_the_rename_failed,
    upcasting_reads_what_0_1_recorded_and_only_that,
    selections_cover_what_they_name,
);

/// A 0.2.0 guest names the event it refuses inside a many-event `apply`
/// (a 0.1.0 guest's refusal covers the whole call), and it is handed each
/// event's recorded version: the same ItemPurchased is upcast when 0.1.0
/// recorded it and refused when the version is unknown.
#[test]
fn a_0_2_0_apply_names_the_refused_event_and_sees_its_version() {
    let recorded =
        |sequence: u64, name: &str, payload: &str, version: Option<&str>| eshost::RecordedEvent {
            position: sequence as i64,
            aggregate: FLASH_SALE.into(),
            id: "s1".into(),
            sequence,
            name: name.into(),
            payload: eshost::store::JsonText::new(payload.into()).unwrap(),
            metadata: version.map_or(
                serde_json::json!({}),
                |v| serde_json::json!({ "aggregateVersion": v }),
            ),
            created_at: String::new(),
        };
    let stream = |version| {
        [
            recorded(
                1,
                "FlashSaleCreated",
                r#"{"itemId":"s1","initialStock":5}"#,
                version,
            ),
            recorded(
                2,
                "PurchaseRejected",
                r#"{"buyerId":"a","reason":"x"}"#,
                version,
            ),
            recorded(
                3,
                "ItemPurchased",
                r#"{"buyerId":"b","quantity":1}"#,
                version,
            ),
        ]
    };
    let upcast = fixture("flash-sale-upcast.wasm");

    let mut by_0_1 = eshost::wasm::Hydrated::new(upcast.clone(), "s1").unwrap();
    by_0_1.apply_recorded(&stream(Some("0.1.0"))).unwrap();
    assert_eq!(by_0_1.version, 3);

    let mut unknown = eshost::wasm::Hydrated::new(upcast, "s1").unwrap();
    match unknown.apply_recorded(&stream(None)) {
        Err(eshost::GuestError::ApplyFailed(failure)) => {
            assert_eq!((failure.first, failure.last), (3, 3), "{failure:?}");
            assert_eq!(failure.event.as_deref(), Some("ItemPurchased"));
        }
        other => panic!("expected event 3 to be refused: {:?}", other.err()),
    }
}
