//! The flash-sale rules as plain Rust: `decide` (command + state -> events)
//! and `evolve` (state + event -> state). Nothing here knows about WIT or
//! WebAssembly, so the rules are unit-tested natively.

use crate::buyers::Buyers;
use eshost_guest::{Aggregate, Refusal, Subject};
use serde::{Deserialize, Serialize};

/// One flash-sale item. `created` tells a sale that was never created apart
/// from one created with no stock.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FlashSaleItem {
    pub id: String,
    pub created: bool,
    pub initial_stock: u64,
    pub stock: u64,
    pub sold: u64,
    pub buyers: Buyers,
}

/// What a caller may ask of an item. Quantities are signed so that a
/// negative one is refused as an invalid command, not an invalid payload.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "name", content = "payload", rename_all_fields = "camelCase")]
pub enum Command {
    CreateFlashSale { initial_stock: i64 },
    PurchaseItem { buyer_id: String, quantity: i64 },
}

/// What happened to an item. The buyer is the data subject of a purchase
/// and of a rejection: the host keeps their id encrypted, and once they are
/// forgotten, replays give their pseudonym in its place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "name", content = "payload", rename_all_fields = "camelCase")]
pub enum Event {
    FlashSaleCreated { item_id: String, initial_stock: u64 },
    ItemPurchased { buyer_id: Subject, quantity: u64 },
    PurchaseRejected { buyer_id: Subject, reason: String },
}

impl Aggregate for FlashSaleItem {
    const NAME: &'static str = "FlashSaleItem";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    type Command = Command;
    type Event = Event;

    fn new(id: String) -> Self {
        Self {
            id,
            ..Self::default()
        }
    }

    fn set_id(&mut self, id: String) {
        self.id = id;
    }

    /// Decide what a command means against the current state. Never mutates.
    fn decide(&self, command: Command) -> Result<Vec<Event>, Refusal> {
        match command {
            Command::CreateFlashSale { initial_stock } => {
                let initial_stock = u64::try_from(initial_stock).map_err(|_| {
                    Refusal::InvalidCommand(format!(
                        "initialStock must be 0 or more, got {initial_stock}"
                    ))
                })?;
                if self.created {
                    return Err(Refusal::PreconditionFailed(format!(
                        "flash sale {} already exists",
                        self.id
                    )));
                }
                Ok(vec![Event::FlashSaleCreated {
                    item_id: self.id.clone(),
                    initial_stock,
                }])
            }
            Command::PurchaseItem { buyer_id, quantity } => {
                if buyer_id.is_empty() {
                    return Err(Refusal::InvalidCommand("buyerId must not be empty".into()));
                }
                let quantity = u64::try_from(quantity)
                    .ok()
                    .filter(|&q| q >= 1)
                    .ok_or_else(|| {
                        Refusal::InvalidCommand(format!(
                            "quantity must be at least 1, got {quantity}"
                        ))
                    })?;
                if !self.created {
                    return Err(Refusal::PreconditionFailed(format!(
                        "flash sale {} does not exist",
                        self.id
                    )));
                }
                let rejected = |reason: &str| Event::PurchaseRejected {
                    buyer_id: Subject::new(buyer_id.clone()),
                    reason: reason.into(),
                };
                if self.stock == 0 {
                    return Ok(vec![rejected("out_of_stock")]);
                }
                if quantity > self.stock {
                    return Ok(vec![rejected("insufficient_stock")]);
                }
                Ok(vec![Event::ItemPurchased {
                    buyer_id: buyer_id.into(),
                    quantity,
                }])
            }
        }
    }

