//! The `sales-summary` projection: a read model of the flash sale.
//!
//! - `item:{id}`, one document per `FlashSaleItem`: its stock, units sold,
//!   purchases (buyers served), rejections, its latest buyer, and the
//!   position of the last event that changed it.
//! - `total`, one document across every item: units sold, items on sale.
//!
//! Item documents are keyed by the aggregate id behind an `item:` prefix, so
//! no item id can collide with `total`.
//!
//! The latest buyer is personal data. When the host encrypts the buyer (the
//! flash sale declares `buyerId`), the document also keeps the pseudonym
//! that stands for them, and the buyer's erasure, which names the items
//! they bought, clears it. It costs a following projection nothing: the
//! item's document is read and written for every purchase anyway.

use eshost_projection::{Erasure, Event, Projection, View};
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
    /// The buyer of the latest purchase, until they are forgotten.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_buyer: Option<String>,
    /// The pseudonym the host keeps the latest buyer under, if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_buyer_subject: Option<String>,
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

/// The key of an item's document.
pub fn item_key(id: &str) -> String {
    format!("item:{id}")
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
            return forget(&erasure, event.position, view);
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
                // A forgotten buyer (read again in a rebuild) is no one.
                item.last_buyer = purchased.buyer_id.as_str().map(str::to_owned);
                item.last_buyer_subject = item.last_buyer.as_ref().and_then(|_| event.subject());
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

/// Clears a forgotten buyer from the items they bought.
fn forget(erasure: &Erasure, position: i64, view: &mut View<'_>) -> Result<(), String> {
    for stream in erasure
        .streams
        .iter()
        .filter(|s| s.aggregate == "FlashSaleItem")
    {
        let key = item_key(&stream.id);
        let Some(mut item) = view.get::<ItemSummary>(&key)? else {
            continue;
        };
        if item.last_buyer_subject.as_deref() == Some(erasure.subject.as_str()) {
            item.last_buyer = None;
            item.last_buyer_subject = None;
            item.last_position = position;
            view.put(&key, &item);
        }
    }
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
    fn a_buyers_erasure_clears_them_from_the_items_and_keeps_the_counts() {
        let created = event(1, "a", "FlashSaleCreated", r#"{"initialStock":5}"#);
        let bought = [
            created.clone(),
            purchase(2, "bob", "psn_2"),
            purchase(3, "ann", "psn_1"),
        ];
        let documents = project(&bought).unwrap();
        let item: ItemSummary = parsed(&documents, "item:a");
        assert_eq!(
            (
                item.last_buyer.as_deref(),
                item.last_buyer_subject.as_deref()
            ),
            (Some("ann"), Some("psn_1"))
        );

        // Bob's erasure leaves ann; hers clears her.
        let mut events = bought.to_vec();
        events.push(erasure(4, "psn_2"));
        let item: ItemSummary = parsed(&project(&events).unwrap(), "item:a");
        assert_eq!(item.last_buyer.as_deref(), Some("ann"));
        events.push(erasure(5, "psn_1"));
        let documents = project(&events).unwrap();
        assert!(
            !documents.values().any(|d| d.contains("ann")),
            "{documents:?}"
        );
        let item: ItemSummary = parsed(&documents, "item:a");
        assert_eq!((item.sold, item.buyers, item.last_buyer), (2, 2, None));

        // Replayed after the forget, her purchase holds a tombstone: it
        // counts, bought by no one.
        let tombstone = r#"{"buyerId":{"$forgotten":"psn_1"},"quantity":1}"#;
        let rebuilt = project(&[created, event(2, "a", "ItemPurchased", tombstone)]).unwrap();
        let item: ItemSummary = parsed(&rebuilt, "item:a");
        assert_eq!((item.sold, item.last_buyer), (1, None));
    }

    #[test]
    fn an_unreadable_payload_is_an_error_naming_the_event() {
        let error =
            project(&[event(1, "a", "ItemPurchased", r#"{"quantity":"two"}"#)]).unwrap_err();
        assert!(error.contains("ItemPurchased"), "{error}");
    }
}
