//! Streams longer than one page, and streams the loaded version cannot
//! replay. A long stream is replayed page by page and applied in chunks,
//! each its own guest call, so it loads under a guest memory limit smaller
//! than the stream. A stream that cannot be replayed fails with an error
//! naming the event it stops at, of a kind of its own (`unreplayable`):
//! resending never helps.

use crate::util::*;
use eshost::wasm::{Limits, Runtime};
use eshost::{CommandError, GuestError, Host, HostOptions, Modules};

/// A host whose flash-sale guest may hold at most `memory_mib` of memory.
async fn host_with_guest_memory(db: &TestDb, memory_mib: usize) -> Host {
    let runtime = Runtime::with_limits(Limits {
        memory_bytes: memory_mib << 20,
        ..Limits::default()
    });
    let mut modules = Modules::default();
    modules
        .insert(
            runtime
                .load(&modules_dir().join("flash-sale.wasm"))
                .unwrap(),
        )
        .unwrap();
    let store = eshost::store::open(&db.url).await.unwrap();
    Host::with_options(modules, store, HostOptions::default())
}

/// 24 MB of events (20,000 rejections with a 1,200-byte reason) after a
/// sale of 10 that sold 3; the guest may hold 16 MiB. In one `apply` call
/// the events alone would not fit.
async fn a_stream_larger_than_guest_memory_loads_in_chunks(db: &TestDb) {
    let host = host_with_guest_memory(db, 16).await;
    host.execute(&create("long", 10)).await.unwrap();
    for buyer in ["a", "b", "c"] {
        host.execute(&purchase("long", buyer, 1)).await.unwrap();
    }
    let reason = "x".repeat(1_200);
    let rejections: Vec<(&str, String)> = (0..20_000)
        .map(|n| {
            let payload = format!(r#"{{"buyerId":"late-{n}","reason":"{reason}"}}"#);
            ("PurchaseRejected", payload)
        })
        .collect();
    append_raw(host.store().as_ref(), "long", 4, rejections).await;

    // A new host: nothing cached, no snapshot past version 4.
    let fresh = host_with_guest_memory(db, 16).await;
    assert_eq!(fresh.load(FLASH_SALE, "long").await.unwrap(), 20_004);
    let state = fresh.state(FLASH_SALE, "long").await.unwrap();
    assert_eq!(state["sold"], 3);
    assert_eq!(state["stock"], 7);
    // The stream's next command sees the whole stream.
    let next = fresh.execute(&purchase("long", "d", 1)).await.unwrap();
    assert_eq!(next.events[0].sequence, 20_005);
}

/// What replaying `id` fails with, on a host with nothing cached.
async fn replay_error(db: &TestDb, id: &str) -> CommandError {
    let host = db.default_host().await;
    let error = host.state(FLASH_SALE, id).await.unwrap_err();
    assert_eq!(error.kind(), "unreplayable", "{error}");
    error
}

/// A stream holding an event this version does not declare (as after an
/// upgrade that renamed it) fails at that event, named, before the guest
/// is asked.
async fn an_undeclared_event_is_named(db: &TestDb) {
    let host = db.default_host().await;
    host.execute(&create("renamed", 10)).await.unwrap();
    let bought = r#"{"buyerId":"a","quantity":1}"#.to_string();
    append_raw(
        host.store().as_ref(),
        "renamed",
        1,
        vec![
            ("ItemPurchased", bought.clone()),
            ("ItemBought", bought.clone()),
            ("ItemPurchased", bought),
        ],
    )
    .await;
    let error = replay_error(db, "renamed").await;
    let CommandError::Guest(GuestError::ApplyFailed(failure)) = &error else {
        panic!("expected ApplyFailed, got {error:?}");
    };
    assert_eq!(
        (failure.first, failure.last, failure.event.as_deref()),
        (3, 3, Some("ItemBought"))
    );
    let message = error.to_string();
    assert!(
        message.starts_with(
            "FlashSaleItem renamed cannot be loaded by FlashSaleItem 0.1.0: event 3 (ItemBought): "
        ),
        "{message}"
    );
}

/// An event the guest refuses in the middle of a long stream is named
/// exactly, though it went to the guest in a call with thousands of others.
async fn an_event_the_guest_refuses_is_named(db: &TestDb) {
    let host = db.default_host().await;
    host.execute(&create("refused", 10)).await.unwrap();
    let rejected = |n: usize| format!(r#"{{"buyerId":"late-{n}","reason":"out_of_stock"}}"#);
    let mut events: Vec<(&str, String)> = (0..2_500)
        .map(|n| ("PurchaseRejected", rejected(n)))
        .collect();
    // Sequence 1,502: an ItemPurchased whose quantity is not a number.
    events[1_500] = (
        "ItemPurchased",
        r#"{"buyerId":"x","quantity":"many"}"#.into(),
    );
    append_raw(host.store().as_ref(), "refused", 1, events).await;
    let error = replay_error(db, "refused").await;
    let CommandError::Guest(GuestError::ApplyFailed(failure)) = &error else {
        panic!("expected ApplyFailed, got {error:?}");
    };
    assert_eq!(
        (failure.first, failure.last, failure.event.as_deref()),
        (1_502, 1_502, Some("ItemPurchased")),
        "{error}"
    );
    let reason = &failure.reason;
    assert!(reason.starts_with("ItemPurchased: "), "{reason}");
}

crate::conformance!(
    a_stream_larger_than_guest_memory_loads_in_chunks,
    an_undeclared_event_is_named,
    an_event_the_guest_refuses_is_named,
);