    /// Apply one recorded event. Fails only on an event that contradicts the
    /// state (a corrupt stream).
    fn evolve(&mut self, event: Event) -> Result<(), String> {
        match event {
            Event::FlashSaleCreated { initial_stock, .. } => {
                self.created = true;
                self.initial_stock = initial_stock;
                self.stock = initial_stock;
                self.sold = 0;
                self.buyers.clear();
            }
            Event::ItemPurchased { buyer_id, quantity } => {
                self.stock = self.stock.checked_sub(quantity).ok_or_else(|| {
                    format!("ItemPurchased of {quantity} exceeds stock {}", self.stock)
                })?;
                self.sold += quantity;
                self.buyers.push(buyer_id.key());
            }
            Event::PurchaseRejected { .. } => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eshost_guest::raw::{self, Aggregate as _, Typed};

    fn created(stock: u64) -> FlashSaleItem {
        let mut item = FlashSaleItem::new("s1".into());
        let events = item
            .decide(Command::CreateFlashSale {
                initial_stock: stock as i64,
            })
            .unwrap();
        for e in events {
            item.evolve(e).unwrap();
        }
        item
    }

    fn purchase(item: &mut FlashSaleItem, buyer: &str, quantity: i64) -> Result<Event, Refusal> {
        let mut events = item.decide(Command::PurchaseItem {
            buyer_id: buyer.into(),
            quantity,
        })?;
        assert_eq!(events.len(), 1);
        let e = events.remove(0);
        item.evolve(e.clone()).unwrap();
        Ok(e)
    }

    fn rejection(event: Event) -> Option<String> {
        match event {
            Event::PurchaseRejected { reason, .. } => Some(reason),
            _ => None,
        }
    }

    #[test]
    fn the_buyer_is_declared_the_subject_of_purchases_and_rejections() {
        let declared = Typed::<FlashSaleItem>::personal();
        let summary: Vec<(&str, &str, usize)> = declared
            .iter()
            .map(|d| (d.event, d.subject, d.fields.len()))
            .collect();
        assert_eq!(
            summary,
            [
                ("ItemPurchased", "buyerId", 0),
                ("PurchaseRejected", "buyerId", 0)
            ]
        );
    }

    #[test]
    fn create_sets_stock_and_records_item_id() {
        let item = created(5);
        assert_eq!((item.stock, item.sold, item.initial_stock), (5, 0, 5));
    }

    #[test]
    fn purchases_until_out_of_stock_never_oversell() {
        let mut item = created(2);
        assert_eq!(rejection(purchase(&mut item, "a", 1).unwrap()), None);
        let big = purchase(&mut item, "b", 5).unwrap();
        assert_eq!(rejection(big).as_deref(), Some("insufficient_stock"));
        assert_eq!(rejection(purchase(&mut item, "c", 1).unwrap()), None);
        let late = purchase(&mut item, "d", 1).unwrap();
        assert_eq!(rejection(late).as_deref(), Some("out_of_stock"));
        assert_eq!((item.stock, item.sold), (0, 2));
        assert_eq!(item.buyers.iter().collect::<Vec<_>>(), ["a", "c"]);
    }

    #[test]
    fn bad_commands_are_refused() {
        let mut item = created(3);
        assert!(matches!(
            purchase(&mut item, "a", 0),
            Err(Refusal::InvalidCommand(_))
        ));
        assert!(matches!(
            item.decide(Command::CreateFlashSale { initial_stock: 1 }),
            Err(Refusal::PreconditionFailed(_))
        ));
        let mut never = FlashSaleItem::new("s2".into());
        assert!(matches!(
            purchase(&mut never, "a", 1),
            Err(Refusal::PreconditionFailed(_))
        ));
    }

    fn recorded<'a>(name: &'a str, payload: &'a str) -> raw::Recorded<'a> {
        raw::Recorded {
            name,
            payload,
            sequence: 1,
            version: "0.1.0",
        }
    }

    /// What the host sees: names read from the enums, payloads parsed and
    /// written by the SDK in the recorded JSON shape.
    #[test]
    fn on_the_wire_names_payloads_and_refusals() {
        type Wire = Typed<FlashSaleItem>;
        assert_eq!(Wire::commands(), ["CreateFlashSale", "PurchaseItem"]);
        assert_eq!(
            Wire::events(),
            ["FlashSaleCreated", "ItemPurchased", "PurchaseRejected"]
        );
        let mut item = Wire::new("s1".into());
        let events = item
            .decide("CreateFlashSale", r#"{"initialStock":5}"#)
            .unwrap();
        assert_eq!(
            events,
            [raw::Event {
                name: "FlashSaleCreated".into(),
                payload: r#"{"itemId":"s1","initialStock":5}"#.into()
            }]
        );
        item.evolve(&recorded(&events[0].name, &events[0].payload))
            .unwrap();
        assert_eq!(item.0.stock, 5);
        assert!(matches!(
            item.decide("PurchaseItem", r#"{"buyerId":"a"}"#),
            Err(Refusal::InvalidPayload(m)) if m.contains("quantity")
        ));
        assert!(matches!(
            item.decide("Refund", "{}"),
            Err(Refusal::UnknownCommand(m)) if m.contains("Refund")
        ));
        assert!(
            item.evolve(&recorded("ItemBought", r#"{"buyerId":"a","quantity":1}"#))
                .unwrap_err()
                .contains("ItemBought")
        );
        assert!(
            item.evolve(&recorded(
                "ItemPurchased",
                r#"{"buyerId":"a","quantity":9}"#
            ))
            .unwrap_err()
            .contains("exceeds stock")
        );
    }

    #[test]
    fn snapshot_round_trips_and_is_smaller_than_json() {
        let mut item = created(1_000);
        for n in 0..500 {
            purchase(&mut item, &format!("buyer-{n}"), 1).unwrap();
        }
        let bytes = item.to_snapshot();
        assert_eq!(FlashSaleItem::from_snapshot(&bytes).unwrap(), item);
        assert!(bytes.len() < serde_json::to_vec(&item).unwrap().len());
        assert!(FlashSaleItem::from_snapshot(&bytes[..bytes.len() / 2]).is_err());
    }
}
