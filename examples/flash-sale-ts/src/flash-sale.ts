// FlashSaleItem in TypeScript: the same rules as the Rust guest
// (guest-flash-sale), written as TypeScript event-sourcing code usually is:
// command handlers and event appliers keyed by name, with typed payloads.
//
// - CreateFlashSale { initialStock } records FlashSaleCreated, once.
// - PurchaseItem { buyerId, quantity } records ItemPurchased when the stock
//   covers it, else PurchaseRejected (out_of_stock, insufficient_stock):
//   never an oversell. A quantity below 1 or an empty buyer is an invalid
//   command; a purchase before the sale exists fails its precondition.
// - The buyer is personal data: `buyerId` is each purchase's subject, so
//   the host stores it encrypted under the buyer's own key. Once the buyer
//   is forgotten, the state lists their pseudonym in their place.

import {
  defineAggregate,
  eventsOf,
  field,
  InvalidCommand,
  PreconditionFailed,
  subject,
  subjectKey,
  type Subject,
} from "@eshost/guest";

export interface FlashSaleItem {
  id: string;
  created: boolean;
  initialStock: number;
  stock: number;
  sold: number;
  buyers: string[];
}

interface Commands {
  CreateFlashSale: { initialStock: number };
  PurchaseItem: { buyerId: string; quantity: number };
}

interface Events {
  FlashSaleCreated: { itemId: string; initialStock: number };
  ItemPurchased: { buyerId: Subject; quantity: number };
  PurchaseRejected: { buyerId: Subject; reason: "out_of_stock" | "insufficient_stock" };
}

const event = eventsOf<Events>();

export const aggregate = defineAggregate<FlashSaleItem, Commands, Events>({
  name: "FlashSaleItem",
  version: "0.1.0",

  personal: {
    ItemPurchased: { subject: "buyerId" },
    PurchaseRejected: { subject: "buyerId" },
  },

  initialState: (id) => ({ id, created: false, initialStock: 0, stock: 0, sold: 0, buyers: [] }),

  parse: {
    CreateFlashSale: (payload) => ({ initialStock: field.integer(payload, "initialStock") }),
    PurchaseItem: (payload) => ({
      buyerId: field.string(payload, "buyerId"),
      quantity: field.integer(payload, "quantity"),
    }),
  },

  commands: {
    CreateFlashSale(item, { initialStock }) {
      if (initialStock < 0) {
        throw new InvalidCommand(`initialStock must be 0 or more, got ${initialStock}`);
      }
      if (item.created) {
        throw new PreconditionFailed(`flash sale ${item.id} already exists`);
      }
      return [event("FlashSaleCreated", { itemId: item.id, initialStock })];
    },

    PurchaseItem(item, { buyerId, quantity }) {
      if (buyerId === "") {
        throw new InvalidCommand("buyerId must not be empty");
      }
      if (quantity < 1) {
        throw new InvalidCommand(`quantity must be at least 1, got ${quantity}`);
      }
      if (!item.created) {
        throw new PreconditionFailed(`flash sale ${item.id} does not exist`);
      }
      if (item.stock === 0) {
        return [event("PurchaseRejected", { buyerId: subject(buyerId), reason: "out_of_stock" })];
      }
      if (quantity > item.stock) {
        return [
          event("PurchaseRejected", { buyerId: subject(buyerId), reason: "insufficient_stock" }),
        ];
      }
      return [event("ItemPurchased", { buyerId: subject(buyerId), quantity })];
    },
  },

  events: {
    FlashSaleCreated: (item, { initialStock }) => ({
      ...item,
      created: true,
      initialStock,
      stock: initialStock,
      sold: 0,
      buyers: [],
    }),
    ItemPurchased(item, { buyerId, quantity }) {
      if (quantity > item.stock) {
        throw `ItemPurchased of ${quantity} exceeds stock ${item.stock}`;
      }
      // Kept in place: a hot item gathers many buyers, and a copy per
      // event would make hydration quadratic.
      item.buyers.push(subjectKey(buyerId));
      item.stock -= quantity;
      item.sold += quantity;
      return item;
    },
    PurchaseRejected: (item) => item,
  },
});
