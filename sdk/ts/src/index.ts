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
// `aggregate-guest` (contract 0.3.0, `wit/v0.3`) exports: `describe` and the
// `State` resource, which holds one aggregate's state inside the guest.
// Build the module with componentize-js, world `aggregate-guest`, every WASI
// feature disabled: the host refuses a guest that imports anything but
// `eshost:aggregate/host`.
//
// Personal data: an event field typed `Subject` names the person the event
// is about, a field typed `Personal<T>` holds more of their data, and the
// definition's `personal` says which fields those are. The compiler holds
// the two together: an event with a `Subject` field must be declared, and
// a declaration can name only fields of those types. Once the subject is
// forgotten, each such field reads as `Forgotten` in the appliers.

/// <reference path="./host.d.ts" preserve="true" />
/// <reference path="./globals.d.ts" preserve="true" />

import { log as hostLog, type Level } from "eshost:aggregate/host@0.3.0";

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

/**
 * What stands in a forgotten subject's fields: their pseudonym, the same in
 * each of their fields and events. It tells forgotten subjects apart and
 * says nothing of who they were.
 */
export interface Forgotten {
  readonly $forgotten: string;
}

declare const subjectBrand: unique symbol;
declare const personalBrand: unique symbol;

/** A data subject's id as an event holds it: made with `subject(id)`. */
export type SubjectId = string & { readonly [subjectBrand]: true };

/** The field that names the data subject: their id, or once forgotten, `Forgotten`. */
export type Subject = SubjectId | Forgotten;

/** Another field of the subject's personal data: made with `personal(value)`. */
export type Personal<T> = (T & { readonly [personalBrand]: true }) | Forgotten;

/** `id` as the subject of an event. */
export function subject(id: string): SubjectId {
  return id as SubjectId;
}

/** `value` as personal data of the event's subject. */
export function personal<T>(value: T): Personal<T> {
  return value as Personal<T>;
}

/** True if a subject's field was forgotten. */
export function isForgotten(value: unknown): value is Forgotten {
  return typeof value === "object" && value !== null && typeof (value as Forgotten).$forgotten === "string";
}

/**
 * What tells a subject apart from others: their id, or once they are
 * forgotten, their pseudonym.
 */
export function subjectKey(value: Subject): string {
  return isForgotten(value) ? value.$forgotten : value;
}

/** The keys of `P` whose values are `V` (a `never` value is none's). */
type KeysOf<P, V> = {
  [K in keyof P]-?: [NonNullable<P[K]>] extends [never] ? never : NonNullable<P[K]> extends V ? K : never;
}[keyof P] &
  string;

/** One event's personal data: its `Subject` field and its `Personal` fields. */
export interface PersonalEventOf<Payload> {
  subject: KeysOf<Payload, Subject>;
  fields?: KeysOf<Payload, Personal<unknown>>[];
}

/** The declaration every event with a `Subject` field must have. */
export type PersonalOf<Events> = {
  [Name in keyof Events & string as [KeysOf<Events[Name], Subject>] extends [never]
    ? never
    : Name]: PersonalEventOf<Events[Name]>;
};

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

export type AggregateDefinition<State, Commands, Events> = Definition<State, Commands, Events> &
  // Required as soon as one event has a `Subject` field.
  ({} extends PersonalOf<Events> ? { personal?: PersonalOf<Events> } : { personal: PersonalOf<Events> });

interface Definition<State, Commands, Events> {
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
interface WitRecordedEvent {
  name: string;
  payload: string;
  sequence: bigint;
  version: string;
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
  const declared = (definition.personal ?? {}) as Record<string, PersonalEventOf<unknown>>;
  const personalEvents = Object.entries(declared).map(([event, { subject, fields }]) => ({
    event,
    subject: subject as string,
    fields: (fields ?? []) as string[],
  }));

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

    apply(recorded: WitRecordedEvent[]): void {
      for (const { name: eventName, payload, sequence } of recorded) {
        // An `apply-error` names the event refused, by its sequence; the
        // host names it beside the reason.
        const refuse = (reason: string) => {
          throw { sequence, reason };
        };
        if (!has(events, eventName)) {
          refuse(`${name} has no event ${JSON.stringify(eventName)}`);
        }
        let parsed: unknown;
        try {
          parsed = JSON.parse(payload);
        } catch (e) {
          refuse(`the payload is not JSON: ${e}`);
        }
        const applier = (events as Record<string, EventApplier<S, unknown>>)[eventName];
        try {
          this.#state = applier(this.#state, parsed);
        } catch (e) {
          refuse(e instanceof Error ? e.message : String(e));
        }
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
    describe: () => ({
      name,
      version,
      commands: commandNames,
      events: eventNames,
      oldEvents: [],
      personal: personalEvents,
    }),
    State,
  };
}
