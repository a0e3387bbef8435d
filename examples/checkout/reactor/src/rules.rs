//! The checkout's rules as plain Rust: what it reads, what it sends, and
//! [`Checkout::react`]. Kept apart from the export so that a test fixture
//! can compile them into a reactor of its own.

use eshost_reactor::{Actions, Due, Event, Reactor, Subscription};
use serde::{Deserialize, Serialize};

/// How long an order that sets no payment window of its own may wait for
/// its payment.
pub const PAYMENT_WINDOW_MS: u64 = 15 * 60 * 1000;

/// The sink confirmations are delivered to.
pub const CONFIRMATIONS: &str = "confirmations";

/// The correlation id of what is done for an order.
pub fn correlation(order: &str) -> String {
    format!("order:{order}")
}

/// The key of an order's payment timer.
pub fn timer(order: &str) -> String {
    format!("expire:{order}")
}

/// The events it reads, of both aggregates.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "name", content = "payload", rename_all_fields = "camelCase")]
pub enum Seen {
    // Order
    OrderPlaced {
        item_id: String,
        buyer_id: String,
        quantity: u64,
        /// The order's own payment window, if it set one.
        #[serde(default)]
        pay_within_ms: Option<u64>,
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
        /// It held stock, which goes back.
        reserved: bool,
    },
    /// Stock bought for an order already cancelled, which goes back.
    StockReturned {
        item_id: String,
        buyer_id: String,
        quantity: u64,
    },
    // FlashSaleItem. The item declares its buyer as personal data, which
    // reads as a tombstone once the buyer is forgotten: these rules do
    // not need it, so they do not read it, and a forgotten buyer's event
    // is handled like any other.
    ItemPurchased {
        quantity: u64,
    },
    PurchaseRejected {
        reason: String,
    },
}

/// What it asks of an order.
#[derive(Debug, Serialize)]
#[serde(tag = "name", content = "payload", rename_all_fields = "camelCase")]
pub enum OrderCommand {
    ReserveOrder,
    RejectOrder { reason: String },
    ExpireOrder,
}

/// What it asks of an item.
#[derive(Debug, Serialize)]
#[serde(tag = "name", content = "payload", rename_all_fields = "camelCase")]
pub enum ItemCommand {
    PurchaseItem { buyer_id: String, quantity: u64 },
    ReleaseItem { buyer_id: String, quantity: u64 },
}

/// What the `confirmations` sink receives.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Confirmation<'a> {
    pub order_id: &'a str,
    pub item_id: &'a str,
    pub buyer_id: &'a str,
    pub quantity: u64,
}

pub struct Checkout;

impl Reactor for Checkout {
    const NAME: &'static str = "checkout";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const SUBSCRIPTIONS: &'static [Subscription] = &[
        Subscription {
            aggregate: "Order",
            events: &[
                "OrderPlaced",
                "OrderConfirmed",
                "OrderCancelled",
                "StockReturned",
            ],
        },
        Subscription {
            aggregate: "FlashSaleItem",
            events: &["ItemPurchased", "PurchaseRejected"],
        },
    ];
    const SINKS: &'static [&'static str] = &[CONFIRMATIONS];
    type Event = Seen;

    fn react(event: &Event, seen: Seen, actions: &mut Actions) -> Result<(), String> {
        match seen {
            Seen::OrderPlaced {
                item_id,
                buyer_id,
                quantity,
                pay_within_ms,
            } => {
                let order = &event.id;
                actions
                    .correlate(correlation(order))
                    .send(
                        "FlashSaleItem",
                        &item_id,
                        &ItemCommand::PurchaseItem { buyer_id, quantity },
                    )?
                    .schedule(
                        &timer(order),
                        Due::After(pay_within_ms.unwrap_or(PAYMENT_WINDOW_MS)),
                        "Order",
                        order,
                        &OrderCommand::ExpireOrder,
                    )?;
            }
            Seen::ItemPurchased { .. } => {
                // No `correlate`: a command sent with none carries the
                // correlation of the event it answers.
                if let Some(order) = order_of(event) {
                    actions.send("Order", &order, &OrderCommand::ReserveOrder)?;
                }
            }
            Seen::PurchaseRejected { reason, .. } => {
                if let Some(order) = order_of(event) {
                    actions
                        .send("Order", &order, &OrderCommand::RejectOrder { reason })?
                        .cancel(&timer(&order));
                }
            }
            Seen::OrderConfirmed {
                item_id,
                buyer_id,
                quantity,
            } => {
                let order = &event.id;
                actions.cancel(&timer(order)).deliver(
                    CONFIRMATIONS,
                    &Confirmation {
                        order_id: order,
                        item_id: &item_id,
                        buyer_id: &buyer_id,
                        quantity,
                    },
                )?;
            }
            Seen::OrderCancelled {
                item_id,
                buyer_id,
                quantity,
                reserved,
            } => {
                let order = &event.id;
                actions.cancel(&timer(order));
                if reserved {
                    actions.correlate(correlation(order)).send(
                        "FlashSaleItem",
                        &item_id,
                        &ItemCommand::ReleaseItem { buyer_id, quantity },
                    )?;
                }
            }
            Seen::StockReturned {
                item_id,
                buyer_id,
                quantity,
            } => {
                actions.correlate(correlation(&event.id)).send(
                    "FlashSaleItem",
                    &item_id,
                    &ItemCommand::ReleaseItem { buyer_id, quantity },
                )?;
            }
        }
        Ok(())
    }
}

/// The order an item's event answers, from its correlation id.
fn order_of(event: &Event) -> Option<String> {
    Some(event.correlation_id()?.strip_prefix("order:")?.to_owned())
}
