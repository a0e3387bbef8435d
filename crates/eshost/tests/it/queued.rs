//! Queued mode: one queue per stream in a process, batched appends, and the
//! unique key still guarding against other processes.

use crate::faulty::{Fault, FaultyStore, Op};
use crate::util::*;
use eshost::{CommandError, Concurrency, Host, Refusal, RetryPolicy};
use eshost_bench::demo;
use std::sync::Arc;
use std::time::Duration;

/// The reference scenario, queued: no conflict inside one process, every
/// command answered, batches fewer than commands.
async fn reference_scenario_queued(db: &TestDb) {
    let host = db
        .host_in(Concurrency::Queued, RetryPolicy::default())
        .await;
    let runs = 20;
    for run in 0..runs {
        let report = demo::flash_sale(&host, 5, 8).await.unwrap();
        assert_eq!(
            (report.purchased, report.rejected, report.failed),
            (5, 3, 0),
            "run {run}"
        );
        assert_eq!(
            report.retries, 0,
            "run {run}: queued commands never race in-process"
        );
        let events = host.events(FLASH_SALE, &report.sale_id).await.unwrap();
        assert_eq!(events.len(), 9);
        assert_gapless(&events);
    }
    let stats = host.stats();
    assert_eq!(stats.conflicts.get(), 0);
    let appends = stats.appends.get();
    assert!(
        appends < runs * 9,
        "no batching: {appends} appends for {} commands",
        runs * 9
    );
}

/// Commands the guest refuses fail alone; the rest of their batch is recorded.
async fn a_refused_command_fails_alone_in_its_batch(db: &TestDb) {
    let host = db
        .host_in(Concurrency::Queued, RetryPolicy::default())
        .await;
    host.execute(&create("mixed", 10)).await.unwrap();
    let mut tasks = Vec::new();
    for n in 0..12 {
        let request = match n % 4 {
            0 => purchase("mixed", &format!("zero-{n}"), 0),
            1 => eshost::CommandRequest::new(
                FLASH_SALE,
                "mixed",
                "PurchaseItem",
                r#"{"buyerId":"x"}"#,
            ),
            _ => purchase("mixed", &format!("buyer-{n}"), 1),
        };
        let host = host.clone();
        tasks.push(tokio::spawn(async move { host.execute(&request).await }));
    }
    let (mut bought, mut refused) = (0, 0);
    for task in tasks {
        match task.await.unwrap() {
            Ok(outcome) => {
                assert_eq!(names(&outcome.events), ["ItemPurchased"]);
                bought += 1;
            }
            Err(CommandError::Refused { refusal, .. }) => {
                assert!(matches!(
                    refusal,
                    Refusal::InvalidCommand(_) | Refusal::InvalidPayload(_)
                ));
                refused += 1;
            }
            Err(other) => panic!("{other:?}"),
        }
    }
    assert_eq!((bought, refused), (6, 6));
    let events = host.events(FLASH_SALE, "mixed").await.unwrap();
    assert_eq!(events.len(), 7);
    assert_gapless(&events);
}

