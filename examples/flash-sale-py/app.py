"""FlashSaleItem in Python: the same rules as the Rust guest
(guest-flash-sale), written with dataclasses for the commands and events
and a function for each.

- CreateFlashSale(initialStock) records FlashSaleCreated, once.
- PurchaseItem(buyerId, quantity) records ItemPurchased when the stock
  covers it, else PurchaseRejected (out_of_stock, insufficient_stock):
  never an oversell. A quantity below 1 or an empty buyer is an invalid
  command; a purchase before the sale exists fails its precondition.
- The buyer is personal data: `buyerId` is each purchase's subject, so the
  host stores it encrypted under the buyer's own key. Once the buyer is
  forgotten, the state lists their pseudonym in their place.
"""

from dataclasses import dataclass, field

from eshost_guest import Aggregate as AggregateType
from eshost_guest import InvalidCommand, PreconditionFailed, Subject, subject_key


@dataclass
class FlashSaleItem:
    id: str
    created: bool = False
    initial_stock: int = 0
    stock: int = 0
    sold: int = 0
    buyers: list[str] = field(default_factory=list)


@dataclass
class CreateFlashSale:
    initial_stock: int


@dataclass
class PurchaseItem:
    buyer_id: str
    quantity: int


@dataclass
class FlashSaleCreated:
    item_id: str
    initial_stock: int


@dataclass
class ItemPurchased:
    buyer_id: Subject
    quantity: int


@dataclass
class PurchaseRejected:
    buyer_id: Subject
    reason: str


sale = AggregateType("FlashSaleItem", "0.1.0", FlashSaleItem)


@sale.command
def create_flash_sale(item: FlashSaleItem, command: CreateFlashSale) -> list:
    if command.initial_stock < 0:
        raise InvalidCommand(f"initialStock must be 0 or more, got {command.initial_stock}")
    if item.created:
        raise PreconditionFailed(f"flash sale {item.id} already exists")
    return [FlashSaleCreated(item_id=item.id, initial_stock=command.initial_stock)]


@sale.command
def purchase_item(item: FlashSaleItem, command: PurchaseItem) -> list:
    if command.buyer_id == "":
        raise InvalidCommand("buyerId must not be empty")
    if command.quantity < 1:
        raise InvalidCommand(f"quantity must be at least 1, got {command.quantity}")
    if not item.created:
        raise PreconditionFailed(f"flash sale {item.id} does not exist")
    if item.stock == 0:
        return [PurchaseRejected(buyer_id=command.buyer_id, reason="out_of_stock")]
    if command.quantity > item.stock:
        return [PurchaseRejected(buyer_id=command.buyer_id, reason="insufficient_stock")]
    return [ItemPurchased(buyer_id=command.buyer_id, quantity=command.quantity)]


@sale.event
def flash_sale_created(item: FlashSaleItem, event: FlashSaleCreated) -> None:
    item.created = True
    item.initial_stock = item.stock = event.initial_stock
    item.sold = 0
    item.buyers.clear()


@sale.event
def item_purchased(item: FlashSaleItem, event: ItemPurchased) -> None:
    if event.quantity > item.stock:
        raise ValueError(f"ItemPurchased of {event.quantity} exceeds stock {item.stock}")
    item.stock -= event.quantity
    item.sold += event.quantity
    item.buyers.append(subject_key(event.buyer_id))


@sale.event
def purchase_rejected(item: FlashSaleItem, event: PurchaseRejected) -> None:
    pass


# What the aggregate-guest world exports: the interface's class here, its
# State resource in aggregate.py.
Aggregate, State = sale.exports()
