//! Property tests (proptest) on the real flash-sale component: random command
//! sequences keep the sale's invariants, and random bytes and random JSON as
//! payloads never panic the host or break it for the next command.

use crate::util::*;
use eshost::wasm::Hydrated;
use eshost::{CommandRequest, Concurrency, RetryPolicy};
use proptest::prelude::*;
use serde_json::{Value, json};

#[derive(Debug, Clone)]
enum Step {
    Create(i64),
    Purchase { buyer: String, quantity: i64 },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        1 => (-2i64..30).prop_map(Step::Create),
        8 => ("[a-c]{0,2}", -2i64..6).prop_map(|(buyer, quantity)| Step::Purchase { buyer, quantity }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Decided and applied in the sandbox, step by step: stock never below
    /// zero, sold + stock = initial stock, one buyer entry per purchase.
    #[test]
    fn random_command_sequences_keep_the_sale_invariants(steps in prop::collection::vec(step(), 1..40)) {
        let component = modules().get(FLASH_SALE).unwrap().clone();
        let mut item = Hydrated::new(component, "prop").unwrap();
        let (mut purchases, mut sold_units) = (0u64, 0u64);
        for step in steps {
            let (command, payload) = match &step {
                Step::Create(stock) => ("CreateFlashSale", json!({ "initialStock": stock })),
                Step::Purchase { buyer, quantity } => {
                    ("PurchaseItem", json!({ "buyerId": buyer, "quantity": quantity }))
                }
            };
            // A refusal records nothing; the guest must not fail either way.
            if let Ok(events) = item.decide(command, &payload.to_string()).unwrap() {
                item.apply_decided(&events).unwrap();
                for event in &events {
                    if event.name == "ItemPurchased" {
                        let payload: Value = serde_json::from_str(&event.payload).unwrap();
                        purchases += 1;
                        sold_units += payload["quantity"].as_u64().unwrap();
                    }
                }
            }
            let state: Value = serde_json::from_str(&item.to_json().unwrap()).unwrap();
            let (stock, sold, initial) = (
                state["stock"].as_i64().unwrap(),
                state["sold"].as_i64().unwrap(),
                state["initialStock"].as_i64().unwrap(),
            );
            prop_assert!(stock >= 0);
            prop_assert_eq!(sold + stock, initial);
            prop_assert_eq!(sold as u64, sold_units);
            prop_assert_eq!(state["buyers"].as_array().unwrap().len() as u64, purchases);
        }
    }
}

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Payload text: random bytes (as text), random JSON, or the right shape
/// with random values.
fn any_payload() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64)
            .prop_map(|bytes| String::from_utf8_lossy(&bytes).into_owned()),
        any_json().prop_map(|v| v.to_string()),
        (any_json(), any_json()).prop_map(|(buyer, quantity)| {
            json!({ "buyerId": buyer, "quantity": quantity }).to_string()
        }),
        any_json().prop_map(|stock| json!({ "initialStock": stock }).to_string()),
    ]
}

/// Through a whole host on a real SQLite store: any payload gets an answer
/// (events or a one-line error), never a panic, and the host still serves
/// the next command.
#[test]
fn random_payloads_never_panic_the_host() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let db = runtime.block_on(TestDb::sqlite());
    let host = runtime.block_on(db.host_in(Concurrency::Queued, RetryPolicy::default()));
    runtime
        .block_on(host.execute(&create("target", 1_000_000)))
        .unwrap();
    let commands = prop_oneof![
        Just("PurchaseItem"),
        Just("CreateFlashSale"),
        Just("Refund")
    ];
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(300));
    runner
        .run(&(commands, any_payload()), |(command, payload)| {
            let request = CommandRequest::new(FLASH_SALE, "target", command, payload);
            if let Err(error) = runtime.block_on(host.execute(&request)) {
                prop_assert!(!error.to_string().contains('\n'), "one line: {error}");
            }
            let next = purchase("target", "after", 1);
            prop_assert!(runtime.block_on(host.execute(&next)).is_ok());
            Ok(())
        })
        .unwrap();
    let stream = runtime.block_on(host.events(FLASH_SALE, "target")).unwrap();
    assert_gapless(&stream);
}
