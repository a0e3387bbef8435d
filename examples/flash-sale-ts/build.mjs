// Builds the TypeScript guest into a WebAssembly component:
//   node build.mjs OUT.wasm
// 1. tsc checks the types (it emits nothing);
// 2. esbuild bundles the guest and @eshost/guest into one ES module;
// 3. componentize-js makes it a component of the `aggregate-guest` world,
//    with every WASI feature disabled: eshost refuses a guest that imports
//    anything but eshost:aggregate/host.
import { execFileSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";
import { componentize } from "@bytecodealliance/componentize-js";

const here = dirname(fileURLToPath(import.meta.url));
const out = resolve(process.argv[2] ?? join(here, "../../target/modules-ts/flash-sale-ts.wasm"));
const bundle = out.replace(/\.wasm$/, "") + ".js";
mkdirSync(dirname(out), { recursive: true });

execFileSync(process.execPath, [join(here, "node_modules/typescript/bin/tsc"), "-p", here], {
  stdio: "inherit",
});
await build({
  entryPoints: [join(here, "src/flash-sale.ts")],
  bundle: true,
  format: "esm",
  platform: "neutral",
  target: "es2022",
  outfile: bundle,
  external: ["eshost:*"],
  // @eshost/guest from its TypeScript sources (its package carries them).
  conditions: ["source"],
  logLevel: "warning",
});
const { component } = await componentize({
  sourcePath: bundle,
  witPath: join(here, "../../wit/v0.3"),
  worldName: "aggregate-guest",
  disableFeatures: ["random", "stdio", "clocks", "http", "fetch-event"],
});
writeFileSync(out, component);
console.log(`${out}: ${(component.length / 1e6).toFixed(1)} MB`);
