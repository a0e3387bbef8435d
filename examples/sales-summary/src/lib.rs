//! The `sales-summary` projection: a read model of the flash sale.
//!
//! - `item:{id}`, one document per `FlashSaleItem`: its stock, units sold,
//!   purchases (buyers served), rejections, and the position of the last
//!   event that changed it.
//! - `total`, one document across every item: units sold, items on sale.
//! - `buyer:{buyerId}`, one document per buyer: units bought and purchases,
//!   across every item. Personal data: when the host encrypts the buyer
//!   (the flash sale declares `buyerId`), `subject:{pseudonym}` names the
//!   buyer's document, and the buyer's erasure deletes both.
//!
//! Documents are keyed by a prefix and an id, so no id can collide with
//! `total` or with another kind of document.

use eshost_projection::{Event, Projection, View};
use serde::{Deserialize, Serialize};

/// One flash-sale item, as the view shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ItemSummary {
    pub stock: u64,
    pub sold: u64,
    /// Purchases recorded: each served one buyer.
    pub buyers: u64,
    pub rejected: u64,
    pub last_position: i64,
}

/// Every item together.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TotalSummary {
    pub sold: u64,
    pub items: u64,
    pub last_position: i64,
}

/// One buyer, across every item.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuyerSummary {
    pub units: u64,
    pub purchases: u64,
}

/// Where a data subject's documents are: what their erasure deletes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubjectDocuments {
    pub keys: Vec<String>,
}

/// The key of an item's document.
pub fn item_key(id: &str) -> String {
    format!("item:{id}")
}

/// The key of a buyer's document.
pub fn buyer_key(buyer: &str) -> String {
    format!("buyer:{buyer}")
}

/// The key of the list of a data subject's documents.
pub fn subject_key(pseudonym: &str) -> String {
    format!("subject:{pseudonym}")
}

