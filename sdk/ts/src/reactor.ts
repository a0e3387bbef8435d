// @eshost/guest/reactor: writing an eshost reactor in TypeScript.
//
// A reactor receives the recorded events it subscribes to and answers each
// with actions for the host to perform, built with an `Actions` list:
//
//   export const reactor = defineReactor<Seen>({
//     name: "checkout", version: "0.1.0",
//     subscriptions: { Order: ["OrderPlaced"], FlashSaleItem: ["ItemPurchased"] },
//     sinks: ["confirmations"],
//     react: {
//       OrderPlaced: (event, payload, actions) => {
//         actions.correlate(`order:${event.id}`)
//           .send("FlashSaleItem", payload.itemId, "PurchaseItem", { buyerId: payload.buyerId, quantity: 1 })
//           .schedule(`expire:${event.id}`, { afterMs: 900_000 }, "Order", event.id, "ExpireOrder", {});
//       },
//     },
//   });
//
// `Seen` maps each event name it reads to its payload type. A handler that
// throws refuses the event: the host parks it with the message, and
// performs nothing of it. `defineReactor` returns what the `reactor`
// interface of the WIT world `reactor-guest` exports; build the module
// with componentize-js, world `reactor-guest`, every WASI feature
// disabled. The guest computes; the host acts, each action once.

/// <reference path="./host.d.ts" preserve="true" />
/// <reference path="./globals.d.ts" preserve="true" />

import { log as hostLog, type Level } from "eshost:aggregate/host@0.1.0";

export type { Level };

/** One recorded event, as the reactor receives it. */
export interface Event {
  /** Its position in the global log. */
  position: number;
  aggregate: string;
  id: string;
  /** 1-based within its stream. */
  sequence: number;
  name: string;
  /** The metadata: `commandId`, `correlationId`, `causationId`, ... */
  metadata: Record<string, unknown>;
  /** When it was recorded, in milliseconds since the Unix epoch. */
  recordedAt: number;
  /** The correlation id of the command that recorded it, if any. */
  correlationId: string | undefined;
}

/** When a scheduled command is due: at a time, or after the event. */
export type Due = { atMs: number } | { afterMs: number };

// What the WIT interface carries (`eshost:aggregate/reactor`). Its 64-bit
// integers are BigInts in JavaScript.
interface WitEvent {
  position: bigint;
  aggregate: string;
  id: string;
  sequence: bigint;
  name: string;
  payload: string;
  metadata: string;
  recordedAt: bigint;
}
interface WitCommand {
  aggregate: string;
  id: string;
  name: string;
  payload: string;
  correlationId: string | undefined;
}
type WitDue = { tag: "at"; val: bigint } | { tag: "after"; val: bigint };
type WitAction =
  | { tag: "send"; val: WitCommand }
  | { tag: "schedule"; val: { key: string; due: WitDue; command: WitCommand } }
  | { tag: "cancel"; val: string }
  | { tag: "deliver"; val: { sink: string; body: string } };

/** The actions one event calls for, in order. */
export class Actions {
  readonly list: WitAction[] = [];
  #correlation: string | undefined;

  /**
   * The correlation id of the commands added after this: the events they
   * record carry it. Without one, a command carries the event's own.
   */
  correlate(correlationId: string): this {
    this.#correlation = correlationId;
    return this;
  }

