//! `FlashSaleItem` 0.2.0, the version the checkout sample runs: the
//! reference rules (compiled in from `examples/flash-sale`, so the two
//! versions differ only in what this file adds) and `ReleaseItem`, which
//! puts units sold to an order that was never paid back on sale.
//!
//! The state is the reference's own, so every stream 0.1.0 wrote replays to
//! the same state here: `eshost upgrade check` passes, and a store moves to
//! this version with no migration.

#[path = "../../../flash-sale/src/buyers.rs"]
pub mod buyers;
#[path = "../../../flash-sale/src/domain.rs"]
pub mod domain;

use domain::FlashSaleItem;
use eshost_guest::{Aggregate, Refusal, Subject};
use serde::{Deserialize, Serialize};

/// The item, with the reference's state and snapshot format.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Item(pub FlashSaleItem);

/// The reference's commands and `ReleaseItem`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "name", content = "payload", rename_all_fields = "camelCase")]
pub enum Command {
    CreateFlashSale {
        initial_stock: i64,
    },
    PurchaseItem {
        buyer_id: String,
        quantity: i64,
    },
    /// Give back units sold to `buyer_id`: they are on sale again.
    ReleaseItem {
        buyer_id: String,
        quantity: i64,
    },
}

/// The reference's events and `ItemReleased`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "name", content = "payload", rename_all_fields = "camelCase")]
pub enum Event {
    FlashSaleCreated { item_id: String, initial_stock: u64 },
    ItemPurchased { buyer_id: Subject, quantity: u64 },
    PurchaseRejected { buyer_id: Subject, reason: String },
    ItemReleased { buyer_id: Subject, quantity: u64 },
}

impl From<domain::Event> for Event {
    fn from(event: domain::Event) -> Self {
        match event {
            domain::Event::FlashSaleCreated {
                item_id,
                initial_stock,
            } => Event::FlashSaleCreated {
                item_id,
                initial_stock,
            },
            domain::Event::ItemPurchased { buyer_id, quantity } => {
                Event::ItemPurchased { buyer_id, quantity }
            }
            domain::Event::PurchaseRejected { buyer_id, reason } => {
                Event::PurchaseRejected { buyer_id, reason }
            }
        }
    }
}

impl Aggregate for Item {
    const NAME: &'static str = FlashSaleItem::NAME;
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    type Command = Command;
    type Event = Event;

    fn new(id: String) -> Self {
        Self(FlashSaleItem::new(id))
    }

    fn set_id(&mut self, id: String) {
        self.0.set_id(id);
    }

    fn decide(&self, command: Command) -> Result<Vec<Event>, Refusal> {
        let reference = match command {
            Command::CreateFlashSale { initial_stock } => {
                domain::Command::CreateFlashSale { initial_stock }
            }
            Command::PurchaseItem { buyer_id, quantity } => {
                domain::Command::PurchaseItem { buyer_id, quantity }
            }
            Command::ReleaseItem { buyer_id, quantity } => {
                return self.release(buyer_id, quantity);
            }
        };
        let events = self.0.decide(reference)?;
        Ok(events.into_iter().map(Event::from).collect())
    }

    fn evolve(&mut self, event: Event) -> Result<(), String> {
        let reference = match event {
            Event::FlashSaleCreated {
                item_id,
                initial_stock,
            } => domain::Event::FlashSaleCreated {
                item_id,
                initial_stock,
            },
            Event::ItemPurchased { buyer_id, quantity } => {
                domain::Event::ItemPurchased { buyer_id, quantity }
            }
            Event::PurchaseRejected { buyer_id, reason } => {
                domain::Event::PurchaseRejected { buyer_id, reason }
            }
            Event::ItemReleased { quantity, .. } => {
                let item = &mut self.0;
                item.sold = item.sold.checked_sub(quantity).ok_or_else(|| {
                    format!("ItemReleased of {quantity} exceeds sold {}", item.sold)
                })?;
                item.stock += quantity;
                return Ok(());
            }
        };
        self.0.evolve(reference)
    }

    // The reference's snapshot format, so snapshots carry over both ways.
    fn to_snapshot(&self) -> Vec<u8> {
        self.0.to_snapshot()
    }

    fn from_snapshot(bytes: &[u8]) -> Result<Self, String> {
        FlashSaleItem::from_snapshot(bytes).map(Self)
    }
}

impl Item {
    fn release(&self, buyer_id: String, quantity: i64) -> Result<Vec<Event>, Refusal> {
        if buyer_id.is_empty() {
            return Err(Refusal::InvalidCommand("buyerId must not be empty".into()));
        }
        let quantity = u64::try_from(quantity)
            .ok()
            .filter(|&q| q >= 1)
            .ok_or_else(|| {
                Refusal::InvalidCommand(format!("quantity must be at least 1, got {quantity}"))
            })?;
        if !self.0.created {
            return Err(Refusal::PreconditionFailed(format!(
                "flash sale {} does not exist",
                self.0.id
            )));
        }
        if quantity > self.0.sold {
            return Err(Refusal::PreconditionFailed(format!(
                "cannot release {quantity}: {} sold",
                self.0.sold
            )));
        }
        Ok(vec![Event::ItemReleased {
            buyer_id: buyer_id.into(),
            quantity,
        }])
    }
}

eshost_guest::export_aggregate!(Item);

#[cfg(test)]
mod tests {
    use super::*;

    fn run(item: &mut Item, command: Command) -> Result<Vec<Event>, Refusal> {
        let events = item.decide(command)?;
        for event in events.clone() {
            item.evolve(event).unwrap();
        }
        Ok(events)
    }

    #[test]
    fn released_units_are_on_sale_again_and_never_more_than_sold() {
        let mut item = Item::new("s1".into());
        run(&mut item, Command::CreateFlashSale { initial_stock: 2 }).unwrap();
        let buy = |buyer: &str| Command::PurchaseItem {
            buyer_id: buyer.into(),
            quantity: 2,
        };
        assert!(matches!(
            &run(&mut item, buy("ann")).unwrap()[..],
            [Event::ItemPurchased { .. }]
        ));
        assert!(matches!(
            &run(&mut item, buy("bob")).unwrap()[..],
            [Event::PurchaseRejected { .. }]
        ));
        let release = |quantity| Command::ReleaseItem {
            buyer_id: "ann".into(),
            quantity,
        };
        assert!(matches!(
            run(&mut item, release(3)),
            Err(Refusal::PreconditionFailed(m)) if m.contains("2 sold")
        ));
        run(&mut item, release(2)).unwrap();
        assert_eq!((item.0.stock, item.0.sold), (2, 0));
        assert!(matches!(
            &run(&mut item, buy("bob")).unwrap()[..],
            [Event::ItemPurchased { .. }]
        ));
        assert_eq!((item.0.stock, item.0.sold), (0, 2));
    }

    #[test]
    fn the_state_and_snapshot_are_the_reference_s() {
        let mut item = Item::new("s1".into());
        run(&mut item, Command::CreateFlashSale { initial_stock: 5 }).unwrap();
        assert_eq!(
            serde_json::to_value(&item).unwrap(),
            serde_json::to_value(&item.0).unwrap()
        );
        let restored = FlashSaleItem::from_snapshot(&item.to_snapshot()).unwrap();
        assert_eq!(restored, item.0);
    }
}
