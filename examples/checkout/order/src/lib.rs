//! The `Order` aggregate of the checkout sample. An order is placed for a
//! quantity of one flash-sale item; the `checkout` reactor buys the stock
//! and answers with `ReserveOrder` or `RejectOrder`; the buyer pays
//! (`PayOrder`) and the order is confirmed; an order not paid in time is
//! cancelled by the reactor's timer (`ExpireOrder`).
//!
//! The reactor's commands may arrive late and more than once in the
//! workflow's life (a timer firing while the purchase is still on its
//! way), so every one of them is accepted in every state and records only
//! what changes the order: an expiry after confirmation records nothing,
//! and a reservation that comes after the order was cancelled records
//! `StockReturned`, so the reactor gives that stock back.

use eshost_guest::{Aggregate, Refusal};
use serde::{Deserialize, Serialize};

/// Where an order is in its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Status {
    /// Not placed yet.
    #[default]
    New,
    /// Placed; its stock is being bought.
    Placed,
    /// Its stock is held; waiting for the payment.
    Reserved,
    /// Paid.
    Confirmed,
    /// The item had not enough stock.
    Rejected,
    /// Not paid in time.
    Cancelled,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Order {
    pub id: String,
    pub status: Status,
    pub item_id: String,
    pub buyer_id: String,
    pub quantity: u64,
    /// Why it was rejected.
    pub reason: Option<String>,
}

/// Quantities are signed so that a negative one is refused as an invalid
/// command, not an invalid payload. Commands without fields are written
/// `{}` so that they take the `{}` payload the reactor sends.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "name", content = "payload", rename_all_fields = "camelCase")]
pub enum Command {
    PlaceOrder {
        item_id: String,
        buyer_id: String,
        quantity: i64,
        /// How long the buyer has to pay, in milliseconds; none: the
        /// checkout's default.
        #[serde(default)]
        pay_within_ms: Option<u64>,
    },
    /// From the reactor: the item sold the order its stock.
    ReserveOrder {},
    /// From the reactor: the item could not.
    RejectOrder { reason: String },
    /// From the buyer.
    PayOrder {},
    /// From the reactor's timer: the payment window is over.
    ExpireOrder {},
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "name", content = "payload", rename_all_fields = "camelCase")]
pub enum Event {
    OrderPlaced {
        item_id: String,
        buyer_id: String,
        quantity: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pay_within_ms: Option<u64>,
    },
    OrderReserved {},
    OrderRejected {
        reason: String,
    },
    OrderConfirmed {
        item_id: String,
        buyer_id: String,
        quantity: u64,
    },
    OrderCancelled {
        item_id: String,
        buyer_id: String,
        quantity: u64,
        /// It held stock, which goes back to the item.
        reserved: bool,
    },
    /// A reservation came after the order was cancelled: the stock it
    /// bought goes back to the item.
    StockReturned {
        item_id: String,
        buyer_id: String,
        quantity: u64,
    },
}

impl Order {
    fn require_placed(&self) -> Result<(), Refusal> {
        if self.status == Status::New {
            return Err(Refusal::PreconditionFailed(format!(
                "order {} was never placed",
                self.id
            )));
        }
        Ok(())
    }
}

impl Aggregate for Order {
    const NAME: &'static str = "Order";
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

    fn decide(&self, command: Command) -> Result<Vec<Event>, Refusal> {
        let (item_id, buyer_id, quantity) =
            (self.item_id.clone(), self.buyer_id.clone(), self.quantity);
        match command {
            Command::PlaceOrder {
                item_id,
                buyer_id,
                quantity,
                pay_within_ms,
            } => {
                if item_id.is_empty() || buyer_id.is_empty() {
                    return Err(Refusal::InvalidCommand(
                        "itemId and buyerId must not be empty".into(),
                    ));
                }
                let quantity = u64::try_from(quantity)
                    .ok()
                    .filter(|&q| q >= 1)
                    .ok_or_else(|| {
                        Refusal::InvalidCommand(format!(
                            "quantity must be at least 1, got {quantity}"
                        ))
                    })?;
                if self.status != Status::New {
                    return Err(Refusal::PreconditionFailed(format!(
                        "order {} was already placed",
                        self.id
                    )));
                }
                Ok(vec![Event::OrderPlaced {
                    item_id,
                    buyer_id,
                    quantity,
                    pay_within_ms,
                }])
            }
            Command::ReserveOrder {} => {
                self.require_placed()?;
                Ok(match self.status {
                    Status::Placed => vec![Event::OrderReserved {}],
                    Status::Cancelled => vec![Event::StockReturned {
                        item_id,
                        buyer_id,
                        quantity,
                    }],
                    _ => vec![],
                })
            }
            Command::RejectOrder { reason } => {
                self.require_placed()?;
                Ok(match self.status {
                    Status::Placed => vec![Event::OrderRejected { reason }],
                    _ => vec![],
                })
            }
            Command::PayOrder {} => match self.status {
                Status::Reserved => Ok(vec![Event::OrderConfirmed {
                    item_id,
                    buyer_id,
                    quantity,
                }]),
                Status::Confirmed => Ok(vec![]),
                status => Err(Refusal::PreconditionFailed(format!(
                    "order {} cannot be paid: it is {}",
                    self.id,
                    match status {
                        Status::New => "not placed",
                        Status::Placed => "waiting for its stock",
                        Status::Rejected => "rejected",
                        _ => "cancelled",
                    }
                ))),
            },
            Command::ExpireOrder {} => {
                self.require_placed()?;
                Ok(match self.status {
                    Status::Placed | Status::Reserved => vec![Event::OrderCancelled {
                        item_id,
                        buyer_id,
                        quantity,
                        reserved: self.status == Status::Reserved,
                    }],
                    _ => vec![],
                })
            }
        }
    }