  /** Send a command now. */
  send(aggregate: string, id: string, command: string, payload: unknown): this {
    this.list.push({ tag: "send", val: this.#command(aggregate, id, command, payload) });
    return this;
  }

  /** Send a command when it is due, under `key` (scheduling a key again replaces its timer). */
  schedule(key: string, due: Due, aggregate: string, id: string, command: string, payload: unknown): this {
    const when: WitDue = "atMs" in due
      ? { tag: "at", val: BigInt(due.atMs) }
      : { tag: "after", val: BigInt(due.afterMs) };
    this.list.push({ tag: "schedule", val: { key, due: when, command: this.#command(aggregate, id, command, payload) } });
    return this;
  }

  /** Cancel the timer under `key`, if there is one. */
  cancel(key: string): this {
    this.list.push({ tag: "cancel", val: key });
    return this;
  }

  /** Deliver `body` (JSON) to the sink the operator configured under `sink`. */
  deliver(sink: string, body: unknown): this {
    this.list.push({ tag: "deliver", val: { sink, body: JSON.stringify(body) } });
    return this;
  }

  #command(aggregate: string, id: string, name: string, payload: unknown): WitCommand {
    return { aggregate, id, name, payload: JSON.stringify(payload), correlationId: this.#correlation };
  }
}

/** Reacts to one event of a name, its payload typed. */
export type Handler<Payload> = (event: Event, payload: Payload, actions: Actions) => void;

export interface ReactorDefinition<Seen> {
  name: string;
  version: string;
  /** Aggregate type to the event names it receives (empty: all of them). */
  subscriptions: Record<string, string[]>;
  /** The sinks it delivers to, by name. */
  sinks?: string[];
  /** A handler per event name it reads; an event with none calls for nothing. */
  react: { [Name in keyof Seen]?: Handler<Seen[Name]> };
}

/** Writes a line to the host's log. */
export function log(level: Level, message: string): void {
  hostLog(level, message);
}

const has = (object: object, key: string) => Object.prototype.hasOwnProperty.call(object, key);

/**
 * The `reactor` export of the `reactor-guest` world for `definition`:
 * `export const reactor = defineReactor(...)` in the module that
 * componentize-js builds.
 */
export function defineReactor<Seen>(definition: ReactorDefinition<Seen>) {
  const { name, version, subscriptions, sinks = [], react } = definition;
  return {
    describe: () => ({
      name,
      version,
      subscriptions: Object.entries(subscriptions).map(([aggregate, events]) => ({ aggregate, events })),
      sinks,
    }),
    react(recorded: WitEvent): WitAction[] {
      const label = `${recorded.aggregate} ${recorded.name} #${recorded.sequence}`;
      if (!has(react, recorded.name)) return [];
      let payload: unknown;
      let metadata: Record<string, unknown>;
      try {
        payload = JSON.parse(recorded.payload);
        metadata = JSON.parse(recorded.metadata);
      } catch (e) {
        throw `${label}: not JSON: ${e}`;
      }
      const correlation = metadata.correlationId;
      const event: Event = {
        position: Number(recorded.position),
        aggregate: recorded.aggregate,
        id: recorded.id,
        sequence: Number(recorded.sequence),
        name: recorded.name,
        metadata,
        recordedAt: Number(recorded.recordedAt),
        correlationId: typeof correlation === "string" ? correlation : undefined,
      };
      const actions = new Actions();
      const handler = (react as Record<string, Handler<unknown>>)[recorded.name];
      try {
        handler(event, payload, actions);
      } catch (e) {
        // A refusal of the event: the host parks it with this reason.
        throw `${label}: ${e instanceof Error ? e.message : String(e)}`;
      }
      return actions.list;
    },
  };
}

/** Payload fields, checked: each throws naming the field. */
export const read = {
  string(payload: unknown, field: string): string {
    const value = (payload as Record<string, unknown> | null)?.[field];
    if (typeof value !== "string") throw new Error(`missing field \`${field}\``);
    return value;
  },
  integer(payload: unknown, field: string): number {
    const value = (payload as Record<string, unknown> | null)?.[field];
    if (typeof value !== "number" || !Number.isSafeInteger(value)) throw new Error(`missing field \`${field}\``);
    return value;
  },
  boolean(payload: unknown, field: string): boolean {
    const value = (payload as Record<string, unknown> | null)?.[field];
    if (typeof value !== "boolean") throw new Error(`missing field \`${field}\``);
    return value;
  },
};
