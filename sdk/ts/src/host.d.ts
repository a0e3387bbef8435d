// The host's one offer to a guest: `eshost:aggregate/host`, a log. An
// aggregate (contract 0.3.0) imports its 0.3.0; a reactor's world imports
// the 0.1.0 it was written against. The host provides both, and
// componentize-js links the one the component imports when it is built.
declare module "eshost:aggregate/host@0.3.0" {
  export type Level = "trace" | "debug" | "info" | "warn" | "error";
  export function log(level: Level, message: string): void;
}
declare module "eshost:aggregate/host@0.1.0" {
  export type Level = "trace" | "debug" | "info" | "warn" | "error";
  export function log(level: Level, message: string): void;
}