/// The key of the document across all items.
pub const TOTAL_KEY: &str = "total";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FlashSaleCreated {
    initial_stock: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ItemPurchased {
    /// The buyer's id, or the tombstone of a forgotten buyer.
    #[serde(default)]
    buyer_id: serde_json::Value,
    quantity: u64,
}

pub struct SalesSummary;

impl Projection for SalesSummary {
    const NAME: &'static str = "sales-summary";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const AGGREGATES: &'static [&'static str] = &["FlashSaleItem", eshost_projection::ERASURES];

    fn project(event: &Event, view: &mut View<'_>) -> Result<(), String> {
        if let Some(erasure) = event.erasure() {
            forget(&erasure.subject, view)?;
            return Ok(());
        }
        let key = item_key(&event.id);
        let mut item: ItemSummary = view.get(&key)?.unwrap_or_default();
        let mut total: TotalSummary = view.get(TOTAL_KEY)?.unwrap_or_default();
        match event.name.as_str() {
            "FlashSaleCreated" => {
                let created: FlashSaleCreated = event.parse()?;
                item.stock = created.initial_stock;
                total.items += 1;
            }
            "ItemPurchased" => {
                let purchased: ItemPurchased = event.parse()?;
                item.stock = item.stock.saturating_sub(purchased.quantity);
                item.sold += purchased.quantity;
                item.buyers += 1;
                total.sold += purchased.quantity;
                // A forgotten buyer's purchase counts, under no one.
                if let Some(buyer) = purchased.buyer_id.as_str() {
                    count_buyer(buyer, purchased.quantity, event, view)?;
                }
            }
            "PurchaseRejected" => item.rejected += 1,
            // Events this summary does not count change nothing.
            _ => return Ok(()),
        }
        item.last_position = event.position;
        view.put(&key, &item);
        if event.name != "PurchaseRejected" {
            total.last_position = event.position;
            view.put(TOTAL_KEY, &total);
        }
        Ok(())
    }
}

/// Counts a purchase for its buyer; the first one of a buyer encrypted by
/// the host lists their document under their pseudonym.
fn count_buyer(buyer: &str, units: u64, event: &Event, view: &mut View<'_>) -> Result<(), String> {
    let key = buyer_key(buyer);
    let mut summary: BuyerSummary = view.get(&key)?.unwrap_or_default();
    if summary.purchases == 0
        && let Some(pseudonym) = event.subject()
    {
        let listed = subject_key(&pseudonym);
        let mut documents: SubjectDocuments = view.get(&listed)?.unwrap_or_default();
        if !documents.keys.contains(&key) {
            documents.keys.push(key.clone());
            view.put(&listed, &documents);
        }
    }
    summary.units += units;
    summary.purchases += 1;
    view.put(&key, &summary);
    Ok(())
}

/// Deletes what the view holds of a forgotten subject.
fn forget(pseudonym: &str, view: &mut View<'_>) -> Result<(), String> {
    let listed = subject_key(pseudonym);
    let Some(documents) = view.get::<SubjectDocuments>(&listed)? else {
        return Ok(());
    };
    for key in &documents.keys {
        view.delete(key);
    }
    view.delete(&listed);
    Ok(())
}

eshost_projection::export_projection!(SalesSummary);

#[cfg(test)]
mod tests {
    use super::*;
    use eshost_projection::Change;
    use std::collections::BTreeMap;

    fn event(position: i64, id: &str, name: &str, payload: &str) -> Event {
        Event {
            position,
            aggregate: "FlashSaleItem".into(),
            id: id.into(),
            sequence: 1,
            name: name.into(),
            payload: payload.into(),
            metadata: "{}".into(),
        }
    }

    /// A purchase whose buyer the host encrypts under `pseudonym`.
    fn purchase(position: i64, buyer: &str, pseudonym: &str) -> Event {
        Event {
            metadata: format!(r#"{{"personal":{{"subject":"{pseudonym}","fields":[]}}}}"#),
            ..event(
                position,
                "a",
                "ItemPurchased",
                &format!(r#"{{"buyerId":"{buyer}","quantity":1}}"#),
            )
        }
    }

    fn erasure(position: i64, pseudonym: &str) -> Event {
        Event {
            position,
            aggregate: "$subjects".into(),
            id: pseudonym.into(),
            sequence: 1,
            name: "SubjectForgotten".into(),
            payload: format!(
                r#"{{"subject":"{pseudonym}","streams":[{{"aggregate":"FlashSaleItem","id":"a"}}]}}"#
            ),
            metadata: "{}".into(),
        }
    }

    #[test]
    fn a_buyers_erasure_deletes_their_document_and_keeps_the_counts() {
        let created = event(1, "a", "FlashSaleCreated", r#"{"initialStock":5}"#);
        let bought = [
            created,
            purchase(2, "ann", "psn_1"),
            purchase(3, "bob", "psn_2"),
            purchase(4, "ann", "psn_1"),
        ];
        let documents = project(&bought).unwrap();
        let ann: BuyerSummary = parsed(&documents, "buyer:ann");
        assert_eq!((ann.units, ann.purchases), (2, 2));
        let listed: SubjectDocuments = parsed(&documents, "subject:psn_1");
        assert_eq!(listed.keys, ["buyer:ann"]);

        let mut events = bought.to_vec();
        events.push(erasure(5, "psn_1"));
        let documents = project(&events).unwrap();
        let left: Vec<&String> = documents.keys().collect();
        assert_eq!(left, ["buyer:bob", "item:a", "subject:psn_2", "total"]);
        assert!(!documents.values().any(|d| d.contains("ann")));
        let item: ItemSummary = parsed(&documents, "item:a");
        assert_eq!((item.sold, item.buyers), (3, 3));

        // Replayed after the forget, her purchases hold tombstones: they
        // count, under no one.
        let tombstone = r#"{"buyerId":{"$forgotten":"psn_1"},"quantity":1}"#;
        let rebuilt = project(&[
            event(1, "a", "FlashSaleCreated", r#"{"initialStock":5}"#),
            event(2, "a", "ItemPurchased", tombstone),
            erasure(3, "psn_1"),
        ])
        .unwrap();
        let left: Vec<&String> = rebuilt.keys().collect();
        assert_eq!(left, ["item:a", "total"]);
    }

    /// Projects events one by one over an in-memory view, as the host does.
    fn project(events: &[Event]) -> Result<BTreeMap<String, String>, String> {
        let mut documents = BTreeMap::new();
        for event in events {
            let stored = documents.clone();
            let read = move |key: &str| stored.get(key).cloned();
            let mut view = View::over(&read);
            SalesSummary::project(event, &mut view)?;
            for change in view.into_changes() {
                match change {
                    Change::Upsert { key, body } => documents.insert(key, body),
                    Change::Delete(key) => documents.remove(&key),
                };
            }
        }
        Ok(documents)
    }

    fn parsed<T: serde::de::DeserializeOwned>(
        documents: &BTreeMap<String, String>,
        key: &str,
    ) -> T {
        serde_json::from_str(&documents[key]).unwrap()
    }

    #[test]
    fn sales_are_summed_per_item_and_in_total() {
        let documents = project(&[
            event(
                10,
                "a",
                "FlashSaleCreated",
                r#"{"itemId":"a","initialStock":3}"#,
            ),
            event(
                20,
                "b",
                "FlashSaleCreated",
                r#"{"itemId":"b","initialStock":1}"#,
            ),
            event(30, "a", "ItemPurchased", r#"{"buyerId":"x","quantity":2}"#),
            event(40, "b", "ItemPurchased", r#"{"buyerId":"y","quantity":1}"#),
            event(
                50,
                "b",
                "PurchaseRejected",
                r#"{"buyerId":"z","reason":"out_of_stock"}"#,
            ),
        ])
        .unwrap();
        let a: ItemSummary = parsed(&documents, "item:a");
        let b: ItemSummary = parsed(&documents, "item:b");
        let total: TotalSummary = parsed(&documents, TOTAL_KEY);
        assert_eq!(
            (a.stock, a.sold, a.buyers, a.rejected, a.last_position),
            (1, 2, 1, 0, 30)
        );
        assert_eq!(
            (b.stock, b.sold, b.buyers, b.rejected, b.last_position),
            (0, 1, 1, 1, 50)
        );
        assert_eq!((total.sold, total.items, total.last_position), (3, 2, 40));
    }

    #[test]
    fn an_unreadable_payload_is_an_error_naming_the_event() {
        let error =
            project(&[event(1, "a", "ItemPurchased", r#"{"quantity":"two"}"#)]).unwrap_err();
        assert!(error.contains("ItemPurchased"), "{error}");
    }
}
