//! Personal data, as the command line shows it: what each guest declares
//! (contract 0.3.0), read from the guest itself.

use crate::cli::{Workspace, ok};
use crate::util::*;

#[test]
fn the_flash_sale_declares_its_buyer_the_subject_of_purchases_and_rejections() {
    let ws = Workspace::with_modules(modules_dir());
    let listing: serde_json::Value =
        serde_json::from_str(&ok(ws.run(&["aggregates", "--json"]))).unwrap();
    let sale = listing
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == FLASH_SALE)
        .unwrap();
    assert_eq!(sale["contract"], "0.3.0");
    assert_eq!(
        sale["personal"],
        serde_json::json!([
            {"event": "ItemPurchased", "subject": "buyerId", "fields": []},
            {"event": "PurchaseRejected", "subject": "buyerId", "fields": []},
        ])
    );
    // A guest that declares none lists none.
    let bank = listing
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "BankAccount");
    assert!(bank.unwrap().get("personal").is_none(), "{listing}");

    let shown = ok(ws.run(&["aggregates"]));
    assert!(
        shown.contains("  personal ItemPurchased: buyerId (subject)\n"),
        "{shown}"
    );
}
