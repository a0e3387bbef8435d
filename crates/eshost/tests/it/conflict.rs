//! The optimistic path across hosts that share nothing but the database.

use crate::util::*;
use eshost::{CommandError, RetryPolicy};

/// Two hosts (separate pools and caches, as two processes) race on one item.
async fn two_hosts_race_and_retry(db: &TestDb) {
    let patient = RetryPolicy {
        max_retries: 50,
        ..RetryPolicy::default()
    };
    let a = db.host(patient).await;
    let b = db.host(patient).await;

    // Deterministic conflict: A caches version 1, B appends version 2, A's
    // next command is decided at version 1, collides, catches up and retries.
    a.execute(&create("race", 10)).await.unwrap();
    let by_b = b.execute(&purchase("race", "b0", 1)).await.unwrap();
    assert_eq!((by_b.retries, by_b.events[0].sequence), (0, 2));
    let by_a = a.execute(&purchase("race", "a0", 1)).await.unwrap();
    assert_eq!(
        by_a.retries, 1,
        "A's stale cache must have hit the unique key"
    );
    assert_eq!(by_a.events[0].sequence, 3);

    // Then a burst from both at once: 8 units left, 20 buyers.
    let mut tasks = Vec::new();
    for n in 0..10 {
        for (host, tag) in [(&a, "a"), (&b, "b")] {
            let host = host.clone();
            let request = purchase("race", &format!("{tag}{}", n + 1), 1);
            tasks.push(tokio::spawn(async move { host.execute(&request).await }));
        }
    }
    let mut purchased = 0;
    let mut rejected = 0;
    for task in tasks {
        let outcome = task.await.unwrap().expect("every command completes");
        match outcome.events[0].name.as_str() {
            "ItemPurchased" => purchased += 1,
            "PurchaseRejected" => rejected += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!((purchased, rejected), (8, 12));
    let conflicts = a.stats().conflicts.get() + b.stats().conflicts.get();
    assert!(conflicts >= 2, "the burst produced no conflict at all");

    let events = a.events(FLASH_SALE, "race").await.unwrap();
    assert_eq!(events.len(), 23);
    assert_gapless(&events);
    for host in [&a, &b] {
        let state = host.state(FLASH_SALE, "race").await.unwrap();
        assert_eq!(
            (state["stock"].as_u64(), state["sold"].as_u64()),
            (Some(0), Some(10))
        );
    }
}

/// When retries run out the caller gets a typed error and nothing is appended.
async fn exhausted_retries_are_a_typed_error(db: &TestDb) {
    let impatient = RetryPolicy {
        max_retries: 0,
        ..RetryPolicy::default()
    };
    let a = db.host(impatient).await;
    let b = db.host(impatient).await;
    a.execute(&create("tired", 3)).await.unwrap();
    b.execute(&purchase("tired", "b", 1)).await.unwrap();
    let error = a.execute(&purchase("tired", "a", 1)).await.unwrap_err();
    assert!(
        matches!(error, CommandError::RetriesExhausted { retries: 0, .. }),
        "{error:?}"
    );
    assert_eq!(a.events(FLASH_SALE, "tired").await.unwrap().len(), 2);
}

/// A refusal decided on a stale cached instance is confirmed against the
/// latest stream before it is returned.
async fn refusal_from_a_stale_cache_is_rechecked(db: &TestDb) {
    let a = db.host(RetryPolicy::default()).await;
    let b = db.host(RetryPolicy::default()).await;
    // A learns the sale does not exist (and caches that instance).
    let error = a.execute(&purchase("late", "x", 1)).await.unwrap_err();
    assert!(matches!(error, CommandError::Refused { .. }));
    assert_eq!(a.cached_aggregates(), 1);
    // B creates it; A's cache does not know.
    b.execute(&create("late", 1)).await.unwrap();
    let outcome = a.execute(&purchase("late", "x", 1)).await.unwrap();
    assert_eq!(names(&outcome.events), ["ItemPurchased"]);
    assert_eq!(outcome.events[0].sequence, 2);
}

crate::conformance!(
    two_hosts_race_and_retry,
    exhausted_retries_are_a_typed_error,
    refusal_from_a_stale_cache_is_rechecked,
);
