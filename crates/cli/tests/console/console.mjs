// The operator console in a real browser: Debian's Chromium, driven by
// playwright-core. crates/cli/tests/it/console.rs starts `eshost serve` and
// runs this script with what it needs in the environment; each step prints
// one line, and the first failure ends the run with a non-zero exit.
//
// ESHOST_URL            the server
// ESHOST_TOKENS         JSON: {"read": ..., "write": ..., "admin": ...}
// ESHOST_CHROMIUM       the browser's executable
// ESHOST_INCOMPATIBLE   a component the upgrade check refuses
// ESHOST_COMPATIBLE     a component it lets through
// ESHOST_LONG_STREAM    the id of a FlashSaleItem stream of 10,000 events
// ESHOST_SCREENSHOTS    where each page's screenshot is written

import { chromium } from "playwright-core";
import assert from "node:assert/strict";
import path from "node:path";

const url = process.env.ESHOST_URL;
const tokens = JSON.parse(process.env.ESHOST_TOKENS);
const shots = process.env.ESHOST_SCREENSHOTS;
const AGGREGATE = "FlashSaleItem";

const browser = await chromium.launch({
  executablePath: process.env.ESHOST_CHROMIUM,
  args: ["--no-sandbox", "--disable-gpu"],
});
const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });

/// A console page on `hash`, with `token` given as an operator would.
async function open(token, hash = "#/overview") {
  const page = await context.newPage();
  page.on("pageerror", (error) => { throw new Error(`the page threw: ${error.message}`); });
  await page.goto(`${url}/console${hash}`);
  await page.fill("#token", token);
  await page.click("#token-form button");
  return page;
}

async function shot(page, name) {
  await page.screenshot({ path: path.join(shots, `console-${name}.png`) });
}

function step(text) {
  console.log(`ok - ${text}`);
}

