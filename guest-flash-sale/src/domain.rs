//! The flash-sale rules as plain Rust: `decide` (command + state -> events)
//! and `evolve` (state + event -> state). Nothing here knows about WIT or
//! WebAssembly, so the rules are unit-tested natively.

use crate::buyers::Buyers;
use eshost_guest::{Aggregate, Event, Refusal, parse, parse_event};
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

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateFlashSale {
    initial_stock: i64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PurchaseItem {
    buyer_id: String,
    quantity: i64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FlashSaleCreated {
    item_id: String,
    initial_stock: u64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ItemPurchased {
    buyer_id: String,
    quantity: u64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PurchaseRejected {
    buyer_id: String,
    reason: String,
}

impl Aggregate for FlashSaleItem {
    const NAME: &'static str = "FlashSaleItem";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const COMMANDS: &'static [&'static str] = &["CreateFlashSale", "PurchaseItem"];
    const EVENTS: &'static [&'static str] =
        &["FlashSaleCreated", "ItemPurchased", "PurchaseRejected"];

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
    fn decide(&self, command: &str, payload: &str) -> Result<Vec<Event>, Refusal> {
        match command {
            "CreateFlashSale" => {
                let create: CreateFlashSale = parse(command, payload)?;
                let initial_stock = u64::try_from(create.initial_stock).map_err(|_| {
                    Refusal::InvalidCommand(format!(
                        "initialStock must be 0 or more, got {}",
                        create.initial_stock
                    ))
                })?;
                if self.created {
                    return Err(Refusal::PreconditionFailed(format!(
                        "flash sale {} already exists",
                        self.id
                    )));
                }
                Ok(vec![Event::new(
                    "FlashSaleCreated",
                    &FlashSaleCreated {
                        item_id: self.id.clone(),
                        initial_stock,
                    },
                )])
            }
            "PurchaseItem" => {
                let purchase: PurchaseItem = parse(command, payload)?;
                if purchase.buyer_id.is_empty() {
                    return Err(Refusal::InvalidCommand("buyerId must not be empty".into()));
                }
                let quantity = u64::try_from(purchase.quantity)
                    .ok()
                    .filter(|&q| q >= 1)
                    .ok_or_else(|| {
                        Refusal::InvalidCommand(format!(
                            "quantity must be at least 1, got {}",
                            purchase.quantity
                        ))
                    })?;
                if !self.created {
                    return Err(Refusal::PreconditionFailed(format!(
                        "flash sale {} does not exist",
                        self.id
                    )));
                }
                let rejected = |reason: &str| {
                    Ok(vec![Event::new(
                        "PurchaseRejected",
                        &PurchaseRejected {
                            buyer_id: purchase.buyer_id.clone(),
                            reason: reason.into(),
                        },
                    )])
                };
                if self.stock == 0 {
                    return rejected("out_of_stock");
                }
                if quantity > self.stock {
                    return rejected("insufficient_stock");
                }
                Ok(vec![Event::new(
                    "ItemPurchased",
                    &ItemPurchased {
                        buyer_id: purchase.buyer_id,
                        quantity,
                    },
                )])
            }
            other => Err(Refusal::UnknownCommand(format!(
                "{} has no command {other:?}",
                Self::NAME
            ))),
        }
    }

    /// Apply one recorded event. Fails only on an event this logic does not
    /// understand or one that contradicts the state (a corrupt stream).
    fn evolve(&mut self, name: &str, payload: &str) -> Result<(), String> {
        match name {
            "FlashSaleCreated" => {
                let created: FlashSaleCreated = parse_event(name, payload)?;
                self.created = true;
                self.initial_stock = created.initial_stock;
                self.stock = created.initial_stock;
                self.sold = 0;
                self.buyers.clear();
            }
            "ItemPurchased" => {
                let purchased: ItemPurchased = parse_event(name, payload)?;
                self.stock = self.stock.checked_sub(purchased.quantity).ok_or_else(|| {
                    format!(
                        "ItemPurchased of {} exceeds stock {}",
                        purchased.quantity, self.stock
                    )
                })?;
                self.sold += purchased.quantity;
                self.buyers.push(&purchased.buyer_id);
            }
            "PurchaseRejected" => {
                let _: PurchaseRejected = parse_event(name, payload)?;
            }
            other => return Err(format!("{} has no event {other:?}", Self::NAME)),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn created(stock: u64) -> FlashSaleItem {
        let mut item = FlashSaleItem::new("s1".into());
        let events = item
            .decide("CreateFlashSale", &format!(r#"{{"initialStock":{stock}}}"#))
            .unwrap();
        for e in events {
            item.evolve(&e.name, &e.payload).unwrap();
        }
        item
    }

    fn purchase(item: &mut FlashSaleItem, buyer: &str, quantity: i64) -> Result<Event, Refusal> {
        let payload = format!(r#"{{"buyerId":"{buyer}","quantity":{quantity}}}"#);
        let mut events = item.decide("PurchaseItem", &payload)?;
        assert_eq!(events.len(), 1);
        let e = events.remove(0);
        item.evolve(&e.name, &e.payload).unwrap();
        Ok(e)
    }

    #[test]
    fn create_sets_stock_and_records_item_id() {
        let item = created(5);
        assert_eq!((item.stock, item.sold, item.initial_stock), (5, 0, 5));
        let events = FlashSaleItem::new("s1".into())
            .decide("CreateFlashSale", r#"{"initialStock":5}"#)
            .unwrap();
        assert_eq!(events[0].payload, r#"{"itemId":"s1","initialStock":5}"#);
    }

    #[test]
    fn purchases_until_out_of_stock_never_oversell() {
        let mut item = created(2);
        assert_eq!(purchase(&mut item, "a", 1).unwrap().name, "ItemPurchased");
        let big = purchase(&mut item, "b", 5).unwrap();
        assert_eq!(big.name, "PurchaseRejected");
        assert!(big.payload.contains("insufficient_stock"));
        assert_eq!(purchase(&mut item, "c", 1).unwrap().name, "ItemPurchased");
        let late = purchase(&mut item, "d", 1).unwrap();
        assert!(late.payload.contains("out_of_stock"));
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
            item.decide("CreateFlashSale", r#"{"initialStock":1}"#),
            Err(Refusal::PreconditionFailed(_))
        ));
        assert!(matches!(
            item.decide("PurchaseItem", r#"{"buyerId":"a"}"#),
            Err(Refusal::InvalidPayload(_))
        ));
        assert!(matches!(
            item.decide("Refund", "{}"),
            Err(Refusal::UnknownCommand(_))
        ));
        let mut never = FlashSaleItem::new("s2".into());
        assert!(matches!(
            purchase(&mut never, "a", 1),
            Err(Refusal::PreconditionFailed(_))
        ));
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
