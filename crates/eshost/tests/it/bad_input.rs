//! Bad input: each case gives a clear error (or the right rejection event)
//! and an error appends nothing.

use crate::util::*;
use eshost::{CommandError, CommandRequest, Host, Refusal, RetryPolicy};

async fn stream_len(host: &Host, id: &str) -> usize {
    host.events(FLASH_SALE, id).await.unwrap().len()
}

async fn unknown_aggregate(db: &TestDb) {
    let host = db.host(RetryPolicy::default()).await;
    let error = host
        .execute(&CommandRequest::new("Nope", "x", "CreateFlashSale", "{}"))
        .await
        .unwrap_err();
    assert!(
        matches!(error, CommandError::UnknownAggregate { .. }),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("FlashSaleItem"),
        "lists what is loaded: {error}"
    );
}

async fn unknown_command(db: &TestDb) {
    let host = db.host(RetryPolicy::default()).await;
    let error = host
        .execute(&CommandRequest::new(FLASH_SALE, "s", "Refund", "{}"))
        .await
        .unwrap_err();
    assert!(
        matches!(error, CommandError::UnknownCommand { .. }),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("PurchaseItem"),
        "lists accepted commands: {error}"
    );
    assert_eq!(stream_len(&host, "s").await, 0);
}

async fn payload_not_json_or_missing_a_field(db: &TestDb) {
    let host = db.host(RetryPolicy::default()).await;
    let error = host
        .execute(&CommandRequest::new(
            FLASH_SALE,
            "s",
            "CreateFlashSale",
            "{initialStock: 5",
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(error, CommandError::PayloadNotJson { .. }),
        "{error:?}"
    );
    // Valid JSON that could be stored but not read back is refused alike.
    for (payload, reason) in [
        (
            "[".repeat(200) + &"]".repeat(200),
            "nests deeper than 128 levels",
        ),
        (
            r#"{"initialStock":1e400}"#.to_string(),
            "64-bit float range",
        ),
    ] {
        let error = host
            .execute(&CommandRequest::new(
                FLASH_SALE,
                "s",
                "CreateFlashSale",
                payload,
            ))
            .await
            .unwrap_err();
        assert!(
            matches!(error, CommandError::PayloadNotJson { .. })
                && error.to_string().contains(reason),
            "{error}"
        );
    }

    let error = host
        .execute(&CommandRequest::new(
            FLASH_SALE,
            "s",
            "CreateFlashSale",
            r#"{"stock":5}"#,
        ))
        .await
        .unwrap_err();
    match &error {
        CommandError::Refused {
            refusal: Refusal::InvalidPayload(message),
            ..
        } => {
            assert!(message.contains("initialStock"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    assert!(!error.to_string().contains('\n'), "one line: {error}");
    assert_eq!(stream_len(&host, "s").await, 0);
}

async fn purchase_from_a_sale_never_created(db: &TestDb) {
    let host = db.host(RetryPolicy::default()).await;
    let error = host.execute(&purchase("ghost", "b", 1)).await.unwrap_err();
    assert!(
        matches!(
            error,
            CommandError::Refused {
                refusal: Refusal::PreconditionFailed(_),
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("does not exist"), "{error}");
    assert_eq!(stream_len(&host, "ghost").await, 0);
}

async fn creating_a_sale_twice(db: &TestDb) {
    let host = db.host(RetryPolicy::default()).await;
    host.execute(&create("twice", 5)).await.unwrap();
    host.execute(&purchase("twice", "b", 2)).await.unwrap();
    let error = host.execute(&create("twice", 100)).await.unwrap_err();
    assert!(
        matches!(
            error,
            CommandError::Refused {
                refusal: Refusal::PreconditionFailed(_),
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(stream_len(&host, "twice").await, 2);
    // The stock was not reset.
    assert_eq!(host.state(FLASH_SALE, "twice").await.unwrap()["stock"], 3);
}

async fn quantity_zero_or_negative(db: &TestDb) {
    let host = db.host(RetryPolicy::default()).await;
    host.execute(&create("q", 5)).await.unwrap();
    for quantity in [0, -3] {
        let error = host
            .execute(&purchase("q", "b", quantity))
            .await
            .unwrap_err();
        assert!(
            matches!(
                error,
                CommandError::Refused {
                    refusal: Refusal::InvalidCommand(_),
                    ..
                }
            ),
            "{error:?}"
        );
    }
    assert_eq!(stream_len(&host, "q").await, 1);
}

async fn quantity_above_stock_is_a_recorded_rejection(db: &TestDb) {
    let host = db.host(RetryPolicy::default()).await;
    host.execute(&create("big", 3)).await.unwrap();
    let outcome = host.execute(&purchase("big", "whale", 4)).await.unwrap();
    assert_eq!(names(&outcome.events), ["PurchaseRejected"]);
    assert_eq!(
        outcome.events[0].payload.to_value()["reason"],
        "insufficient_stock"
    );
    assert_eq!(outcome.events[0].payload.to_value()["buyerId"], "whale");
    // Exactly the remaining stock is fine; then it is out of stock.
    let outcome = host.execute(&purchase("big", "exact", 3)).await.unwrap();
    assert_eq!(names(&outcome.events), ["ItemPurchased"]);
    let outcome = host.execute(&purchase("big", "late", 1)).await.unwrap();
    assert_eq!(
        outcome.events[0].payload.to_value()["reason"],
        "out_of_stock"
    );
    let state = host.state(FLASH_SALE, "big").await.unwrap();
    assert_eq!(
        (state["stock"].as_u64(), state["sold"].as_u64()),
        (Some(0), Some(3))
    );
}

crate::conformance!(
    unknown_aggregate,
    unknown_command,
    payload_not_json_or_missing_a_field,
    purchase_from_a_sale_never_created,
    creating_a_sale_twice,
    quantity_zero_or_negative,
    quantity_above_stock_is_a_recorded_rejection,
    an_unstorable_guest_event_fails_only_its_command,
    a_replay_hands_the_guest_the_payload_bytes_it_decided,
);

fn hostile_modules() -> eshost::Modules {
    let runtime = eshost::wasm::Runtime::new();
    let mut modules = eshost::Modules::default();
    let hostile = runtime.load(&build_dir().join("fixtures/hostile.wasm"));
    modules.insert(hostile.unwrap()).unwrap();
    modules
}

async fn hostile_host(db: &TestDb) -> Host {
    let store = eshost::store::open(&db.url).await.unwrap();
    Host::with_options(hostile_modules(), store, eshost::HostOptions::default())
}

/// Guest events a store could take but not give back (a NUL for jsonb;
/// nested 200 deep, a number beyond f64, 10,000 digits for the decoder)
/// each fail their own command only: the other commands of the same queued
/// batch are recorded, and the stream stays readable, from a fresh host too.
async fn an_unstorable_guest_event_fails_only_its_command(db: &TestDb) {
    let host = std::sync::Arc::new(hostile_host(db).await);
    let send = |command: &str| {
        let (host, request) = (
            host.clone(),
            CommandRequest::new("Hostile", "h1", command, "{}"),
        );
        tokio::spawn(async move { host.execute(&request).await })
    };
    let bad = [
        ("NulPayload", "NUL"),
        ("DeepPayload", "nests deeper than 128 levels"),
        ("HugeNumber", "beyond the 64-bit float range"),
        ("LongNumber", "beyond the 64-bit float range"),
    ];
    // Queued together: each bad one lands among good ones in a batch.
    let mut answers: Vec<_> = (0..40).map(|_| send("Ok")).collect();
    for (n, (command, _)) in bad.iter().enumerate() {
        answers.insert(10 * n + 5, send(command));
    }
    let mut failed = Vec::new();
    for answer in answers {
        if let Err(e) = answer.await.unwrap() {
            failed.push(e.to_string());
        }
    }
    assert_eq!(failed.len(), bad.len(), "{failed:?}");
    for (command, reason) in bad {
        assert!(
            failed
                .iter()
                .any(|f| f.contains(reason) && !f.contains('\n')),
            "{command}: no one-line failure saying {reason:?} in {failed:?}"
        );
    }
    assert_eq!(host.events("Hostile", "h1").await.unwrap().len(), 40);
    let fresh = hostile_host(db).await;
    assert_eq!(fresh.events("Hostile", "h1").await.unwrap().len(), 40);
    let outcome = fresh
        .execute(&CommandRequest::new("Hostile", "h1", "Ok", "{}"))
        .await
        .unwrap();
    assert_eq!(outcome.events[0].sequence, 41);
}

/// The payload text the hostile guest's `Exact` command decides: decoding
/// and encoding it again would change it (a negative zero, 2^64, an
/// exponent, a repeated key, spacing, a line break).
const EXACT: &str = "{\"n\": -0, \"big\": 18446744073709551616,\n \"e\": 1E2, \"k\": 1, \"k\": 2}";

/// Replay is live: the guest applying its freshly decided event and the
/// guest replaying the stream in a fresh host see the same bytes, and the
/// store gives those bytes back (written on one line).
async fn a_replay_hands_the_guest_the_payload_bytes_it_decided(db: &TestDb) {
    let host = hostile_host(db).await;
    let exact = CommandRequest::new("Hostile", "h1", "Exact", "{}");
    let outcome = host.execute(&exact).await.unwrap();
    assert_eq!(outcome.events[0].payload.as_str(), EXACT);
    let live = host.state("Hostile", "h1").await.unwrap();
    assert_eq!(live["last_payload"], EXACT, "applied live");

    let fresh = hostile_host(db).await;
    let replayed = fresh.state("Hostile", "h1").await.unwrap();
    assert_eq!(replayed["last_payload"], EXACT, "replayed from the store");
    let recorded = fresh.events("Hostile", "h1").await.unwrap();
    assert_eq!(recorded[0].payload.as_str(), EXACT);
    let line = serde_json::to_string(&recorded[0]).unwrap();
    assert!(
        line.contains(&EXACT.replace('\n', " ")) && !line.contains('\n'),
        "{line}"
    );
}
