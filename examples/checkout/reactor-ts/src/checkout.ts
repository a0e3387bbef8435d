// The `checkout` reactor in TypeScript: the same rules as the Rust one
// (examples/checkout/reactor), and the same spec file passes against both
// (examples/checkout/checkout.spec.toml).
//
// - An order placed buys its item (correlated with the order as
//   `order:{id}`) and starts the payment timer `expire:{id}`.
// - The item's answer, found by that correlation, reserves or rejects the
//   order; the host carries the correlation on to those commands.
// - An order confirmed stops its timer and is delivered to `confirmations`.
// - An order cancelled that held stock, or stock bought for an order
//   already cancelled, goes back to the item (`ReleaseItem`).

import { defineReactor, read, type Event } from "@eshost/guest/reactor";

/** How long an order that sets no payment window may wait for its payment. */
const PAYMENT_WINDOW_MS = 15 * 60 * 1000;

const correlation = (order: string) => `order:${order}`;
const timer = (order: string) => `expire:${order}`;

/** The order an item's event answers, from its correlation id. */
function orderOf(event: Event): string | undefined {
  const id = event.correlationId;
  return id && id.startsWith("order:") ? id.slice("order:".length) : undefined;
}

/** An order's item, buyer and quantity, read from its event. */
function line(payload: unknown) {
  return {
    itemId: read.string(payload, "itemId"),
    buyerId: read.string(payload, "buyerId"),
    quantity: read.integer(payload, "quantity"),
  };
}

export const reactor = defineReactor({
  name: "checkout",
  version: "0.1.0",
  subscriptions: {
    Order: ["OrderPlaced", "OrderConfirmed", "OrderCancelled", "StockReturned"],
    FlashSaleItem: ["ItemPurchased", "PurchaseRejected"],
  },
  sinks: ["confirmations"],
  react: {
    OrderPlaced(event, payload, actions) {
      const { itemId, buyerId, quantity } = line(payload);
      const window = (payload as { payWithinMs?: unknown }).payWithinMs;
      actions
        .correlate(correlation(event.id))
        .send("FlashSaleItem", itemId, "PurchaseItem", { buyerId, quantity })
        .schedule(timer(event.id), { afterMs: typeof window === "number" ? window : PAYMENT_WINDOW_MS },
          "Order", event.id, "ExpireOrder", {});
    },
    ItemPurchased(event, payload, actions) {
      read.string(payload, "buyerId");
      const order = orderOf(event);
      if (order) actions.send("Order", order, "ReserveOrder", {});
    },
    PurchaseRejected(event, payload, actions) {
      const reason = read.string(payload, "reason");
      const order = orderOf(event);
      if (order) actions.send("Order", order, "RejectOrder", { reason }).cancel(timer(order));
    },
    OrderConfirmed(event, payload, actions) {
      const { itemId, buyerId, quantity } = line(payload);
      actions.cancel(timer(event.id))
        .deliver("confirmations", { orderId: event.id, itemId, buyerId, quantity });
    },
    OrderCancelled(event, payload, actions) {
      const { itemId, buyerId, quantity } = line(payload);
      const reserved = read.boolean(payload, "reserved");
      actions.cancel(timer(event.id));
      if (reserved) {
        actions.correlate(correlation(event.id))
          .send("FlashSaleItem", itemId, "ReleaseItem", { buyerId, quantity });
      }
    },
    StockReturned(event, payload, actions) {
      const { itemId, buyerId, quantity } = line(payload);
      actions.correlate(correlation(event.id))
        .send("FlashSaleItem", itemId, "ReleaseItem", { buyerId, quantity });
    },
  },
});
