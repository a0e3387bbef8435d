//! The reference scenario (the book: Install and first run), repeated.

use crate::util::*;
use eshost::{CommandId, RetryPolicy};
use eshost_bench::demo;

/// Stock 5, 8 concurrent buyers, max_retries 5: all 8 complete, 5 purchases,
/// 3 rejections, stock 0, sold 5, sequence numbers 1..9. Fifty times.
async fn reference_scenario_fifty_times(db: &TestDb) {
    let host = db.host(RetryPolicy::default()).await;
    let mut total_retries = 0;
    for run in 0..50 {
        let report = demo::flash_sale(&host, 5, 8).await.unwrap();
        assert_eq!(
            (report.purchased, report.rejected, report.failed),
            (5, 3, 0),
            "run {run}: {report:?}"
        );
        assert_eq!((report.stock_remaining, report.sold), (0, 5), "run {run}");
        total_retries += report.retries;

        // Check against the store itself, not the report.
        let events = host.events(FLASH_SALE, &report.sale_id).await.unwrap();
        assert_eq!(events.len(), 9, "run {run}");
        assert_gapless(&events);
        let count = |name| events.iter().filter(|e| e.name == name).count();
        assert_eq!(count("FlashSaleCreated"), 1);
        assert_eq!(count("ItemPurchased"), 5);
        assert_eq!(count("PurchaseRejected"), 3);
        let state = host.state(FLASH_SALE, &report.sale_id).await.unwrap();
        assert_eq!(state["stock"], 0);
        assert_eq!(state["sold"], 5);
        assert_eq!(state["buyers"].as_array().unwrap().len(), 5);
    }
    // Eight buyers loading the same version must collide.
    assert!(total_retries > 0, "no conflict was ever retried");
}

/// Every appended event carries the command, correlation and causation ids
/// and the component's version and digest.
async fn events_carry_metadata(db: &TestDb) {
    let host = db.host(RetryPolicy::default()).await;
    let mut request = create("meta-1", 3);
    request.command_id = CommandId::chosen("cmd-1");
    request.correlation_id = Some("corr-1".into());
    let outcome = host.execute(&request).await.unwrap();
    assert_eq!(outcome.command_id, "cmd-1");
    let metadata = &outcome.events[0].metadata;
    assert_eq!(metadata["commandId"], "cmd-1");
    assert_eq!(metadata["correlationId"], "corr-1");
    assert_eq!(metadata["causationId"], "cmd-1");
    let component = host.modules().get(FLASH_SALE).unwrap().clone();
    assert_eq!(metadata["componentDigest"], component.digest.as_str());
    assert_eq!(metadata["aggregateVersion"], component.version.as_str());
    assert_eq!(outcome.events[0].payload.to_value()["itemId"], "meta-1");
}

crate::conformance!(reference_scenario_fifty_times, events_carry_metadata,);

/// `sqlite::memory:` is a store of its own for the life of the host: the
/// schema is there, and the reference scenario runs on it, in both modes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_reference_scenario_runs_on_an_in_memory_store() {
    for concurrency in [eshost::Concurrency::Optimistic, eshost::Concurrency::Queued] {
        let store = eshost::store::open("sqlite::memory:").await.unwrap();
        let host = eshost::Host::with_options(modules(), store, patient(concurrency));
        let report = demo::flash_sale(&host, 5, 8).await.unwrap();
        assert_eq!(
            (report.purchased, report.rejected, report.failed),
            (5, 3, 0)
        );
        let events = host.events(FLASH_SALE, &report.sale_id).await.unwrap();
        assert_gapless(&events);
        assert_eq!(events.len(), 9);
    }
}
