// The one import an aggregate guest has: `eshost:aggregate/host`, which the
// host provides (componentize-js links it when the component is built).
declare module "eshost:aggregate/host@0.1.0" {
  export type Level = "trace" | "debug" | "info" | "warn" | "error";
  export function log(level: Level, message: string): void;
}
