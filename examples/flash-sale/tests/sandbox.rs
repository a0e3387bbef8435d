//! The guest's rules run in the real sandbox (the built component, loaded by
//! the host's runtime), given/when/then, with no database. Needs the component:
//! `cargo xtask test` builds it first.

use eshost_testing::GuestTest;
use serde_json::json;
use std::path::Path;

fn guest() -> GuestTest {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or(root.join("target"), |t| root.join(t));
    let component = target.join("modules/flash-sale.wasm");
    GuestTest::load(&component).expect("run `cargo xtask build-guests` first")
}

fn created(stock: u64) -> (&'static str, serde_json::Value) {
    (
        "FlashSaleCreated",
        json!({ "itemId": "test-1", "initialStock": stock }),
    )
}

#[test]
fn a_purchase_beyond_stock_is_rejected_not_oversold() {
    guest()
        .given(&[created(2)])
        .when("PurchaseItem", json!({ "buyerId": "whale", "quantity": 3 }))
        .then_expect_events(&[(
            "PurchaseRejected",
            json!({ "buyerId": "whale", "reason": "insufficient_stock" }),
        )])
        .then_expect_state(json!({ "stock": 2, "sold": 0 }));
}

#[test]
fn a_purchase_within_stock_updates_the_state() {
    guest()
        .given(&[created(5)])
        .when("PurchaseItem", json!({ "buyerId": "ann", "quantity": 2 }))
        .then_expect_events(&[("ItemPurchased", json!({ "buyerId": "ann", "quantity": 2 }))])
        .then_expect_state(json!({ "stock": 3, "sold": 2, "buyers": ["ann"] }));
}

#[test]
fn creating_twice_is_refused() {
    guest()
        .given(&[created(5)])
        .when("CreateFlashSale", json!({ "initialStock": 9 }))
        .then_expect_error("precondition-failed");
}

#[test]
#[should_panic(expected = "events differ")]
fn a_wrong_expectation_fails_with_a_diff() {
    guest()
        .given(&[created(0)])
        .when("PurchaseItem", json!({ "buyerId": "ann", "quantity": 1 }))
        .then_expect_events(&[("ItemPurchased", json!({ "buyerId": "ann", "quantity": 1 }))]);
}
