//! Idempotent commands: a command id is recorded once, with its events; a
//! repeat, from the same host or another, in either mode, appends nothing and
//! is answered with the outcome first recorded.

use crate::util::*;
use eshost::{CommandError, CommandId, CommandRequest, Concurrency, RetryPolicy};

fn with_id(mut request: CommandRequest, command_id: &str) -> CommandRequest {
    request.command_id = CommandId::chosen(command_id);
    request
}

async fn a_repeat_appends_nothing_and_gets_the_first_outcome(db: &TestDb) {
    for mode in [Concurrency::Queued, Concurrency::Optimistic] {
        let host = db.host_in(mode, RetryPolicy::default()).await;
        let sale = format!("sale-{mode:?}");
        let created = host
            .execute(&with_id(create(&sale, 1), &format!("create-{mode:?}")))
            .await
            .unwrap();
        let buy = with_id(purchase(&sale, "ann", 1), &format!("buy-{mode:?}"));
        let first = host.execute(&buy).await.unwrap();
        assert!(!first.replayed);
        // Now out of stock: decided afresh, the repeat would be a rejection.
        let again = host.execute(&buy).await.unwrap();
        assert!(again.replayed);
        assert_eq!(names(&again.events), ["ItemPurchased"]);
        assert_eq!(again.events, first.events);
        // Creating twice is refused by the rules; a repeat of the creation
        // is not "creating twice".
        let create_again = host
            .execute(&with_id(create(&sale, 1), &format!("create-{mode:?}")))
            .await
            .unwrap();
        assert_eq!(create_again.events, created.events);
        // A second host (own pool, own cache) sees the same record.
        let other = db.host_in(mode, RetryPolicy::default()).await;
        assert_eq!(other.execute(&buy).await.unwrap().events, first.events);
        let stream = host.events(FLASH_SALE, &sale).await.unwrap();
        assert_eq!(names(&stream), ["FlashSaleCreated", "ItemPurchased"]);
    }
}

/// A request has its id from the moment it is made, whether or not the
/// caller chose one: sending the same request again (after a timeout, say)
/// is a repeat, never a second purchase.
async fn the_same_request_sent_twice_is_recorded_once(db: &TestDb) {
    for mode in [Concurrency::Queued, Concurrency::Optimistic] {
        let host = db.host_in(mode, RetryPolicy::default()).await;
        let sale = format!("twice-{mode:?}");
        host.execute(&create(&sale, 5)).await.unwrap();
        let buy = purchase(&sale, "ann", 1);
        let first = host.execute(&buy).await.unwrap();
        let again = host.execute(&buy).await.unwrap();
        assert!(again.replayed, "{mode:?}: the resend was decided again");
        assert_eq!(again.command_id, first.command_id);
        assert_eq!(again.events, first.events);
        let stream = host.events(FLASH_SALE, &sale).await.unwrap();
        assert_eq!(names(&stream), ["FlashSaleCreated", "ItemPurchased"]);
    }
}

async fn a_reused_id_for_another_command_is_an_error(db: &TestDb) {
    let host = db
        .host_in(Concurrency::Queued, RetryPolicy::default())
        .await;
    host.execute(&create("s1", 5)).await.unwrap();
    host.execute(&with_id(purchase("s1", "ann", 1), "id-1"))
        .await
        .unwrap();
    for reuse in [
        purchase("s1", "bob", 1),
        purchase("s1", "ann", 2),
        purchase("s2", "ann", 1),
        create("s1", 5),
    ] {
        let error = host.execute(&with_id(reuse, "id-1")).await.unwrap_err();
        assert!(
            matches!(&error, CommandError::CommandIdReused { command_id, .. } if command_id == "id-1"),
            "{error}"
        );
        // Nothing of the recorded command: it may be another caller's.
        assert!(!error.to_string().contains("PurchaseItem"), "{error}");
    }
    assert_eq!(host.events(FLASH_SALE, "s1").await.unwrap().len(), 2);
}

