//! Following the global log in-process: from a position, filtered by
//! aggregate type, then new events as they are recorded.

use crate::util::*;
use eshost::RecordedEvent;
use eshost_read::Subscription;
use futures_util::StreamExt;
use std::time::Duration;

/// The library's follower, on both stores: from a position, filtered by
/// aggregate type, then new events as they come.
async fn subscribe_reads_from_a_position_then_follows(db: &TestDb) {
    let host = db.default_host().await;
    host.execute(&create("s1", 5)).await.unwrap();
    host.execute(&purchase("s1", "ann", 1)).await.unwrap();
    // On PostgreSQL a transaction still open elsewhere on the server (other
    // tests run beside this one) holds readers back for a moment.
    let started = std::time::Instant::now();
    let all = loop {
        let all = host.read_all(0, None, 100).await.unwrap();
        if all.len() >= 2 || started.elapsed() > Duration::from_secs(10) {
            break all;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(names(&all), ["FlashSaleCreated", "ItemPurchased"]);
    let from = Subscription {
        after: all[0].position,
        aggregate: Some(FLASH_SALE.to_string()),
    };
    let mut events = std::pin::pin!(eshost_read::follow(host.store().clone(), from));
    let first = next_event(&mut events).await;
    assert_eq!(first, all[1]);
    host.execute(&purchase("s1", "bob", 1)).await.unwrap();
    let new = next_event(&mut events).await;
    assert_eq!((new.name.as_str(), new.sequence), ("ItemPurchased", 3));
    assert!(new.position > first.position);
    let other = host.read_all(0, Some("BankAccount"), 100).await.unwrap();
    assert!(other.is_empty());
}

async fn next_event(
    events: &mut (impl futures_util::Stream<Item = Result<RecordedEvent, eshost::StoreError>> + Unpin),
) -> RecordedEvent {
    tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("no event within 10 s")
        .expect("the stream ended")
        .unwrap()
}

crate::conformance!(subscribe_reads_from_a_position_then_follows);
