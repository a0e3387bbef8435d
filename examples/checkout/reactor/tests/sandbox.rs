//! The checkout reactor in the real sandbox (the built component, loaded by
//! the host's runtime), given an event, then its actions, with no database.
//! Needs the component: `cargo xtask test` builds it first.

use eshost_testing::ReactorTest;
use serde_json::json;
use std::path::Path;

fn checkout() -> ReactorTest {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../..");
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or(root.join("target"), |t| root.join(t));
    ReactorTest::load(target.join("reactors/checkout.wasm"))
        .expect("run `cargo xtask build-guests` first")
}

#[test]
fn a_purchase_for_an_order_reserves_it() {
    checkout()
        .given(
            "FlashSaleItem",
            "s1",
            "ItemPurchased",
            json!({ "buyerId": "ann", "quantity": 1 }),
        )
        .with_metadata(json!({ "correlationId": "order:o1" }))
        .then_expect_actions(json!([{ "send": {
            "aggregate": "Order", "id": "o1", "command": "ReserveOrder",
            "payload": {}, "correlation_id": "order:o1"
        } }]));
}

#[test]
fn an_order_it_cannot_read_is_refused() {
    checkout()
        .given("Order", "o1", "OrderPlaced", json!({ "itemId": "s1" }))
        .then_expect_refusal("missing field `buyerId`");
}
