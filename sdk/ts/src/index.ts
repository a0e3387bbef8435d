// @eshost/guest: writing an eshost aggregate in TypeScript.
//
// An aggregate is an object of command handlers and an object of event
// appliers, keyed by name, with typed payloads:
//
//   export const aggregate = defineAggregate<State, Commands, Events>({
//     name: "FlashSaleItem", version: "0.1.0",
//     initialState: (id) => ({ ... }),
//     commands: { CreateFlashSale: (state, payload) => [event("FlashSaleCreated", {...})] },
//     // where `const event = eventsOf<Events>();`
//     events: { FlashSaleCreated: (state, payload) => ({ ...state, ... }) },
//   });
//
// `defineAggregate` returns what the `aggregate` interface of the WIT world
// `aggregate-guest` exports: `describe` and the `State` resource, which
// holds one aggregate's state inside the guest. Build the module with
// componentize-js, world `aggregate-guest`, every WASI feature disabled:
// the host refuses a guest that imports anything but `eshost:aggregate/host`.

/// <reference path="./host.d.ts" preserve="true" />
/// <reference path="./globals.d.ts" preserve="true" />

import { log as hostLog, type Level } from "eshost:aggregate/host@0.1.0";

export type { Level };

/** A JSON value: what payloads and state are made of. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** An event as a handler returns it: a name and its payload. */
export interface NewEvent<Name extends string = string, Payload = unknown> {
  name: Name;
  payload: Payload;
}

/** The events a handler may return: one case per event name. */
export type EventOf<Events> = {
  [Name in keyof Events & string]: NewEvent<Name, Events[Name]>;
}[keyof Events & string];

/**
 * A maker of the aggregate's events, typed by its `Events` (event name to
 * payload type): `const event = eventsOf<Events>();` then
 * `event("ItemPurchased", { buyerId, quantity })`.
 */
export function eventsOf<Events>() {
  return <Name extends keyof Events & string>(
    name: Name,
    payload: Events[Name],
  ): NewEvent<Name, Events[Name]> => ({ name, payload });
}

/** The payload is not what the command needs (a field missing or mistyped). */
export class InvalidPayload extends Error {}
/** The command is well formed but makes no sense (a quantity below 1). */
export class InvalidCommand extends Error {}
/** The command cannot apply to this state (the sale does not exist). */
export class PreconditionFailed extends Error {}

/** Handles one command against the current state; never changes it. */
export type CommandHandler<State, Payload, Events> = (
  state: Readonly<State>,
  payload: Payload,
) => EventOf<Events>[];

/** Applies one recorded event: returns the state after it. */
export type EventApplier<State, Payload> = (state: State, payload: Payload) => State;

export interface AggregateDefinition<State, Commands, Events> {
  name: string;
  version: string;
  initialState: (id: string) => State;
  commands: { [Name in keyof Commands]: CommandHandler<State, Commands[Name], Events> };
  events: { [Name in keyof Events]: EventApplier<State, Events[Name]> };
  /**
   * Checks a command's parsed payload before its handler sees it; throw
   * `InvalidPayload` to refuse it. Without one, any JSON object passes.
   */
  parse?: { [Name in keyof Commands]?: (payload: unknown) => Commands[Name] };
}

/** Writes a line to the host's log. */
export function log(level: Level, message: string): void {
  hostLog(level, message);
}

/** Payload fields, checked: each throws `InvalidPayload` naming the field. */
export const field = {
  object(payload: unknown): Record<string, unknown> {
    if (typeof payload !== "object" || payload === null || Array.isArray(payload)) {
      throw new InvalidPayload("the payload must be a JSON object");
    }
    return payload as Record<string, unknown>;
  },
  string(payload: unknown, name: string): string {
    const value = field.object(payload)[name];
    if (typeof value !== "string") {
      throw new InvalidPayload(`${name} must be a string`);
    }
    return value;
  },
  integer(payload: unknown, name: string): number {
    const value = field.object(payload)[name];
    if (typeof value !== "number" || !Number.isSafeInteger(value)) {
      throw new InvalidPayload(`${name} must be an integer`);
    }
    return value;
  },
};

// What the WIT interface carries (`eshost:aggregate/aggregate`).
interface WitEvent {
  name: string;
  payload: string;
}
interface WitCommand {
  name: string;
  payload: string;
}

/** A `command-error` case, as componentize-js reads a thrown variant. */
type CommandError =
  | { tag: "unknown-command"; val: string }
  | { tag: "invalid-payload"; val: string }
  | { tag: "invalid-command"; val: string }
  | { tag: "precondition-failed"; val: string };

function refusal(error: unknown): CommandError {
  const message = error instanceof Error ? error.message : String(error);
  if (error instanceof InvalidPayload) return { tag: "invalid-payload", val: message };
  if (error instanceof InvalidCommand) return { tag: "invalid-command", val: message };
  if (error instanceof PreconditionFailed) return { tag: "precondition-failed", val: message };
  // Anything else is a bug in the handler: it traps, and the host says so.
  throw error;
}

const has = (object: object, key: string) => Object.prototype.hasOwnProperty.call(object, key);

/**
 * The `aggregate` export of the `aggregate-guest` world for `definition`:
 * `export const aggregate = defineAggregate(...)` in the module that
 * componentize-js builds.
 */
export function defineAggregate<S, C, E>(definition: AggregateDefinition<S, C, E>) {
  const { name, version, initialState, commands, events, parse } = definition;
  const commandNames = Object.keys(commands);
  const eventNames = Object.keys(events);

  class State {
    #state: S;

    constructor(id: string) {
      this.#state = initialState(id);
    }

    static restore(id: string, snapshot: Uint8Array): State {
      const restored = new State(id);
      try {
        restored.#state = JSON.parse(new TextDecoder().decode(snapshot));
      } catch (e) {
        throw `snapshot is not this aggregate's state: ${e}`;
      }
      return restored;
    }

    apply(recorded: WitEvent[]): void {
      for (const { name: eventName, payload } of recorded) {
        if (!has(events, eventName)) {
          throw `${name} has no event ${JSON.stringify(eventName)}`;
        }
        let parsed: unknown;
        try {
          parsed = JSON.parse(payload);
        } catch (e) {
          throw `${eventName}: the payload is not JSON: ${e}`;
        }
        const applier = (events as Record<string, EventApplier<S, unknown>>)[eventName];
        this.#state = applier(this.#state, parsed);
      }
    }

    handle(command: WitCommand): WitEvent[] {
      if (!has(commands, command.name)) {
        throw { tag: "unknown-command", val: `${name} has no command ${JSON.stringify(command.name)}` };
      }
      try {
        let payload: unknown = JSON.parse(command.payload);
        const check = parse && (parse as Record<string, ((p: unknown) => unknown) | undefined>)[command.name];
        payload = check ? check(payload) : field.object(payload);
        const handler = (commands as Record<string, CommandHandler<S, unknown, E>>)[command.name];
        return handler(this.#state, payload).map((e) => ({
          name: e.name,
          payload: JSON.stringify(e.payload),
        }));
      } catch (e) {
        if (e instanceof SyntaxError) {
          throw { tag: "invalid-payload", val: `the payload is not JSON: ${e.message}` };
        }
        throw refusal(e);
      }
    }

    toJson(): string {
      return JSON.stringify(this.#state);
    }

    snapshot(): Uint8Array {
      return new TextEncoder().encode(JSON.stringify(this.#state));
    }
  }

  return {
    describe: () => ({ name, version, commands: commandNames, events: eventNames }),
    State,
  };
}
