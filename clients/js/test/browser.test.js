// Browser tests: headless Chromium (Debian's /usr/bin/chromium, or $CHROMIUM) driven by
// playwright-core, on the demo page that rocket-cli serves with --demo. Two pages chat
// through the server with broadcasts and direct messages; the server is restarted mid-session
// and both pages reconnect, re-subscribe and go on. Screenshots go to target/js-tests/.
// Run: `node --test test/browser.test.js` in clients/js (npm run test:browser).

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync, rmSync } from "node:fs";
import { join } from "node:path";

import { startServer, artifacts, config } from "./server.js";

const executablePath = process.env.CHROMIUM ?? "/usr/bin/chromium";
const screenshots = join(artifacts, "screenshots");
rmSync(screenshots, { recursive: true, force: true });
mkdirSync(screenshots, { recursive: true });

/**
 * Flags this machine's closed network and root sandbox need. Playwright adds --headless and
 * a fresh, empty --user-data-dir itself.
 */
const FLAGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

let server;
let browser;

before(async () => {
  // Missing pieces fail the run with how to install them; nothing is skipped.
  assert.ok(
    existsSync(executablePath),
    `Chromium is missing at ${executablePath}: install it with \`apt-get install -y chromium\` (or run scripts/test, which does), or set CHROMIUM to its path`,
  );
  let chromium;
  try {
    ({ chromium } = await import("playwright-core"));
  } catch {
    assert.fail("playwright-core is missing: run `npm ci` in clients/js (or run scripts/test, which does)");
  }
  server = await startServer({ demo: true });
  browser = await chromium.launch({
    executablePath,
    headless: true,
    args: FLAGS,
  });
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

/** Opens the demo page of `srv` as `name` and joins the chat. */
async function open(name, srv = server) {
  const context = await browser.newContext({ viewport: { width: 960, height: 600 } });
  const page = await context.newPage();
  const problems = [];
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("console", (m) => {
    // Refused connections are expected while the server restarts, failed ones while a page
    // is offline.
    const expected = ["ERR_CONNECTION_REFUSED", "ERR_INTERNET_DISCONNECTED"];
    if (m.type() === "error" && !expected.some((e) => m.text().includes(e))) problems.push(`console: ${m.text()}`);
  });
  page.problems = problems;
  await page.goto(`${srv.http()}/demo/?name=${encodeURIComponent(name)}`);
  await page.click("#join");
  await page.locator('#status[data-state="connected"]').waitFor();
  return page;
}

/** Waits until `page`'s log has a line of `kind` containing `text`. */
async function seen(page, kind, text) {
  await page.locator(`#log li.${kind}`, { hasText: text }).first().waitFor({ timeout: 10000 });
}

async function shot(page, name) {
  await page.screenshot({ path: join(screenshots, `${name}.png`) });
}

async function send(page, text) {
  await page.fill("#text", text);
  await page.press("#text", "Enter");
}

test("two pages chat through the demo, and both come back after a server restart", async () => {
  const alice = await open("alice");
  const bob = await open("bob");
  try {
    // Who is here: each page lists the other.
    await alice.locator('#roster li[data-name="bob"]').waitFor();
    await bob.locator('#roster li[data-name="alice"]').waitFor();

    // A broadcast reaches both pages.
    await send(alice, "hello bob");
    await seen(bob, "message", "hello bob");
    await seen(alice, "message", "hello bob");

    // A direct message reaches bob only.
    await alice.click('#roster li[data-name="bob"]');
    await send(alice, "psst, just you");
    await seen(bob, "direct", "psst, just you");
    await shot(alice, "1-alice-before-restart");
    await shot(bob, "1-bob-before-restart");

    // Restart the server: both pages see the loss, reconnect and re-subscribe.
    const tokens = await Promise.all([alice, bob].map((p) => p.textContent("#token")));
    await server.stop();
    await alice.locator('#status[data-state="reconnecting"]').waitFor();
    await bob.locator('#status[data-state="reconnecting"]').waitFor();
    await shot(alice, "2-alice-server-down");
    await server.start();
    for (const page of [alice, bob]) {
      await page.locator('#status[data-state="connected"]').waitFor({ timeout: 15000 });
      await seen(page, "system", "reconnected");
    }
    const newTokens = await Promise.all([alice, bob].map((p) => p.textContent("#token")));
    assert.notDeepEqual(newTokens, tokens, "new connections have new tokens");
    await alice.locator('#roster li[data-name="bob"]').waitFor();
    await bob.locator('#roster li[data-name="alice"]').waitFor();

    // Re-subscribed: broadcasts flow again, both ways.
    await send(bob, "back again");
    await seen(alice, "message", "back again");
    await send(alice, "welcome back");
    await seen(bob, "message", "welcome back");

    // Directs use the new tokens.
    await bob.click('#roster li[data-name="alice"]');
    await send(bob, "private after restart");
    await seen(alice, "direct", "private after restart");
    await shot(alice, "3-alice-after-restart");
    await shot(bob, "3-bob-after-restart");

    assert.deepEqual([...alice.problems, ...bob.problems], []);
  } catch (e) {
    await shot(alice, "failure-alice").catch(() => {});
    await shot(bob, "failure-bob").catch(() => {});
    e.message += `\npage problems: ${JSON.stringify([...alice.problems, ...bob.problems])}\nserver log:\n${server.log.slice(-3000)}`;
    throw e;
  }
});

test("a page that leaves disappears from the other's list", async () => {
  const carol = await open("carol");
  const dave = await open("dave");
  await carol.locator('#roster li[data-name="dave"]').waitFor();
  await dave.click("#leave");
  await carol.locator('#roster li[data-name="dave"]').waitFor({ state: "detached" });
  await seen(carol, "system", "dave left");
  await shot(carol, "4-carol-after-dave-left");
});

test("on a History hub, a page recovers what was sent while it was away", async () => {
  const base = config();
  const historyConfig = { ...base, Hubs: [{ ...base.Hubs[0], History: { Size: 100, TtlMs: 60000 } }] };
  const hist = await startServer({ demo: true, config: historyConfig });
  const erin = await open("erin", hist);
  const frank = await open("frank", hist); // a subscriber that stays, so the channel exists
  try {
    await erin.locator('#roster li[data-name="frank"]').waitFor();
    // A delivery first, so that erin's client knows an offset to recover from.
    await send(frank, "before the drop");
    await seen(erin, "message", "before the drop");
    // Erin's network goes away and her connection drops (the socket closes under the
    // client); offline, her reconnects fail until she is back, however long the
    // publishes below take...
    await erin.context().setOffline(true);
    await erin.evaluate(() => window.rocketDemo._ws.close(4000, "test: connection lost"));
    await erin.locator('#status[data-state="reconnecting"]').waitFor();
    // ...and while she is away a backend publishes five messages over the publish API.
    for (let i = 1; i <= 5; i++) {
      const response = await fetch(`${hist.http()}/api/broadcast`, {
        method: "POST",
        headers: {
          Authorization: `Basic ${Buffer.from("backend:secret").toString("base64")}`,
          "Content-Type": "application/json",
        },
        body: JSON.stringify({
          hub: "/echo",
          channel: "chat",
          event: "message",
          data: { id: "backend", name: "backend", text: `missed ${i}` },
        }),
      });
      assert.equal(response.status, 200, await response.text());
    }
    await erin.context().setOffline(false);
    await erin.locator('#status[data-state="connected"]').waitFor({ timeout: 15000 });
    // She got them through recovery, once each and in order, and no gap was reported.
    await seen(erin, "system", "recovered 5 messages sent while away");
    const texts = await erin.locator("#log li.message").allTextContents();
    const missed = texts.filter((t) => t.includes("missed "));
    assert.deepEqual(
      missed.map((t) => t.slice(t.indexOf("missed "))),
      ["missed 1", "missed 2", "missed 3", "missed 4", "missed 5"],
    );
    assert.equal(await erin.locator("#log li.system", { hasText: "may have been missed" }).count(), 0);
    await shot(erin, "5-erin-recovered");
    assert.deepEqual([...erin.problems, ...frank.problems], []);
  } catch (e) {
    await shot(erin, "failure-erin").catch(() => {});
    e.message += `\nserver log:\n${hist.log.slice(-3000)}`;
    throw e;
  } finally {
    await hist.stop();
  }
});
