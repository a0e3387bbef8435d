//! The `checkout` reactor: a checkout across two aggregates, `Order` and
//! `FlashSaleItem`, with no code for retries, idempotency or timers.
//!
//! - An order placed buys its item (`PurchaseItem`, correlated with the
//!   order as `order:{id}`) and starts the payment timer `expire:{id}`.
//! - The item's answer, found by that correlation, reserves the order
//!   (`ReserveOrder`) or rejects it (`RejectOrder`, and the timer goes);
//!   the host carries the correlation on to those commands.
//! - An order paid is confirmed by its aggregate: the timer goes, and the
//!   confirmation is delivered to the `confirmations` sink.
//! - When the timer fires, `ExpireOrder` cancels an order not paid; a
//!   cancelled order that held stock gives it back (`ReleaseItem`), and so
//!   does one whose stock was bought after it was cancelled
//!   (`StockReturned`).
//!
//! Events of the item not correlated with an order (a purchase made
//! directly) call for nothing.

pub mod rules;

pub use rules::*;

eshost_reactor::export_reactor!(Checkout);

#[cfg(test)]
mod tests {
    use super::*;
    use eshost_reactor::{Action, Due, Event, react};

    fn event(aggregate: &str, id: &str, name: &str, payload: &str, correlation: &str) -> Event {
        Event {
            position: 7,
            aggregate: aggregate.into(),
            id: id.into(),
            sequence: 1,
            name: name.into(),
            payload: payload.into(),
            metadata: format!(r#"{{"correlationId":"{correlation}"}}"#),
            recorded_at_ms: 1_000,
        }
    }

    #[test]
    fn an_order_placed_buys_its_item_and_starts_the_payment_timer() {
        let placed = event(
            "Order",
            "o1",
            "OrderPlaced",
            r#"{"itemId":"s1","buyerId":"ann","quantity":2}"#,
            "c",
        );
        let actions = react::<Checkout>(&placed).unwrap();
        let [
            Action::Send(purchase),
            Action::Schedule { key, due, command },
        ] = &actions[..]
        else {
            panic!("{actions:?}");
        };
        assert_eq!(
            (
                purchase.aggregate.as_str(),
                purchase.id.as_str(),
                purchase.name.as_str()
            ),
            ("FlashSaleItem", "s1", "PurchaseItem")
        );
        assert_eq!(purchase.payload, r#"{"buyerId":"ann","quantity":2}"#);
        assert_eq!(purchase.correlation_id.as_deref(), Some("order:o1"));
        assert_eq!(
            (key.as_str(), *due),
            ("expire:o1", Due::After(PAYMENT_WINDOW_MS))
        );
        assert_eq!(
            (command.name.as_str(), command.payload.as_str()),
            ("ExpireOrder", "{}")
        );
    }

    #[test]
    fn the_item_s_answer_reserves_or_rejects_the_order_it_is_correlated_with() {
        let purchased = event(
            "FlashSaleItem",
            "s1",
            "ItemPurchased",
            r#"{"buyerId":"ann","quantity":2}"#,
            "order:o1",
        );
        let actions = react::<Checkout>(&purchased).unwrap();
        assert!(
            matches!(&actions[..], [Action::Send(c)] if c.id == "o1" && c.name == "ReserveOrder"),
            "{actions:?}"
        );
        let rejected = event(
            "FlashSaleItem",
            "s1",
            "PurchaseRejected",
            r#"{"buyerId":"ann","reason":"out_of_stock"}"#,
            "order:o1",
        );
        let actions = react::<Checkout>(&rejected).unwrap();
        assert!(
            matches!(&actions[..], [Action::Send(c), Action::Cancel(k)]
                if c.name == "RejectOrder" && c.payload == r#"{"reason":"out_of_stock"}"# && k == "expire:o1"),
            "{actions:?}"
        );
        let direct = event(
            "FlashSaleItem",
            "s1",
            "ItemPurchased",
            r#"{"buyerId":"bob","quantity":1}"#,
            "some-command",
        );
        assert_eq!(react::<Checkout>(&direct).unwrap(), vec![]);
        // A forgotten buyer's purchase reads with a tombstone for its
        // buyer, and reserves its order all the same.
        let forgotten = event(
            "FlashSaleItem",
            "s1",
            "ItemPurchased",
            r#"{"buyerId":{"$forgotten":"psn_1"},"quantity":2}"#,
            "order:o1",
        );
        let actions = react::<Checkout>(&forgotten).unwrap();
        assert!(
            matches!(&actions[..], [Action::Send(c)] if c.name == "ReserveOrder"),
            "{actions:?}"
        );
    }

    #[test]
    fn a_confirmation_is_delivered_and_a_cancellation_gives_reserved_stock_back() {
        let confirmed = event(
            "Order",
            "o1",
            "OrderConfirmed",
            r#"{"itemId":"s1","buyerId":"ann","quantity":2}"#,
            "c",
        );
        let actions = react::<Checkout>(&confirmed).unwrap();
        assert!(
            matches!(&actions[..], [Action::Cancel(k), Action::Deliver { sink, body }]
                if k == "expire:o1" && sink == "confirmations"
                    && body == r#"{"orderId":"o1","itemId":"s1","buyerId":"ann","quantity":2}"#),
            "{actions:?}"
        );
        let cancelled = |reserved: bool| {
            event(
                "Order",
                "o1",
                "OrderCancelled",
                &format!(r#"{{"itemId":"s1","buyerId":"ann","quantity":2,"reserved":{reserved}}}"#),
                "c",
            )
        };
        let actions = react::<Checkout>(&cancelled(true)).unwrap();
        assert!(
            matches!(&actions[..], [Action::Cancel(_), Action::Send(c)]
                if c.aggregate == "FlashSaleItem" && c.name == "ReleaseItem"),
            "{actions:?}"
        );
        assert_eq!(react::<Checkout>(&cancelled(false)).unwrap().len(), 1);
    }

    #[test]
    fn an_event_it_cannot_read_is_refused_with_its_name() {
        let broken = event("Order", "o1", "OrderPlaced", r#"{"itemId":"s1"}"#, "c");
        let error = react::<Checkout>(&broken).unwrap_err();
        assert!(error.contains("Order OrderPlaced #1"), "{error}");
    }
}