    fn evolve(&mut self, event: Event) -> Result<(), String> {
        match event {
            Event::OrderPlaced {
                item_id,
                buyer_id,
                quantity,
                ..
            } => {
                self.status = Status::Placed;
                self.item_id = item_id;
                self.buyer_id = buyer_id;
                self.quantity = quantity;
            }
            Event::OrderReserved {} => self.status = Status::Reserved,
            Event::OrderRejected { reason } => {
                self.status = Status::Rejected;
                self.reason = Some(reason);
            }
            Event::OrderConfirmed { .. } => self.status = Status::Confirmed,
            Event::OrderCancelled { .. } => self.status = Status::Cancelled,
            // The order stays cancelled; only the item changes.
            Event::StockReturned { .. } => {}
        }
        Ok(())
    }
}

eshost_guest::export_aggregate!(Order);

#[cfg(test)]
mod tests {
    use super::*;

    fn run(order: &mut Order, command: Command) -> Result<Vec<Event>, Refusal> {
        let events = order.decide(command)?;
        for event in events.clone() {
            order.evolve(event).unwrap();
        }
        Ok(events)
    }

    fn placed() -> Order {
        let mut order = Order::new("o1".into());
        run(
            &mut order,
            Command::PlaceOrder {
                item_id: "s1".into(),
                buyer_id: "ann".into(),
                quantity: 2,
                pay_within_ms: None,
            },
        )
        .unwrap();
        order
    }

    /// What the host and the reactor send: `{}` for a command with no
    /// fields.
    #[test]
    fn commands_with_no_fields_take_an_empty_object() {
        use eshost_guest::raw::{Aggregate as _, Typed};
        let mut order = Typed::<Order>::new("o1".into());
        let placed = order
            .decide(
                "PlaceOrder",
                r#"{"itemId":"s1","buyerId":"ann","quantity":1,"payWithinMs":500}"#,
            )
            .unwrap();
        assert_eq!(
            placed[0].payload,
            r#"{"itemId":"s1","buyerId":"ann","quantity":1,"payWithinMs":500}"#
        );
        order
            .0
            .evolve(
                serde_json::from_str(&format!(
                    r#"{{"name":"OrderPlaced","payload":{}}}"#,
                    placed[0].payload
                ))
                .unwrap(),
            )
            .unwrap();
        let reserved = order.decide("ReserveOrder", "{}").unwrap();
        assert_eq!(
            (reserved[0].name.as_str(), reserved[0].payload.as_str()),
            ("OrderReserved", "{}")
        );
    }

    #[test]
    fn placed_reserved_paid_is_confirmed_once() {
        let mut order = placed();
        assert_eq!(
            run(&mut order, Command::ReserveOrder {}).unwrap(),
            [Event::OrderReserved {}]
        );
        let confirmed = run(&mut order, Command::PayOrder {}).unwrap();
        assert!(matches!(
            &confirmed[..],
            [Event::OrderConfirmed { quantity: 2, .. }]
        ));
        assert_eq!(run(&mut order, Command::PayOrder {}).unwrap(), []);
        assert_eq!(run(&mut order, Command::ExpireOrder {}).unwrap(), []);
        assert_eq!(order.status, Status::Confirmed);
    }

    #[test]
    fn an_order_not_paid_is_cancelled_and_gives_back_what_it_held() {
        let mut reserved = placed();
        run(&mut reserved, Command::ReserveOrder {}).unwrap();
        assert!(matches!(
            &run(&mut reserved, Command::ExpireOrder {}).unwrap()[..],
            [Event::OrderCancelled { reserved: true, .. }]
        ));
        assert!(matches!(
            run(&mut reserved, Command::PayOrder {}),
            Err(Refusal::PreconditionFailed(m)) if m.contains("cancelled")
        ));

        // Cancelled while its purchase was on the way: the late
        // reservation returns the stock.
        let mut waiting = placed();
        assert!(matches!(
            &run(&mut waiting, Command::ExpireOrder {}).unwrap()[..],
            [Event::OrderCancelled {
                reserved: false,
                ..
            }]
        ));
        assert!(matches!(
            &run(&mut waiting, Command::ReserveOrder {}).unwrap()[..],
            [Event::StockReturned { quantity: 2, .. }]
        ));
        assert_eq!(waiting.status, Status::Cancelled);
    }

    #[test]
    fn a_rejected_order_cannot_be_paid_and_bad_commands_are_refused() {
        let mut order = placed();
        run(
            &mut order,
            Command::RejectOrder {
                reason: "out_of_stock".into(),
            },
        )
        .unwrap();
        assert!(matches!(
            run(&mut order, Command::PayOrder {}),
            Err(Refusal::PreconditionFailed(_))
        ));
        assert_eq!(run(&mut order, Command::ExpireOrder {}).unwrap(), []);
        assert!(matches!(
            Order::new("o2".into()).decide(Command::ReserveOrder {}),
            Err(Refusal::PreconditionFailed(_))
        ));
        assert!(matches!(
            Order::new("o2".into()).decide(Command::PlaceOrder {
                item_id: "s1".into(),
                buyer_id: "ann".into(),
                quantity: 0,
                pay_within_ms: None,
            }),
            Err(Refusal::InvalidCommand(_))
        ));
    }
}