/// The same command sent many times at once, to one queued host and to
/// racing hosts: recorded once, every answer the same events.
async fn concurrent_repeats_are_recorded_once(db: &TestDb) {
    let setup = db
        .host_in(Concurrency::Queued, RetryPolicy::default())
        .await;
    setup.execute(&create("hot", 100)).await.unwrap();
    // One queued host: polled together, the repeats are queued before the
    // worker runs, so they meet in one batch.
    let buy = with_id(purchase("hot", "b0", 1), "buy-0");
    let (a, b, c, d) = tokio::join!(
        setup.execute(&buy),
        setup.execute(&buy),
        setup.execute(&buy),
        setup.execute(&buy)
    );
    let first = a.expect("answered").events;
    for repeat in [b, c, d] {
        assert_eq!(repeat.expect("every repeat answered").events, first);
    }
    let modes = [
        Concurrency::Queued,
        Concurrency::Optimistic,
        Concurrency::Queued,
    ];
    let hosts = patient_hosts(&db.url, &modes).await;
    let mut tasks = Vec::new();
    for n in 0..60 {
        let host = hosts[n % hosts.len()].clone();
        // Ten distinct purchases, each sent six times.
        let buy = with_id(
            purchase("hot", &format!("b{}", n % 10), 1),
            &format!("buy-{}", n % 10),
        );
        tasks.push(tokio::spawn(
            async move { (n % 10, host.execute(&buy).await) },
        ));
    }
    let mut answers: Vec<Vec<eshost::RecordedEvent>> = vec![Vec::new(); 10];
    for task in tasks {
        let (buyer, outcome) = task.await.unwrap();
        let events = outcome.expect("every repeat answered").events;
        assert_eq!(names(&events), ["ItemPurchased"]);
        if answers[buyer].is_empty() {
            answers[buyer] = events;
        } else {
            assert_eq!(answers[buyer], events, "every repeat gets the same events");
        }
    }
    let stream = setup.events(FLASH_SALE, "hot").await.unwrap();
    assert_eq!(stream.len(), 11, "one creation and ten purchases");
    assert_gapless(&stream);
    let state = setup.state(FLASH_SALE, "hot").await.unwrap();
    assert_eq!(state["sold"], 10);
}

/// Ids are stored and read back exactly, up to the documented limit.
async fn odd_ids_round_trip_and_long_ones_are_refused(db: &TestDb) {
    let host = db
        .host_in(Concurrency::Queued, RetryPolicy::default())
        .await;
    let odd = [
        r#"it's "quoted"; DROP TABLE events; --"#.to_string(),
        "ünïcødé ✓ 日本 🛒".to_string(),
        "x".repeat(eshost::dispatch::MAX_ID_BYTES),
    ];
    for id in &odd {
        let command_id = format!("{id}-cmd").chars().rev().collect::<String>();
        let command_id = &command_id[..command_id.len().min(eshost::dispatch::MAX_ID_BYTES)];
        let outcome = host
            .execute(&with_id(create(id, 3), command_id))
            .await
            .unwrap();
        assert_eq!(outcome.events[0].id, *id);
        let stored = host.events(FLASH_SALE, id).await.unwrap();
        assert_eq!(stored[0].id, *id);
        assert_eq!(stored[0].metadata["commandId"], command_id);
        let state = host.state(FLASH_SALE, id).await.unwrap();
        assert_eq!(state["id"], *id);
        // The repeat finds it by the same odd id.
        let again = host
            .execute(&with_id(create(id, 3), command_id))
            .await
            .unwrap();
        assert!(again.replayed);
    }
    let ten_kb = "k".repeat(10 * 1024);
    let error = host.execute(&create(&ten_kb, 1)).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        "aggregate id is 10240 bytes; the limit is 1024"
    );
    let error = host
        .execute(&with_id(create("fine", 1), &ten_kb))
        .await
        .unwrap_err();
    assert!(
        error.to_string().starts_with("command id is 10240 bytes"),
        "{error}"
    );
    let error = host.execute(&create("", 1)).await.unwrap_err();
    assert_eq!(error.to_string(), "aggregate id must not be empty");
    // No URL path keeps a segment of . or ..: such an id could not be
    // served over HTTP as it is here.
    for dots in [".", ".."] {
        let error = host.execute(&create(dots, 1)).await.unwrap_err();
        assert_eq!(
            error.to_string(),
            "aggregate id must not be . or .. (a URL path cannot carry it)"
        );
    }
    let error = host.execute(&create("nul\0id", 1)).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        "aggregate id must not contain a NUL character"
    );
    let nul = CommandRequest::new(
        FLASH_SALE,
        "fine",
        "PurchaseItem",
        r#"{"buyerId":"a\u0000b","quantity":1}"#,
    );
    assert!(
        host.execute(&nul)
            .await
            .unwrap_err()
            .to_string()
            .contains("NUL")
    );
    assert!(host.events(FLASH_SALE, "fine").await.unwrap().is_empty());
    // Reads check ids as commands do.
    assert!(matches!(
        host.events(FLASH_SALE, &ten_kb).await,
        Err(CommandError::InvalidId { .. })
    ));
}

crate::conformance!(
    a_repeat_appends_nothing_and_gets_the_first_outcome,
    the_same_request_sent_twice_is_recorded_once,
    a_reused_id_for_another_command_is_an_error,
    concurrent_repeats_are_recorded_once,
    odd_ids_round_trip_and_long_ones_are_refused,
);
