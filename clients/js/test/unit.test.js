// Unit tests of the client against a real rocket-cli (started here on a free loopback port).
// Run: `node --test test/unit.test.js` in clients/js (npm test).

import { test, before, after } from "node:test";
import assert from "node:assert/strict";

import { Rocket, RocketError, comesBack } from "../rocket.js";
import { WebSocket, startServer, config, next, until, sleep } from "./server.js";

/** @type {Awaited<ReturnType<typeof startServer>>} */
let server;
/** Clients to close after each test file. */
const clients = [];

/** A client of the shared server with fast reconnects. */
function client(options = {}, url = server.url()) {
  const rocket = new Rocket(url, { WebSocket, minDelayMs: 20, maxDelayMs: 200, ...options });
  clients.push(rocket);
  return rocket;
}

before(async () => {
  server = await startServer();
});

after(async () => {
  for (const c of clients) c.close();
  await server.stop();
});

/** Asserts that `promise` rejects with a RocketError of `code`. */
async function rejectsWith(promise, code) {
  await assert.rejects(promise, (e) => {
    assert.ok(e instanceof RocketError, `a RocketError, got ${e}`);
    assert.equal(e.code, code, e.message);
    assert.ok(e.message.startsWith(`${code}: `), e.message);
    return true;
  });
}