/// Three hosts (separate pools, caches and queues, as three processes) on one
/// hot item: no oversell, every command answered once, the stream gapless.
async fn three_queued_hosts_race_on_one_item(db: &TestDb) {
    let patient = RetryPolicy {
        max_retries: 100,
        ..RetryPolicy::default()
    };
    let mut hosts = Vec::new();
    for _ in 0..3 {
        hosts.push(db.host_in(Concurrency::Queued, patient).await);
    }
    hosts[0].execute(&create("hot", 50)).await.unwrap();
    let mut tasks = Vec::new();
    for (h, host) in hosts.iter().enumerate() {
        for n in 0..40 {
            let host = host.clone();
            let request = purchase("hot", &format!("h{h}-b{n}"), 1);
            tasks.push(tokio::spawn(async move { host.execute(&request).await }));
        }
    }
    let mut answered = 0;
    let mut purchased = 0;
    let mut command_ids = std::collections::HashSet::new();
    for task in tasks {
        let outcome = task.await.unwrap().expect("every command completes");
        answered += 1;
        assert!(
            command_ids.insert(outcome.command_id.clone()),
            "answered twice"
        );
        assert_eq!(outcome.events.len(), 1);
        if outcome.events[0].name == "ItemPurchased" {
            purchased += 1;
        }
    }
    assert_eq!(answered, 120);
    assert_eq!(purchased, 50, "sold exactly the stock");
    let events = hosts[0].events(FLASH_SALE, "hot").await.unwrap();
    assert_eq!(events.len(), 121);
    assert_gapless(&events);
    let recorded_ids: std::collections::HashSet<_> = events[1..]
        .iter()
        .map(|e| e.metadata["commandId"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        recorded_ids, command_ids,
        "each command recorded exactly once"
    );
    let state = hosts[2].state(FLASH_SALE, "hot").await.unwrap();
    assert_eq!(
        (state["stock"].as_u64(), state["sold"].as_u64()),
        (Some(0), Some(50))
    );
}

/// Another process appends behind a queued host's back: the host's next batch
/// meets the unique key, rebuilds its instance and decides again.
async fn a_queued_host_recovers_from_another_writer(db: &TestDb) {
    let a = db
        .host_in(Concurrency::Queued, RetryPolicy::default())
        .await;
    let b = db
        .host_in(Concurrency::Queued, RetryPolicy::default())
        .await;
    a.execute(&create("shared", 3)).await.unwrap();
    let by_b = b.execute(&purchase("shared", "b", 1)).await.unwrap();
    assert_eq!(by_b.events[0].sequence, 2);
    // A still holds the stream at version 1 (in its worker or its cache).
    let by_a = a.execute(&purchase("shared", "a", 2)).await.unwrap();
    assert_eq!(
        by_a.retries, 1,
        "A's stale instance must have hit the unique key"
    );
    assert_eq!(by_a.events[0].sequence, 3);
    assert_eq!(names(&by_a.events), ["ItemPurchased"]);
    assert_eq!(a.stats().conflicts.get(), 1);
    // And A's state is right afterwards: stock 3 - 1 - 2.
    let late = a.execute(&purchase("shared", "late", 1)).await.unwrap();
    assert_eq!(late.events[0].payload.to_value()["reason"], "out_of_stock");
}

/// While one batch is appended, the next is decided ahead on the state it
/// leaves. When that append fails (here three times, as if another writer
/// came first), the batch decided ahead is thrown away with it and decided
/// again: appended as decided, it would leave a gap in the stream or sell
/// what was never recorded as bought.
async fn a_batch_decided_ahead_starts_over_when_the_append_before_it_fails(db: &TestDb) {
    const STOCK: u64 = 150;
    const CALLERS: usize = 64;
    const ROUNDS: usize = 10;
    let store = FaultyStore::new(eshost::store::open(&db.url).await.unwrap());
    let host = Arc::new(Host::with_options(
        modules(),
        store.clone(),
        patient(Concurrency::Queued),
    ));
    host.execute(&create("ahead", STOCK)).await.unwrap();
    // Every third append fails as a conflict; the others go through.
    for _ in 0..3 {
        store.plan(Op::Append, Fault::Hang(Duration::ZERO));
        store.plan(Op::Append, Fault::Hang(Duration::ZERO));
        store.plan(Op::Append, Fault::Conflict);
    }

    let mut buying = tokio::task::JoinSet::new();
    for caller in 0..CALLERS {
        let host = host.clone();
        buying.spawn(async move {
            let mut answers = Vec::new();
            for round in 0..ROUNDS {
                let request = purchase("ahead", &format!("c{caller}-{round}"), 1);
                answers.push(host.execute(&request).await);
            }
            answers
        });
    }
    let answers: Vec<_> = buying.join_all().await.into_iter().flatten().collect();

    assert_eq!(host.stats().conflicts.get(), 3);
    let recorded = host.events(FLASH_SALE, "ahead").await.unwrap();
    assert_gapless(&recorded);
    assert_eq!(
        recorded.len(),
        1 + CALLERS * ROUNDS,
        "each purchase recorded once"
    );
    let purchased = recorded
        .iter()
        .filter(|e| e.name == "ItemPurchased")
        .count() as u64;
    assert_eq!(purchased, STOCK, "sold out, not oversold");
    let state = host.state(FLASH_SALE, "ahead").await.unwrap();
    assert_eq!(state["sold"].as_u64(), Some(STOCK));
    for answer in &answers {
        let outcome = answer.as_ref().expect("every purchase is answered");
        assert_eq!(outcome.events.len(), 1);
        let event = &outcome.events[0];
        assert_eq!(
            event,
            &recorded[event.sequence as usize - 1],
            "answered as recorded"
        );
    }
}

crate::conformance!(
    a_batch_decided_ahead_starts_over_when_the_append_before_it_fails,
    a_queued_host_recovers_from_another_writer,
    reference_scenario_queued,
    a_refused_command_fails_alone_in_its_batch,
    three_queued_hosts_race_on_one_item,
);
