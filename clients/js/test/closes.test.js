// Which closes the client comes back from, checked against a scripted stand-in server (see
// fake-server.js): rocket-cli closes with 1000 only after {"disconnect":true}, which the
// client never sends, and with 1008 "slow consumer" only under load.
// Run: `node --test test/closes.test.js` in clients/js.

import { test } from "node:test";
import assert from "node:assert/strict";

import { Rocket } from "../rocket.js";
import { next, sleep } from "./server.js";
import { FakeServer } from "./fake-server.js";

async function connected() {
  const server = new FakeServer((request) => (request.subscribe ? { subscribed: request.subscribe.channel } : { err: "INVALID_PAYLOAD" }));
  const rocket = new Rocket("ws://fake/echo", { WebSocket: server.WebSocket, minDelayMs: 2, maxDelayMs: 4 });
  await rocket.connect();
  return { server, rocket };
}

test("a close with 1000 from the server is final", async () => {
  const { server, rocket } = await connected();
  let reconnecting = 0;
  rocket.on("reconnecting", () => reconnecting++);
  const gone = next(rocket, "disconnected");
  server.last.drop(1000, "");
  assert.equal((await gone).willReconnect, false);
  await sleep(50);
  assert.equal(reconnecting, 0);
  assert.equal(rocket.state, "closed");
  assert.equal(server.sockets.length, 1);
});

test("a slow consumer's or a write timeout's 1008 is followed by a reconnect; other 1008s are final", async () => {
  for (const reason of ["slow consumer", "write timeout"]) {
    const { server, rocket } = await connected();
    await rocket.subscribe("c");
    const gone = next(rocket, "disconnected");
    const back = next(rocket, "connected");
    server.last.drop(1008, reason);
    assert.equal((await gone).willReconnect, true, reason);
    assert.equal((await back).reconnected, true);
    assert.equal(server.sockets.length, 2);
    assert.deepEqual(server.requests.at(-1), [2, { subscribe: { channel: "c" } }], "subscribed again");
    rocket.close();
  }
  const { server, rocket } = await connected();
  const gone = next(rocket, "disconnected");
  server.last.drop(1008, "too many failed authentications");
  const detail = await gone;
  assert.equal(detail.willReconnect, false);
  assert.equal(detail.error.closeCode, 1008);
  assert.equal(detail.error.closeReason, "too many failed authentications");
});

test("with reconnect: false a lost connection is final", async () => {
  const server = new FakeServer(() => ({ err: "INVALID_PAYLOAD" }));
  const rocket = new Rocket("ws://fake/echo", { WebSocket: server.WebSocket, reconnect: false });
  await rocket.connect();
  const gone = next(rocket, "disconnected");
  server.last.drop(1001, "server shutting down");
  assert.deepEqual({ ...(await gone), error: undefined }, { code: 1001, reason: "server shutting down", willReconnect: false, error: undefined });
  assert.equal(rocket.state, "closed");
});