test("bad URLs are refused with a clear BAD_URL error", () => {
  const cases = [
    ["not a url", /is not a URL/],
    ["http://localhost:9772/echo", /scheme must be ws: or wss:.*use ws:\/\/localhost:9772\/echo/],
    ["https://example.com/echo", /use wss:\/\/example.com\/echo/],
    ["ftp://example.com/echo", /not ftp:/],
    ["ws://localhost:9772", /names no hub.*ws:\/\/localhost:9772\/echo/],
    ["ws://localhost:9772/echo#frag", /no #fragment/],
  ];
  for (const [url, message] of cases) {
    assert.throws(() => new Rocket(url), (e) => e instanceof RocketError && e.code === "BAD_URL" && message.test(e.message), url);
  }
  assert.equal(new Rocket("ws://localhost:9772/echo").url, "ws://localhost:9772/echo");
  assert.equal(new Rocket(new URL("wss://example.com/a/b?x=1")).url, "wss://example.com/a/b?x=1");
});

test("a path that is no hub, or a port nobody listens on, fails connect() with CONNECT_FAILED", async () => {
  const nohub = client({}, server.url("/nope"));
  await rejectsWith(nohub.connect(), "CONNECT_FAILED");
  assert.equal(nohub.state, "closed");
  const closedPort = client({}, "ws://127.0.0.1:1/echo");
  await rejectsWith(closedPort.connect(), "CONNECT_FAILED");
  const none = new Rocket(server.url(), { WebSocket: null });
  if (!globalThis.WebSocket) await rejectsWith(none.connect(), "NO_WEBSOCKET");
});

test("connect() authenticates and gives the token; bad credentials reject with their names", async () => {
  const rocket = client({ user: "frontend", secret: "anything" });
  const token = await rocket.connect();
  assert.match(token, /^[0-9a-f]{32}$/);
  assert.equal(rocket.token, token);
  assert.equal(rocket.state, "connected");
  assert.equal(await rocket.connect(), token, "connect() again is harmless");
  await rejectsWith(client({ user: "backend", secret: "wrong" }).connect(), "INVALID_CREDENTIALS");
  await rejectsWith(client({ user: "nobody" }).connect(), "INVALID_USER");
});

test("replies map to their requests in order, errors included, with many in flight", async () => {
  const a = client({ user: "backend", secret: "secret" });
  await a.connect();
  const requests = [];
  for (let i = 0; i < 40; i++) {
    requests.push([`s${i}`, a.subscribe(`ch${i}`, () => {})]);
    requests.push([`nobody${i}`, a.broadcast(`empty${i}`, "e", i)]);
    requests.push([`b${i}`, a.broadcast(`ch${i}`, "e", i)]);
    requests.push([`d${i}`, a.direct("0".repeat(32), "e")]);
    requests.push([`u${i}`, a.unsubscribe(`ch${i}`)]);
  }
  const results = await Promise.allSettled(requests.map(([, p]) => p));
  results.forEach((r, n) => {
    const [label] = requests[n];
    const i = label.replace(/\D+/, "");
    if (label.startsWith("s")) assert.deepEqual(r.value, { channel: `ch${i}` }, label);
    if (label.startsWith("nobody")) assert.equal(r.reason?.code, "INVALID_CHANNEL", label);
    if (label.startsWith("b")) assert.equal(r.value, `ch${i}`, label);
    if (label.startsWith("d")) assert.equal(r.reason?.code, "INVALID_CLIENT", label);
    if (label.startsWith("u")) assert.equal(r.value, `ch${i}`, label);
  });
});

test("errors carry the protocol's names", async () => {
  const anonymous = client();
  await anonymous.connect();
  await rejectsWith(anonymous.subscribe("news", () => {}), "ACCESS_DENIED");
  await rejectsWith(anonymous.broadcast("news", "e"), "ACCESS_DENIED");
  const reader = client({ user: "reader", secret: "r" });
  await reader.connect();
  await reader.subscribe("news");
  await rejectsWith(reader.broadcast("news", "e"), "ACCESS_DENIED");
  const writer = client({ user: "frontend" });
  await writer.connect();
  await rejectsWith(writer.subscribe(""), "INVALID_PAYLOAD");
  await rejectsWith(writer.subscribe("x".repeat(256)), "INVALID_PAYLOAD");
  await rejectsWith(writer.broadcast("nobody-here", "e"), "INVALID_CHANNEL");
  await rejectsWith(writer.direct("", "e"), "INVALID_CLIENT");
  await rejectsWith(writer.history("news"), "INVALID_PAYLOAD"); // no History on this hub
  const e = await writer.broadcast("nobody-here", "e", 1).catch((e) => e);
  assert.deepEqual(e.request, { broadcast: { event: "e", channel: "nobody-here", data: 1 } });
  assert.match(e.message, /INVALID_CHANNEL: the server refused broadcast/);
  // The connection stays usable after errors.
  await writer.subscribe("fine");
  assert.equal(await writer.broadcast("fine", "e"), "fine");
});

test("broadcasts reach subscribers and directs reach their client", async () => {
  const alice = client({ user: "frontend" });
  const bob = client({ user: "frontend" });
  await Promise.all([alice.connect(), bob.connect()]);
  const aliceGot = [];
  const bobGot = [];
  const aliceDirects = [];
  alice.onDirect((d) => aliceDirects.push(d));
  await alice.subscribe("room", (e) => aliceGot.push(e));
  await bob.subscribe("room", (e) => bobGot.push(e));
  assert.equal(await bob.broadcast("room", "hello", { text: "hi", n: [1, 2] }), "room");
  await bob.broadcast("room", "bare");
  await until(() => aliceGot.length === 2 && bobGot.length === 2, "both deliveries");
  assert.deepEqual(aliceGot, [
    { event: "hello", channel: "room", data: { text: "hi", n: [1, 2] } },
    { event: "bare", channel: "room", data: undefined },
  ]);
  assert.deepEqual(bobGot, aliceGot, "the sender gets its own copy when subscribed");
  assert.equal(await bob.direct(alice.token, "ping", [1, 2, 3]), alice.token);
  await until(() => aliceDirects.length === 1, "the direct message");
  assert.deepEqual(aliceDirects[0], { event: "ping", from: bob.token, data: [1, 2, 3] });
  // Unsubscribed: no more deliveries for alice.
  await alice.unsubscribe("room");
  await bob.broadcast("room", "after");
  await until(() => bobGot.length === 3, "bob's copy");
  await sleep(50);
  assert.equal(aliceGot.length, 2);
});

test("after a server restart, clients reconnect with backoff, re-authenticate and re-subscribe", async () => {
  const own = await startServer();
  try {
    const options = { user: "frontend", minDelayMs: 40, maxDelayMs: 160, random: () => 0 };
    const alice = client(options, own.url());
    const bob = client(options, own.url());
    await Promise.all([alice.connect(), bob.connect()]);
    const oldTokens = [alice.token, bob.token];
    const aliceGot = [];
    await alice.subscribe("news", (e) => aliceGot.push(e.data));
    await bob.subscribe("news", () => {});
    const events = [];
    for (const name of ["connected", "disconnected", "reconnecting"]) alice.on(name, (d) => events.push([name, d]));

    const lost = next(alice, "disconnected");
    await own.stop();
    assert.deepEqual(await lost, { code: 1001, reason: "server shutting down", willReconnect: true });
    // Delays grow exponentially up to the cap: with random() = 0, half of each step.
    await until(() => events.filter(([n]) => n === "reconnecting").length >= 5, "five reconnect attempts");
    await rejectsWith(alice.broadcast("news", "e"), "NOT_CONNECTED");
    const lateSub = alice.subscribe("late", () => {}); // made once the connection is back
    const back = Promise.all([next(alice, "connected"), next(bob, "connected")]);
    await own.start();
    const [aliceBack] = await back;
    assert.equal(aliceBack.reconnected, true);
    const delays = events.filter(([n]) => n === "reconnecting").map(([, d]) => d.delayMs);
    assert.deepEqual(delays.slice(0, 5), [20, 40, 80, 80, 80], "backoff doubles, capped at 160 ms (halved by the jitter)");
    assert.notEqual(alice.token, oldTokens[0], "a new connection has a new token");
    assert.notEqual(bob.token, oldTokens[1]);
    assert.deepEqual(await lateSub, { channel: "late" });
    // Re-subscribed: a broadcast from bob reaches alice again.
    await until(async () => (await bob.broadcast("news", "e", "back").catch(() => null)) === "news", "bob's broadcast");
    await until(() => aliceGot.includes("back"), "alice's delivery after the restart");
    assert.equal(alice.state, "connected");
  } finally {
    await own.stop();
  }
});

test("no reconnect after the MaxFailedAuth close (1008)", async () => {
  const own = await startServer({ config: config({ MaxFailedAuth: 2 }) });
  try {
    const rocket = client({ user: "frontend" }, own.url());
    await rocket.connect();
    let reconnecting = 0;
    rocket.on("reconnecting", () => reconnecting++);
    const gone = next(rocket, "disconnected");
    await rejectsWith(rocket.authenticate("backend", "wrong"), "INVALID_CREDENTIALS");
    await rejectsWith(rocket.authenticate("backend", "wrong"), "INVALID_CREDENTIALS");
    const detail = await gone;
    assert.equal(detail.code, 1008);
    assert.equal(detail.willReconnect, false);
    assert.equal(detail.error.code, "CLOSED");
    await sleep(300);
    assert.equal(reconnecting, 0);
    assert.equal(rocket.state, "closed");
    await rejectsWith(rocket.broadcast("x", "e"), "CLOSED");
  } finally {
    await own.stop();
  }
});

test("no reconnect after the client's own close(); pending requests are rejected", async () => {
  const rocket = client({ user: "frontend" });
  await rocket.connect();
  let reconnecting = 0;
  rocket.on("reconnecting", () => reconnecting++);
  const gone = next(rocket, "disconnected");
  const pending = rocket.subscribe("bye");
  rocket.close();
  await rejectsWith(pending, "CLOSED");
  assert.deepEqual({ ...(await gone), error: undefined }, { code: 1000, reason: "", willReconnect: false, error: undefined });
  await sleep(200);
  assert.equal(reconnecting, 0);
  assert.equal(rocket.state, "closed");
  assert.equal(rocket.token, null);
  await rejectsWith(rocket.direct("0".repeat(32), "e"), "CLOSED");
});

test("close() while connecting rejects connect() with CLOSED; subscribe() meanwhile waits for the session", async () => {
  const early = client({ user: "frontend" });
  const connecting = early.connect();
  const again = early.connect();
  early.close();
  await rejectsWith(connecting, "CLOSED");
  await rejectsWith(again, "CLOSED");
  assert.equal(early.state, "closed");

  const rocket = client({ user: "frontend" });
  const connected = rocket.connect();
  const subscribed = rocket.subscribe("early", () => {});
  assert.equal(await rocket.connect(), await connected, "connect() while connecting waits for the same connection");
  assert.deepEqual(await subscribed, { channel: "early" });
  assert.equal(await rocket.broadcast("early", "e"), "early");
});

test("authenticate() switches user; the new credentials are used from then on", async () => {
  const rocket = client();
  await rocket.connect();
  assert.equal(await rocket.authenticate("backend", "secret"), "backend");
  await rocket.subscribe("admin");
  assert.equal(await rocket.broadcast("admin", "e"), "admin");
  assert.equal(rocket.options.user, "backend");
});

test("which closes may be followed by a reconnect", () => {
  assert.equal(comesBack(1000, ""), false);
  assert.equal(comesBack(1008, "too many failed authentications"), false);
  assert.equal(comesBack(1008, "slow consumer"), true);
  assert.equal(comesBack(1008, "write timeout"), true);
  assert.equal(comesBack(1001, "server shutting down"), true);
  assert.equal(comesBack(1006, ""), true);
  assert.equal(comesBack(1009, ""), true);
});