try {
  // A read token sees the flash-sale component on the overview.
  const overview = await open(tokens.read);
  const row = overview.locator(`tr[data-aggregate="${AGGREGATE}"]`);
  await row.waitFor({ timeout: 10_000 });
  assert.match(await row.innerText(), /PurchaseItem/);
  assert.match(await overview.locator("#readiness").innerText(), /ready/);
  await overview.locator(".chart").first().waitFor();
  step("a read token sees the flash-sale component, readiness and the charts");

  // A read token cannot deploy: the page shows the refusal, and the API says 403.
  const refusedPage = await open(tokens.read, `#/deploy?aggregate=${AGGREGATE}`);
  await refusedPage.setInputFiles("#upload input[type=file]", process.env.ESHOST_COMPATIBLE);
  await refusedPage.click("#upload button[type=submit]");
  const forbidden = refusedPage.locator("#deploy-result .result.bad");
  await forbidden.waitFor();
  assert.equal(await forbidden.getAttribute("data-kind"), "forbidden");
  const direct = await fetch(`${url}/v1/modules/${AGGREGATE}`, {
    method: "PUT",
    headers: { Authorization: `Bearer ${tokens.read}` },
    body: new Uint8Array([0, 97, 115, 109]),
  });
  assert.equal(direct.status, 403);
  step("a read token cannot deploy, in the page (forbidden) or the API (403)");
  await refusedPage.close();

  // A purchase sent from the form shows in the live log within 2 s.
  const log = await open(tokens.write, `#/log?aggregate=${AGGREGATE}`);
  await log.locator("#log-status", { hasText: "following" }).waitFor({ timeout: 10_000 });
  const streams = await open(tokens.write, `#/streams?aggregate=${AGGREGATE}&id=console-1`);
  await streams.locator("#command").waitFor();
  await streams.selectOption("#command select", "CreateFlashSale");
  await streams.fill("#command textarea", '{"initialStock":5}');
  await streams.click("#command button");
  await streams.locator("#command-result .result.ok").waitFor();
  await streams.selectOption("#command select", "PurchaseItem");
  await streams.fill("#command textarea", '{"buyerId":"ann","quantity":2}');
  const sent = Date.now();
  await streams.click("#command button");
  await streams.locator("#command-result .result.ok", { hasText: "ItemPurchased" }).waitFor();
  await log.locator("#log-rows tr", { hasText: "ItemPurchased" }).first().waitFor({ timeout: 2_000 });
  step(`a purchase from the form is in the live log ${Date.now() - sent} ms after it was sent`);
  await streams.locator('#stream tr[data-sequence="2"]').waitFor();
  await shot(streams, "streams");
  await shot(log, "live-log");
  await log.close();

  // As admin: an incompatible version is refused, naming the event; a
  // compatible one goes live; a rollback brings the old one back.
  const deploy = await open(tokens.admin, `#/deploy?aggregate=${AGGREGATE}`);
  await deploy.locator("#live").waitFor();
  const before = await deploy.locator("#live").innerText();
  await deploy.setInputFiles("#upload input[type=file]", process.env.ESHOST_INCOMPATIBLE);
  await deploy.click("#upload button[type=submit]");
  const refusal = deploy.locator("#deploy-result .result.bad");
  await refusal.waitFor({ timeout: 60_000 });
  assert.equal(await refusal.getAttribute("data-kind"), "upgrade_refused");
  assert.match(await refusal.innerText(), /ItemPurchased/);
  await shot(deploy, "deploy-refused");
  step("an incompatible version is refused, naming the event it cannot read");

  await deploy.setInputFiles("#upload input[type=file]", process.env.ESHOST_COMPATIBLE);
  await deploy.click("#upload button[type=submit]");
  const live = deploy.locator("#deploy-result .result.ok");
  await live.waitFor({ timeout: 60_000 });
  assert.match(await live.innerText(), /deployed: FlashSaleItem 0\.2\.0 is live/);
  await deploy.reload();
  await deploy.locator("#live", { hasText: "0.2.0" }).waitFor();
  step("a compatible version is live");

  await deploy.click("#rollback");
  await deploy.locator("#deploy-result .result.ok", { hasText: "rolled_back" }).waitFor({ timeout: 60_000 });
  await deploy.reload();
  await deploy.locator("#live").waitFor();
  assert.equal(await deploy.locator("#live").innerText(), before);
  await deploy.locator('tr[data-action="rolled_back"]').waitFor();
  await shot(deploy, "deploy");
  step("a rollback brings the earlier version back, and the history shows each step");

  // As admin: a projection rebuilt, its lag back to 0 on the new generation.
  const projections = await open(tokens.admin, "#/projections");
  const summary = projections.locator('tr[data-projection="sales-summary"]');
  await summary.waitFor({ timeout: 10_000 });
  const generation = Number(await summary.getAttribute("data-generation"));
  await projections.click('button[data-rebuild="sales-summary"]');
  await projections.locator("#rebuild-result .result.ok", { hasText: "rebuilding" }).waitFor();
  await projections
    .locator(`tr[data-projection="sales-summary"][data-generation="${generation + 1}"][data-lag="0"]`)
    .waitFor({ timeout: 60_000 });
  await shot(projections, "projections");
  step(`a projection rebuilt as generation ${generation + 1}, its lag back to 0`);

  // As admin: a projection's new version deployed from the page runs.
  const projectionDeploy = await open(tokens.admin, "#/deploy?projection=sales-summary");
  await projectionDeploy.locator("#live").waitFor();
  await projectionDeploy.setInputFiles("#upload input[type=file]", process.env.ESHOST_PROJECTION);
  await projectionDeploy.click("#upload button[type=submit]");
  await projectionDeploy.locator("#deploy-result .result.ok", { hasText: "deployed: sales-summary" }).waitFor();
  const switched = await open(tokens.read, "#/projections");
  await switched
    .locator(`tr[data-projection="sales-summary"][data-digest="${process.env.ESHOST_PROJECTION_DIGEST}"]`)
    .waitFor({ timeout: 30_000 });
  step("a projection's new version deployed from the page runs on the server");

  // As admin: a reactor's parked event, a retry asked for, its policy set.
  const reactors = await open(tokens.admin, "#/reactors");
  await reactors.locator('tr[data-reactor="checkout"][data-parked="1"]').waitFor({ timeout: 10_000 });
  await reactors.locator("#parked-rows tr", { hasText: "missing field `buyerId`" }).waitFor();
  await reactors.click('button[data-retry="checkout"]');
  await reactors.locator("#reactor-result .result.ok", { hasText: "1 parked event(s) of checkout to retry" }).waitFor();
  await reactors.locator('#parked-rows tr[data-retry-waiting="true"]').waitFor({ timeout: 10_000 });
  await reactors.selectOption('select[data-policy="checkout"]', "stop");
  await reactors.locator("#reactor-result .result.ok", { hasText: "it stops there" }).waitFor();
  await reactors.locator('tr[data-reactor="checkout"][data-on-failure="stop"]').waitFor({ timeout: 10_000 });
  await shot(reactors, "reactors");
  step("a reactor's parked event is listed with its reason, retried, and its policy set to stop");

  // A stream of 10,000 events: its first page, timed in the page.
  const long = await open(tokens.read, `#/streams?aggregate=${AGGREGATE}&id=${process.env.ESHOST_LONG_STREAM}`);
  const loaded = long.locator("#stream[data-load-ms]");
  await loaded.waitFor({ timeout: 30_000 });
  const first = Number(await loaded.getAttribute("data-load-ms"));
  assert.equal(await long.locator("#stream tbody tr").count(), 100);
  assert.match(await long.locator("#snapshot").innerText(), /version 10000 · (snapshot at version \d+|no snapshot)/);
  await long.reload();
  await long.locator("#stream[data-load-ms]").waitFor({ timeout: 30_000 });
  const again = Number(await long.locator("#stream").getAttribute("data-load-ms"));
  step(`a stream of 10,000 events: first page (state and 100 events) in ${first} ms on first open, ${again} ms on the next`);

  await overview.reload();
  await overview.locator(`tr[data-aggregate="${AGGREGATE}"]`).waitFor();
  await shot(overview, "overview");
  step("screenshots written");
} finally {
  await browser.close();
}
