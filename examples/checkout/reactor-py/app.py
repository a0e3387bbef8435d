"""The `checkout` reactor in Python: the same rules as the Rust one
(examples/checkout/reactor), and the same spec file passes against both
(examples/checkout/checkout.spec.toml).

- An order placed buys its item (correlated with the order as
  `order:{id}`) and starts the payment timer `expire:{id}`.
- The item's answer, found by that correlation, reserves or rejects the
  order; the host carries the correlation on to those commands.
- An order confirmed stops its timer and is delivered to `confirmations`.
- An order cancelled that held stock, or stock bought for an order
  already cancelled, goes back to the item (`ReleaseItem`).
"""

from dataclasses import dataclass
from typing import Optional

from eshost_guest.reactor import Actions, Event
from eshost_guest.reactor import Reactor as ReactorType

#: How long an order that sets no payment window may wait for its payment.
PAYMENT_WINDOW_MS = 15 * 60 * 1000


def correlation(order: str) -> str:
    return f"order:{order}"


def timer(order: str) -> str:
    return f"expire:{order}"


def order_of(event: Event) -> Optional[str]:
    """The order an item's event answers, from its correlation id."""
    found = event.correlation_id
    if found and found.startswith("order:"):
        return found[len("order:") :]
    return None


# What it reads, of both aggregates.


@dataclass
class OrderPlaced:
    item_id: str
    buyer_id: str
    quantity: int
    pay_within_ms: Optional[int] = None


@dataclass
class OrderConfirmed:
    item_id: str
    buyer_id: str
    quantity: int


@dataclass
class OrderCancelled:
    item_id: str
    buyer_id: str
    quantity: int
    reserved: bool


@dataclass
class StockReturned:
    item_id: str
    buyer_id: str
    quantity: int


@dataclass
class ItemPurchased:
    buyer_id: str
    quantity: int


@dataclass
class PurchaseRejected:
    buyer_id: str
    reason: str


# What it sends and delivers.


@dataclass
class PurchaseItem:
    buyer_id: str
    quantity: int


@dataclass
class ReleaseItem:
    buyer_id: str
    quantity: int


@dataclass
class RejectOrder:
    reason: str


@dataclass
class Confirmation:
    order_id: str
    item_id: str
    buyer_id: str
    quantity: int


checkout = ReactorType(
    "checkout",
    "0.1.0",
    subscriptions={
        "Order": ["OrderPlaced", "OrderConfirmed", "OrderCancelled", "StockReturned"],
        "FlashSaleItem": ["ItemPurchased", "PurchaseRejected"],
    },
    sinks=["confirmations"],
)


@checkout.on
def order_placed(event: Event, placed: OrderPlaced, actions: Actions) -> None:
    window = placed.pay_within_ms if placed.pay_within_ms is not None else PAYMENT_WINDOW_MS
    actions.correlate(correlation(event.id)).send(
        "FlashSaleItem", placed.item_id, "PurchaseItem", PurchaseItem(placed.buyer_id, placed.quantity)
    ).schedule(timer(event.id), "Order", event.id, "ExpireOrder", {}, after_ms=window)


@checkout.on
def item_purchased(event: Event, purchased: ItemPurchased, actions: Actions) -> None:
    # No `correlate`: a command sent with none carries the correlation of
    # the event it answers.
    order = order_of(event)
    if order:
        actions.send("Order", order, "ReserveOrder", {})


@checkout.on
def purchase_rejected(event: Event, rejected: PurchaseRejected, actions: Actions) -> None:
    order = order_of(event)
    if order:
        actions.send("Order", order, "RejectOrder", RejectOrder(rejected.reason)).cancel(timer(order))


@checkout.on
def order_confirmed(event: Event, confirmed: OrderConfirmed, actions: Actions) -> None:
    actions.cancel(timer(event.id)).deliver(
        "confirmations",
        Confirmation(event.id, confirmed.item_id, confirmed.buyer_id, confirmed.quantity),
    )


@checkout.on
def order_cancelled(event: Event, cancelled: OrderCancelled, actions: Actions) -> None:
    actions.cancel(timer(event.id))
    if cancelled.reserved:
        actions.correlate(correlation(event.id)).send(
            "FlashSaleItem",
            cancelled.item_id,
            "ReleaseItem",
            ReleaseItem(cancelled.buyer_id, cancelled.quantity),
        )


@checkout.on
def stock_returned(event: Event, returned: StockReturned, actions: Actions) -> None:
    actions.correlate(correlation(event.id)).send(
        "FlashSaleItem", returned.item_id, "ReleaseItem", ReleaseItem(returned.buyer_id, returned.quantity)
    )


Reactor = checkout.exports()
