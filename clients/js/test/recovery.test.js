// History recovery (PROTOCOL.md, "History, recovery and presence") from the client's side,
// against a scripted in-process stand-in for the server: rocket-cli has no History yet.
// What is checked: the client keeps the last offset and epoch of each channel, subscribes
// again with `since` after a reconnect, hands recovered events to the handler in order and
// once, and tells the app when `recovered` is false. On a hub without History it sends no
// `since` and emits no `recovery`.
// Run: `node --test test/recovery.test.js` in clients/js.

import { test } from "node:test";
import assert from "node:assert/strict";

import { Rocket } from "../rocket.js";
import { next, until } from "./server.js";
import { FakeServer } from "./fake-server.js";

test("after a reconnect the client recovers with since, in order and once, and reports a failed recovery", async () => {
  /** What the next subscribe is answered with. */
  let subscribed = { subscribed: "c", offset: 10, epoch: "E" };
  const server = new FakeServer((request) => {
    if (request.authenticate) return { authenticated: request.authenticate.user };
    if (request.subscribe) return subscribed;
    return { err: "INVALID_PAYLOAD" };
  });
  const rocket = new Rocket("ws://fake/echo", { WebSocket: server.WebSocket, user: "u", minDelayMs: 2, maxDelayMs: 4 });
  const got = [];
  const recoveries = [];
  rocket.on("recovery", (r) => recoveries.push(r));
  await rocket.connect();
  assert.deepEqual(await rocket.subscribe("c", (e) => got.push(e.offset)), { channel: "c", offset: 10, epoch: "E" });
  const event = (offset, epoch = "E") => ({ event: "e", channel: "c", data: offset, offset, epoch });
  server.last.push(event(11));
  server.last.push(event(12));
  server.last.push(event(12)); // a repeat is dropped
  await until(() => got.length === 2, "two live events");

  // Reconnect: subscribe with since, the missed events come in the reply.
  subscribed = { subscribed: "c", offset: 14, epoch: "E", recovered: true, events: [event(13), event(14)] };
  let back = next(rocket, "connected");
  server.last.drop();
  await back;
  await until(() => recoveries.length === 1, "the recovery event");
  const [socket, request] = server.requests.at(-1);
  assert.equal(socket, 2);
  assert.deepEqual(request, { subscribe: { channel: "c", since: { offset: 12, epoch: "E" } } });
  assert.deepEqual(recoveries[0], { channel: "c", recovered: true, missed: 2 });
  server.last.push(event(14)); // already recovered
  server.last.push(event(15));
  await until(() => got.length === 5, "the recovered and live events");
  assert.deepEqual(got, [11, 12, 13, 14, 15]);

  // The history is gone (new epoch): recovered false, the app is told, and the new epoch's
  // events are delivered.
  subscribed = { subscribed: "c", offset: 3, epoch: "F", recovered: false };
  back = next(rocket, "connected");
  server.last.drop();
  await back;
  await until(() => recoveries.length === 2, "the failed recovery event");
  assert.deepEqual(server.requests.at(-1)[1], { subscribe: { channel: "c", since: { offset: 15, epoch: "E" } } });
  assert.deepEqual(recoveries[1], { channel: "c", recovered: false, missed: null });
  server.last.push(event(4, "F"));
  await until(() => got.length === 6, "the new epoch's event");
  assert.deepEqual(got.at(-1), 4);
  rocket.close();
});

test("on a hub without History the client subscribes again without since and reports nothing", async () => {
  const server = new FakeServer((request) => {
    if (request.subscribe) return { subscribed: request.subscribe.channel };
    return { err: "INVALID_PAYLOAD" };
  });
  const rocket = new Rocket("ws://fake/echo", { WebSocket: server.WebSocket, minDelayMs: 2, maxDelayMs: 4 });
  let recoveries = 0;
  rocket.on("recovery", () => recoveries++);
  await rocket.connect();
  const got = [];
  await rocket.subscribe("c", (e) => got.push(e.data));
  server.last.push({ event: "e", channel: "c", data: 1 });
  await until(() => got.length === 1, "the event");
  const back = next(rocket, "connected");
  server.last.drop();
  await back;
  await until(() => server.requests.length === 2, "the second subscribe");
  assert.deepEqual(server.requests[1], [2, { subscribe: { channel: "c" } }]);
  server.last.push({ event: "e", channel: "c", data: 2 });
  await until(() => got.length === 2, "the event after the reconnect");
  assert.equal(recoveries, 0);
  rocket.close();
});
